//! The cached path index: (parent inode, name) -> resolution, including negative entries.
//!
//! Lowers are immutable and the daemon is the only writer of the upper, so a resolution stays
//! true until the daemon itself changes that name; every mutation calls `invalidate` for the
//! names it touches (and copy-up for the aliases of the copied node). A hit saves probing every
//! layer (two or three syscalls each); a negative hit answers ENOENT with no syscall at all.
//! Bounded: an LRU per shard, sharded by hash so threads rarely contend.
//!
//! Beside single names it keeps, per directory, the set of layers in which each name (or a
//! `.wh.` whiteout for it) is listed (`DirNames`), read in one pass over the directory's layers
//! (free when a readdir reads them anyway). A lookup then only asks the layers that list the
//! name, so its cost no longer grows with the depth of the stack, and a name listed nowhere is
//! absent with no syscall. Any change to a directory's namespace drops its `DirNames`.
//! Kernel analog: the dcache, one level below the kernel's own.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::ffi::{OsStr, OsString};
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;
use parking_lot::Mutex;

use crate::inode::Ino;
use crate::layers::LayerIdx;
use crate::lookup::Resolved;

const SHARDS: usize = 16;

/// A cached answer.
#[derive(Debug, Clone)]
pub enum Cached {
    Absent,
    Present(Resolved),
}

type Key = (Ino, OsString);

/// The layers listing one name: nearly always one, kept inline (no allocation per name).
#[derive(Debug)]
enum ListedIn {
    One(LayerIdx),
    Many(Box<[LayerIdx]>),
}

impl ListedIn {
    fn as_slice(&self) -> &[LayerIdx] {
        match self {
            ListedIn::One(l) => std::slice::from_ref(l),
            ListedIn::Many(v) => v,
        }
    }

    /// Adds `layer` below the ones already recorded (names are added top-down).
    fn push(&mut self, layer: LayerIdx) {
        if self.as_slice().last() == Some(&layer) {
            return;
        }
        let mut all = self.as_slice().to_vec();
        all.push(layer);
        *self = ListedIn::Many(all.into_boxed_slice());
    }
}

/// Which layers of one directory list each name (as itself or as its `.wh.` whiteout).
#[derive(Debug, Default)]
pub struct DirNames {
    layers_of: HashMap<Box<[u8]>, ListedIn>,
    /// Too large to keep: lookups in this directory ask every layer instead.
    too_big: bool,
}

impl DirNames {
    /// The marker kept for a directory too large to index, so it is not read again per lookup.
    pub fn too_big() -> DirNames {
        DirNames {
            layers_of: HashMap::new(),
            too_big: true,
        }
    }

    /// The layers worth asking about `name`, or `None` when this directory is not indexed.
    pub fn listed(&self, name: &[u8]) -> Option<&[LayerIdx]> {
        if self.too_big {
            None
        } else {
            Some(self.layers(name))
        }
    }

    /// Records that `layer` lists `name` (call in top-down layer order).
    pub fn add(&mut self, name: &[u8], layer: LayerIdx) {
        self.layers_of
            .entry(name.into())
            .and_modify(|l| l.push(layer))
            .or_insert(ListedIn::One(layer));
    }

    /// The layers that have anything to say about `name`; empty when none does.
    pub fn layers(&self, name: &[u8]) -> &[LayerIdx] {
        self.layers_of
            .get(name)
            .map(ListedIn::as_slice)
            .unwrap_or(&[])
    }

    pub fn len(&self) -> usize {
        self.layers_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers_of.is_empty()
    }
}

/// Names held in all `DirNames` together, to keep the daemon's memory flat.
const DIR_NAMES_BUDGET: usize = 32 * 1024;

#[derive(Debug)]
pub struct PathIndex {
    shards: Vec<Mutex<LruCache<Key, Cached>>>,
    dirs: Mutex<DirNamesCache>,
    /// Counts namespace changes. An answer read from the layers is only stored if no change
    /// happened while it was read: the kernel serialises lookups against creates and unlinks
    /// in one directory, but not against a copy-up, which adds an upper entry at any time.
    epoch: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// The per-directory name sets, evicted least recently used first past the budget.
#[derive(Debug)]
struct DirNamesCache {
    lru: LruCache<Ino, Arc<DirNames>>,
    names: usize,
}

impl PathIndex {
    /// An index holding at most about `capacity` names.
    pub fn new(capacity: usize) -> PathIndex {
        let per_shard = NonZeroUsize::new((capacity / SHARDS).max(16)).unwrap_or(NonZeroUsize::MIN);
        PathIndex {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
            epoch: AtomicU64::new(0),
            dirs: Mutex::new(DirNamesCache {
                lru: LruCache::unbounded(),
                names: 0,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn shard(&self, parent: Ino, name: &OsStr) -> &Mutex<LruCache<Key, Cached>> {
        let mut h = DefaultHasher::new();
        parent.hash(&mut h);
        name.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    pub fn get(&self, parent: Ino, name: &OsStr) -> Option<Cached> {
        let key = (parent, name.to_os_string());
        let hit = self.shard(parent, name).lock().get(&key).cloned();
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// The change count to pass to `insert_if_unchanged`/`put_dir_names` after reading.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Stores an answer read from the layers, unless something changed since `epoch`.
    pub fn insert_if_unchanged(&self, parent: Ino, name: &OsStr, value: Cached, epoch: u64) {
        let mut shard = self.shard(parent, name).lock();
        if self.epoch() == epoch {
            shard.put((parent, name.to_os_string()), value);
        }
    }

    /// Stores an answer the caller knows to be current (it made the change itself).
    pub fn insert(&self, parent: Ino, name: &OsStr, value: Cached) {
        self.shard(parent, name)
            .lock()
            .put((parent, name.to_os_string()), value);
    }

    /// Forgets one cached name (a stale answer found by a caller).
    pub fn invalidate(&self, parent: Ino, name: &OsStr) {
        self.shard(parent, name)
            .lock()
            .pop(&(parent, name.to_os_string()));
    }

    /// The namespace of `parent` changed at `name`: forget the name and the directory's names.
    pub fn changed(&self, parent: Ino, name: &OsStr) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.invalidate(parent, name);
        self.drop_dir_names(parent);
    }

    pub fn dir_names(&self, dir: Ino) -> Option<Arc<DirNames>> {
        self.dirs.lock().lru.get(&dir).cloned()
    }

    /// Keeps `names` for `dir` unless it alone is too large; evicts others to fit the budget.
    pub fn put_dir_names(&self, dir: Ino, names: DirNames, epoch: u64) -> Arc<DirNames> {
        // One huge directory would flush everything else: keep only a marker for it.
        let names = Arc::new(if names.len() > DIR_NAMES_BUDGET / 4 {
            DirNames::too_big()
        } else {
            names
        });
        let mut cache = self.dirs.lock();
        if self.epoch() != epoch {
            return names; // read across a change: usable for this caller only
        }
        if let Some(old) = cache.lru.put(dir, names.clone()) {
            cache.names -= old.len().max(1);
        }
        cache.names += names.len().max(1);
        while cache.names > DIR_NAMES_BUDGET {
            match cache.lru.pop_lru() {
                Some((_, evicted)) => cache.names -= evicted.len().max(1),
                None => break,
            }
        }
        names
    }

    pub fn drop_dir_names(&self, dir: Ino) {
        let mut cache = self.dirs.lock();
        if let Some(old) = cache.lru.pop(&dir) {
            cache.names -= old.len().max(1);
        }
    }

    /// Hit ratio so far, for the metrics view.
    pub fn hit_rate(&self) -> f64 {
        let hits = self.hits.load(Ordering::Relaxed) as f64;
        let total = hits + self.misses.load(Ordering::Relaxed) as f64;
        if total == 0.0 { 0.0 } else { hits / total }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_entries_and_invalidation() {
        let idx = PathIndex::new(64);
        assert!(idx.get(1, OsStr::new("a")).is_none());
        idx.insert(1, OsStr::new("a"), Cached::Absent);
        assert!(matches!(idx.get(1, OsStr::new("a")), Some(Cached::Absent)));
        idx.invalidate(1, OsStr::new("a"));
        assert!(idx.get(1, OsStr::new("a")).is_none());
        assert!(idx.hit_rate() > 0.0);
    }

    #[test]
    fn dir_names_answer_per_layer_and_drop_on_change() {
        let idx = PathIndex::new(64);
        let mut names = DirNames::default();
        names.add(b"a", LayerIdx(0));
        names.add(b"a", LayerIdx(2));
        names.add(b"b", LayerIdx(1));
        idx.put_dir_names(7, names, idx.epoch());
        let got = idx.dir_names(7).unwrap();
        assert_eq!(got.layers(b"a"), &[LayerIdx(0), LayerIdx(2)]);
        assert!(got.layers(b"zzz").is_empty());
        idx.changed(7, OsStr::new("c"));
        assert!(idx.dir_names(7).is_none());
        let stale = idx.epoch() - 1;
        idx.put_dir_names(7, DirNames::default(), stale);
        assert!(
            idx.dir_names(7).is_none(),
            "names read across a change are not kept"
        );
    }

    #[test]
    fn dir_names_stay_within_budget() {
        let idx = PathIndex::new(64);
        for dir in 0..100u64 {
            let mut names = DirNames::default();
            for i in 0..5000u32 {
                names.add(&i.to_le_bytes(), LayerIdx(0));
            }
            idx.put_dir_names(dir, names, idx.epoch());
        }
        assert!(idx.dirs.lock().names <= DIR_NAMES_BUDGET);
    }

    #[test]
    fn bounded() {
        let idx = PathIndex::new(16);
        for i in 0..10_000u64 {
            idx.insert(i, OsStr::new("x"), Cached::Absent);
        }
        let held: usize = idx.shards.iter().map(|s| s.lock().len()).sum();
        assert!(held <= 16 * SHARDS);
    }
}
