//! Namespace changes: create, mkdir, mknod, symlink, link, unlink, rmdir.
//! (rename has its own module, `rename`.)
//!
//! Every change happens in the upper, after the parent directory is copied up. Deleting a name
//! that some lower still has leaves a whiteout, written atomically in place of the name; a name
//! that only the upper has is simply removed. Creating over a whiteout replaces the whiteout
//! atomically, and a directory created there is opaque so the deleted lower contents stay
//! deleted. New objects belong to the caller (the daemon may run as root for everyone).
//! Kernel analog: `fs/overlayfs/dir.c`.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::acl::{self, Inherited};
use crate::copy_up::CopyUpData;
use crate::handles::Fh;
use crate::index::Cached;
use crate::inode::{Alias, Kind, Node, Placement};
use crate::layers::remove_tree;
use crate::lookup::{self, Resolved};
use crate::ownership::{Owner, store_override};
use crate::sys::{self, Errno, Mode, OFlags, Stat, SysResult};
use crate::union::{Caller, Union};
use crate::whiteout;

/// What to create.
pub enum NewObject<'a> {
    File { mode: u32, flags: i32 },
    Dir { mode: u32 },
    Node { mode: u32, rdev: u64 },
    Symlink { target: &'a OsStr },
}

impl NewObject<'_> {
    /// The mode asked for (symlinks have none of their own).
    fn mode(&self) -> Option<u32> {
        match self {
            NewObject::File { mode, .. }
            | NewObject::Dir { mode }
            | NewObject::Node { mode, .. } => Some(*mode),
            NewObject::Symlink { .. } => None,
        }
    }

    fn with_mode(self, new: u32) -> Self {
        match self {
            NewObject::File { flags, .. } => NewObject::File { mode: new, flags },
            NewObject::Dir { .. } => NewObject::Dir { mode: new },
            NewObject::Node { rdev, .. } => NewObject::Node { mode: new, rdev },
            symlink @ NewObject::Symlink { .. } => symlink,
        }
    }
}

/// The upper parent directory, ready for a new name.
struct Target {
    dir: Arc<OwnedFd>,
    dir_stat: Stat,
    /// The upper holds a whiteout for the name (a 0/0 device or a `.wh.` file).
    whiteout: Option<WhiteoutKind>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WhiteoutKind {
    CharDev,
    OciFile,
}

impl Union {
    /// Creates `name` in `parent`; returns the new node (one lookup counted), its attributes and,
    /// for files, an open handle. `what` carries the mode as asked, before the caller's `umask`
    /// (which a default ACL of the parent replaces, see `acl`).
    pub fn create_object(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        what: NewObject<'_>,
        caller: Caller,
        umask: u32,
    ) -> SysResult<(Arc<Node>, Stat, Option<Fh>)> {
        self.check_new_name(parent, name)?;
        if let NewObject::Node { mode, rdev } = what {
            if mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0 {
                return Err(Errno::PERM); // a 0/0 device is a whiteout: never forged
            }
        }
        let _ns = parent.dir_lock.lock();
        if self.resolve_child(parent, name)?.is_some() {
            return Err(Errno::EXIST);
        }
        let target = self.prepare_target(parent, name)?;
        let inherited = self.inherit_from(&target, &what, umask);
        let what = what.with_mode(inherited.mode);
        let fd = if target.whiteout.is_some() || matches!(what, NewObject::Dir { .. }) {
            self.create_via_work(&target, name, &what, &inherited, caller)?
        } else {
            self.create_in_place(&target, name, &what, caller)?
        };
        self.index.changed(parent.ino, name);
        let (node, stat) = self.adopt_new(parent, name, &target)?;
        let fh = match (what, fd) {
            (NewObject::File { flags, .. }, Some(fd)) => {
                let layer = node.layer();
                Some(self.insert_file(
                    node.clone(),
                    OFlags::from_bits_retain((flags & libc::O_ACCMODE) as u32),
                    layer,
                    fd,
                ))
            }
            _ => None,
        };
        Ok((node, stat, fh))
    }

    /// The mode and ACLs a new object gets: the parent's default ACL when ACLs are served
    /// (read from the upper parent, which copy-up gave every xattr), else the umask.
    fn inherit_from(&self, t: &Target, what: &NewObject<'_>, umask: u32) -> Inherited {
        let Some(mode) = what.mode() else {
            return Inherited {
                mode: 0o777,
                access: None,
                default: None,
            };
        };
        let parent_default = if self.opts.posix_acl && self.opts.xattrs {
            sys::xattr::get_opt(
                t.dir.as_fd(),
                OsStr::new(""),
                OsStr::new(acl::DEFAULT_XATTR),
            )
            .ok()
            .flatten()
        } else {
            None
        };
        let is_dir = matches!(what, NewObject::Dir { .. });
        acl::inherit(parent_default.as_deref(), mode, umask, is_dir)
    }

    /// Copies the parent up and finds out whether the upper holds a whiteout for the name.
    fn prepare_target(&self, parent: &Arc<Node>, name: &OsStr) -> SysResult<Target> {
        self.copy_up(parent, CopyUpData::Full)?;
        let dir = self.dir_in(parent, self.upper_idx()?)?;
        let dir_stat = sys::stat_fd(dir.as_fd())?;
        let whiteout = upper_whiteout(dir.as_fd(), name)?;
        Ok(Target {
            dir,
            dir_stat,
            whiteout,
        })
    }

    /// The common case: nothing at the name in the upper, so the object is made where it belongs.
    fn create_in_place(
        &self,
        t: &Target,
        name: &OsStr,
        what: &NewObject<'_>,
        caller: Caller,
    ) -> SysResult<Option<OwnedFd>> {
        let fd = self.make_unheld(t.dir.as_fd(), name, || {
            make_object(t.dir.as_fd(), name, what)
        })?;
        if let Err(e) = self.give_to_caller(t, t.dir.as_fd(), name, what, caller) {
            let _ = remove_tree(t.dir.as_fd(), name);
            return Err(e);
        }
        Ok(fd)
    }

    /// Over a whiteout, or a directory: build it complete in the work dir (owner, opacity), then
    /// swap it in with one rename so nobody sees it half made or the deleted contents come back.
    fn create_via_work(
        &self,
        t: &Target,
        name: &OsStr,
        what: &NewObject<'_>,
        inherited: &Inherited,
        caller: Caller,
    ) -> SysResult<Option<OwnedFd>> {
        let work = self.stack.work()?;
        let tmp = work.temp_name();
        let wfd = work.fd.as_fd();
        let built = self
            .make_unheld(wfd, &tmp, || make_object(wfd, &tmp, what))
            .and_then(|fd| {
                self.give_to_caller(t, wfd, &tmp, what, caller)?;
                // The work dir has no default ACL to inherit: write what the parent's gives.
                store_inherited_acls(wfd, &tmp, inherited)?;
                if matches!(what, NewObject::Dir { .. }) && t.whiteout.is_some() {
                    self.make_opaque_at(wfd, &tmp)?;
                }
                Ok(fd)
            });
        let fd = match built {
            Ok(fd) => fd,
            Err(e) => {
                let _ = remove_tree(wfd, &tmp);
                return Err(e);
            }
        };
        if let Err(e) = self.swap_in(t, wfd, &tmp, name) {
            let _ = remove_tree(wfd, &tmp);
            return Err(e);
        }
        Ok(fd)
    }

    /// Moves `work/tmp` to `name`, replacing the whiteout there if any.
    fn swap_in(
        &self,
        t: &Target,
        work: BorrowedFd<'_>,
        tmp: &OsStr,
        name: &OsStr,
    ) -> SysResult<()> {
        match t.whiteout {
            Some(WhiteoutKind::CharDev) => {
                sys::rename_at(work, tmp, t.dir.as_fd(), name, sys::RenameFlags::EXCHANGE)?;
                sys::unlink_at(work, tmp) // now the old whiteout
            }
            Some(WhiteoutKind::OciFile) => {
                sys::rename_at(work, tmp, t.dir.as_fd(), name, sys::RenameFlags::NOREPLACE)?;
                let wh = whiteout::oci_whiteout_name(name.as_bytes()).ok_or(Errno::NAMETOOLONG)?;
                sys::unlink_at(t.dir.as_fd(), &wh)
            }
            None => sys::rename_at(work, tmp, t.dir.as_fd(), name, sys::RenameFlags::NOREPLACE),
        }
    }

    /// Ownership of a new object: the caller's uid; the caller's gid unless the parent is
    /// set-group-ID (then the parent's gid, and directories inherit the bit).
    fn give_to_caller(
        &self,
        t: &Target,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        what: &NewObject<'_>,
        caller: Caller,
    ) -> SysResult<()> {
        let setgid_parent = t.dir_stat.st_mode & libc::S_ISGID != 0;
        // Callers speak in the mount's ids; an id no mapping covers is stored as given.
        let uid = self.ownership.uid_to_disk(caller.uid).unwrap_or(caller.uid);
        let gid = if setgid_parent {
            t.dir_stat.st_gid
        } else {
            self.ownership.gid_to_disk(caller.gid).unwrap_or(caller.gid)
        };
        if self.chown_new {
            sys::chown_at(dir, name, Some(uid), Some(gid))?;
        } else if setgid_parent {
            let _ = sys::chown_at(dir, name, None, Some(gid));
        }
        let file_or_dir = matches!(what, NewObject::File { .. } | NewObject::Dir { .. });
        let key = self.ownership.override_key_for(file_or_dir);
        if let (Some(key), false) = (key, matches!(what, NewObject::Symlink { .. })) {
            let perm = match what {
                NewObject::File { mode, .. }
                | NewObject::Dir { mode }
                | NewObject::Node { mode, .. } => mode & 0o7777,
                NewObject::Symlink { .. } => 0o777,
            };
            store_override(dir, name, key, Owner { uid, gid, perm })?;
        }
        if let NewObject::Dir { mode } = what {
            // chown cleared nothing on a directory, but the work dir is not set-group-ID, so the
            // inherited bit must be put back by hand.
            let bits = (mode & 0o7777) | if setgid_parent { libc::S_ISGID } else { 0 };
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(bits), sys::AtFlags::empty())?;
        } else if let NewObject::File { mode, .. } | NewObject::Node { mode, .. } = what {
            if mode & (libc::S_ISUID | libc::S_ISGID) != 0 && self.chown_new {
                // chown drops set-id bits; restore the ones asked for.
                rustix::fs::chmodat(
                    dir,
                    name,
                    Mode::from_raw_mode(mode & 0o7777),
                    sys::AtFlags::empty(),
                )?;
            }
        }
        Ok(())
    }

    /// Marks the directory `name` in `dir` opaque (being built, or being moved onto a name a
    /// lower has).
    pub(crate) fn make_opaque_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
        let fd = sys::open_at(dir, name, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        whiteout::make_opaque(fd.as_fd(), &self.stack.format)?;
        self.metrics.record_opaque();
        Ok(())
    }

    /// Resolves the freshly created name and hands its node to the kernel.
    fn adopt_new(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        t: &Target,
    ) -> SysResult<(Arc<Node>, Stat)> {
        let stat = sys::stat_at(t.dir.as_fd(), name)?;
        let upper = self.upper_idx()?;
        let kind = Kind::from_mode(stat.st_mode);
        let dir_layers = if kind.is_dir() {
            vec![upper]
        } else {
            Vec::new()
        };
        let placement = Placement {
            layer: upper,
            dir_layers,
        };
        let found = Resolved {
            kind,
            stat,
            placement,
            identity: (self.stack.get(upper).dev, stat.st_ino),
            unsynced: false,
        };
        self.index
            .insert(parent.ino, name, Cached::Present(found.clone()));
        // Not `instantiate`: a live node with this number is stale (see `insert_fresh`), and
        // reusing it would stat and open the old object's path.
        let ino = self.mapper.map(found.identity.0, found.identity.1);
        let node = self.nodes.insert_fresh(ino, || {
            Node::new(
                ino,
                kind,
                Some(Alias {
                    parent: parent.clone(),
                    name: name.into(),
                }),
                found.placement.clone(),
            )
        });
        match self.stat_node(&node) {
            Ok(st) => Ok((node, st)),
            Err(e) => {
                self.nodes.forget(ino, 1);
                Err(e)
            }
        }
    }

    /// `link(2)`: the object is copied up, then linked inside the upper.
    pub fn link(
        &self,
        node: &Arc<Node>,
        parent: &Arc<Node>,
        name: &OsStr,
    ) -> SysResult<(Arc<Node>, Stat)> {
        self.check_new_name(parent, name)?;
        if node.kind.is_dir() {
            return Err(Errno::PERM);
        }
        let _ns = parent.dir_lock.lock();
        if self.resolve_child(parent, name)?.is_some() {
            return Err(Errno::EXIST);
        }
        self.copy_up(node, CopyUpData::Full)?;
        let target = self.prepare_target(parent, name)?;
        let (src_dir, src_name) = self.parent_dir_in(node, self.upper_idx()?)?;
        // A second name for a copy whose data is not on disk yet would outlive its removal
        // after a power loss (see `durability`).
        self.durability.settle_at(src_dir.as_fd(), &src_name)?;
        match target.whiteout {
            None => sys::link_at(src_dir.as_fd(), &src_name, target.dir.as_fd(), name)?,
            Some(_) => {
                let work = self.stack.work()?;
                let tmp = work.temp_name();
                sys::link_at(src_dir.as_fd(), &src_name, work.fd.as_fd(), &tmp)?;
                if let Err(e) = self.swap_in(&target, work.fd.as_fd(), &tmp, name) {
                    let _ = sys::unlink_at(work.fd.as_fd(), &tmp);
                    return Err(e);
                }
            }
        }
        self.index.changed(parent.ino, name);
        node.add_alias(parent, name);
        node.add_lookup(1);
        let stat = self.stat_node(node)?;
        // A link to a copied-up file carries the origin's inode number, not its upper one: like
        // a rename, it makes the directory impure so readdir's d_ino agrees with st_ino.
        if node.ino
            != self
                .mapper
                .map(self.stack.get(self.upper_idx()?).dev, stat.st_ino)
        {
            self.mark_impure(parent);
        }
        Ok((node.clone(), stat))
    }

    /// `unlink(2)`.
    pub fn unlink(&self, parent: &Arc<Node>, name: &OsStr) -> SysResult<()> {
        self.remove_name(parent, name, false)
    }

    /// `rmdir(2)`: only a directory that is empty in the merged view.
    pub fn rmdir(&self, parent: &Arc<Node>, name: &OsStr) -> SysResult<()> {
        self.remove_name(parent, name, true)
    }

    fn remove_name(&self, parent: &Arc<Node>, name: &OsStr, want_dir: bool) -> SysResult<()> {
        self.check_lookup_name(parent, name)?;
        if self.read_only() {
            return Err(Errno::ROFS);
        }
        let _ns = parent.dir_lock.lock();
        let found = self.resolve_child(parent, name)?.ok_or(Errno::NOENT)?;
        match (want_dir, found.kind.is_dir()) {
            (false, true) => return Err(Errno::ISDIR),
            (true, false) => return Err(Errno::NOTDIR),
            _ => {}
        }
        if want_dir && !self.is_empty_dir(&self.transient_node(parent, name, &found))? {
            return Err(Errno::NOTEMPTY);
        }
        self.copy_up(parent, CopyUpData::Full)?;
        let upper = self.upper_idx()?;
        let dir = self.dir_in(parent, upper)?;
        let needs_whiteout = !self.stack.is_upper(found.placement.layer)
            || lookup::lower_has_name(
                &self.stack,
                &|l| self.dir_in(parent, l),
                &parent.placement().dir_layers,
                name,
            )?;
        self.remove_from_upper(dir.as_fd(), name, &found, needs_whiteout)?;
        self.index.changed(parent.ino, name);
        self.index.insert(parent.ino, name, Cached::Absent);
        let ino = self.mapper.map(found.identity.0, found.identity.1);
        if found.kind.is_dir() {
            self.dir_fds.forget(ino, self.stack.all());
        }
        if let Some(node) = self.nodes.try_get(ino) {
            node.remove_alias(parent.ino, name);
        }
        Ok(())
    }

    /// The upper side of a removal: whiteout, or a plain removal, always atomic.
    fn remove_from_upper(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        found: &Resolved,
        needs_whiteout: bool,
    ) -> SysResult<()> {
        let in_upper = self.stack.is_upper(found.placement.layer);
        let work = self.stack.work()?;
        let format = &self.stack.format;
        if needs_whiteout {
            self.metrics.record_whiteout();
        }
        match (in_upper, found.kind.is_dir(), needs_whiteout) {
            (false, _, _) => whiteout::create_whiteout(dir, name, format),
            (true, false, true) => whiteout::replace_with_whiteout(dir, name, work, format),
            (true, false, false) => sys::unlink_at(dir, name),
            (true, true, true) => self.replace_dir_with_whiteout(dir, name),
            (true, true, false) => {
                // The upper directory may still hold whiteouts: move it out whole, then clean.
                work.discard(dir, name)
            }
        }
    }

    /// An upper directory becomes a whiteout in one step (exchange with a whiteout built in the
    /// work dir); its leftover contents are removed afterwards, out of sight.
    fn replace_dir_with_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
        let work = self.stack.work()?;
        let tmp = work.temp_name();
        let wfd = work.fd.as_fd();
        // A name too long for `.wh.<name>` gets the char-device form, as in `whiteout`.
        let oci_fits = whiteout::oci_whiteout_name(name.as_bytes()).is_some();
        if self.stack.format.chardev_whiteouts || !oci_fits {
            sys::mknod_whiteout(wfd, &tmp)?;
            if let Err(e) = sys::rename_at(wfd, &tmp, dir, name, sys::RenameFlags::EXCHANGE) {
                let _ = sys::unlink_at(wfd, &tmp);
                return Err(e);
            }
        } else {
            // `.wh.name` beside the directory first: until the directory is moved out, the
            // two together still show the (empty) directory.
            whiteout::create_whiteout(dir, name, &self.stack.format)?;
            sys::rename_at(dir, name, wfd, &tmp, sys::RenameFlags::empty())?;
        }
        remove_tree(wfd, &tmp)
    }

    /// A node for a name that the kernel may not hold, just to walk its directory.
    pub fn transient_node(&self, parent: &Arc<Node>, name: &OsStr, found: &Resolved) -> Arc<Node> {
        let ino = self.mapper.map(found.identity.0, found.identity.1);
        if let Some(node) = self.nodes.try_get(ino) {
            if !node.is_unlinked() {
                return node;
            }
        }
        let alias = Alias {
            parent: parent.clone(),
            name: name.into(),
        };
        Arc::new(Node::new(
            ino,
            found.kind,
            Some(alias),
            found.placement.clone(),
        ))
    }
}

/// Writes the ACLs a new object inherited (see `acl`) on `name` in `dir`.
fn store_inherited_acls(dir: BorrowedFd<'_>, name: &OsStr, inherited: &Inherited) -> SysResult<()> {
    for (key, value) in [
        (acl::ACCESS_XATTR, &inherited.access),
        (acl::DEFAULT_XATTR, &inherited.default),
    ] {
        if let Some(value) = value {
            let key = OsStr::new(key);
            sys::xattr::set(dir, name, key, value, sys::xattr::XattrFlags::empty())?;
        }
    }
    Ok(())
}

/// What the upper holds at `name` in the way of a whiteout.
fn upper_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<Option<WhiteoutKind>> {
    if let Some(st) = sys::stat_at_opt(dir, name)? {
        if whiteout::is_whiteout_stat(&st) {
            return Ok(Some(WhiteoutKind::CharDev));
        }
    }
    match whiteout::oci_whiteout_name(name.as_bytes()) {
        Some(wh) if sys::stat_at_opt(dir, &wh)?.is_some() => Ok(Some(WhiteoutKind::OciFile)),
        _ => Ok(None),
    }
}

/// Makes the object itself; files come back open (read-write: the kernel enforces the mode the
/// caller asked for on its own file).
fn make_object(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    what: &NewObject<'_>,
) -> SysResult<Option<OwnedFd>> {
    match what {
        NewObject::File { mode, flags } => {
            let extra = OFlags::from_bits_retain(
                (flags & (libc::O_SYNC | libc::O_DSYNC)) as u32, // O_DIRECT: see handles
            );
            let fd = sys::open_at(
                dir,
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | extra,
                Mode::from_raw_mode(mode & 0o7777),
            )?;
            Ok(Some(fd))
        }
        NewObject::Dir { mode } => {
            sys::mkdir_at(dir, name, Mode::from_raw_mode(mode & 0o7777)).map(|()| None)
        }
        NewObject::Node { mode, .. }
            if mode & libc::S_IFMT == libc::S_IFREG || mode & libc::S_IFMT == 0 =>
        {
            let fd = sys::open_at(
                dir,
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY,
                Mode::from_raw_mode(mode & 0o7777),
            )?;
            drop(fd);
            Ok(None)
        }
        NewObject::Node { mode, rdev } => sys::mknod_at(dir, name, *mode, *rdev).map(|()| None),
        NewObject::Symlink { target } => sys::symlink_at(target, dir, name).map(|()| None),
    }
}
