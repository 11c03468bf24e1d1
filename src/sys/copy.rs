//! Moving file data between two fds inside the kernel: reflink first, then `copy_file_range`
//! over the data segments only (so holes stay holes), and a bounce buffer only when both fail
//! (for example across filesystems on old kernels).

use std::os::fd::BorrowedFd;

use rustix::fs::SeekFrom;

use super::{Errno, SysResult};

/// How the data of one copy actually moved, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    Reflink,
    CopyFileRange,
    Buffer,
    Empty,
}

/// Bytes copied between two starts of writeback (see `copy_data`).
const WRITEBACK_CHUNK: u64 = 16 << 20;

/// Copies all of `src` (of `len` bytes) into the empty file `dst`, preserving holes.
/// `will_sync`: the caller fsyncs `dst` next, so writeback of each copied chunk is started
/// at once (`sync_file_range`), and the disk writes overlap the rest of the copy instead of
/// all waiting for the fsync.
pub fn copy_data(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    len: u64,
    will_sync: bool,
) -> SysResult<CopyMethod> {
    if len == 0 {
        return Ok(CopyMethod::Empty);
    }
    if rustix::fs::ioctl_ficlone(dst, src).is_ok() {
        return Ok(CopyMethod::Reflink);
    }
    let method = copy_segments(src, dst, len, will_sync)?;
    // The last segment may end in a hole: the size must still match.
    rustix::fs::ftruncate(dst, len)?;
    Ok(method)
}

/// Walks the data segments of `src` with `SEEK_DATA`/`SEEK_HOLE` and copies each one.
fn copy_segments(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    len: u64,
    will_sync: bool,
) -> SysResult<CopyMethod> {
    let mut method = CopyMethod::CopyFileRange;
    let mut pos = 0u64;
    while pos < len {
        let start = match rustix::fs::seek(src, SeekFrom::Data(pos)) {
            Ok(p) => p,
            Err(Errno::NXIO) => break, // only a hole remains
            Err(Errno::INVAL) => pos,  // no SEEK_DATA support: treat all as data
            Err(e) => return Err(e),
        };
        let end = match rustix::fs::seek(src, SeekFrom::Hole(start)) {
            Ok(p) => p.min(len),
            Err(_) => len,
        };
        if end <= start {
            break;
        }
        read_ahead(src, start, end);
        if copy_range(src, dst, start, end, will_sync)? == CopyMethod::Buffer {
            method = CopyMethod::Buffer;
        }
        pos = end;
    }
    Ok(method)
}

/// Copies `[start, end)` at the same offsets.
fn copy_range(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    start: u64,
    end: u64,
    will_sync: bool,
) -> SysResult<CopyMethod> {
    let mut off_in = start;
    let mut off_out = start;
    while off_in < end {
        let chunk = if will_sync { WRITEBACK_CHUNK } else { 1 << 30 };
        let want = (end - off_in).min(chunk) as usize;
        let from = off_out;
        match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
            Ok(0) => return Err(Errno::IO), // the source shrank under us
            Ok(_) if will_sync => start_writeback(dst, from, off_out - from),
            Ok(_) => {}
            Err(Errno::XDEV) | Err(Errno::NOSYS) | Err(Errno::OPNOTSUPP) | Err(Errno::INVAL) => {
                bounce_copy(src, dst, off_in, end)?;
                return Ok(CopyMethod::Buffer);
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(CopyMethod::CopyFileRange)
}

/// Asks the kernel to read `[start, end)` of the source ahead of the copy. `copy_file_range`
/// reads through a small internal pipe, so left alone a cold source is read in small requests;
/// with the whole range announced the disk gets large ones (a hint: errors are ignored).
fn read_ahead(src: BorrowedFd<'_>, start: u64, end: u64) {
    use rustix::fs::{Advice, fadvise};
    let len = std::num::NonZeroU64::new(end - start);
    let _ = fadvise(src, start, len, Advice::Sequential);
    let _ = fadvise(src, start, len, Advice::WillNeed);
}

/// Starts writing `[off, off + len)` of `fd` to disk without waiting (a hint: errors are
/// left to the fsync that follows).
fn start_writeback(fd: BorrowedFd<'_>, off: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on a valid fd; no memory is passed.
    unsafe {
        libc::sync_file_range(
            fd.as_raw_fd(),
            off as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// The last resort: a userspace buffer.
fn bounce_copy(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, mut pos: u64, end: u64) -> SysResult<()> {
    let mut buf = vec![0u8; 1 << 20];
    while pos < end {
        let want = ((end - pos) as usize).min(buf.len());
        let n = super::pread_full(src, &mut buf[..want], pos)?;
        if n == 0 {
            return Err(Errno::IO);
        }
        super::pwrite_full(dst, &buf[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn sparse_file_keeps_its_holes() {
        let tmp = tempfile::tempdir().unwrap();
        let src_path = tmp.path().join("src");
        let mut src = std::fs::File::create(&src_path).unwrap();
        src.write_all(b"head").unwrap();
        src.seek(std::io::SeekFrom::Start(64 << 20)).unwrap();
        src.write_all(b"tail").unwrap();
        drop(src);
        let src = std::fs::File::open(&src_path).unwrap();
        let dst = std::fs::File::create(tmp.path().join("dst")).unwrap();
        let len = src.metadata().unwrap().len();
        copy_data(src.as_fd(), dst.as_fd(), len, true).unwrap();
        let a = std::fs::read(&src_path).unwrap();
        let b = std::fs::read(tmp.path().join("dst")).unwrap();
        assert_eq!(a, b);
        let blocks = std::fs::metadata(tmp.path().join("dst")).unwrap().blocks();
        assert!(blocks < 1024, "holes were filled: {blocks} blocks");
    }
}
