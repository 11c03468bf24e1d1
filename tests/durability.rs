//! Background-synced copy-ups (`src/durability.rs`): a copy goes into place marked unsynced
//! (with the boot id) in its `origin` xattr, and is unmarked once its data is on disk. Checked
//! through real mounts: the mark is there while the syncer is held back
//! (`UNIONFS_RS_SYNC_DELAY_MS`) and gone after an fsync, a rename, a link or the unmount; a
//! marked copy left by a killed daemon of this boot is kept, one from before a reboot (an old
//! boot id, written by the test as a crash would leave it) is removed and the lower file shows
//! again; `copy_up_sync=inline` never marks.
//!
//! Root only (the record lives in `trusted.*`; skipped with a message otherwise).

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Daemon, Scratch, require_root, sys, unionfs_command};

const ORIGIN: &str = "trusted.unionfs.origin";
/// Long enough that the syncer never gets to a copy during a test.
const HELD: &str = "600000";

struct Stack {
    scratch: Scratch,
}

impl Stack {
    /// One lower holding `big` (1 MiB of a pattern) and `small`, an empty upper, a mount point.
    fn new() -> Stack {
        let scratch = Scratch::new("");
        for d in ["l", "u", "m"] {
            scratch.dir(d);
        }
        let s = Stack { scratch };
        fs::write(s.lower().join("big"), lower_big()).unwrap();
        fs::write(s.lower().join("small"), b"lower small\n").unwrap();
        s
    }
    fn lower(&self) -> PathBuf {
        self.scratch.root.join("l")
    }
    fn upper(&self) -> PathBuf {
        self.scratch.root.join("u")
    }
    fn merged(&self) -> PathBuf {
        self.scratch.root.join("m")
    }
    /// Mounts with the syncer held back when `held`.
    fn mount(&self, held: bool, extra: &[&str]) -> Daemon {
        let mut cmd = unionfs_command(&[self.lower()], &self.upper(), &self.merged());
        cmd.args(extra);
        if held {
            cmd.env("UNIONFS_RS_SYNC_DELAY_MS", HELD);
        }
        let log = self.scratch.root.join("daemon.log");
        Daemon::spawn(cmd, &self.merged(), &log).unwrap_or_else(|e| panic!("{e}"))
    }
    fn record(&self, rel: &str) -> Option<String> {
        sys::lgetxattr(&self.upper().join(rel), ORIGIN)
            .ok()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }
    fn is_marked(&self, rel: &str) -> bool {
        self.record(rel).is_some_and(|r| r.contains("unsynced"))
    }
}

fn lower_big() -> Vec<u8> {
    (0..1u32 << 20).map(|i| (i % 251) as u8).collect()
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string()
}

/// Appends `tail` through the mount (the open copies the file up), without fsync.
fn append(p: &Path, tail: &[u8]) -> File {
    let mut f = OpenOptions::new().append(true).open(p).unwrap();
    f.write_all(tail).unwrap();
    f
}

fn stats(merged: &Path) -> String {
    let out = Command::new(common::UNIONFS_BIN)
        .arg("stats")
        .arg(merged)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn with_tail(tail: &[u8]) -> Vec<u8> {
    let mut v = lower_big();
    v.extend_from_slice(tail);
    v
}

#[test]
fn a_copy_up_is_marked_until_fsync_through_the_mount() {
    if !require_root() {
        return;
    }
    let s = Stack::new();
    let d = s.mount(true, &[]);
    let f = append(&s.merged().join("big"), b"tail");
    assert!(s.is_marked("big"), "record: {:?}", s.record("big"));
    assert!(s.record("big").unwrap().contains(&boot_id()));
    assert!(stats(&s.merged()).contains("copy_ups_unsynced: 1"));
    f.sync_all().unwrap();
    let record = s.record("big").expect("origin kept");
    assert!(!record.contains("unsynced"), "record after fsync: {record}");
    assert!(record.contains(':'), "identity lost: {record}");
    assert!(stats(&s.merged()).contains("copy_ups_unsynced: 0"));
    assert_eq!(
        fs::read(s.merged().join("big")).unwrap(),
        with_tail(b"tail")
    );
    drop(d);
}

#[test]
fn rename_and_link_settle_the_copy_first() {
    if !require_root() {
        return;
    }
    let s = Stack::new();
    let d = s.mount(true, &[]);
    drop(append(&s.merged().join("big"), b"r"));
    drop(append(&s.merged().join("small"), b"l"));
    assert!(s.is_marked("big") && s.is_marked("small"));
    fs::rename(s.merged().join("big"), s.merged().join("moved")).unwrap();
    assert!(!s.is_marked("moved"), "record: {:?}", s.record("moved"));
    fs::hard_link(s.merged().join("small"), s.merged().join("second")).unwrap();
    assert!(!s.is_marked("small") && !s.is_marked("second"));
    drop(d);
    assert_eq!(fs::read(s.upper().join("moved")).unwrap(), with_tail(b"r"));
}

/// Writes through an `O_SYNC` open may bypass the daemon (passthrough), so opening a fresh copy
/// that way settles it first.
#[test]
fn an_o_sync_open_settles_the_copy() {
    if !require_root() {
        return;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let s = Stack::new();
    let d = s.mount(true, &[]);
    drop(append(&s.merged().join("small"), b"a"));
    assert!(s.is_marked("small"));
    let mut f = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_SYNC)
        .open(s.merged().join("small"))
        .unwrap();
    assert!(!s.is_marked("small"), "record: {:?}", s.record("small"));
    f.write_all(b"b").unwrap();
    drop(f);
    assert_eq!(
        fs::read(s.upper().join("small")).unwrap(),
        b"lower small\nab"
    );
    drop(d);
}

#[test]
fn unmount_syncs_what_is_left() {
    if !require_root() {
        return;
    }
    let s = Stack::new();
    let mut d = s.mount(true, &[]);
    drop(append(&s.merged().join("big"), b"u"));
    assert!(s.is_marked("big"));
    let status = d.stop().expect("daemon exited by itself");
    assert!(status.success());
    assert!(!s.is_marked("big"), "record: {:?}", s.record("big"));
}

#[test]
fn a_killed_daemons_copy_of_this_boot_is_kept() {
    if !require_root() {
        return;
    }
    let s = Stack::new();
    let mut d = s.mount(true, &[]);
    drop(append(&s.merged().join("big"), b"kept"));
    assert!(s.is_marked("big"));
    d.kill();
    let d = s.mount(false, &[]);
    assert_eq!(
        fs::read(s.merged().join("big")).unwrap(),
        with_tail(b"kept")
    );
    assert!(!s.is_marked("big"), "adopted copy still marked");
    drop(d);
}

#[test]
fn an_unsynced_copy_from_before_a_reboot_is_removed() {
    if !require_root() {
        return;
    }
    let s = Stack::new();
    // What a power loss can leave: the copy in place, marked, its data cut short.
    let ino = fs::metadata(s.lower().join("big")).unwrap();
    let partial = &lower_big()[..4096];
    fs::write(s.upper().join("big"), partial).unwrap();
    let record = format!(
        "{}:{} unsynced 00000000-0000-0000-0000-000000000000",
        std::os::unix::fs::MetadataExt::dev(&ino),
        std::os::unix::fs::MetadataExt::ino(&ino)
    );
    sys::lsetxattr(&s.upper().join("big"), ORIGIN, record.as_bytes(), 0).unwrap();
    let d = s.mount(false, &[]);
    assert_eq!(fs::read(s.merged().join("big")).unwrap(), lower_big());
    assert!(
        !s.upper().join("big").exists(),
        "partial copy left in the upper"
    );
    // The name works as any lower file: a new copy-up.
    drop(append(&s.merged().join("big"), b"again"));
    assert_eq!(
        fs::read(s.merged().join("big")).unwrap(),
        with_tail(b"again")
    );
    drop(d);
    assert_eq!(fs::read(s.lower().join("big")).unwrap(), lower_big());
}

#[test]
fn inline_sync_never_marks() {
    if !require_root() {
        return;
    }
    let s = Stack::new();
    let d = s.mount(true, &["-o", "copy_up_sync=inline"]);
    drop(append(&s.merged().join("big"), b"i"));
    let record = s.record("big").expect("origin recorded");
    assert!(!record.contains("unsynced"), "record: {record}");
    assert!(stats(&s.merged()).contains("copy_ups_synced_inline: 1"));
    drop(d);
}
