//! Attributes: what `stat` shows for a merged object, and `setattr` (chmod, chown, truncate,
//! utimens), which copies the object up first.
//!
//! `st_ino` is the node's inode number (see `inode`), never the real one. A merged directory
//! reports `st_nlink` 1, as kernel overlayfs does: counting subdirectories across layers is not
//! worth it, and 1 tells `find` not to rely on the count. An unlinked object that is still open
//! reports `st_nlink` 0. Kernel analog: `ovl_getattr`, `ovl_setattr`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use crate::copy_up::CopyUpData;
use crate::handles::Fh;
use crate::inode::{Kind, Node};
use crate::ownership::{Owner, store_override};
use crate::sys::{self, Errno, OFlags, Stat, SysResult};
use crate::union::Union;
use std::ffi::OsStr;
use std::os::fd::BorrowedFd;

/// A new time for `utimens`.
#[derive(Debug, Clone, Copy)]
pub enum NewTime {
    Now,
    At(SystemTime),
}

/// The changes of one `setattr` request.
#[derive(Debug, Default, Clone, Copy)]
pub struct AttrChanges {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<NewTime>,
    pub mtime: Option<NewTime>,
}

impl Union {
    /// `stat` of a node as the kernel should see it.
    pub fn attr_of(&self, node: &Node, st: &Stat) -> FileAttr {
        let merged_dir = node.kind.is_dir() && node.placement().dir_layers.len() > 1;
        let nlink = if node.is_unlinked() {
            0
        } else if node.kind.is_dir() && (merged_dir || self.opts.static_nlink) {
            1
        } else {
            st.st_nlink as u32
        };
        to_file_attr(node.ino, st, nlink)
    }

    pub fn getattr(&self, node: &Node) -> SysResult<FileAttr> {
        let st = self.stat_node(node)?;
        Ok(self.attr_of(node, &st))
    }

    /// `getattr` for the kernel: through the open file it names, if it names one of this
    /// node's (fstat reaches that very object, whatever a racing rename does to the name; the
    /// kernel asks this way when a reader refreshes its size), else by path. Owners kept in
    /// override xattrs need the path.
    pub fn getattr_via(&self, node: &Node, fh: Option<Fh>) -> SysResult<FileAttr> {
        if self.ownership.override_key().is_none() {
            if let Some(file) = fh.and_then(|fh| self.handles.file(fh).ok()) {
                if file.node.ino == node.ino {
                    let fd = file.fd(self)?;
                    let mut st = sys::stat_fd(std::os::fd::AsFd::as_fd(&*fd))?;
                    (st.st_uid, st.st_gid) = self.ownership.to_view(st.st_uid, st.st_gid);
                    return Ok(self.attr_of(node, &st));
                }
            }
        }
        if node.is_unlinked() {
            return self.getattr(node);
        }
        // By path, so with the name pinned: `fstat` comes without a handle, and in a racing
        // rename's window the name already leads to the new object, whose size the kernel
        // would then give the reader's open file (torn reads). If the name moved while we
        // waited, the node now answers through its new name or its open handle.
        match self.with_name_pinned(node, || self.getattr(node)) {
            Err(Errno::STALE) => self.getattr(node),
            other => other,
        }
    }

    /// Applies `changes` to the upper copy of `node`, copying it up first.
    pub fn setattr(
        &self,
        node: &std::sync::Arc<Node>,
        changes: AttrChanges,
        fh: Option<Fh>,
    ) -> SysResult<FileAttr> {
        if self.read_only() {
            return Err(Errno::ROFS);
        }
        if node.is_unlinked() {
            return self.setattr_unlinked(node, changes, fh);
        }
        let data = match changes.size {
            Some(n) => CopyUpData::Truncated(n),
            None => CopyUpData::Full,
        };
        self.copy_up(node, data)?;
        // By path, so with the name pinned: a rename or unlink racing in the directory must
        // not make us chmod, truncate or stat the object that just took the name.
        self.with_name_pinned(node, || {
            let (dir, name) = self.parent_dir_in(node, self.upper_idx()?)?;
            let d = std::os::fd::AsFd::as_fd(&dir);
            self.change_owner(d, &name, node.kind, changes.uid, changes.gid)?;
            if let Some(mode) = changes.mode {
                self.change_mode(d, &name, node.kind, mode)?;
            }
            if let Some(size) = changes.size {
                self.truncate(node, fh, size)?;
            }
            if changes.atime.is_some() || changes.mtime.is_some() {
                let times = rustix::fs::Timestamps {
                    last_access: timespec(changes.atime),
                    last_modification: timespec(changes.mtime),
                };
                sys::utimens_at(d, &name, &times)?;
            }
            self.getattr(node)
        })
    }

    /// `ftruncate`, `fchmod`, `fchown`, `futimens` on a file that is open but has no name
    /// any more: only an open handle reaches it (the one the kernel names, else any of the
    /// node's), and it is already in the upper (a deleted lower file cannot be written).
    fn setattr_unlinked(
        &self,
        node: &Node,
        changes: AttrChanges,
        fh: Option<Fh>,
    ) -> SysResult<FileAttr> {
        let file = self
            .handles
            .open_file_of(node.ino, fh)
            .ok_or(Errno::STALE)?;
        let fd = file.fd(self)?;
        let fd = std::os::fd::AsFd::as_fd(&*fd);
        let has_owner = changes.uid.is_some() || changes.gid.is_some();
        if (has_owner || changes.mode.is_some()) && self.ownership.override_key().is_some() {
            return Err(Errno::OPNOTSUPP);
        }
        if has_owner && !self.ownership.squashes() {
            let uid = changes
                .uid
                .map(|u| self.ownership.uid_to_disk(u))
                .transpose()?;
            let gid = changes
                .gid
                .map(|g| self.ownership.gid_to_disk(g))
                .transpose()?;
            rustix::fs::fchown(
                fd,
                uid.map(rustix::process::Uid::from_raw),
                gid.map(rustix::process::Gid::from_raw),
            )?;
        }
        if let Some(mode) = changes.mode {
            sys::chmod_fd(fd, mode)?;
        }
        if let Some(size) = changes.size {
            sys::truncate_fd(fd, size)?;
        }
        if changes.atime.is_some() || changes.mtime.is_some() {
            let times = rustix::fs::Timestamps {
                last_access: timespec(changes.atime),
                last_modification: timespec(changes.mtime),
            };
            rustix::fs::futimens(fd, &times)?;
        }
        self.getattr(node)
    }

    /// chown through the mount: ids become what is stored; with `xattr_permissions` they go to
    /// the override xattr; with squashed owners there is nothing to change.
    fn change_owner(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        kind: Kind,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> SysResult<()> {
        if (uid.is_none() && gid.is_none()) || self.ownership.squashes() {
            return Ok(());
        }
        let uid = uid.map(|u| self.ownership.uid_to_disk(u)).transpose()?;
        let gid = gid.map(|g| self.ownership.gid_to_disk(g)).transpose()?;
        if self.overridden(kind) {
            return self.update_override(dir, name, |o| {
                o.uid = uid.unwrap_or(o.uid);
                o.gid = gid.unwrap_or(o.gid);
            });
        }
        sys::chown_at(dir, name, uid, gid)
    }

    fn change_mode(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        kind: Kind,
        mode: u32,
    ) -> SysResult<()> {
        if kind == Kind::Symlink {
            return Err(Errno::OPNOTSUPP);
        }
        if self.overridden(kind) {
            return self.update_override(dir, name, |o| o.perm = mode & 0o7777);
        }
        rustix::fs::chmodat(
            dir,
            name,
            sys::Mode::from_raw_mode(mode & 0o7777),
            sys::AtFlags::empty(),
        )
    }

    /// Whether this object's owner and mode live in the override xattr (see `ownership`).
    fn overridden(&self, kind: Kind) -> bool {
        let file_or_dir = matches!(kind, Kind::File | Kind::Dir);
        self.ownership.override_key_for(file_or_dir).is_some()
    }

    /// Rewrites the override xattr, starting from the recorded owner or the real one.
    pub fn update_override(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        change: impl FnOnce(&mut Owner),
    ) -> SysResult<()> {
        let key = self.ownership.override_key().ok_or(Errno::INVAL)?;
        let mut owner = match self.stored_override(dir, name) {
            Some(o) => o,
            None => {
                let st = sys::stat_at(dir, name)?;
                Owner {
                    uid: st.st_uid,
                    gid: st.st_gid,
                    perm: st.st_mode & 0o7777,
                }
            }
        };
        change(&mut owner);
        store_override(dir, name, key, owner)
    }

    fn truncate(&self, node: &Node, fh: Option<Fh>, size: u64) -> SysResult<()> {
        if node.kind.is_dir() {
            return Err(Errno::ISDIR);
        }
        if let Some(fh) = fh {
            if let Ok(file) = self.handles.file(fh) {
                let fd = file.fd(self)?;
                return sys::truncate_fd(std::os::fd::AsFd::as_fd(&*fd), size);
            }
        }
        let fd = self.open_real(node, self.upper_idx()?, OFlags::WRONLY)?;
        sys::truncate_fd(std::os::fd::AsFd::as_fd(&fd), size)
    }
}

fn timespec(t: Option<NewTime>) -> rustix::fs::Timespec {
    match t {
        None => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT as _,
        },
        Some(NewTime::Now) => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW as _,
        },
        Some(NewTime::At(t)) => {
            let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => {
                    let d = e.duration();
                    let whole = -(d.as_secs() as i64) - i64::from(d.subsec_nanos() > 0);
                    (
                        whole,
                        if d.subsec_nanos() > 0 {
                            1_000_000_000 - d.subsec_nanos() as i64
                        } else {
                            0
                        },
                    )
                }
            };
            rustix::fs::Timespec {
                tv_sec: sec,
                tv_nsec: nsec as _,
            }
        }
    }
}

fn system_time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

/// The FUSE view of a real `stat`, under the union's inode number.
pub fn to_file_attr(ino: u64, st: &Stat, nlink: u32) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: system_time(st.st_atime, st.st_atime_nsec as i64),
        mtime: system_time(st.st_mtime, st.st_mtime_nsec as i64),
        ctime: system_time(st.st_ctime, st.st_ctime_nsec as i64),
        crtime: UNIX_EPOCH,
        kind: file_type(Kind::from_mode(st.st_mode)),
        perm: (st.st_mode & 0o7777) as u16,
        nlink,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// The attributes of a negative entry: node id 0 tells the kernel the name does not exist, and
/// it keeps that answer for the entry timeout like any other (nothing else is read from it).
pub fn negative_entry_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

pub fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_the_epoch_round_trip() {
        let t = system_time(-2, 500_000_000);
        let ts = timespec(Some(NewTime::At(t)));
        assert_eq!((ts.tv_sec, ts.tv_nsec), (-2, 500_000_000));
    }

    #[test]
    fn omitted_times_are_omitted() {
        assert_eq!(timespec(None).tv_nsec, libc::UTIME_OMIT);
    }
}
