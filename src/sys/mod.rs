//! The only place that talks to the kernel about files.
//!
//! Every access to a layer goes through a directory fd and a path *relative* to it, resolved by
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` or by a `*at()` call on one final name with
//! `AT_SYMLINK_NOFOLLOW`. So a symlink inside a layer is never followed by the daemon and no
//! request can escape its layer, whatever the layer holds. Absolute path strings are never built
//! (the one exception, `/proc/self/fd/N/name` for xattrs of symlinks, names an fd, not a path).
//!
//! Errors are plain `Errno`s: the request path turns them into FUSE replies unchanged.

pub mod copy;
pub mod xattr;
mod xattrat;

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

pub use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, Stat};
pub use rustix::io::Errno;

/// Result of a system call on the request path.
pub type SysResult<T> = Result<T, Errno>;

/// The longest path the kernel accepts in one call; longer relative paths are walked in pieces.
const PATH_MAX: usize = 4096;

/// Resolution rules for every multi-component walk inside a layer.
fn beneath() -> rustix::fs::ResolveFlags {
    use rustix::fs::ResolveFlags;
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// Opens `rel` (no leading `/`; empty means `root` itself) beneath `root`.
///
/// Paths longer than `PATH_MAX` are opened in pieces, each piece a directory beneath the last,
/// so deep trees work without ever following a symlink.
pub fn open_beneath(root: BorrowedFd<'_>, rel: &[u8], flags: OFlags) -> SysResult<OwnedFd> {
    let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    if rel.len() < PATH_MAX {
        return openat2_retry(root, path_or_dot(rel), flags);
    }
    let split = split_point(rel).ok_or(Errno::NAMETOOLONG)?;
    let head = openat2_retry(root, &rel[..split], OFlags::PATH | OFlags::DIRECTORY)?;
    open_beneath(head.as_fd(), &rel[split + 1..], flags)
}

/// Where to cut a long relative path: the last `/` that keeps the head under `PATH_MAX`.
fn split_point(rel: &[u8]) -> Option<usize> {
    rel[..PATH_MAX - 1].iter().rposition(|&b| b == b'/')
}

fn path_or_dot(rel: &[u8]) -> &[u8] {
    if rel.is_empty() { b"." } else { rel }
}

/// `openat2` restarts with `EAGAIN` when a rename raced with the walk; retry a few times.
fn openat2_retry(dir: BorrowedFd<'_>, path: &[u8], flags: OFlags) -> SysResult<OwnedFd> {
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(
            dir,
            OsStr::from_bytes(path),
            flags,
            Mode::empty(),
            beneath(),
        ) {
            Err(Errno::AGAIN) if tries < 8 => tries += 1,
            other => return other,
        }
    }
}

/// Opens a directory beneath `root` as an `O_PATH` handle for further `*at()` calls.
pub fn open_dir_path(root: BorrowedFd<'_>, rel: &[u8]) -> SysResult<OwnedFd> {
    open_beneath(root, rel, OFlags::PATH | OFlags::DIRECTORY)
}

/// Opens a directory beneath `root` for reading its entries. `O_NOATIME` keeps listing a lower
/// from touching it (as kernel overlayfs opens every real file); only the owner or a holder of
/// CAP_FOWNER may ask for it, so others fall back to a plain open.
pub fn open_dir_read(root: BorrowedFd<'_>, rel: &[u8]) -> SysResult<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY;
    match open_beneath(root, rel, flags | OFlags::NOATIME) {
        Err(Errno::PERM) => open_beneath(root, rel, flags),
        other => other,
    }
}

/// A readable fd of the directory an `O_PATH` fd names (for getdents), without a path walk.
pub fn reopen_dir_read(dir: BorrowedFd<'_>) -> SysResult<OwnedFd> {
    open_at_noatime(dir, OsStr::new("."), OFlags::RDONLY | OFlags::DIRECTORY)
}

/// `open_at` with `O_NOATIME`, so reading a lower never moves its atime (kernel overlayfs
/// opens every real file so). Only the owner or a holder of CAP_FOWNER may ask for it; for
/// others it falls back to a plain open.
pub fn open_at_noatime(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlags) -> SysResult<OwnedFd> {
    match open_at(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => open_at(dir, name, flags, Mode::empty()),
        other => other,
    }
}

/// Opens, with `flags`, the object an `O_PATH` fd holds, even when it has no name left: through
/// its `/proc/self/fd` link (an fd, not a path in a layer), which the kernel follows to the
/// object itself. O_NOATIME as in `open_at_noatime`.
pub fn reopen_fd(fd: BorrowedFd<'_>, flags: OFlags) -> SysResult<OwnedFd> {
    use std::os::fd::AsRawFd;
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let open = |flags: OFlags| {
        rustix::fs::openat(
            rustix::fs::CWD,
            &link,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    match open(flags | OFlags::NOATIME) {
        Err(Errno::PERM) => open(flags),
        other => other,
    }
}

/// Fds the fd table is sized for at start (the directory fd cache plus open files).
const FD_TABLE_RESERVE: u64 = 4096;

/// Raises the soft limit on open fds to the hard limit: the daemon caches directory fds and
/// holds one per open file, and the default soft limit (1024) is small for that.
///
/// Then sizes the fd table once, while the process is still single-threaded: growing it later,
/// with the worker threads sharing it, waits for an RCU grace period each time (expand_fdtable),
/// which stalled the first lookups of a deep stack by ~10 ms as the cache filled.
pub fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    let current = getrlimit(Resource::Nofile)
        .current
        .unwrap_or(FD_TABLE_RESERVE);
    let top = FD_TABLE_RESERVE.min(current).saturating_sub(1);
    if let Ok(probe) = rustix::fs::open("/", OFlags::PATH | OFlags::CLOEXEC, Mode::empty()) {
        // The duplicate is closed at once; the table keeps its size.
        let _ = rustix::io::fcntl_dupfd_cloexec(&probe, top as i32);
    }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<Stat> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

/// `fstat` of an fd (also works on `O_PATH` fds).
pub fn stat_fd(fd: BorrowedFd<'_>) -> SysResult<Stat> {
    rustix::fs::fstat(fd)
}

/// Like `stat_at` but absent names are `None` instead of an error.
pub fn stat_at_opt(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<Option<Stat>> {
    match stat_at(dir, name) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens one name in `dir` without following a symlink in it.
pub fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlags, mode: Mode) -> SysResult<OwnedFd> {
    rustix::fs::openat(dir, name, flags | OFlags::CLOEXEC | OFlags::NOFOLLOW, mode)
}

pub fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: Mode) -> SysResult<()> {
    rustix::fs::mkdirat(dir, name, mode)
}

pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    rustix::fs::unlinkat(dir, name, AtFlags::empty())
}

pub fn rmdir_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

pub fn symlink_at(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    rustix::fs::symlinkat(target, dir, name)
}

pub fn readlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<Vec<u8>> {
    rustix::fs::readlinkat(dir, name, Vec::new()).map(|c| c.into_bytes())
}

/// Hard link without following a symlink at the source.
pub fn link_at(
    old_dir: BorrowedFd<'_>,
    old: &OsStr,
    new_dir: BorrowedFd<'_>,
    new: &OsStr,
) -> SysResult<()> {
    rustix::fs::linkat(old_dir, old, new_dir, new, AtFlags::empty())
}

/// `renameat2` with flags (`NOREPLACE`, `EXCHANGE`, `WHITEOUT`).
pub fn rename_at(
    old_dir: BorrowedFd<'_>,
    old: &OsStr,
    new_dir: BorrowedFd<'_>,
    new: &OsStr,
    flags: RenameFlags,
) -> SysResult<()> {
    rustix::fs::renameat_with(old_dir, old, new_dir, new, flags)
}

/// `mknodat` for fifos, sockets and device nodes (the caller has refused whiteout forgeries).
pub fn mknod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> SysResult<()> {
    let kind = rustix::fs::FileType::from_raw_mode(mode);
    let perm = Mode::from_raw_mode(mode & 0o7777);
    rustix::fs::mknodat(dir, name, kind, perm, rdev)
}

/// Creates a kernel-overlayfs whiteout: a character device with device number 0/0.
pub fn mknod_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    rustix::fs::mknodat(
        dir,
        name,
        rustix::fs::FileType::CharacterDevice,
        Mode::empty(),
        0,
    )
}

/// Sets permission bits of one name without following a symlink (symlinks have none to set).
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> SysResult<()> {
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777))
}

/// `fchownat(AT_SYMLINK_NOFOLLOW)`; `None` leaves that id alone.
pub fn chown_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    uid: Option<u32>,
    gid: Option<u32>,
) -> SysResult<()> {
    let uid = uid.map(rustix::fs::Uid::from_raw);
    let gid = gid.map(rustix::fs::Gid::from_raw);
    rustix::fs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
}

/// `utimensat(AT_SYMLINK_NOFOLLOW)` with the raw timespecs (`UTIME_NOW`/`UTIME_OMIT` allowed).
pub fn utimens_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    times: &rustix::fs::Timestamps,
) -> SysResult<()> {
    rustix::fs::utimensat(dir, name, times, AtFlags::SYMLINK_NOFOLLOW)
}

pub fn truncate_fd(fd: BorrowedFd<'_>, size: u64) -> SysResult<()> {
    rustix::fs::ftruncate(fd, size)
}

pub fn fsync_fd(fd: BorrowedFd<'_>, data_only: bool) -> SysResult<()> {
    if data_only {
        rustix::fs::fdatasync(fd)
    } else {
        rustix::fs::fsync(fd)
    }
}

pub fn statvfs_fd(fd: BorrowedFd<'_>) -> SysResult<rustix::fs::StatVfs> {
    rustix::fs::fstatvfs(fd)
}

/// Positional read; a short read only at end of file.
pub fn pread_full(fd: BorrowedFd<'_>, buf: &mut [u8], mut offset: u64) -> SysResult<usize> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(fd, &mut buf[done..], offset) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                offset += n as u64;
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Positional write of the whole buffer.
pub fn pwrite_full(fd: BorrowedFd<'_>, buf: &[u8], mut offset: u64) -> SysResult<usize> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pwrite(fd, &buf[done..], offset) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => {
                done += n;
                offset += n as u64;
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// One entry of a raw directory listing.
pub struct RawDirEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    pub file_type: rustix::fs::FileType,
}

/// Reads every entry of an open directory, `.` and `..` left out.
pub fn read_dir_entries(dir: OwnedFd) -> SysResult<Vec<RawDirEntry>> {
    let mut reader = rustix::fs::Dir::read_from(&dir)?;
    let mut out = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push(RawDirEntry {
            name: name.to_vec(),
            ino: entry.ino(),
            file_type: entry.file_type(),
        });
    }
    Ok(out)
}

/// The process's effective uid (root mounts chown new files to the caller).
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Sets the process umask; the daemon runs with 0 so the kernel-supplied mode is applied as is.
pub fn set_umask(mask: u32) {
    rustix::process::umask(Mode::from_raw_mode(mask));
}

/// True when `fd` refers to a directory.
pub fn is_dir_stat(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// A borrowed fd from an owned one, for brevity at call sites.
pub fn fd(owned: &OwnedFd) -> BorrowedFd<'_> {
    owned.as_fd()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_point_keeps_head_under_path_max() {
        let mut rel = Vec::new();
        while rel.len() < 6000 {
            rel.extend_from_slice(b"abcdefghij/");
        }
        let cut = split_point(&rel).unwrap();
        assert!(cut < PATH_MAX);
        assert_eq!(rel[cut], b'/');
    }

    #[test]
    fn long_paths_open_in_pieces() {
        let tmp = tempfile::tempdir().unwrap();
        let root =
            rustix::fs::open(tmp.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let name = "d".repeat(200);
        let mut rel = Vec::new();
        let mut dir = open_dir_path(root.as_fd(), b"").unwrap();
        for _ in 0..30 {
            mkdir_at(dir.as_fd(), OsStr::new(&name), Mode::from_raw_mode(0o755)).unwrap();
            dir = open_at(
                dir.as_fd(),
                OsStr::new(&name),
                OFlags::PATH | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .unwrap();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
        }
        assert!(rel.len() > PATH_MAX);
        let deep = open_dir_path(root.as_fd(), &rel).unwrap();
        let a = stat_fd(deep.as_fd()).unwrap();
        let b = stat_fd(dir.as_fd()).unwrap();
        assert_eq!(a.st_ino, b.st_ino);
    }

    #[test]
    fn symlinks_are_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", tmp.path().join("link")).unwrap();
        std::os::unix::fs::symlink("/etc", tmp.path().join("escape")).unwrap();
        let root =
            rustix::fs::open(tmp.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        assert!(open_dir_path(root.as_fd(), b"link").is_err());
        assert!(open_dir_path(root.as_fd(), b"escape/ssl").is_err());
        assert!(open_dir_path(root.as_fd(), b"../").is_err());
        assert!(open_dir_path(root.as_fd(), b"real").is_ok());
    }
}
