//! The mount table as the tests see it: what is mounted where (read from
//! `/proc/self/mountinfo`), waiting for a FUSE mount to appear, and taking mounts down again,
//! politely or, for a dead daemon or a busy mount, lazily. Also a small tmpfs for tests that
//! need a filesystem that fills up.
//!
//! Invariant: every way of unmounting here ends with nothing mounted at the path, falling back
//! to a lazy unmount, so a test never leaves a mount behind for the next one to trip over.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::Backend;

/// How long a daemon may take to mount: generous, since 1,000 layers or a loaded machine slow
/// the start down, and a daemon that dies is noticed at once anyway.
const MOUNT_WAIT: Duration = Duration::from_secs(60);

/// Decodes the octal escapes (`\040`) mountinfo uses for blanks in paths.
fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let s = std::str::from_utf8(&b[i + 1..i + 4]).unwrap();
            out.push(u8::from_str_radix(s, 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Mount points and filesystem types, in mount order.
fn mount_table() -> Vec<(Vec<u8>, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut table = Vec::new();
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() > sep + 1 && fields.len() > 4 {
            table.push((unescape_mountinfo(fields[4]), fields[sep + 1].to_string()));
        }
    }
    table
}

/// The filesystem type mounted exactly at `path`, if any (the last mount there wins).
pub fn mounted_fstype(path: &Path) -> Option<String> {
    let want = path.as_os_str().as_bytes();
    mount_table()
        .into_iter()
        .rev()
        .find(|(point, _)| point == want)
        .map(|(_, fstype)| fstype)
}

pub fn is_mounted(path: &Path) -> bool {
    mounted_fstype(path).is_some()
}

/// True when something is mounted at `dir` or anywhere below it.
pub fn is_mounted_below(dir: &Path) -> bool {
    mount_table()
        .iter()
        .any(|(point, _)| Path::new(std::ffi::OsStr::from_bytes(point)).starts_with(dir))
}

/// Polls until a FUSE mount appears at `merged`; fails early when the daemon exits.
pub fn wait_for_mount(merged: &Path, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + MOUNT_WAIT;
    loop {
        if let Some(t) = mounted_fstype(merged) {
            if t.starts_with("fuse") {
                return Ok(());
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("daemon exited with {status} before mounting"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no FUSE mount in /proc/self/mountinfo after {MOUNT_WAIT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Unmounts: `fusermount3 -u` for FUSE, `umount` for the kernel, then a lazy umount as the
/// fallback so a busy or dead mount never outlives the test.
pub fn unmount(merged: &Path, b: Backend) {
    if !is_mounted(merged) {
        return;
    }
    let first = match b {
        Backend::UnionFs => Command::new("fusermount3").arg("-u").arg(merged).output(),
        Backend::Kernel => Command::new("umount").arg(merged).output(),
    };
    let ok = first.map(|o| o.status.success()).unwrap_or(false);
    if !ok || is_mounted(merged) {
        eprintln!("unmount of {} failed; lazy umount", merged.display());
        let _ = Command::new("umount").arg("-l").arg(merged).status();
    }
}

/// umount(2), lazily when that fails: the way to take down the mount of a daemon killed on
/// purpose, where files may still be open on it (root only).
pub fn detach(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: NUL-terminated path.
    unsafe {
        if libc::umount2(c.as_ptr(), 0) != 0 {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// A tmpfs of a fixed size (root only), unmounted on drop: a filesystem a test can fill up.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=`, e.g. `8m`) on the directory `path`.
    pub fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("mount -t tmpfs failed: {status}"));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if is_mounted(&self.path) {
            detach(&self.path);
        }
    }
}
