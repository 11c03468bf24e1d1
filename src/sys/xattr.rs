//! Extended attributes of one name inside a directory fd, never following a symlink.
//!
//! On Linux 6.13+ the `*xattrat` calls do this in one syscall (see `xattrat`). Before that,
//! `fgetxattr` refuses `O_PATH` fds, so a name is reached as `/proc/self/fd/<dirfd>/<name>`
//! with the `l*xattr` calls: the kernel resolves the magic link to the directory we already
//! hold, and the `l` variants do not follow `name`. An empty `name` means the directory itself:
//! then the magic link itself must be followed (it is our own fd, so following it cannot leave
//! the layer).
//!
//! Values are read into a small buffer first and sized with a second call only when they do
//! not fit: most xattrs are a few bytes, and a miss (ENODATA) costs one call.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use super::{Errno, SysResult};

pub use rustix::fs::XattrFlags;

/// `/proc/self/fd/<dir>/<name>`: a path that names an fd we hold, plus one final component.
fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> OsString {
    let mut path = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if !name.is_empty() {
        path.push(b'/');
        path.extend_from_slice(name.as_bytes());
    }
    OsString::from_vec(path)
}

/// `l*xattr` on a name inside the directory, the following variant on the directory itself.
fn follows(name: &OsStr) -> bool {
    name.is_empty()
}

fn query(path: &OsStr, key: &OsStr, follow: bool) -> SysResult<usize> {
    if follow {
        rustix::fs::getxattr_query(path, key)
    } else {
        rustix::fs::lgetxattr_query(path, key)
    }
}

fn read_into(path: &OsStr, key: &OsStr, buf: &mut [u8], follow: bool) -> SysResult<usize> {
    if follow {
        rustix::fs::getxattr(path, key, buf)
    } else {
        rustix::fs::lgetxattr(path, key, buf)
    }
}

/// First guess at a value's size.
const SMALL_VALUE: usize = 256;

/// Reads a whole value, growing the buffer if it changes size between the calls.
pub fn get(dir: BorrowedFd<'_>, name: &OsStr, key: &OsStr) -> SysResult<Vec<u8>> {
    if super::xattrat::available() {
        match get_at(dir, name, key) {
            Err(Errno::NOSYS) => {}
            other => return other,
        }
    }
    get_proc(dir, name, key)
}

fn get_at(dir: BorrowedFd<'_>, name: &OsStr, key: &OsStr) -> SysResult<Vec<u8>> {
    let mut buf = vec![0u8; SMALL_VALUE];
    loop {
        match super::xattrat::get(dir, name, key, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) => {
                let size = super::xattrat::get(dir, name, key, &mut [])?;
                buf = vec![0u8; size.max(1)];
            }
            Err(e) => return Err(e),
        }
    }
}

fn get_proc(dir: BorrowedFd<'_>, name: &OsStr, key: &OsStr) -> SysResult<Vec<u8>> {
    let path = proc_path(dir, name);
    loop {
        let size = query(&path, key, follows(name))?;
        let mut buf = vec![0u8; size];
        match read_into(&path, key, &mut buf[..], follows(name)) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Like `get`, but a missing attribute (or no xattr support) is `None`.
pub fn get_opt(dir: BorrowedFd<'_>, name: &OsStr, key: &OsStr) -> SysResult<Option<Vec<u8>>> {
    match get(dir, name, key) {
        Ok(v) => Ok(Some(v)),
        Err(Errno::NODATA) | Err(Errno::NOTSUP) | Err(Errno::PERM) | Err(Errno::ACCESS) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn set(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    key: &OsStr,
    value: &[u8],
    flags: XattrFlags,
) -> SysResult<()> {
    if super::xattrat::available() {
        match super::xattrat::set(dir, name, key, value, flags.bits()) {
            Err(Errno::NOSYS) => {}
            other => return other,
        }
    }
    let path = proc_path(dir, name);
    if follows(name) {
        rustix::fs::setxattr(path, key, value, flags)
    } else {
        rustix::fs::lsetxattr(path, key, value, flags)
    }
}

pub fn remove(dir: BorrowedFd<'_>, name: &OsStr, key: &OsStr) -> SysResult<()> {
    if super::xattrat::available() {
        match super::xattrat::remove(dir, name, key) {
            Err(Errno::NOSYS) => {}
            other => return other,
        }
    }
    let path = proc_path(dir, name);
    if follows(name) {
        rustix::fs::removexattr(path, key)
    } else {
        rustix::fs::lremovexattr(path, key)
    }
}

/// All attribute names of one entry.
pub fn list(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<Vec<OsString>> {
    if super::xattrat::available() {
        match list_at(dir, name) {
            Err(Errno::NOSYS) => {}
            other => return other,
        }
    }
    let path = proc_path(dir, name);
    loop {
        let size = match if follows(name) {
            rustix::fs::listxattr_query(&path)
        } else {
            rustix::fs::llistxattr_query(&path)
        } {
            Ok(n) => n,
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut buf = vec![0u8; size];
        let listed = if follows(name) {
            rustix::fs::listxattr(&path, &mut buf[..])
        } else {
            rustix::fs::llistxattr(&path, &mut buf[..])
        };
        match listed {
            Ok(n) => return Ok(split_names(&buf[..n])),
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn list_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<Vec<OsString>> {
    let mut buf = vec![0u8; SMALL_VALUE];
    loop {
        match super::xattrat::list(dir, name, &mut buf) {
            Ok(n) => return Ok(split_names(&buf[..n])),
            Err(Errno::RANGE) => {
                let size = super::xattrat::list(dir, name, &mut [])?;
                buf = vec![0u8; size.max(1)];
            }
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    }
}

/// Splits the kernel's NUL-separated name list.
pub fn split_names(raw: &[u8]) -> Vec<OsString> {
    raw.split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| OsString::from_vec(n.to_vec()))
        .collect()
}

/// Joins names back into the kernel's NUL-terminated list format.
pub fn join_names(names: &[OsString]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in names {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let names = split_names(b"user.a\0trusted.b\0");
        assert_eq!(
            names,
            vec![OsString::from("user.a"), OsString::from("trusted.b")]
        );
        assert_eq!(join_names(&names), b"user.a\0trusted.b\0");
    }
}
