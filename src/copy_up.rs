//! Copy-up: bringing an object from a lower layer into the upper before it is changed.
//!
//! The ladder, each rung a small function:
//! 1. ancestors first, top-down (each one is itself a copy-up of a directory);
//! 2. build the copy under a temporary name in the work directory (same filesystem as the upper);
//! 3. data first (reflink, else `copy_file_range` over data segments: holes stay holes), only the
//!    bytes that will survive (`O_TRUNC` copies none);
//! 4. metadata: xattrs (minus private ones), owner, the `origin` record (the identity, so the
//!    inode number survives; and the unsynced mark, see `durability`), mode, times;
//! 5. `renameat2(NOREPLACE)` into place, the data synced first unless it is marked unsynced (then
//!    a background sync follows) or the mount is volatile. A failure at any rung removes the
//!    temporary: the upper is exactly as before, and nobody ever sees a partial file under the
//!    real name, even after a crash (stale temporaries are removed at the next mount, unsynced
//!    copies judged when looked up).
//!
//! Exactly once per object: `Node::copy_up_lock` serialises racing threads and the second one
//! finds the work done. Locks are taken child before ancestor, never the reverse, and no
//! `dir_lock` is taken while a copy-up lock is held (see `fs` for the whole order).
//! Kernel analog: `fs/overlayfs/copy_up.c`.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Instant;

use crate::config::CopyUpSync;
use crate::durability::OriginRecord;
use crate::inode::{Kind, Node, Placement};
use crate::layers::{LayerIdx, remove_tree};
use crate::sys::copy::CopyMethod;
use crate::sys::{self, Errno, Mode, OFlags, Stat, SysResult};
use crate::union::Union;
use crate::whiteout;

/// How much file data the copy needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyUpData {
    Full,
    /// Only the first N bytes: the caller truncates to N right after (`O_TRUNC` is 0).
    Truncated(u64),
}

/// The source of one copy-up.
struct Source<'a> {
    dir: BorrowedFd<'a>,
    name: &'a OsStr,
    stat: Stat,
    layer: LayerIdx,
}

impl Union {
    /// Makes sure `node` lives in the upper layer. A no-op when it already does.
    pub fn copy_up(&self, node: &Arc<Node>, data: CopyUpData) -> SysResult<()> {
        let upper = self.upper_idx()?;
        if node.layer() == upper {
            return Ok(());
        }
        let _exclusive = node.copy_up_lock.lock();
        if node.layer() == upper {
            return Ok(()); // another thread finished it while we waited
        }
        let alias = node.primary_alias().ok_or(Errno::NOENT)?;
        self.copy_up(&alias.parent, CopyUpData::Full)?;
        let started = Instant::now();
        let src_layer = node.layer();
        let (src_dir, name) = self.parent_dir_in(node, src_layer)?;
        let stat = sys::stat_at(src_dir.as_fd(), &name)?;
        // The layer changed under the mount (a directory swapped for a symlink, say): copying
        // what is there now would put another object, of another kind, under this node.
        if Kind::from_mode(stat.st_mode) != node.kind {
            return Err(Errno::STALE);
        }
        let src = Source {
            dir: src_dir.as_fd(),
            name: &name,
            stat,
            layer: src_layer,
        };
        let dst_dir = self.dir_in(&alias.parent, upper)?;
        let method = self.copy_into_place(&src, dst_dir.as_fd(), data)?;
        self.note_copied_up(node, upper);
        let bytes = if node.kind == Kind::File {
            stat.st_size as u64
        } else {
            0
        };
        self.metrics
            .record_copy_up(bytes, method == CopyMethod::Reflink, started.elapsed());
        Ok(())
    }

    /// Rungs 2-5: build in the work dir, then rename into `dst_dir`.
    fn copy_into_place(
        &self,
        src: &Source<'_>,
        dst_dir: BorrowedFd<'_>,
        data: CopyUpData,
    ) -> SysResult<CopyMethod> {
        let work = self.stack.work()?;
        let wfd = work.fd.as_fd();
        let tmp = work.temp_name();
        // The copy keeps the origin's number, but one without a recorded origin (a lower file
        // with other links, or where the xattr cannot be written) shows its own after a new
        // lookup: it must not take a number the kernel still holds (see `parking`).
        let made = self.make_unheld(wfd, &tmp, || make_empty(src, wfd, &tmp))?;
        let mut unsynced = None;
        let built = self
            .fill_object(src, made, data)
            .and_then(|(method, copy)| {
                unsynced = self.copy_metadata(src, wfd, &tmp, copy)?;
                Ok(method)
            });
        let committed = built.and_then(|method| {
            sys::rename_at(wfd, &tmp, dst_dir, src.name, sys::RenameFlags::NOREPLACE)
                .map(|()| method)
        });
        if committed.is_err() {
            let _ = remove_tree(wfd, &tmp);
        } else if let Some((ino, fd, record)) = unsynced {
            // In place and marked: from here the syncer (or an fsync) finishes the job.
            self.durability.enqueue(ino, fd, record);
        }
        committed
    }

    /// Copies the data into the new object (a file comes with its fd; others have none). The fd
    /// comes back when the copy has data that must still reach the disk.
    fn fill_object(
        &self,
        src: &Source<'_>,
        made: Option<OwnedFd>,
        data: CopyUpData,
    ) -> SysResult<(CopyMethod, Option<OwnedFd>)> {
        let Some(dst) = made else {
            return Ok((CopyMethod::Empty, None));
        };
        let size = src.stat.st_size as u64;
        let len = match data {
            CopyUpData::Full => size,
            CopyUpData::Truncated(n) => n.min(size),
        };
        if len == 0 {
            return Ok((CopyMethod::Empty, None));
        }
        let input = open_source(src)?;
        let sync = self.opts.copy_up_sync;
        // Writeback started chunk by chunk overlaps the copy only when we wait for it here.
        let inline = sync == CopyUpSync::Inline;
        let method = sys::copy::copy_data(input.as_fd(), dst.as_fd(), len, inline)?;
        Ok((method, sync.syncs().then_some(dst)))
    }

    /// Rung 4: owner, xattrs, origin record, mode, times, in that order (chown(2) drops
    /// `security.capability` and set-id bits, so xattrs and mode come after it; the record
    /// before the mode, which may forbid an unprivileged daemon to write xattrs; times last
    /// because the other steps touch ctime only). Data still to be synced is synced here, or
    /// marked unsynced: then the copy's fd and record come back for the syncer.
    fn copy_metadata(
        &self,
        src: &Source<'_>,
        work: BorrowedFd<'_>,
        tmp: &OsStr,
        unsynced_data: Option<OwnedFd>,
    ) -> SysResult<Option<(u64, OwnedFd, OriginRecord)>> {
        let kind = Kind::from_mode(src.stat.st_mode);
        self.copy_owner(src, work, tmp)?;
        self.copy_xattrs(src, work, tmp)?;
        let mark = unsynced_data
            .as_ref()
            .and_then(|_| self.durability.unsynced_mark(src.stat.st_mode));
        let record = OriginRecord {
            identity: self.origin_identity(src, kind),
            unsynced_boot: mark,
        };
        let marked = self.write_origin(work, tmp, &record) && record.unsynced_boot.is_some();
        let deferred = match unsynced_data {
            // Known before the rename, so nothing can fail between the rename and the queue.
            Some(fd) if marked => Some((sys::stat_fd(fd.as_fd())?.st_ino, fd, record)),
            Some(fd) => {
                sys::fsync_fd(fd.as_fd(), true)?;
                self.durability.note_synced_inline();
                None
            }
            None => None,
        };
        if kind != Kind::Symlink {
            rustix::fs::chmodat(
                work,
                tmp,
                Mode::from_raw_mode(src.stat.st_mode & 0o7777),
                sys::AtFlags::empty(),
            )?;
        }
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: src.stat.st_atime,
                tv_nsec: src.stat.st_atime_nsec as _,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: src.stat.st_mtime,
                tv_nsec: src.stat.st_mtime_nsec as _,
            },
        };
        sys::utimens_at(work, tmp, &times)?;
        Ok(deferred)
    }

    fn copy_xattrs(&self, src: &Source<'_>, work: BorrowedFd<'_>, tmp: &OsStr) -> SysResult<()> {
        let names = match sys::xattr::list(src.dir, src.name) {
            Ok(n) => n,
            Err(Errno::NOTSUP) | Err(Errno::PERM) | Err(Errno::ACCESS) => return Ok(()),
            Err(e) => return Err(e),
        };
        for key in names
            .iter()
            .filter(|k| !whiteout::is_private_xattr(k.as_bytes()))
        {
            let Some(value) = sys::xattr::get_opt(src.dir, src.name, key)? else {
                continue;
            };
            match sys::xattr::set(work, tmp, key, &value, sys::xattr::XattrFlags::empty()) {
                Ok(()) => {}
                // Namespaces we may not write (trusted.*, security.* unprivileged; user.* on
                // symlinks) are dropped, as kernel overlayfs drops what the upper cannot hold.
                Err(Errno::PERM) | Err(Errno::NOTSUP) | Err(Errno::ACCESS)
                    if !key.as_bytes().starts_with(b"user.")
                        || Kind::from_mode(src.stat.st_mode) == Kind::Symlink =>
                {
                    tracing::debug!(?key, "xattr not copied up");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn copy_owner(&self, src: &Source<'_>, work: BorrowedFd<'_>, tmp: &OsStr) -> SysResult<()> {
        match sys::chown_at(work, tmp, Some(src.stat.st_uid), Some(src.stat.st_gid)) {
            Ok(()) => Ok(()),
            // Unprivileged: the copy stays ours; the lower owner cannot be reproduced.
            Err(Errno::PERM) | Err(Errno::INVAL) if !self.chown_new => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The identity the copy keeps, if it may: like the kernel without an inode index, a lower
    /// file with other hard links keeps its number only for this mount. Recorded, the copy
    /// would share it after a remount with the links still in the lower, which then show other
    /// data under the same st_ino.
    fn origin_identity(&self, src: &Source<'_>, kind: Kind) -> Option<(u64, u64)> {
        (kind != Kind::Dir && src.stat.st_nlink == 1)
            .then(|| (self.stack.get(src.layer).dev, src.stat.st_ino))
    }

    /// Records the object's identity (so its inode number survives copy-up and remounts) and
    /// the unsynced mark; whether it was written. Best effort for the identity: a symlink
    /// cannot carry `user.` xattrs, and then only this mount remembers.
    fn write_origin(&self, work: BorrowedFd<'_>, tmp: &OsStr, record: &OriginRecord) -> bool {
        if record.identity.is_none() && record.unsynced_boot.is_none() {
            return false;
        }
        let key = self.stack.format.origin_xattr();
        let flags = sys::xattr::XattrFlags::empty();
        match sys::xattr::set(work, tmp, &key, &record.encode(), flags) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "origin not recorded");
                false
            }
        }
    }

    /// The node now lives in the upper: directories gain the upper as their top layer.
    fn note_copied_up(&self, node: &Node, upper: LayerIdx) {
        let old = node.placement();
        let mut dir_layers = old.dir_layers;
        if node.kind.is_dir() && !dir_layers.contains(&upper) {
            dir_layers.insert(0, upper);
        }
        node.set_placement(Placement {
            layer: upper,
            dir_layers,
        });
        self.index.drop_dir_names(node.ino); // it now has an upper layer its names never saw
        self.invalidate_aliases(node);
    }
}

/// Creates the object itself, empty, at `work/tmp` (files come back open for the data).
fn make_empty(src: &Source<'_>, work: BorrowedFd<'_>, tmp: &OsStr) -> SysResult<Option<OwnedFd>> {
    match Kind::from_mode(src.stat.st_mode) {
        Kind::File => sys::open_at(
            work,
            tmp,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY,
            Mode::from_raw_mode(0o600),
        )
        .map(Some),
        Kind::Dir => sys::mkdir_at(work, tmp, Mode::from_raw_mode(0o700)).map(|()| None),
        Kind::Symlink => {
            let target = sys::readlink_at(src.dir, src.name)?;
            sys::symlink_at(OsStr::from_bytes(&target), work, tmp).map(|()| None)
        }
        _ => sys::mknod_at(
            work,
            tmp,
            src.stat.st_mode & !0o7777 | 0o600,
            src.stat.st_rdev,
        )
        .map(|()| None),
    }
}

/// Opens the source file for reading without moving its atime where we may avoid it.
fn open_source(src: &Source<'_>) -> SysResult<OwnedFd> {
    sys::open_at_noatime(src.dir, src.name, OFlags::RDONLY)
}
