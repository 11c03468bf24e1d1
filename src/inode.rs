//! Nodes: what the kernel holds an inode number for, and how those numbers are made.
//!
//! The FUSE node id *is* `st_ino` (fuser sends `attr.ino` as both), so an inode number must be
//! unique within the mount, stable for the mount's life and unchanged by copy-up. It is derived
//! from the object's *identity*: the (device, inode) of the object in the layer it came from —
//! the topmost lower instance for merged directories, the `origin` recorded at copy-up for
//! copied-up files, else the object itself. When every layer is on one device the real inode
//! number is used as is (as kernel overlayfs does); otherwise the device's index goes into the
//! high bits (like overlayfs `xino`), and numbers that do not fit get a synthetic number from a
//! table. Hard links inside one layer share an identity, hence one node with several aliases.
//!
//! A node lives while the kernel holds lookups on it (or a child holds it as a parent). Its
//! aliases are the (parent, name) pairs it is reachable by; it has none once unlinked, and then
//! only its open files reach it. Kernel analog: `struct ovl_inode`, `ovl_map_ino`.

use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};

use crate::layers::LayerIdx;
use crate::sys::{Errno, SysResult};

/// A FUSE node id / `st_ino`.
pub type Ino = u64;

/// The root's node id is fixed by FUSE.
pub const ROOT_INO: Ino = 1;

/// Kind of object a node stands for; it never changes (a replaced name gets a new node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl Kind {
    pub fn from_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            _ => Kind::File,
        }
    }

    pub fn is_dir(self) -> bool {
        self == Kind::Dir
    }
}

/// One name a node is reachable by.
#[derive(Debug, Clone)]
pub struct Alias {
    pub parent: Arc<Node>,
    /// Boxed rather than an `OsString`: a node is kept for every inode the kernel holds (all of
    /// a walked tree), and the capacity word is 8 bytes of each.
    pub name: Box<OsStr>,
}

/// A node's names: nearly always exactly one, kept inline so that a node costs a single
/// allocation; hard links (rare) spill into a vector.
#[derive(Debug, Default, Clone)]
enum Aliases {
    #[default]
    None,
    One(Alias),
    Many(Vec<Alias>),
}

impl Aliases {
    fn as_slice(&self) -> &[Alias] {
        match self {
            Aliases::None => &[],
            Aliases::One(a) => std::slice::from_ref(a),
            Aliases::Many(v) => v,
        }
    }

    fn from_vec(mut v: Vec<Alias>) -> Aliases {
        match v.len() {
            0 => Aliases::None,
            1 => v.pop().map_or(Aliases::None, Aliases::One),
            _ => Aliases::Many(v),
        }
    }

    /// Changes the names as a vector (only link, unlink and rename do; lookups never).
    fn edit(&mut self, f: impl FnOnce(&mut Vec<Alias>)) {
        let mut v = match std::mem::take(self) {
            Aliases::None => Vec::new(),
            Aliases::One(a) => vec![a],
            Aliases::Many(v) => v,
        };
        f(&mut v);
        *self = Aliases::from_vec(v);
    }
}

/// Where a node's object lives now.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Topmost layer holding the object (the upper once copied up).
    pub layer: LayerIdx,
    /// For directories: every layer the merged directory reads, top-down; ends at an opaque one.
    pub dir_layers: Vec<LayerIdx>,
}

/// A node's `Placement`, stored compactly (a boxed slice has no capacity word): with the
/// generation as a `u32`, a node fits the allocator's 112-byte size class instead of 128.
#[derive(Debug)]
struct NodeState {
    aliases: Aliases,
    layer: LayerIdx,
    dir_layers: Box<[LayerIdx]>,
}

/// A merged object the kernel knows by inode number.
#[derive(Debug)]
pub struct Node {
    pub ino: Ino,
    pub kind: Kind,
    /// FUSE generation: with `ino`, unique over the mount's life. It changes when a node id is
    /// reused for a different object while the kernel may still hold the old inode (see
    /// `NodeTable::get_or_insert`), so the kernel drops its old inode instead of reusing it.
    pub generation: u32,
    lookups: AtomicU64,
    state: RwLock<NodeState>,
    /// Serialises copy-up of this node: exactly one copy per object however many threads race.
    pub copy_up_lock: Mutex<()>,
    /// Serialises namespace changes inside this directory (see the lock order in `fs`).
    pub dir_lock: Mutex<()>,
}

impl Node {
    pub fn new(ino: Ino, kind: Kind, alias: Option<Alias>, placement: Placement) -> Node {
        Node {
            ino,
            kind,
            generation: 0,
            lookups: AtomicU64::new(0),
            state: RwLock::new(NodeState {
                aliases: alias.map_or(Aliases::None, Aliases::One),
                layer: placement.layer,
                dir_layers: placement.dir_layers.into_boxed_slice(),
            }),
            copy_up_lock: Mutex::new(()),
            dir_lock: Mutex::new(()),
        }
    }

    pub fn placement(&self) -> Placement {
        let st = self.state.read();
        Placement {
            layer: st.layer,
            dir_layers: st.dir_layers.to_vec(),
        }
    }

    pub fn layer(&self) -> LayerIdx {
        self.state.read().layer
    }

    pub fn set_placement(&self, placement: Placement) {
        let mut st = self.state.write();
        st.layer = placement.layer;
        st.dir_layers = placement.dir_layers.into_boxed_slice();
    }

    /// The first alias, by which the object's data is reached (all aliases share the object).
    pub fn primary_alias(&self) -> Option<Alias> {
        self.state.read().aliases.as_slice().first().cloned()
    }

    pub fn aliases(&self) -> Vec<Alias> {
        self.state.read().aliases.as_slice().to_vec()
    }

    pub fn is_unlinked(&self) -> bool {
        self.ino != ROOT_INO && self.state.read().aliases.as_slice().is_empty()
    }

    /// Records that the node is reachable by `parent`/`name` (a lookup through another link).
    pub fn add_alias(&self, parent: &Arc<Node>, name: &OsStr) {
        let mut st = self.state.write();
        if !st
            .aliases
            .as_slice()
            .iter()
            .any(|a| a.parent.ino == parent.ino && *a.name == *name)
        {
            st.aliases.edit(|v| {
                v.push(Alias {
                    parent: parent.clone(),
                    name: name.into(),
                })
            });
        }
    }

    pub fn remove_alias(&self, parent: Ino, name: &OsStr) {
        self.state
            .write()
            .aliases
            .edit(|v| v.retain(|a| !(a.parent.ino == parent && *a.name == *name)));
    }

    /// A rename moves one alias.
    pub fn move_alias(&self, from: (Ino, &OsStr), to_parent: &Arc<Node>, to_name: &OsStr) {
        self.state.write().aliases.edit(|v| {
            v.retain(|a| !(a.parent.ino == from.0 && *a.name == *from.1));
            v.retain(|a| !(a.parent.ino == to_parent.ino && *a.name == *to_name));
            v.insert(
                0,
                Alias {
                    parent: to_parent.clone(),
                    name: to_name.into(),
                },
            );
        });
    }

    /// The path of the node relative to every layer root (`""` for the root). Directories that
    /// exist in lowers are never renamed (EXDEV), so one relative path serves every layer.
    pub fn rel_path(&self) -> SysResult<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        let mut parts: Vec<Box<OsStr>> = Vec::new();
        let mut current = self.primary_alias();
        if current.is_none() && self.ino != ROOT_INO {
            return Err(Errno::STALE);
        }
        while let Some(alias) = current {
            parts.push(alias.name.clone());
            if alias.parent.ino == ROOT_INO {
                break;
            }
            current = alias.parent.primary_alias();
            if current.is_none() {
                return Err(Errno::STALE);
            }
        }
        let mut path = Vec::new();
        for part in parts.iter().rev() {
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(part.as_bytes());
        }
        Ok(path)
    }

    pub fn add_lookup(&self, n: u64) {
        self.lookups.fetch_add(n, Ordering::AcqRel);
    }

    /// Drops `n` lookups; true when none remain.
    fn forget(&self, n: u64) -> bool {
        let prev = self
            .lookups
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            })
            .unwrap_or(0);
        prev <= n
    }
}

/// The table of live nodes, keyed by inode number.
#[derive(Debug, Default)]
pub struct NodeTable {
    nodes: DashMap<Ino, Arc<Node>>,
    /// Nodes dropped since memory was last handed back (see `forget`).
    dropped: std::sync::atomic::AtomicUsize,
}

/// Nodes dropped between two returns of free memory to the system (about 4 MB of nodes).
const NODES_PER_TRIM: usize = 16 * 1024;

impl NodeTable {
    pub fn get(&self, ino: Ino) -> SysResult<Arc<Node>> {
        self.nodes.get(&ino).map(|n| n.clone()).ok_or(Errno::STALE)
    }

    pub fn try_get(&self, ino: Ino) -> Option<Arc<Node>> {
        self.nodes.get(&ino).map(|n| n.clone())
    }

    /// Returns the live node for `ino` or inserts the one `make` builds; either way with one
    /// more lookup counted, since the caller is about to hand it to the kernel.
    ///
    /// A live node with no aliases left, or of another `kind` than the object now found, is
    /// a removed object whose inode number the layer's filesystem has since reused (removal
    /// and alias update are two steps, so a racing lookup can see the old alias): it is
    /// replaced, and its outstanding lookups carry over, since
    /// the kernel counts them on the one inode it has for that number. The replacement gets a
    /// new generation when it is certainly another object (a directory, which has no hard
    /// links, or a different kind): the kernel may still hold the old inode (an open file
    /// inside a removed directory pins it), and reusing that inode for a new directory would
    /// make the new directory "dead" to the VFS (every create in it fails with ENOENT). A
    /// non-directory of the same kind keeps its generation: it may be the same object reached
    /// through another hard link, whose open files must keep working.
    pub fn get_or_insert(&self, ino: Ino, kind: Kind, make: impl FnOnce() -> Node) -> Arc<Node> {
        use dashmap::mapref::entry::Entry;
        let node = match self.nodes.entry(ino) {
            Entry::Vacant(slot) => slot.insert(Arc::new(make())).clone(),
            Entry::Occupied(mut slot) => {
                if slot.get().is_unlinked() || slot.get().kind != kind {
                    let mut fresh = make();
                    let old = slot.get();
                    fresh.generation = if fresh.kind.is_dir() || fresh.kind != old.kind {
                        old.generation.wrapping_add(1)
                    } else {
                        old.generation
                    };
                    fresh.lookups.store(
                        slot.get().lookups.load(Ordering::Acquire),
                        Ordering::Release,
                    );
                    slot.insert(Arc::new(fresh));
                }
                slot.get().clone()
            }
        };
        node.add_lookup(1);
        node
    }

    /// Inserts the node for an object the caller has just created (create, mkdir, mknod,
    /// symlink), with one lookup counted. A node already holding `ino` is stale whatever its
    /// aliases say: the filesystem only hands out a number that is free, so that node's object
    /// is gone, but the thread that removed it may not have dropped its alias yet (removal and
    /// alias update are two steps, and another directory's create can land in between). It is
    /// replaced under a new generation, its lookups carried over as in `get_or_insert`.
    pub fn insert_fresh(&self, ino: Ino, make: impl FnOnce() -> Node) -> Arc<Node> {
        use dashmap::mapref::entry::Entry;
        let mut fresh = make();
        let node = match self.nodes.entry(ino) {
            Entry::Vacant(slot) => slot.insert(Arc::new(fresh)).clone(),
            Entry::Occupied(mut slot) => {
                let old = slot.get();
                fresh.generation = old.generation.wrapping_add(1);
                fresh
                    .lookups
                    .store(old.lookups.load(Ordering::Acquire), Ordering::Release);
                slot.insert(Arc::new(fresh));
                slot.get().clone()
            }
        };
        node.add_lookup(1);
        node
    }

    /// The kernel dropped `n` references; the node goes when it has none left.
    ///
    /// The table follows the kernel's inode cache; when the kernel lets go of many inodes
    /// (memory pressure, `drop_caches`, the reaper), the freed nodes would stay in malloc's
    /// arenas: every `NODES_PER_TRIM` dropped nodes the memory is handed back (`malloc_trim`),
    /// so the daemon's RSS shrinks again too.
    pub fn forget(&self, ino: Ino, n: u64) {
        if ino == ROOT_INO
            || self
                .nodes
                .remove_if(&ino, |_, node| node.forget(n))
                .is_none()
        {
            return;
        }
        if self.dropped.fetch_add(1, Ordering::Relaxed) + 1 >= NODES_PER_TRIM {
            self.dropped.store(0, Ordering::Relaxed);
            // SAFETY: glibc's malloc_trim only releases free memory; no pointer is passed.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Up to `n` (parent, name) pairs of named nodes that `pick` accepts, in table order from
    /// the `skip`th node on. Returned as owned values: no table lock is held once this returns.
    pub fn some_names(
        &self,
        skip: usize,
        n: usize,
        pick: impl Fn(Ino) -> bool,
    ) -> Vec<(Ino, Box<OsStr>)> {
        self.nodes
            .iter()
            .skip(skip)
            .filter(|e| pick(*e.key()))
            .filter_map(|e| e.value().primary_alias())
            .map(|a| (a.parent.ino, a.name))
            .take(n)
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// Turns (device, inode) identities into mount-unique inode numbers.
#[derive(Debug)]
pub struct InoMapper {
    /// Distinct devices of the layers, in first-seen order; index = xino tag.
    devices: Vec<u64>,
    /// Bits reserved for the device tag in the high end (0 when all layers share one device).
    tag_bits: u32,
    ino32: bool,
    /// Identities that did not fit, with the synthetic numbers they were given.
    synthetic: DashMap<(u64, u64), Ino>,
    next_synthetic: AtomicU64,
}

/// Synthetic numbers count down from here, far from real ones.
const SYNTHETIC_BASE: u64 = u64::MAX - 1;

impl InoMapper {
    pub fn new(layer_devices: impl IntoIterator<Item = u64>, ino32: bool) -> InoMapper {
        let mut devices: Vec<u64> = Vec::new();
        for dev in layer_devices {
            if !devices.contains(&dev) {
                devices.push(dev);
            }
        }
        let tag_bits = if devices.len() <= 1 {
            0
        } else {
            64 - (devices.len() as u64).leading_zeros()
        };
        InoMapper {
            devices,
            tag_bits,
            ino32,
            synthetic: DashMap::new(),
            next_synthetic: AtomicU64::new(SYNTHETIC_BASE),
        }
    }

    /// The inode number for an object whose identity is (`dev`, `ino`).
    pub fn map(&self, dev: u64, ino: u64) -> Ino {
        let tag = self
            .devices
            .iter()
            .position(|&d| d == dev)
            .map(|t| t as u64);
        let direct = match tag {
            Some(tag) if self.fits(ino) => Some(if self.tag_bits == 0 {
                ino
            } else {
                (tag << (64 - self.tag_bits)) | ino
            }),
            _ => None,
        };
        match direct {
            Some(n) if n > ROOT_INO && !self.ino32 => n,
            Some(n) if n > ROOT_INO && n <= u32::MAX as u64 => n,
            _ => self.synthetic_for(dev, ino),
        }
    }

    fn fits(&self, ino: u64) -> bool {
        self.tag_bits == 0 || ino >> (64 - self.tag_bits) == 0
    }

    fn synthetic_for(&self, dev: u64, ino: u64) -> Ino {
        *self.synthetic.entry((dev, ino)).or_insert_with(|| {
            let n = self.next_synthetic.fetch_sub(1, Ordering::Relaxed);
            if self.ino32 { n & 0xffff_ffff } else { n }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_node(ino: Ino, parent: Option<&Arc<Node>>) -> Node {
        let alias = parent.map(|p| Alias {
            parent: p.clone(),
            name: OsStr::new("d").into(),
        });
        let placement = Placement {
            layer: LayerIdx(0),
            dir_layers: vec![LayerIdx(0)],
        };
        Node::new(ino, Kind::Dir, alias, placement)
    }

    /// The daemon keeps a node for every inode the kernel holds (a walked tree: all of it).
    /// With its `Arc` header and malloc's 8 bytes, 88 bytes is glibc's 112-byte class; one
    /// field more and every node costs 128.
    #[test]
    fn a_node_fits_the_112_byte_allocation_class() {
        assert!(
            std::mem::size_of::<Node>() <= 88,
            "{}",
            std::mem::size_of::<Node>()
        );
    }

    #[test]
    fn reused_directory_number_gets_a_new_generation() {
        let table = NodeTable::default();
        let root = table.get_or_insert(ROOT_INO, Kind::Dir, || dir_node(ROOT_INO, None));
        let old = table.get_or_insert(42, Kind::Dir, || dir_node(42, Some(&root)));
        assert_eq!(old.generation, 0);
        old.remove_alias(ROOT_INO, OsStr::new("d"));
        let fresh = table.get_or_insert(42, Kind::Dir, || dir_node(42, Some(&root)));
        assert!(!Arc::ptr_eq(&old, &fresh));
        assert_eq!(
            fresh.generation, 1,
            "the kernel must not reuse the dead inode"
        );
        let again = table.get_or_insert(42, Kind::Dir, || dir_node(42, Some(&root)));
        assert!(Arc::ptr_eq(&fresh, &again), "a live node is kept");
    }

    #[test]
    fn a_created_object_replaces_a_node_that_still_has_an_alias() {
        let table = NodeTable::default();
        let root = table.get_or_insert(ROOT_INO, Kind::Dir, || dir_node(ROOT_INO, None));
        // The removal of the old object has not dropped its alias yet.
        let old = table.get_or_insert(42, Kind::Dir, || dir_node(42, Some(&root)));
        let fresh = table.insert_fresh(42, || dir_node(42, Some(&root)));
        assert!(!Arc::ptr_eq(&old, &fresh));
        assert_eq!(fresh.generation, old.generation + 1);
        assert_eq!(
            fresh.lookups.load(Ordering::Acquire),
            2,
            "lookups carry over"
        );
    }

    #[test]
    fn one_device_uses_real_numbers() {
        let m = InoMapper::new([7, 7, 7], false);
        assert_eq!(m.map(7, 1234), 1234);
    }

    #[test]
    fn root_number_is_never_reused() {
        let m = InoMapper::new([7], false);
        let n = m.map(7, ROOT_INO);
        assert_ne!(n, ROOT_INO);
        assert_eq!(m.map(7, ROOT_INO), n, "synthetic numbers are stable");
    }

    #[test]
    fn devices_get_distinct_high_bits() {
        let m = InoMapper::new([1, 2, 3], false);
        let a = m.map(1, 500);
        let b = m.map(2, 500);
        let c = m.map(3, 500);
        assert!(a != b && b != c && a != c);
        assert_eq!(b & 0xffff, 500);
    }

    #[test]
    fn huge_numbers_become_synthetic_and_unique() {
        let m = InoMapper::new([1, 2], false);
        let a = m.map(1, u64::MAX - 5);
        let b = m.map(2, u64::MAX - 5);
        assert_ne!(a, b);
    }
}
