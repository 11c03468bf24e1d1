//! The state of one mounted union and the resolution helpers every operation shares.
//!
//! `Union` owns the layer stack, the node table, the path index, the open handles and the
//! metrics. Operations live in their own modules as `impl Union` blocks (`dir`, `copy_up`,
//! `readdir`, `xattr`, `attr`, `handles`); `fs` only translates FUSE requests into them.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::config::{CopyUpSync, FsOptions, MountConfig};
use crate::dirfds::DirFds;
use crate::durability::{Durability, Verdict};
use crate::error::SetupError;
use crate::handles::Handles;
use crate::index::{Cached, DirNames, PathIndex};
use crate::inode::{Alias, Ino, InoMapper, Kind, Node, NodeTable, Placement, ROOT_INO};
use crate::layers::{LayerIdx, LayerStack};
use crate::lookup::{self, Resolved};
use crate::metrics::Metrics;
use crate::ownership::{Owner, Ownership};
use crate::parking::Parking;
use crate::readdir::Listings;
use crate::sys::{self, Errno, Stat, SysResult};
use crate::whiteout;

/// Longest name the union accepts (the upper must also be able to hold it).
pub const NAME_MAX: usize = 255;

/// Names in the path index.
const INDEX_CAPACITY: usize = 6 * 1024;

/// Directory fds kept open (the daemon raises its fd limit at start; see `sys::raise_fd_limit`).
const DIR_FD_CAPACITY: usize = 1024;

/// Whether a resolution was read from the layers just now or came from the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    JustRead,
    Cached,
}

/// Who asked: new objects are owned by the caller, as on any filesystem.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

pub struct Union {
    pub stack: LayerStack,
    pub nodes: NodeTable,
    pub index: PathIndex,
    /// Open directories of the layers (see `dirfds`).
    pub dir_fds: DirFds,
    pub mapper: InoMapper,
    pub handles: Handles,
    /// Directory listings being read (see `readdir`).
    pub listings: Listings,
    /// New objects moved aside because their inode number is still held (see `parking`).
    pub parking: Parking,
    pub opts: FsOptions,
    pub metrics: Metrics,
    /// The daemon runs as root, so it must hand ownership of new objects to the caller.
    pub chown_new: bool,
    /// Id mappings, squashing and override xattrs (see `ownership`).
    pub ownership: Ownership,
    /// Copy-ups whose data is synced in the background (see `durability`).
    pub durability: Durability,
    /// Merged directories looked into once so far (see `dir_names`).
    first_lookups: FirstLookups,
}

/// Directories remembered by `FirstLookups` at most (then it starts over: the worst case is a
/// listing read one lookup early).
const FIRST_LOOKUPS_CAPACITY: usize = 4096;

/// The merged directories a name was looked up in once, without reading their listings.
#[derive(Default)]
struct FirstLookups {
    dirs: parking_lot::Mutex<std::collections::HashSet<Ino>>,
}

impl FirstLookups {
    /// True the first time `dir` is asked about.
    fn is_first(&self, dir: Ino) -> bool {
        let mut dirs = self.dirs.lock();
        if dirs.len() >= FIRST_LOOKUPS_CAPACITY {
            dirs.clear();
        }
        dirs.insert(dir)
    }
}

impl Union {
    pub fn new(config: &MountConfig) -> Result<Union, SetupError> {
        sys::raise_fd_limit();
        let stack = LayerStack::open(&config.layers, config.fs.whiteout)?;
        let mapper = InoMapper::new(stack.layers().iter().map(|l| l.dev), config.fs.ino32);
        let root_layers: Vec<LayerIdx> = stack.all().collect();
        let nodes = NodeTable::default();
        let root = Node::new(
            ROOT_INO,
            Kind::Dir,
            None,
            Placement {
                layer: LayerIdx(0),
                dir_layers: root_layers,
            },
        );
        nodes.get_or_insert(ROOT_INO, Kind::Dir, || root);
        let durability = Durability::new(
            config.fs.copy_up_sync == CopyUpSync::Background && stack.upper().is_some(),
            stack.format.origin_xattr(),
        );
        Ok(Union {
            stack,
            nodes,
            index: PathIndex::new(INDEX_CAPACITY),
            dir_fds: DirFds::new(DIR_FD_CAPACITY),
            mapper,
            handles: Handles::default(),
            listings: Listings::default(),
            parking: Parking::default(),
            opts: config.fs.clone(),
            metrics: Metrics::default(),
            chown_new: sys::euid() == 0,
            ownership: Ownership::new(&config.fs),
            durability,
            first_lookups: FirstLookups::default(),
        })
    }

    pub fn read_only(&self) -> bool {
        self.stack.upper().is_none()
    }

    pub fn node(&self, ino: u64) -> SysResult<Arc<Node>> {
        self.nodes.get(ino)
    }

    /// Checks a name given by the kernel for lookup: too long, or hidden by the union.
    pub fn check_lookup_name(&self, parent: &Node, name: &OsStr) -> SysResult<()> {
        if name.len() > NAME_MAX {
            return Err(Errno::NAMETOOLONG);
        }
        if whiteout::is_reserved_name(name.as_bytes()) || self.is_hidden_root_name(parent, name) {
            return Err(Errno::NOENT);
        }
        Ok(())
    }

    /// Checks a name for creation: whiteout look-alikes cannot be made through the mount.
    pub fn check_new_name(&self, parent: &Node, name: &OsStr) -> SysResult<()> {
        if name.len() > NAME_MAX {
            return Err(Errno::NAMETOOLONG);
        }
        if whiteout::is_reserved_name(name.as_bytes()) {
            return Err(Errno::INVAL);
        }
        if self.is_hidden_root_name(parent, name) {
            return Err(Errno::PERM);
        }
        if self.read_only() {
            return Err(Errno::ROFS);
        }
        Ok(())
    }

    /// The default work directory sits in the upper root and never shows.
    pub fn is_hidden_root_name(&self, parent: &Node, name: &OsStr) -> bool {
        parent.ino == ROOT_INO && self.stack.hidden_root_name.as_deref() == Some(name)
    }

    /// Resolves `name` in `parent` through the index, falling back to the layers.
    pub fn resolve_child(&self, parent: &Arc<Node>, name: &OsStr) -> SysResult<Option<Resolved>> {
        Ok(self.resolve_child_fresh(parent, name)?.0)
    }

    /// `resolve_child`, also saying whether the answer was read from the layers just now (its
    /// `stat` is then current, and `instantiate` need not stat the object again).
    fn resolve_child_fresh(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
    ) -> SysResult<(Option<Resolved>, Freshness)> {
        if let Some(cached) = self.index.get(parent.ino, name) {
            let found = match cached {
                Cached::Absent => None,
                Cached::Present(r) => Some(r),
            };
            return Ok((found, Freshness::Cached));
        }
        let epoch = self.index.epoch();
        let placement = parent.placement();
        let names = self.dir_names(parent, &placement.dir_layers, epoch);
        let listed = names.as_ref().and_then(|n| n.listed(name.as_bytes()));
        let resolve = || {
            lookup::resolve(
                &self.stack,
                &|l| self.dir_in(parent, l),
                &placement.dir_layers,
                name,
                listed,
            )
        };
        let mut found = resolve()?;
        if let Some(r) = found.as_mut().filter(|r| r.unsynced) {
            if !self.judge_unsynced(parent, name, r)? {
                // Removed: what the layers below hold shows again.
                found = resolve()?;
                if found.as_ref().is_some_and(|r| r.unsynced) {
                    return Err(Errno::IO);
                }
            }
        }
        let value = match &found {
            Some(r) => Cached::Present(r.clone()),
            None => Cached::Absent,
        };
        self.index
            .insert_if_unchanged(parent.ino, name, value, epoch);
        Ok((found, Freshness::JustRead))
    }

    /// Decides on a copy-up found marked unsynced (see `durability`): one this daemon is still
    /// syncing, or one an earlier daemon made during this boot, stands (the latter is synced
    /// now); one from before the machine went down is removed. Whether it stands.
    fn judge_unsynced(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        found: &mut Resolved,
    ) -> SysResult<bool> {
        if self.durability.is_waiting(found.stat.st_ino) {
            return Ok(true);
        }
        let upper = self.upper_idx()?;
        let dir = self.dir_in(parent, upper)?;
        let Some(record) = lookup::read_origin(&self.stack, dir.as_fd(), name) else {
            return Ok(true); // settled meanwhile
        };
        if record.unsynced_boot.is_none() {
            found.unsynced = false;
            return Ok(true);
        }
        match self.durability.verdict(&record) {
            Verdict::Keep => {
                self.durability.adopt(dir.as_fd(), name, &record)?;
                found.unsynced = false;
                Ok(true)
            }
            Verdict::Discard => {
                tracing::warn!(?name, "removing a copy-up left unsynced by a crash");
                match self.stack.work()?.discard(dir.as_fd(), name) {
                    // NOENT: another lookup got there first.
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e),
                }
                self.index.changed(parent.ino, name);
                Ok(false)
            }
        }
    }

    /// The directory's indexed names, read now if it spans several layers (a single-layer
    /// directory is answered by one stat per lookup anyway). A directory that cannot be read
    /// is simply not indexed.
    fn dir_names(&self, dir: &Node, layers: &[LayerIdx], epoch: u64) -> Option<Arc<DirNames>> {
        if let Some(names) = self.index.dir_names(dir.ino) {
            return Some(names);
        }
        if layers.len() < 2 {
            return None;
        }
        // Reading every layer's listing pays off from the second lookup in a directory on; a
        // path walked once (an exec on a fresh mount) is cheaper probed layer by layer.
        if self.first_lookups.is_first(dir.ino) {
            return None;
        }
        let mut names = DirNames::default();
        for &layer in layers {
            let fd = match self.dir_for_listing(dir, layer) {
                Ok(fd) => fd,
                Err(Errno::NOENT) | Err(Errno::NOTDIR) => continue,
                Err(_) => return None,
            };
            for entry in sys::read_dir_entries(fd).ok()? {
                names.add(whiteout::listed_name(&entry.name), layer);
            }
        }
        Some(self.index.put_dir_names(dir.ino, names, epoch))
    }

    /// Hands a resolved child to the kernel: the node (one more lookup) and fresh attributes.
    /// A resolution read just now already holds them, unless the node it names lives
    /// elsewhere by now (copied up meanwhile) or has no name left.
    pub fn instantiate(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        found: &Resolved,
        freshness: Freshness,
    ) -> SysResult<(Arc<Node>, Stat)> {
        let ino = self.mapper.map(found.identity.0, found.identity.1);
        let node = self.nodes.get_or_insert(ino, found.kind, || {
            Node::new(
                ino,
                found.kind,
                Some(Alias {
                    parent: parent.clone(),
                    name: name.into(),
                }),
                found.placement.clone(),
            )
        });
        node.add_alias(parent, name);
        let reusable = freshness == Freshness::JustRead
            && node.layer() == found.placement.layer
            && !node.is_unlinked();
        let stat = if reusable {
            self.stat_as_viewed(parent, name, found.placement.layer, found.stat)
        } else {
            self.stat_node(&node)
        };
        match stat {
            Ok(st) => Ok((node, st)),
            Err(e) => {
                self.nodes.forget(ino, 1);
                Err(e)
            }
        }
    }

    /// Looks a name up for the kernel: ENOENT, or the node with one more lookup counted.
    pub fn lookup(&self, parent: &Arc<Node>, name: &OsStr) -> SysResult<(Arc<Node>, Stat)> {
        self.check_lookup_name(parent, name)?;
        let (found, freshness) = self.resolve_child_fresh(parent, name)?;
        let found = found.ok_or(Errno::NOENT)?;
        match self.instantiate(parent, name, &found, freshness) {
            // The cached resolution went stale (a layer changed behind our back): retry fresh.
            Err(Errno::NOENT) | Err(Errno::STALE) => {
                self.index.invalidate(parent.ino, name);
                let (found, freshness) = self.resolve_child_fresh(parent, name)?;
                self.instantiate(parent, name, &found.ok_or(Errno::NOENT)?, freshness)
            }
            other => other,
        }
    }

    /// The directory containing `node` in `layer` (O_PATH, cached), with the node's name in it.
    /// The root is its own parent, named `.`.
    pub fn parent_dir_in(
        &self,
        node: &Node,
        layer: LayerIdx,
    ) -> SysResult<(Arc<OwnedFd>, std::ffi::OsString)> {
        if node.ino == ROOT_INO {
            return Ok((self.dir_in(node, layer)?, std::ffi::OsString::from(".")));
        }
        let alias = node.primary_alias().ok_or(Errno::NOENT)?;
        Ok((
            self.dir_in(&alias.parent, layer)?,
            alias.name.into_os_string(),
        ))
    }

    /// A directory node itself in `layer` (O_PATH, cached).
    pub fn dir_in(&self, dir: &Node, layer: LayerIdx) -> SysResult<Arc<OwnedFd>> {
        self.dir_fds.get_or_open(dir.ino, layer, || {
            sys::open_dir_path(self.stack.root(layer), &dir.rel_path()?)
        })
    }

    /// A fresh fd for reading a directory's entries (getdents keeps a position in it).
    pub fn dir_for_listing(&self, dir: &Node, layer: LayerIdx) -> SysResult<OwnedFd> {
        let fd = self.dir_in(dir, layer)?;
        sys::reopen_dir_read(fd.as_fd())
    }

    /// Attributes of a node's object as the mount shows them (owners translated, see
    /// `ownership`).
    pub fn stat_node(&self, node: &Node) -> SysResult<Stat> {
        if node.is_unlinked() {
            let mut st = self
                .handles
                .stat_open_file(node.ino)
                .or_else(|| self.pinned_stat(node.ino))
                .ok_or(Errno::NOENT)?;
            (st.st_uid, st.st_gid) = self.ownership.to_view(st.st_uid, st.st_gid);
            return Ok(st);
        }
        let (dir, name) = self.parent_dir_in(node, node.layer())?;
        let st = sys::stat_at(dir.as_fd(), &name)?;
        self.view_stat(dir.as_fd(), &name, st)
    }

    /// `stat_node` for attributes already read from `name` in `parent`'s `layer`.
    pub fn stat_as_viewed(
        &self,
        parent: &Node,
        name: &OsStr,
        layer: LayerIdx,
        st: Stat,
    ) -> SysResult<Stat> {
        if self.ownership.override_key().is_none() {
            // No override to read: skip opening the directory.
            let mut st = st;
            (st.st_uid, st.st_gid) = self.ownership.to_view(st.st_uid, st.st_gid);
            return Ok(st);
        }
        let dir = self.dir_in(parent, layer)?;
        self.view_stat(dir.as_fd(), name, st)
    }

    /// Applies the owner override (if any) and the id mapping to a real object's attributes.
    fn view_stat(
        &self,
        dir: std::os::fd::BorrowedFd<'_>,
        name: &OsStr,
        mut st: Stat,
    ) -> SysResult<Stat> {
        if let Some(owner) = self.stored_override(dir, name) {
            st.st_uid = owner.uid;
            st.st_gid = owner.gid;
            st.st_mode = (st.st_mode & !0o7777) | owner.perm;
        }
        (st.st_uid, st.st_gid) = self.ownership.to_view(st.st_uid, st.st_gid);
        Ok(st)
    }

    /// The owner recorded in the override xattr (`xattr_permissions`), if any.
    pub fn stored_override(&self, dir: std::os::fd::BorrowedFd<'_>, name: &OsStr) -> Option<Owner> {
        let key = self.ownership.override_key()?;
        let raw = sys::xattr::get_opt(dir, name, key).ok()??;
        crate::ownership::parse_override(&raw)
    }

    /// The upper layer's index, or EROFS for a read-only union.
    pub fn upper_idx(&self) -> SysResult<LayerIdx> {
        self.stack.upper().map(|l| l.idx).ok_or(Errno::ROFS)
    }

    /// Forgets cached resolutions of every name a node is reachable by.
    pub fn invalidate_aliases(&self, node: &Node) {
        for alias in node.aliases() {
            self.index.changed(alias.parent.ino, &alias.name);
        }
    }
}

/// Small operations that need nothing but a node.
impl Union {
    pub fn readlink(&self, node: &Node) -> SysResult<Vec<u8>> {
        if node.kind != Kind::Symlink {
            return Err(Errno::INVAL);
        }
        let (dir, name) = self.parent_dir_in(node, node.layer())?;
        sys::readlink_at(dir.as_fd(), &name)
    }

    pub fn fsyncdir(&self, node: &Node, data_only: bool) -> SysResult<()> {
        let fd = self.dir_for_listing(node, node.layer())?;
        match sys::fsync_fd(fd.as_fd(), data_only) {
            // Lowers may sit on read-only filesystems; nothing of ours is pending there.
            Err(Errno::ROFS) | Err(Errno::INVAL) if !self.stack.is_upper(node.layer()) => Ok(()),
            other => other,
        }
    }

    /// The upper's numbers (a read-only union reports its top lower).
    pub fn statfs(&self) -> SysResult<rustix::fs::StatVfs> {
        let fd = sys::open_dir_read(self.stack.root(self.stack.statfs_layer()), b"")?;
        sys::statvfs_fd(fd.as_fd())
    }

    /// `access(2)` when the kernel does not check permissions itself (no default_permissions).
    pub fn access(&self, node: &Node, mask: i32, caller: Caller) -> SysResult<()> {
        let st = self.stat_node(node)?;
        if mask & libc::W_OK != 0 && self.read_only() {
            return Err(Errno::ROFS);
        }
        if mask == libc::F_OK {
            return Ok(());
        }
        let mode = st.st_mode;
        let granted = if caller.uid == 0 {
            // root may do anything but execute a file nobody may execute
            if mask & libc::X_OK != 0 && mode & 0o111 == 0 && mode & libc::S_IFMT != libc::S_IFDIR {
                0
            } else {
                7
            }
        } else if caller.uid == st.st_uid {
            (mode >> 6) & 7
        } else if caller.gid == st.st_gid {
            (mode >> 3) & 7
        } else {
            mode & 7
        };
        if (mask as u32) & !granted & 7 != 0 {
            Err(Errno::ACCESS)
        } else {
            Ok(())
        }
    }
}
