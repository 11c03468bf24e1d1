//! `rename(2)` and `renameat2(2)` (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`) on the merged view.
//!
//! The source is copied up and renamed inside the upper. If a lower still has the old name, a
//! whiteout takes its place in the same step (`RENAME_WHITEOUT`, or an OCI `.wh.` file created
//! before the rename). A directory that exists in a lower is refused with EXDEV, as kernel
//! overlayfs does without `redirect_dir`: `mv` then copies and deletes. A directory moved onto a
//! name some lower has is made opaque first, so nothing from below merges into it.
//! Kernel analog: `ovl_rename` in `fs/overlayfs/dir.c`.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::copy_up::CopyUpData;
use crate::index::Cached;
use crate::inode::Node;
use crate::lookup::{self, Resolved};
use crate::sys::{self, Errno, RenameFlags, SysResult};
use crate::union::Union;
use crate::whiteout;

/// One side of a rename.
struct Side<'a> {
    parent: &'a Arc<Node>,
    name: &'a OsStr,
    found: Option<Resolved>,
}

impl Union {
    /// Renames `name` in `parent` to `new_name` in `new_parent`.
    pub fn rename(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        new_parent: &Arc<Node>,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> SysResult<()> {
        self.check_lookup_name(parent, name)?;
        self.check_new_name(new_parent, new_name)?;
        let _locks = lock_pair(parent, new_parent);
        let src = Side {
            parent,
            name,
            found: Some(self.resolve_child(parent, name)?.ok_or(Errno::NOENT)?),
        };
        let dst = Side {
            parent: new_parent,
            name: new_name,
            found: self.resolve_child(new_parent, new_name)?,
        };
        self.check_rename(&src, &dst, flags)?;
        if self.same_object(&src, &dst) {
            return Ok(()); // two links to one file: POSIX says do nothing
        }
        let src_node = self.side_node(&src)?;
        self.copy_up(&src_node, CopyUpData::Full)?;
        let dst_node = match &dst.found {
            Some(_) if flags.contains(RenameFlags::EXCHANGE) => {
                let n = self.side_node(&dst)?;
                self.copy_up(&n, CopyUpData::Full)?;
                Some(n)
            }
            Some(_) => Some(self.side_node(&dst)?),
            None => None,
        };
        self.copy_up(new_parent, CopyUpData::Full)?;
        self.rename_in_upper(&src, &dst, flags)?;
        self.after_rename(&src, &dst, &src_node, dst_node.as_ref(), flags);
        Ok(())
    }

    /// POSIX and overlayfs checks the upper alone cannot make (the names may live in lowers).
    fn check_rename(&self, src: &Side<'_>, dst: &Side<'_>, flags: RenameFlags) -> SysResult<()> {
        let s = src.found.as_ref().ok_or(Errno::NOENT)?;
        let exchange = flags.contains(RenameFlags::EXCHANGE);
        if flags.contains(RenameFlags::NOREPLACE) && dst.found.is_some() {
            return Err(Errno::EXIST);
        }
        if exchange && dst.found.is_none() {
            return Err(Errno::NOENT);
        }
        if self.is_lower_dir(s)
            || (exchange && dst.found.as_ref().is_some_and(|d| self.is_lower_dir(d)))
        {
            return Err(Errno::XDEV);
        }
        let Some(d) = &dst.found else { return Ok(()) };
        if exchange {
            return Ok(());
        }
        match (s.kind.is_dir(), d.kind.is_dir()) {
            (true, false) => Err(Errno::NOTDIR),
            (false, true) => Err(Errno::ISDIR),
            (true, true)
                if !self.is_empty_dir(&self.transient_node(dst.parent, dst.name, d))? =>
            {
                Err(Errno::NOTEMPTY)
            }
            _ => Ok(()),
        }
    }

    /// A directory with an instance in some lower cannot move (no redirects).
    fn is_lower_dir(&self, r: &Resolved) -> bool {
        r.kind.is_dir()
            && r.placement
                .dir_layers
                .iter()
                .any(|&l| !self.stack.is_upper(l))
    }

    fn same_object(&self, src: &Side<'_>, dst: &Side<'_>) -> bool {
        match (&src.found, &dst.found) {
            (Some(a), Some(b)) => a.identity == b.identity && !a.kind.is_dir(),
            _ => false,
        }
    }

    fn side_node(&self, side: &Side<'_>) -> SysResult<Arc<Node>> {
        let found = side.found.as_ref().ok_or(Errno::NOENT)?;
        Ok(self.transient_node(side.parent, side.name, found))
    }

    /// The rename itself, in the upper.
    fn rename_in_upper(&self, src: &Side<'_>, dst: &Side<'_>, flags: RenameFlags) -> SysResult<()> {
        let upper = self.upper_idx()?;
        let src_dir = self.dir_in(src.parent, upper)?;
        let dst_dir = self.dir_in(dst.parent, upper)?;
        let (sd, dd) = (src_dir.as_fd(), dst_dir.as_fd());
        // A copy whose data is not on disk yet is removed after a power loss (see `durability`):
        // under another name, that would lose the object instead of reverting it.
        self.durability.settle_at(sd, src.name)?;
        if flags.contains(RenameFlags::EXCHANGE) {
            self.durability.settle_at(dd, dst.name)?;
        }
        let src_is_dir = src.found.as_ref().is_some_and(|f| f.kind.is_dir());
        if src_is_dir && self.lower_has(dst)? {
            self.make_opaque_at(sd, src.name)?;
        }
        if flags.contains(RenameFlags::EXCHANGE) {
            let dst_is_dir = dst.found.as_ref().is_some_and(|f| f.kind.is_dir());
            if dst_is_dir && self.lower_has(src)? {
                self.make_opaque_at(dd, dst.name)?;
            }
            return sys::rename_at(sd, src.name, dd, dst.name, RenameFlags::EXCHANGE);
        }
        if let Some(replaced) = &dst.found {
            // A reader may have looked the old object up just now and be about to open it.
            self.pin_replaced(dst.parent, dst.name, replaced);
        }
        self.clear_upper_dst(dd, dst)?;
        if self.lower_has(src)? {
            self.metrics.record_whiteout();
            self.rename_leaving_whiteout(sd, src.name, dd, dst.name)
        } else {
            sys::rename_at(sd, src.name, dd, dst.name, RenameFlags::empty())
        }
    }

    /// Makes room at the destination in the upper: an upper directory there may still hold
    /// whiteouts (the merged view is empty but rename(2) would say ENOTEMPTY), and a 0/0 whiteout
    /// or `.wh.` file there must not survive beside the new entry.
    fn clear_upper_dst(&self, dd: BorrowedFd<'_>, dst: &Side<'_>) -> SysResult<()> {
        let work = self.stack.work()?;
        if let Some(st) = sys::stat_at_opt(dd, dst.name)? {
            let is_wh = whiteout::is_whiteout_stat(&st);
            if is_wh || (sys::is_dir_stat(&st) && dst.found.is_some()) {
                work.discard(dd, dst.name)?;
            }
        }
        if let Some(wh) = whiteout::oci_whiteout_name(dst.name.as_bytes()) {
            match sys::unlink_at(dd, &wh) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Rename with a whiteout left at the source, atomically when the kernel can.
    fn rename_leaving_whiteout(
        &self,
        sd: BorrowedFd<'_>,
        name: &OsStr,
        dd: BorrowedFd<'_>,
        new_name: &OsStr,
    ) -> SysResult<()> {
        // A name too long for `.wh.<name>` gets the char-device form, as in `whiteout`.
        let oci_fits = whiteout::oci_whiteout_name(name.as_bytes()).is_some();
        if self.stack.format.chardev_whiteouts || !oci_fits {
            match sys::rename_at(sd, name, dd, new_name, RenameFlags::WHITEOUT) {
                Err(Errno::INVAL) | Err(Errno::PERM) => {}
                other => return other,
            }
            sys::rename_at(sd, name, dd, new_name, RenameFlags::empty())?;
            return whiteout::create_whiteout(sd, name, &self.stack.format);
        }
        // `.wh.name` first: until the rename, both together still show the old entry.
        whiteout::create_whiteout(sd, name, &self.stack.format)?;
        sys::rename_at(sd, name, dd, new_name, RenameFlags::empty())
    }

    /// Whether a lower (below the upper) still has the side's name visible.
    fn lower_has(&self, side: &Side<'_>) -> SysResult<bool> {
        lookup::lower_has_name(
            &self.stack,
            &|l| self.dir_in(side.parent, l),
            &side.parent.placement().dir_layers,
            side.name,
        )
    }

    /// Node aliases and the index follow the names; a moved copied-up file marks its new
    /// directory impure so listings there look its inode number up.
    fn after_rename(
        &self,
        src: &Side<'_>,
        dst: &Side<'_>,
        src_node: &Arc<Node>,
        dst_node: Option<&Arc<Node>>,
        flags: RenameFlags,
    ) {
        self.index.changed(src.parent.ino, src.name);
        self.index.changed(dst.parent.ino, dst.name);
        if flags.contains(RenameFlags::EXCHANGE) {
            if let Some(d) = dst_node {
                d.move_alias((dst.parent.ino, dst.name), src.parent, src.name);
            }
        } else {
            if let Some(d) = dst_node {
                d.remove_alias(dst.parent.ino, dst.name);
                if d.kind.is_dir() {
                    self.dir_fds.forget(d.ino, self.stack.all());
                }
            }
            self.index.insert(src.parent.ino, src.name, Cached::Absent);
        }
        src_node.move_alias((src.parent.ino, src.name), dst.parent, dst.name);
        if src
            .found
            .as_ref()
            .is_some_and(|f| self.has_borrowed_identity(f))
        {
            self.mark_impure(dst.parent);
        }
        // An exchange also moves the destination's object into the source directory.
        if flags.contains(RenameFlags::EXCHANGE)
            && dst
                .found
                .as_ref()
                .is_some_and(|f| self.has_borrowed_identity(f))
        {
            self.mark_impure(src.parent);
        }
    }

    /// A non-directory whose inode number is not its upper inode's own (it was copied up).
    fn has_borrowed_identity(&self, r: &Resolved) -> bool {
        if r.kind.is_dir() {
            return false;
        }
        let upper_dev = self.stack.get(crate::layers::LayerIdx(0)).dev;
        !self.stack.is_upper(r.placement.layer) || r.identity != (upper_dev, r.stat.st_ino)
    }

    pub(crate) fn mark_impure(&self, dir: &Arc<Node>) {
        let Ok(upper) = self.upper_idx() else { return };
        if let Ok(fd) = self.dir_in(dir, upper) {
            let _ = sys::xattr::set(
                fd.as_fd(),
                OsStr::new(""),
                &self.impure_xattr(),
                b"y",
                sys::xattr::XattrFlags::empty(),
            );
        }
    }
}

/// Locks the namespace of two directories in a fixed order (by inode number), once if the same.
fn lock_pair<'a>(
    a: &'a Arc<Node>,
    b: &'a Arc<Node>,
) -> (
    parking_lot::MutexGuard<'a, ()>,
    Option<parking_lot::MutexGuard<'a, ()>>,
) {
    if a.ino == b.ino {
        return (a.dir_lock.lock(), None);
    }
    let (first, second) = if a.ino < b.ino { (a, b) } else { (b, a) };
    let g1 = first.dir_lock.lock();
    let g2 = second.dir_lock.lock();
    (g1, Some(g2))
}
