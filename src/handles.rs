//! Open files and directories, and the data path (read, write, fsync, fallocate, lseek,
//! copy_file_range) that goes through them.
//!
//! A file handle holds the real fd of the layer the file was in when opened. Opening for write
//! copies the file up first, so writes only ever reach the upper. A read-only handle opened on a
//! lower file follows a later copy-up (it reopens the upper copy on its next use), as kernel
//! overlayfs does since 4.19, so every reader sees what writers wrote.
//! Directories have no handles: listings are kept by `readdir::Listings`. Kernel analog: `fs/overlayfs/file.c` (`ovl_real_fdget`).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use parking_lot::RwLock;

use crate::copy_up::CopyUpData;
use crate::inode::{Ino, Node, ROOT_INO};
use crate::layers::LayerIdx;
use crate::sys::{self, Errno, OFlags, Stat, SysResult};
use crate::union::Union;

/// A file handle number given to the kernel.
pub type Fh = u64;

/// An open regular file (or other non-directory).
#[derive(Debug)]
pub struct OpenFile {
    pub node: Arc<Node>,
    /// Open flags to reuse when the handle must follow a copy-up.
    flags: OFlags,
    real: RwLock<(LayerIdx, Arc<OwnedFd>)>,
}

impl OpenFile {
    /// The fd to use now, reopened from the upper if the file was copied up since.
    pub fn fd(&self, union: &Union) -> SysResult<Arc<OwnedFd>> {
        let (layer, fd) = self.real.read().clone();
        let now = self.node.layer();
        if now == layer || self.node.is_unlinked() {
            return Ok(fd);
        }
        let fresh = Arc::new(union.open_real(&self.node, now, self.flags & !OFlags::TRUNC)?);
        *self.real.write() = (now, fresh.clone());
        Ok(fresh)
    }
}

#[derive(Debug, Default)]
pub struct Handles {
    files: DashMap<Fh, Arc<OpenFile>>,
    next: AtomicU64,
}

impl Handles {
    fn next_fh(&self) -> Fh {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn file(&self, fh: Fh) -> SysResult<Arc<OpenFile>> {
        self.files.get(&fh).map(|f| f.clone()).ok_or(Errno::BADF)
    }

    pub fn release_file(&self, fh: Fh) {
        self.files.remove(&fh);
    }

    /// The open file `fh` if it belongs to node `ino`, else any open file of that node.
    pub fn open_file_of(&self, ino: Ino, fh: Option<Fh>) -> Option<Arc<OpenFile>> {
        if let Some(file) = fh.and_then(|fh| self.file(fh).ok()) {
            if file.node.ino == ino {
                return Some(file);
            }
        }
        self.files
            .iter()
            .find(|f| f.node.ino == ino)
            .map(|f| f.clone())
    }

    /// `fstat` through any open handle of an unlinked node (nothing else reaches it).
    pub fn stat_open_file(&self, ino: Ino) -> Option<Stat> {
        let file = self.files.iter().find(|f| f.node.ino == ino)?.clone();
        let fd = file.real.read().1.clone();
        sys::stat_fd(fd.as_fd()).ok()
    }
}

/// Open flags the real file is opened with; creation flags were handled before. O_DIRECT stays
/// out: the kernel already bypasses the page cache on the FUSE side for such opens, and the
/// daemon's own buffers are not aligned as O_DIRECT on the real file would demand (EINVAL).
fn real_open_flags(flags: i32) -> OFlags {
    let keep = libc::O_ACCMODE | libc::O_NONBLOCK | libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME;
    OFlags::from_bits_retain((flags & keep) as u32)
}

fn wants_write(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

impl Union {
    /// Opens a node's object in `layer` without following symlinks.
    pub fn open_real(&self, node: &Node, layer: LayerIdx, flags: OFlags) -> SysResult<OwnedFd> {
        let (dir, name) = self.parent_dir_in(node, layer)?;
        sys::open_at_noatime(dir.as_fd(), &name, flags)
    }

    /// `open(2)`: copies up first when the open may write.
    pub fn open(&self, ino: Ino, flags: i32) -> SysResult<Fh> {
        let node = self.node(ino)?;
        if node.kind.is_dir() {
            // The kernel opens directories with OPENDIR: an OPEN naming a directory node means
            // the file it meant was removed and its inode number went to a new directory.
            // ESTALE makes the VFS look the name up again and retry.
            return Err(Errno::STALE);
        }
        if wants_write(flags) {
            if self.read_only() {
                return Err(Errno::ROFS);
            }
            let data = if flags & libc::O_TRUNC != 0 {
                CopyUpData::Truncated(0)
            } else {
                CopyUpData::Full
            };
            self.copy_up(&node, data)?;
        }
        let layer = node.layer();
        let oflags = real_open_flags(flags)
            | if flags & libc::O_TRUNC != 0 {
                OFlags::TRUNC
            } else {
                OFlags::empty()
            };
        let fd = self.open_current(&node, layer, oflags)?;
        if flags & (libc::O_SYNC | libc::O_DSYNC) != 0 && self.stack.is_upper(layer) {
            // Synchronous writes may bypass us (passthrough): make the copy-up durable first.
            self.durability.settle_fd(fd.as_fd())?;
        }
        Ok(self.insert_file(node, oflags, layer, fd))
    }

    /// Opens what `node` stands for *now*. A rename or unlink in the node's directory changes
    /// the layer first and the node's alias after, both under the directory's `dir_lock`;
    /// opening by path in between would reach the object that just took the name (the kernel
    /// then reads it with the old inode's size: torn reads; `O_TRUNC` truncates the wrong file).
    /// So the path is resolved and opened under that lock. A node whose name went away, or
    /// whose path no longer resolves (an ancestor moved meanwhile), gives ESTALE: the kernel
    /// then walks the path again and retries the open once, as for any stale dentry.
    ///
    /// A node whose name a rename gave to another object while the kernel held it opens the
    /// object kept for it (see `parking`), as kernel overlayfs opens the real inode it holds.
    fn open_current(&self, node: &Node, layer: LayerIdx, flags: OFlags) -> SysResult<OwnedFd> {
        let opened = self.with_name_pinned(node, || match self.open_real(node, layer, flags) {
            Err(Errno::NOENT) => Err(Errno::STALE),
            other => other,
        });
        match opened {
            Err(Errno::STALE) if node.is_unlinked() => self.reopen_pinned(node, flags),
            other => other,
        }
    }

    /// Runs `f` holding the lock of the directory containing `node`'s name, so the name keeps
    /// leading to the node's object while `f` works on it by path (see `open_current`); ESTALE
    /// when the node has no name any more or it moved while we waited. The root has no parent
    /// and never moves: nothing to hold. Lock order: a `dir_lock`, so never call this while
    /// holding a `copy_up_lock` or another `dir_lock`.
    pub fn with_name_pinned<T>(
        &self,
        node: &Node,
        f: impl FnOnce() -> SysResult<T>,
    ) -> SysResult<T> {
        if node.ino == ROOT_INO {
            return f();
        }
        let alias = node.primary_alias().ok_or(Errno::STALE)?;
        let _ns = alias.parent.dir_lock.lock();
        let unchanged = node
            .primary_alias()
            .is_some_and(|a| a.parent.ino == alias.parent.ino && a.name == alias.name);
        if !unchanged {
            return Err(Errno::STALE);
        }
        f()
    }

    /// Registers an fd already opened (by `open` or `create`).
    pub fn insert_file(&self, node: Arc<Node>, flags: OFlags, layer: LayerIdx, fd: OwnedFd) -> Fh {
        let fh = self.handles.next_fh();
        let file = OpenFile {
            node,
            flags,
            real: RwLock::new((layer, Arc::new(fd))),
        };
        self.handles.files.insert(fh, Arc::new(file));
        fh
    }

    pub fn read(&self, fh: Fh, offset: u64, size: u32) -> SysResult<Vec<u8>> {
        let fd = self.handles.file(fh)?.fd(self)?;
        let mut buf = vec![0u8; size as usize];
        let n = sys::pread_full(fd.as_fd(), &mut buf, offset)?;
        buf.truncate(n);
        Ok(buf)
    }

    pub fn write(&self, fh: Fh, offset: u64, data: &[u8]) -> SysResult<usize> {
        let fd = self.handles.file(fh)?.fd(self)?;
        sys::pwrite_full(fd.as_fd(), data, offset)
    }

    pub fn fsync(&self, fh: Fh, data_only: bool) -> SysResult<()> {
        let fd = self.handles.file(fh)?.fd(self)?;
        sys::fsync_fd(fd.as_fd(), data_only)?;
        // A fresh copy-up is whole on disk only once its unsynced mark is gone too.
        self.durability.settle_fd(fd.as_fd())
    }

    pub fn fallocate(&self, fh: Fh, offset: u64, length: u64, mode: i32) -> SysResult<()> {
        let fd = self.handles.file(fh)?.fd(self)?;
        let flags = rustix::fs::FallocateFlags::from_bits_retain(mode as u32);
        rustix::fs::fallocate(fd.as_fd(), flags, offset, length)
    }

    pub fn lseek(&self, fh: Fh, offset: i64, whence: i32) -> SysResult<i64> {
        use rustix::fs::SeekFrom;
        let fd = self.handles.file(fh)?.fd(self)?;
        let pos = match whence {
            libc::SEEK_SET => SeekFrom::Start(offset as u64),
            libc::SEEK_CUR => SeekFrom::Current(offset),
            libc::SEEK_END => SeekFrom::End(offset),
            libc::SEEK_DATA => SeekFrom::Data(offset as u64),
            libc::SEEK_HOLE => SeekFrom::Hole(offset as u64),
            _ => return Err(Errno::INVAL),
        };
        rustix::fs::seek(fd.as_fd(), pos).map(|p| p as i64)
    }

    /// In-kernel copy between two open files of the union (both real files live in layers).
    pub fn copy_file_range(
        &self,
        fh_in: Fh,
        off_in: u64,
        fh_out: Fh,
        off_out: u64,
        len: u64,
    ) -> SysResult<usize> {
        let src = self.handles.file(fh_in)?.fd(self)?;
        let dst = self.handles.file(fh_out)?.fd(self)?;
        let (mut i, mut o) = (off_in, off_out);
        let want = len.min(1 << 30) as usize;
        rustix::fs::copy_file_range(src.as_fd(), Some(&mut i), dst.as_fd(), Some(&mut o), want)
    }
}
