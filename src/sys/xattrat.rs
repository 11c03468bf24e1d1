//! The `*xattrat` system calls (Linux 6.13+): extended attributes of a name relative to a
//! directory fd, with `AT_SYMLINK_NOFOLLOW`.
//! One syscall instead of a walk through `/proc/self/fd`. Older kernels answer ENOSYS; the
//! caller then falls back to the `/proc` path (see `xattr`) and stops trying.
//!
//! rustix and libc do not wrap these yet, so this is the one file with raw syscalls; every
//! pointer handed to the kernel outlives the call and every length matches its buffer.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Errno, SysResult};

// The generic syscall table: the same numbers on every architecture for calls added after 5.1.
const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;
const SYS_REMOVEXATTRAT: libc::c_long = 466;

/// `struct xattr_args` of the uapi.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// Cleared the first time the kernel says ENOSYS.
static AVAILABLE: AtomicBool = AtomicBool::new(true);

pub fn available() -> bool {
    AVAILABLE.load(Ordering::Relaxed)
}

/// Path and flags for "this name in dir, not followed". An empty name means the directory
/// itself, reached as `.`: `AT_EMPTY_PATH` would need an fd that is not `O_PATH` (EBADF).
fn target(name: &OsStr) -> SysResult<(CString, libc::c_uint)> {
    let bytes = if name.is_empty() {
        b".".as_slice()
    } else {
        name.as_bytes()
    };
    let path = CString::new(bytes).map_err(|_| Errno::INVAL)?;
    Ok((path, libc::AT_SYMLINK_NOFOLLOW as libc::c_uint))
}

fn cstr(key: &OsStr) -> SysResult<CString> {
    CString::new(key.as_bytes()).map_err(|_| Errno::INVAL)
}

fn result(ret: libc::c_long) -> SysResult<usize> {
    if ret >= 0 {
        return Ok(ret as usize);
    }
    let e = Errno::from_raw_os_error(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    );
    if e == Errno::NOSYS {
        AVAILABLE.store(false, Ordering::Relaxed);
    }
    Err(e)
}

/// `getxattrat`: the value's length, copied into `buf` unless `buf` is empty (size query).
pub fn get(dir: BorrowedFd<'_>, name: &OsStr, key: &OsStr, buf: &mut [u8]) -> SysResult<usize> {
    let (path, flags) = target(name)?;
    let key = cstr(key)?;
    let args = XattrArgs {
        value: buf.as_mut_ptr() as u64,
        size: buf.len() as u32,
        flags: 0,
    };
    // SAFETY: all pointers are valid for the call; `args.value`/`size` describe `buf`.
    let ret = unsafe {
        libc::syscall(
            SYS_GETXATTRAT,
            dir.as_raw_fd(),
            path.as_ptr(),
            flags,
            key.as_ptr(),
            &args as *const XattrArgs,
            std::mem::size_of::<XattrArgs>(),
        )
    };
    result(ret)
}

/// `setxattrat` with `XATTR_CREATE`/`XATTR_REPLACE` flags.
pub fn set(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    key: &OsStr,
    value: &[u8],
    xflags: u32,
) -> SysResult<()> {
    let (path, flags) = target(name)?;
    let key = cstr(key)?;
    let args = XattrArgs {
        value: value.as_ptr() as u64,
        size: value.len() as u32,
        flags: xflags,
    };
    // SAFETY: as in `get`; the kernel only reads `value`.
    let ret = unsafe {
        libc::syscall(
            SYS_SETXATTRAT,
            dir.as_raw_fd(),
            path.as_ptr(),
            flags,
            key.as_ptr(),
            &args as *const XattrArgs,
            std::mem::size_of::<XattrArgs>(),
        )
    };
    result(ret).map(|_| ())
}

/// `listxattrat`: the list's length, copied into `buf` unless `buf` is empty.
pub fn list(dir: BorrowedFd<'_>, name: &OsStr, buf: &mut [u8]) -> SysResult<usize> {
    let (path, flags) = target(name)?;
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    let ret = unsafe {
        libc::syscall(
            SYS_LISTXATTRAT,
            dir.as_raw_fd(),
            path.as_ptr(),
            flags,
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    result(ret)
}

/// `removexattrat`.
pub fn remove(dir: BorrowedFd<'_>, name: &OsStr, key: &OsStr) -> SysResult<()> {
    let (path, flags) = target(name)?;
    let key = cstr(key)?;
    // SAFETY: both strings are NUL-terminated and live across the call.
    let ret = unsafe {
        libc::syscall(
            SYS_REMOVEXATTRAT,
            dir.as_raw_fd(),
            path.as_ptr(),
            flags,
            key.as_ptr(),
        )
    };
    result(ret).map(|_| ())
}
