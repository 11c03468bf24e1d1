//! The rootless path: an unprivileged user mounts through the setuid fusermount3, copies up,
//! deletes (whiteouts land as 0/0 devices on Linux >= 5.8, else `.wh.` files), re-creates a
//! deleted directory (opaque through `user.overlay.opaque`, since `trusted.` is root's) and
//! unmounts with `fusermount3 -u`. As root the tests create the user and switch to it; run by
//! an ordinary user they act as that user directly.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Who acts: the test user when we are root, else ourselves.
#[derive(Clone, Copy)]
struct Actor(Option<TestUser>);

impl Actor {
    fn get() -> Option<Actor> {
        if !Path::new("/usr/bin/fusermount3").exists() && which("fusermount3").is_none() {
            eprintln!("SKIP: fusermount3 not installed");
            return None;
        }
        if is_root() {
            return Some(Actor(Some(test_user())));
        }
        if fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .is_err()
        {
            eprintln!("SKIP: /dev/fuse not accessible to this user");
            return None;
        }
        Some(Actor(None))
    }

    fn run<T: Send>(self, f: impl FnOnce() -> T + Send) -> T {
        match self.0 {
            Some(u) => as_user(u, f),
            None => f(),
        }
    }

    fn command(self, program: &str) -> Command {
        match self.0 {
            Some(u) => user_command(u, program),
            None => Command::new(program),
        }
    }

    fn own(self, p: &Path) {
        if let Some(u) = self.0 {
            std::os::unix::fs::chown(p, Some(u.uid), Some(u.gid)).unwrap();
        }
    }
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(prog))
            .find(|p| p.exists())
    })
}

/// Linux >= 5.8 lets anybody make the 0/0 whiteout device.
fn unprivileged_whiteout_devices() -> bool {
    let rel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = rel
        .trim()
        .split(['.', '-'])
        .map(|s| s.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (major, minor) >= (5, 8)
}

/// A user's mount served by a foreground daemon; unmounted with the user's fusermount3 -u.
struct UserMount {
    actor: Actor,
    merged: PathBuf,
    child: Option<Child>,
}

impl UserMount {
    fn start(actor: Actor, st: &Stack, log: &Path) -> UserMount {
        let logf = fs::File::create(log).unwrap();
        let lowers = format!(
            "{}:{}",
            st.lower(0).root().display(),
            st.lower(1).root().display()
        );
        let mut child = actor
            .command(UNIONFS_BIN)
            .arg("-f")
            .arg(lowers)
            .arg(st.upper().root())
            .arg(&st.merged)
            .arg("--workdir")
            .arg(&st.work)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .unwrap();
        if let Err(why) = wait_for_mount(&st.merged, &mut child) {
            let _ = child.kill();
            let _ = child.wait();
            let out = fs::read_to_string(log).unwrap_or_default();
            panic!("rootless mount not live: {why}\n--- daemon output ---\n{out}");
        }
        UserMount {
            actor,
            merged: st.merged.clone(),
            child: Some(child),
        }
    }

    /// `fusermount3 -u` as the user; returns whether it worked and the daemon exited 0.
    fn unmount(&mut self) -> (bool, Option<i32>) {
        let ok = self
            .actor
            .command("fusermount3")
            .arg("-u")
            .arg(&self.merged)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        (ok, self.reap())
    }

    fn reap(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for UserMount {
    fn drop(&mut self) {
        if is_mounted(&self.merged) {
            let _ = self.unmount();
        }
        if is_mounted(&self.merged) {
            let _ = Command::new("umount").arg("-l").arg(&self.merged).status();
        }
        self.reap();
    }
}

/// A stack whose writable parts and layer contents belong to the actor.
fn user_stack(actor: Actor) -> Stack {
    let st = Stack::new();
    st.lower(1).file("base/keep", "keep");
    st.lower(1).file("base/victim", "delete me");
    st.lower(1).file("olddir/inner", "inner");
    st.lower(0).file("etc/config", "original");
    // Dialects a rootless tool writes into layers: read as whiteouts/opaque too.
    st.lower(1).file("pkg/removed", "x");
    st.lower(0).oci_whiteout("pkg/removed");
    st.lower(1).file("opq/hidden", "x");
    st.lower(0).opaque("opq", Opaque::User);
    // As after a rootless image pull: the user extracted the layers, so owns their contents.
    for l in [st.lower(0), st.lower(1)] {
        for (rel, _) in tree(l.root()) {
            actor.own(&l.path(&rel));
        }
    }
    for p in [st.upper().root(), &st.work, &st.merged] {
        actor.own(p);
    }
    fs::set_permissions(&st.dir, fs::Permissions::from_mode(0o755)).unwrap();
    st
}

#[test]
fn rootless_mount_copy_up_delete_opaque_unmount() {
    let Some(actor) = Actor::get() else { return };
    let st = user_stack(actor);
    let mut m = UserMount::start(actor, &st, &st.dir.join("daemon.log"));
    let merged = st.merged.clone();
    let p = |rel: &str| merged.join(rel);
    actor.run(|| {
        assert_eq!(read_string(&p("etc/config")).unwrap(), "original");
        expect_errno(
            fs::metadata(p("pkg/removed")),
            libc::ENOENT,
            ".wh. whiteout read",
        );
        assert_eq!(
            names(&p("opq")).unwrap(),
            Vec::<String>::new(),
            "user.overlay.opaque"
        );
        fs::write(p("etc/config"), "edited").unwrap();
        fs::remove_file(p("base/victim")).unwrap();
        fs::remove_dir_all(p("olddir")).unwrap();
        fs::create_dir(p("olddir")).unwrap();
        assert_eq!(names(&p("olddir")).unwrap(), Vec::<String>::new());
        assert_eq!(names(&p("base")).unwrap(), ["keep"]);
    });
    let (unmounted, code) = m.unmount();
    assert!(unmounted, "fusermount3 -u as the user failed");
    assert_eq!(code, Some(0), "daemon exit status after fusermount3 -u");
    assert!(!is_mounted(&st.merged));

    let up = st.upper();
    assert_eq!(up.read("etc/config"), b"edited");
    assert_eq!(st.lower(0).read("etc/config"), b"original");
    if let Actor(Some(u)) = actor {
        assert_eq!(
            up.stat("etc/config").uid(),
            u.uid,
            "copy-up owned by the user"
        );
    }
    if unprivileged_whiteout_devices() {
        let wh = up.stat("base/victim");
        assert!(
            wh.file_type().is_char_device() && wh.rdev() == 0,
            "0/0 whiteout"
        );
    } else {
        assert!(up.exists("base/.wh.victim"), "no .wh. whiteout");
    }
    let y = Some(b"y".to_vec());
    assert_eq!(
        up.get_xattr("olddir", "user.overlay.opaque"),
        y,
        "opaque as the user"
    );
    assert_eq!(up.get_xattr("olddir", "trusted.overlay.opaque"), None);
}

#[test]
fn rootless_background_mount_with_the_o_grammar() {
    let Some(actor) = Actor::get() else { return };
    let st = user_stack(actor);
    // What container tools run: `PROG -o lowerdir=..,upperdir=..,workdir=.. MERGED`; without
    // -f it returns once the mount is live.
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        st.lower(0).root().display(),
        st.lower(1).root().display(),
        st.upper().root().display(),
        st.work.display()
    );
    let out = actor
        .command(UNIONFS_BIN)
        .arg("-o")
        .arg(&opts)
        .arg(&st.merged)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "background mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        is_mounted(&st.merged),
        "command returned before the mount was live"
    );
    let merged = st.merged.clone();
    let seen = actor.run(|| names(&merged.join("base")).unwrap());
    let um = actor
        .command("fusermount3")
        .arg("-u")
        .arg(&st.merged)
        .status()
        .unwrap();
    if !um.success() {
        let _ = Command::new("umount").arg("-l").arg(&st.merged).status();
    }
    assert!(um.success(), "fusermount3 -u failed");
    assert_eq!(seen, ["keep", "victim"]);
    // The daemon exits after the unmount; nothing keeps the merged dir busy.
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_mounted(&st.merged) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!is_mounted(&st.merged));
}
