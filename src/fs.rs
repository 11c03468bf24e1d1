//! The `fuser::Filesystem` implementation: glue only. Each method unpacks the request, calls one
//! `Union` operation that returns a `Result`, and replies exactly once.
//!
//! Concurrency: fuser calls these methods from several threads at once (`n_threads`,
//! `clone_fd`). There is no global lock; locks are short and never held across a reply.
//! Lock order (a thread may only take locks further down this list while holding one above):
//! 1. `Node::dir_lock` of directories whose namespace changes; rename takes both parents' in
//!    increasing inode-number order;
//! 2. `Node::copy_up_lock`, child before ancestor (copy-up walks up to the root);
//! 3. short internal locks: node state, node table and index shards, handle tables.
//!
//! No `dir_lock` is ever taken while a `copy_up_lock` is held.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    AccessFlags, BackingId, CopyFileRangeFlags, Errno as FuseErrno, FileHandle, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::attr::{AttrChanges, NewTime, file_type, negative_entry_attr};
use crate::config::MountConfig;
use crate::dir::NewObject;
use crate::error::SetupError;
use crate::inode::Node;
use crate::passthrough::IoModes;
use crate::sys::{self, Errno, SysResult};
use crate::union::{Caller, Union};

/// Largest write the kernel may send in one request.
const MAX_WRITE: u32 = 1 << 20;

/// The mounted filesystem.
pub struct UnionFs {
    union: Arc<Union>,
    ttl: Duration,
    writeback: bool,
    /// Let the kernel enforce POSIX ACLs (it reads them through getxattr); needs
    /// default_permissions, and `noacl` turns it off.
    posix_acl: bool,
    /// The kernel can do without OPENDIR/RELEASEDIR (told so at init; see `opendir`).
    no_opendir: bool,
    /// Which opens go passthrough (see `passthrough`).
    io: IoModes<BackingId>,
}

impl UnionFs {
    pub fn new(config: &MountConfig) -> Result<UnionFs, SetupError> {
        let union = Union::new(config)?;
        Ok(UnionFs {
            union: Arc::new(union),
            ttl: config.fs.timeout,
            writeback: config.fuse.writeback,
            posix_acl: config.fs.posix_acl && config.fs.xattrs && config.fuse.default_permissions,
            no_opendir: false,
            // The kernel refuses passthrough together with the writeback cache.
            io: IoModes::new(config.fuse.passthrough && !config.fuse.writeback),
        })
    }

    /// The union behind the mount, for the metrics view.
    pub fn union(&self) -> Arc<Union> {
        self.union.clone()
    }

    fn node(&self, ino: INodeNo) -> SysResult<Arc<Node>> {
        self.union.node(ino.0)
    }
}

fn errno(e: Errno) -> FuseErrno {
    FuseErrno::from_i32(e.raw_os_error())
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn new_time(t: Option<TimeOrNow>) -> Option<NewTime> {
    t.map(|t| match t {
        TimeOrNow::Now => NewTime::Now,
        TimeOrNow::SpecificTime(at) => NewTime::At(at),
    })
}

/// Replies to an entry-creating request.
fn reply_entry(fs: &UnionFs, reply: ReplyEntry, result: SysResult<(Arc<Node>, sys::Stat)>) {
    match result {
        Ok((node, st)) => reply.entry(
            &fs.ttl,
            &fs.union.attr_of(&node, &st),
            Generation(node.generation.into()),
        ),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_empty(reply: ReplyEmpty, result: SysResult<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, result: SysResult<Vec<u8>>) {
    match result {
        Ok(data) if size == 0 => reply.size(data.len() as u32),
        Ok(data) if data.len() > size as usize => reply.error(FuseErrno::ERANGE),
        Ok(data) => reply.data(&data),
        Err(e) => reply.error(errno(e)),
    }
}

impl UnionFs {
    /// mknod, mkdir and symlink: create the object, reply with its entry.
    fn create_entry(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        what: NewObject<'_>,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self
            .node(parent)
            .and_then(|p| self.union.create_object(&p, name, what, caller(req), umask));
        reply_entry(self, reply, result.map(|(n, st, _)| (n, st)));
    }
}

impl UnionFs {
    /// Counts the new open `fh` of node `ino` and chooses its io mode (see `passthrough`): the
    /// node's backing file to answer it passthrough, or `None` for the cached path.
    fn choose_io_mode(
        &self,
        ino: u64,
        fh: u64,
        flags: i32,
        open_backing: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        let eligible = self.io.enabled() && self.union.may_start_passthrough(fh, flags);
        let backing = self.io.open(ino, fh, eligible, || {
            open_backing(self.union.backing_file(fh)?.as_fd())
        });
        if backing.is_some() {
            self.union.metrics.record_passthrough_open();
        }
        backing
    }
}

impl Filesystem for UnionFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        // readdirplus: a listing carries every entry's attributes, so a walk that stats what it
        // lists (find, ls -l, du) needs no LOOKUP per entry; AUTO lets the kernel fall back to
        // plain readdir for listings whose entries nobody looks at (ls -f).
        let mut wanted = InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO;
        if self.posix_acl {
            // With ACLs the kernel leaves the umask to us (a default ACL replaces it), but only
            // with DONT_MASK does it send the mode unmasked (see `acl`).
            wanted |= InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_DONT_MASK;
        }
        if self.writeback {
            wanted |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        // Depth 1: backing files on a plain filesystem, and this mount can still be a layer
        // of a kernel overlayfs. An upper on a stacked filesystem gets the cached path.
        if self.io.enabled() && config.set_max_stack_depth(1).is_ok() {
            wanted |= InitFlags::FUSE_PASSTHROUGH;
        }
        let supported = config.capabilities() & wanted;
        let _ = config.add_capabilities(supported);
        if !supported.contains(InitFlags::FUSE_PASSTHROUGH) {
            self.io.disable();
        }
        self.no_opendir = config
            .capabilities()
            .contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self.node(parent).and_then(|p| self.union.lookup(&p, name));
        match result {
            // Cached by the kernel as a negative dentry: a build probing include paths or a
            // shell searching PATH asks about the same missing names again and again. Every
            // name that appears later is created through the kernel, which then drops it.
            Err(Errno::NOENT) => reply.entry(&self.ttl, &negative_entry_attr(), Generation(0)),
            other => reply_entry(self, reply, other),
        }
    }

    fn destroy(&mut self) {
        // An unmounted union leaves no copy-up unsynced behind.
        self.union.durability.drain();
        self.union.release_all_kept();
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.union.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self
            .node(ino)
            .and_then(|n| self.union.getattr_via(&n, fh.map(|f| f.0)))
        {
            Ok(attr) => reply.attr(&self.ttl, &attr),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let changes = AttrChanges {
            mode,
            uid,
            gid,
            size,
            atime: new_time(atime),
            mtime: new_time(mtime),
        };
        match self
            .node(ino)
            .and_then(|n| self.union.setattr(&n, changes, fh.map(|f| f.0)))
        {
            Ok(attr) => reply.attr(&self.ttl, &attr),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino).and_then(|n| self.union.readlink(&n)) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let what = NewObject::Node {
            mode,
            rdev: rdev as u64,
        };
        self.create_entry(req, parent, name, what, umask, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let what = NewObject::Dir { mode };
        self.create_entry(req, parent, name, what, umask, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            self.node(parent).and_then(|p| self.union.unlink(&p, name)),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            self.node(parent).and_then(|p| self.union.rmdir(&p, name)),
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let what = NewObject::Symlink {
            target: target.as_os_str(),
        };
        self.create_entry(req, parent, link_name, what, 0, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = (|| {
            if flags.contains(RenameFlags::RENAME_WHITEOUT) {
                return Err(Errno::INVAL);
            }
            let (p, np) = (self.node(parent)?, self.node(newparent)?);
            self.union.rename(
                &p,
                name,
                &np,
                newname,
                sys::RenameFlags::from_bits_retain(flags.bits()),
            )
        })();
        reply_empty(reply, result);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let result = (|| {
            let (n, p) = (self.node(ino)?, self.node(newparent)?);
            self.union.link(&n, &p, newname)
        })();
        reply_entry(self, reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fh = match self.union.open(ino.0, flags.0) {
            Ok(fh) => fh,
            Err(e) => return reply.error(errno(e)),
        };
        match self.choose_io_mode(ino.0, fh, flags.0, |fd| reply.open_backing(fd)) {
            // No FOPEN_KEEP_CACHE: pages left by an earlier cached phase are dropped.
            Some(backing) => {
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &backing)
            }
            None => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.union.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.union.write(fh.0, offset, data) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is buffered here (writes reach the layer before WRITE is answered) and POSIX
        // locks stay in the kernel, so a FLUSH has nothing to do. ENOSYS makes the kernel stop
        // sending one on every close(2): one round trip less per file (untar, cp -r, builds).
        reply.error(FuseErrno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.union.handles.release_file(fh.0);
        self.io.release(ino.0, fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.union.fsync(fh.0, datasync));
    }

    /// Directories need no open state (listings are found by the cookie in each offset, see
    /// `readdir`), so where the kernel allows it OPENDIR answers ENOSYS once, and the kernel
    /// then sends neither OPENDIR nor RELEASEDIR again: two requests fewer per directory.
    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino) {
            Ok(node) if !node.kind.is_dir() => reply.error(FuseErrno::ENOTDIR),
            Ok(_) if self.no_opendir => reply.error(FuseErrno::ENOSYS),
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self
            .node(ino)
            .and_then(|d| self.union.dir_entries(&d, offset))
        {
            Ok(e) => e,
            Err(e) => return reply.error(errno(e)),
        };
        for (next, entry) in entries {
            let ino = if entry.name == "." { ino.0 } else { entry.ino };
            if reply.add(INodeNo(ino), next, file_type(entry.kind), &entry.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let (dir, entries) = match self
            .node(ino)
            .and_then(|d| Ok((d.clone(), self.union.dir_entries(&d, offset)?)))
        {
            Ok(found) => found,
            Err(e) => return reply.error(errno(e)),
        };
        let listed_at = entries.epoch();
        // Looked up one at a time, as the reply takes them: the kernel's buffer holds a few
        // dozen entries, and looking up the rest of a big directory on every call was quadratic.
        for (next, entry) in entries {
            // An entry that vanished since the listing was taken is simply left out.
            let Ok((node, st)) = self.union.entry_plus(&dir, &entry, listed_at) else {
                continue;
            };
            let full = reply.add(
                INodeNo(node.ino),
                next,
                &entry.name,
                &self.ttl,
                &self.union.attr_of(&node, &st),
                Generation(node.generation.into()),
            );
            if full {
                // Counted as a lookup, but it never reached the kernel.
                if entry.name != "." && entry.name != ".." {
                    self.union.nodes.forget(node.ino, 1);
                }
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok(); // nothing is kept per open directory
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.node(ino)
                .and_then(|n| self.union.fsyncdir(&n, datasync)),
        );
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.union.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                crate::union::NAME_MAX as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.node(ino)
                .and_then(|n| self.union.setxattr(&n, name, value, flags)),
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(
            reply,
            size,
            self.node(ino).and_then(|n| self.union.getxattr(&n, name)),
        );
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(
            reply,
            size,
            self.node(ino)
                .and_then(|n| self.union.listxattr(&n, caller(req))),
        );
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            self.node(ino)
                .and_then(|n| self.union.removexattr(&n, name)),
        );
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let result = self
            .node(ino)
            .and_then(|n| self.union.access(&n, mask.bits(), caller(req)));
        reply_empty(reply, result);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let what = NewObject::File { mode, flags };
        let result = self
            .node(parent)
            .and_then(|p| self.union.create_object(&p, name, what, caller(req), umask));
        match result {
            Ok((node, st, Some(fh))) => {
                let attr = self.union.attr_of(&node, &st);
                let (ttl, generation) = (&self.ttl, Generation(node.generation.into()));
                match self.choose_io_mode(node.ino, fh, flags, |fd| reply.open_backing(fd)) {
                    Some(backing) => reply.created_passthrough(
                        ttl,
                        &attr,
                        generation,
                        FileHandle(fh),
                        FopenFlags::empty(),
                        &backing,
                    ),
                    None => reply.created(
                        ttl,
                        &attr,
                        generation,
                        FileHandle(fh),
                        FopenFlags::FOPEN_KEEP_CACHE,
                    ),
                }
            }
            Ok((node, _, None)) => {
                self.union.nodes.forget(node.ino, 1);
                reply.error(FuseErrno::EIO);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.union.fallocate(fh.0, offset, length, mode));
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.union.lseek(fh.0, offset, whence) {
            Ok(pos) => reply.offset(pos),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        match self
            .union
            .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len)
        {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }
}
