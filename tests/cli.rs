//! The `unionfs-rs` binary as users and container tools run it.
//!
//! Every setup error of the command line must end the process with exactly one line on stderr
//! (`unionfs-rs: ...`), a non-zero exit, and nothing mounted; a successful mount must be live
//! when the command returns, and its daemon must let go of stderr (podman reads it to EOF) and
//! exit once the mount goes away. Each test works in its own directory under /tmp, and its
//! `Scratch` guard unmounts whatever is still mounted below it, even when the test fails.
//!
//! Tests named `core_*` also read and write through the mount, so they need the filesystem core;
//! the others only need the mount lifecycle. Tests that need root (a tmpfs, a private mount
//! namespace, switching to `nobody`) or an accessible /dev/fuse say so on stderr and return
//! early when that is missing.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_unionfs-rs");
const TIMEOUT: Duration = Duration::from_secs(20);

/// A directory under /tmp; dropping it unmounts everything below it, deepest first.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// Creates the scratch root and `dirs` in it (mode 0755 so `nobody` can traverse it).
    fn new(dirs: &[&str]) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("unionfs-cli-")
            .tempdir_in("/tmp")
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let s = Scratch { dir };
        for d in dirs {
            fs::create_dir_all(s.path(d)).unwrap();
        }
        s
    }

    /// The canonical path of `rel` (tests compare it with /proc/self/mountinfo).
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().canonicalize().unwrap().join(rel)
    }

    fn file(&self, rel: &str, data: &str) -> PathBuf {
        let p = self.path(rel);
        fs::write(&p, data).unwrap();
        p
    }

    fn mounts_below(&self) -> Vec<PathBuf> {
        let root = self.path("");
        let mut found: Vec<PathBuf> = mount_points()
            .into_iter()
            .filter(|m| m.starts_with(&root))
            .collect();
        found.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        found
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for m in self.mounts_below() {
            let quiet = |c: &mut Command| c.stdout(Stdio::null()).stderr(Stdio::null()).status();
            let _ = quiet(Command::new("fusermount3").arg("-u").arg("-q").arg(&m));
            if is_mounted(&m) {
                let _ = quiet(Command::new("umount").arg("-l").arg(&m));
            }
        }
    }
}

/// One line of /proc/self/mountinfo: the mount point (octal escapes undone) and the line.
fn mountinfo() -> Vec<(PathBuf, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let point = |l: &str| l.split(' ').nth(4).map(unescape_octal);
    info.lines()
        .filter_map(|l| Some((point(l)?, l.to_string())))
        .collect()
}

fn mount_points() -> Vec<PathBuf> {
    mountinfo().into_iter().map(|(p, _)| p).collect()
}

fn unescape_octal(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let digits = b
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok());
        match (b[i], digits.and_then(|d| u8::from_str_radix(d, 8).ok())) {
            (b'\\', Some(v)) => (out.push(v), i += 4),
            (c, _) => (out.push(c), i += 1),
        };
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

fn is_mounted(p: &Path) -> bool {
    mount_points().iter().any(|m| m == p)
}

/// The whole mountinfo line of `p` (per-mount and superblock options, type, source).
fn mount_line(p: &Path) -> String {
    let found = mountinfo().into_iter().find(|(m, _)| m == p);
    found.map(|(_, l)| l).unwrap_or_default()
}

/// FUSE mounts at or below `root`.
fn fuse_mounts_below(root: &Path) -> Vec<PathBuf> {
    let is_fuse = |l: &str| l.split(" - ").nth(1).is_some_and(|t| t.starts_with("fuse"));
    let all = mountinfo().into_iter();
    all.filter(|(m, l)| m.starts_with(root) && is_fuse(l))
        .map(|(m, _)| m)
        .collect()
}

struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Reads a pipe to EOF on a thread; the receiver gets the text when the last writer closes it.
fn drain(mut r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    rx
}

/// Runs `cmd` to completion within `TIMEOUT`. Its stdout and stderr must reach EOF soon after
/// it exits: a daemon that kept them open would hang a caller such as podman.
fn run(cmd: &mut Command) -> Outcome {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let status = wait_timeout(&mut child, TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("{cmd:?} did not finish within {TIMEOUT:?}");
    });
    let eof = Duration::from_secs(5);
    let stdout = out
        .recv_timeout(eof)
        .expect("stdout still open after exit (daemon kept it)");
    let stderr = err
        .recv_timeout(eof)
        .expect("stderr still open after exit (daemon kept it)");
    Outcome {
        status,
        stdout,
        stderr,
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
}

fn bin<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(args: I) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    c
}

/// Runs the binary with `args`, expects failure with one line containing `want`, and checks
/// that nothing got mounted at `merged`.
fn expect_error(s: &Scratch, args: &[&str], want: &str) -> Outcome {
    let o = run(bin(args).current_dir(s.path("")));
    let errors: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| !l.starts_with("unionfs-rs: warning:"))
        .collect();
    assert!(
        !o.status.success(),
        "{args:?} succeeded; stderr: {}",
        o.stderr
    );
    assert_eq!(
        errors.len(),
        1,
        "{args:?}: want one error line, got {:?}",
        o.stderr
    );
    assert!(errors[0].starts_with("unionfs-rs: "), "{:?}", errors[0]);
    assert!(
        errors[0].contains(want),
        "{args:?}: '{}' lacks '{want}'",
        errors[0]
    );
    let left = fuse_mounts_below(&s.path(""));
    assert!(left.is_empty(), "{args:?} left a mount: {left:?}");
    o
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn skip(why: &str) -> bool {
    eprintln!("skipped: {why}");
    true
}

#[test]
fn version_is_printed() {
    let o = run(&mut bin(["--version"]));
    assert!(o.status.success());
    assert_eq!(o.stdout, "unionfs-rs 0.1.0\n");
}

#[test]
fn missing_or_unusable_directories() {
    let s = Scratch::new(&["l", "u", "w", "m"]);
    s.file("file", "");
    let cases: &[(&[&str], &str)] = &[
        (&["nope", "u", "m"], "lower directory does not exist"),
        (
            &["l:nope", "u", "m"],
            "nope: lower directory does not exist",
        ),
        (&["l", "nope", "m"], "upper directory does not exist"),
        (
            &["--workdir", "nope", "l", "u", "m"],
            "work directory does not exist",
        ),
        (&["l", "u", "nope"], "mount point does not exist"),
        (&["file", "u", "m"], "lower directory is not a directory"),
        (&["l", "file", "m"], "upper directory is not a directory"),
        (&["l", "u", "file"], "mount point is not a directory"),
        (
            &["-o", "lowerdir=l:nope,upperdir=u,workdir=w", "m"],
            "lower directory does not exist",
        ),
    ];
    for (args, want) in cases {
        expect_error(&s, args, want);
    }
}

#[test]
fn directory_given_twice() {
    let s = Scratch::new(&["l", "u", "w", "m"]);
    std::os::unix::fs::symlink(s.path("l"), s.path("link")).unwrap();
    expect_error(&s, &["l:l", "u", "m"], "given twice");
    expect_error(&s, &["l:link", "u", "m"], "given twice");
    expect_error(
        &s,
        &["l", "l", "m"],
        "both the lower directory and the upper directory",
    );
    expect_error(
        &s,
        &["--workdir", "u", "l", "u", "m"],
        "both the upper directory and the work",
    );
}

#[test]
fn writable_directories_nested_with_layers() {
    let s = Scratch::new(&["l/u", "l/w", "u/l", "u/w", "w/u", "m"]);
    expect_error(&s, &["l", "l/u", "m"], "upper directory");
    expect_error(&s, &["u/l", "u", "m"], "lower directory");
    expect_error(
        &s,
        &["--workdir", "l/w", "l", "u", "m"],
        "inside the lower directory",
    );
    expect_error(&s, &["--workdir", "u/w", "l", "u", "m"], "work directory");
    expect_error(
        &s,
        &["--workdir", "w", "l", "w/u", "m"],
        "inside the work directory",
    );
}

#[test]
fn merged_overlapping_a_layer() {
    let s = Scratch::new(&["l/sub", "u/sub", "w/sub", "m/l", "m/u", "m/w"]);
    let w = ["--workdir", "w"];
    let cases: &[(&[&str], &str)] = &[
        (
            &["l", "u", "l"],
            "both the lower directory and the mount point",
        ),
        (
            &["l", "u", "u"],
            "both the upper directory and the mount point",
        ),
        (
            &[w[0], w[1], "l", "u", "w"],
            "both the work directory and the mount point",
        ),
        (&["l", "u", "l/sub"], "mount point"),
        (&["l", "u", "u/sub"], "mount point"),
        (&[w[0], w[1], "l", "u", "w/sub"], "mount point"),
        (&["m/l", "u", "m"], "inside the mount point"),
        (&["l", "m/u", "m"], "inside the mount point"),
        (
            &["--workdir", "m/w", "l", "u", "m"],
            "inside the mount point",
        ),
    ];
    for (args, want) in cases {
        expect_error(&s, args, want);
    }
}

#[test]
fn workdir_on_another_filesystem() {
    if !is_root() && skip("needs root to mount a tmpfs") {
        return;
    }
    let s = Scratch::new(&["l", "u", "tmpfs", "m"]);
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "none"])
        .arg(s.path("tmpfs"))
        .status();
    assert!(st.unwrap().success());
    expect_error(
        &s,
        &["--workdir", "tmpfs", "l", "u", "m"],
        "not on the same filesystem",
    );
    let tmpfs = s.path("tmpfs");
    let _ = Command::new("umount").arg(&tmpfs).status();
}

#[test]
fn usage_errors_are_one_line_with_exit_code_2() {
    let s = Scratch::new(&["l", "u", "m"]);
    let cases: &[(&[&str], &str)] = &[
        (&[], "missing MERGED"),
        (&["m"], "no lower directory"),
        (&["l", "m"], "read-only union"),
        (&["l", "u", "m", "x"], "got 4 paths"),
        (&["--bogus", "l", "u", "m"], "--bogus"),
        (&["-o", "lowerdir=l,uidmapping=0:1", "m"], "id mapping"),
        (&["-o", "lowerdir=l,threads=0", "m"], "threads"),
        (&["-o", "lowerdir=l,context=\"a,b", "m"], "unterminated"),
        (&["-o", "lowerdir=l", "u", "m"], "only MERGED"),
        (&["--whiteout", "bogus", "l", "u", "m"], "whiteout"),
    ];
    for (args, want) in cases {
        let o = expect_error(&s, args, want);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn unknown_options_warn_then_go_on() {
    let s = Scratch::new(&["l", "m"]);
    let o = expect_error(
        &s,
        &["-o", "foo,bar=1,,lowerdir=l:nope,", "m"],
        "does not exist",
    );
    let warnings: Vec<&str> = o.stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{}", o.stderr);
    assert!(warnings[0].contains("foo, bar=1"), "{}", warnings[0]);
}

#[test]
fn no_dev_fuse() {
    if !is_root() && skip("needs root for a private mount namespace") {
        return;
    }
    let s = Scratch::new(&["l", "u", "m"]);
    let script = format!("mount -t tmpfs none /dev && exec {BIN} l u m");
    let o = run(Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .current_dir(s.path("")));
    assert!(!o.status.success());
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    assert!(
        o.stderr.starts_with("unionfs-rs: /dev/fuse does not exist"),
        "{}",
        o.stderr
    );
    assert!(fuse_mounts_below(&s.path("")).is_empty());
}

/// Runs the binary as `nobody` (uid/gid 65534) with `path` as PATH.
fn as_nobody(args: &[&str], path: &str, cwd: &Path) -> Command {
    let mut c = bin(args);
    c.uid(65534).gid(65534).env("PATH", path).current_dir(cwd);
    c
}

#[test]
fn no_fusermount3_for_an_unprivileged_user() {
    if !is_root() && skip("needs root to run as nobody") {
        return;
    }
    let s = Scratch::new(&["l", "u", "m"]);
    let o = run(&mut as_nobody(
        &["l", "u", "m"],
        "/nonexistent",
        &s.path(""),
    ));
    assert!(!o.status.success());
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("fusermount3 not found in PATH"),
        "{}",
        o.stderr
    );
    assert!(fuse_mounts_below(&s.path("")).is_empty());
}

/// Waits until `p` is (or is no longer) a mount point.
fn wait_mounted(p: &Path, want: bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < TIMEOUT {
        if is_mounted(p) == want {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Pids of running daemons whose command line mentions `merged`.
fn daemons_for(merged: &Path) -> Vec<u32> {
    let needle = merged.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.contains(&&b"--unionfs-rs-daemon"[..]) && args.iter().any(|a| a.ends_with(needle)) {
            pids.push(pid);
        }
    }
    pids
}

fn wait_no_daemon(merged: &Path) -> bool {
    let start = Instant::now();
    while start.elapsed() < TIMEOUT {
        if daemons_for(merged).is_empty() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Mounts with fuse-overlayfs's grammar as podman does, stderr a pipe read to EOF.
fn podman_style_mount(s: &Scratch, data: &str) -> PathBuf {
    let merged = s.path("m");
    let o = run(bin(["-o", data]).arg(&merged).current_dir(s.path("")));
    assert!(o.status.success(), "mount failed: {}", o.stderr);
    assert!(
        is_mounted(&merged),
        "the command returned before the mount was live"
    );
    merged
}

#[test]
fn background_mount_is_live_on_return_and_daemon_exits_on_unmount() {
    let s = Scratch::new(&["l1", "l2", "u", "w", "m"]);
    let merged = podman_style_mount(&s, "lowerdir=l1:l2,upperdir=u,workdir=w,,volatile,");
    assert!(mount_line(&merged).contains("default_permissions"));
    assert_eq!(daemons_for(&merged).len(), 1);
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&merged)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        wait_no_daemon(&merged),
        "daemon still running after the unmount"
    );
}

#[test]
fn daemon_exits_after_umount_too() {
    if !is_root() && skip("umount needs root") {
        return;
    }
    let s = Scratch::new(&["l", "u", "m"]);
    let merged = podman_style_mount(&s, "lowerdir=l,upperdir=u");
    assert!(
        Command::new("umount")
            .arg(&merged)
            .status()
            .unwrap()
            .success()
    );
    assert!(wait_no_daemon(&merged), "daemon still running after umount");
}

#[test]
fn read_only_union_is_mounted_read_only() {
    let s = Scratch::new(&["l", "empty", "m"]);
    let merged = podman_style_mount(&s, "lowerdir=l:empty");
    let line = mount_line(&merged);
    let per_mount = line.split(' ').nth(5).unwrap_or_default();
    assert!(per_mount.split(',').any(|o| o == "ro"), "{line}");
}

/// Starts a foreground mount and waits until it is live.
fn foreground(s: &Scratch, args: &[&str]) -> Child {
    let child = bin(args)
        .current_dir(s.path(""))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_mounted(&s.path("m"), true),
        "foreground mount never appeared"
    );
    child
}

#[test]
fn foreground_signals_unmount_and_exit_0() {
    use rustix::process::{Pid, Signal};
    for signal in [Signal::TERM, Signal::INT, Signal::HUP] {
        let s = Scratch::new(&["l", "u", "m"]);
        let mut child = foreground(&s, &["-f", "l", "u", "m"]);
        let pid = Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
        let status = wait_timeout(&mut child, TIMEOUT).expect("no exit after the signal");
        assert!(status.success(), "{signal:?}: {status:?}");
        assert!(!is_mounted(&s.path("m")));
    }
}

/// Regression: with -d and stderr a closed pipe (or a hung-up terminal), a failed log write
/// panicked the signal thread, so SIGTERM left a dead mount behind.
#[test]
fn signal_unmounts_even_when_stderr_is_gone() {
    use rustix::process::{Pid, Signal};
    let s = Scratch::new(&["l", "u", "m"]);
    let mut cmd = bin(["-d", "l", "u", "m"]);
    cmd.current_dir(s.path(""))
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(child.stderr.take());
    assert!(wait_mounted(&s.path("m"), true), "mount never appeared");
    let _ = fs::read_dir(s.path("m")).map(|d| d.count());
    let pid = Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, Signal::TERM).unwrap();
    let status = wait_timeout(&mut child, TIMEOUT).expect("no exit after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!is_mounted(&s.path("m")));
}

#[test]
fn foreground_exits_0_when_unmounted_from_outside() {
    let s = Scratch::new(&["l", "u", "m"]);
    let mut child = foreground(&s, &["-f", "l", "u", "m"]);
    assert!(
        Command::new("fusermount3")
            .arg("-u")
            .arg(s.path("m"))
            .status()
            .unwrap()
            .success()
    );
    let status = wait_timeout(&mut child, TIMEOUT).expect("no exit after the unmount");
    assert!(status.success(), "{status:?}");
}

#[test]
fn unprivileged_mount_through_fusermount3() {
    if !is_root() && skip("needs root to run as nobody") {
        return;
    }
    let dev_fuse = fs::metadata("/dev/fuse")
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    if dev_fuse & 0o006 != 0o006 && skip("/dev/fuse is not accessible to other users") {
        return;
    }
    let s = Scratch::new(&["l", "u", "m"]);
    for d in ["u", "m"] {
        rustix::fs::chown(s.path(d), Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let o = run(&mut as_nobody(&["l", "u", "m"], &path, &s.path("")));
    assert!(o.status.success(), "{}", o.stderr);
    assert!(is_mounted(&s.path("m")));
    assert!(mount_line(&s.path("m")).contains("user_id=65534"));
    let mut umount = Command::new("fusermount3");
    umount.arg("-u").arg(s.path("m")).uid(65534).gid(65534);
    assert!(umount.status().unwrap().success());
    assert!(wait_no_daemon(&s.path("m")));
}

#[test]
fn core_o_grammar_merges_symlinked_lowers() {
    let s = Scratch::new(&["layers/l1", "layers/l2", "u", "w", "m"]);
    s.file("layers/l1/a", "top");
    s.file("layers/l2/a", "bottom");
    s.file("layers/l2/b", "b");
    std::os::unix::fs::symlink("layers/l1", s.path("s1")).unwrap();
    std::os::unix::fs::symlink(s.path("layers/l2"), s.path("s2")).unwrap();
    let merged = podman_style_mount(&s, "lowerdir=s1:s2,upperdir=u,workdir=w,context=\"x:y,z\"");
    assert_eq!(fs::read_to_string(merged.join("a")).unwrap(), "top");
    assert_eq!(fs::read_to_string(merged.join("b")).unwrap(), "b");
    fs::write(merged.join("c"), "new").unwrap();
    assert_eq!(fs::read_to_string(s.path("u/c")).unwrap(), "new");
    assert!(!s.path("layers/l1/c").exists());
}

#[test]
fn core_positional_grammar_escaped_colon_and_default_workdir() {
    let s = Scratch::new(&["a:b", "l2", "u", "m"]);
    s.file("a:b/x", "from a:b");
    let o = run(bin([r"a\:b:l2", "u", "m"]).current_dir(s.path("")));
    assert!(o.status.success(), "{}", o.stderr);
    let merged = s.path("m");
    assert_eq!(fs::read_to_string(merged.join("x")).unwrap(), "from a:b");
    assert!(s.path("u/.unionfs-rs-work").is_dir());
    let names: Vec<_> = fs::read_dir(&merged)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!names.iter().any(|n| n == ".unionfs-rs-work"), "{names:?}");
}

#[test]
fn core_read_only_union_refuses_writes() {
    let s = Scratch::new(&["l", "empty", "m"]);
    s.file("l/f", "data");
    let merged = podman_style_mount(&s, "lowerdir=l:empty");
    assert_eq!(fs::read_to_string(merged.join("f")).unwrap(), "data");
    let err = fs::write(merged.join("g"), "x").unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(rustix::io::Errno::ROFS.raw_os_error())
    );
}

#[test]
fn core_sigterm_on_a_busy_mount_detaches_it() {
    use rustix::process::{Pid, Signal};
    let s = Scratch::new(&["l", "u", "m"]);
    s.file("l/f", "data");
    let mut child = foreground(&s, &["-f", "l", "u", "m"]);
    let busy = fs::File::open(s.path("m/f")).unwrap();
    let pid = Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, Signal::TERM).unwrap();
    assert!(
        wait_mounted(&s.path("m"), false),
        "still mounted after SIGTERM"
    );
    drop(busy);
    let status = wait_timeout(&mut child, TIMEOUT).expect("no exit once the last file closed");
    assert!(status.success(), "{status:?}");
}
