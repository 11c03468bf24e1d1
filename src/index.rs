//! The cached path index: (parent inode, name) -> resolution, including negative entries.
//!
//! Lowers are immutable and the daemon is the only writer of the upper, so a resolution stays
//! true until the daemon itself changes that name; every mutation calls `invalidate` for the
//! names it touches (and copy-up for the aliases of the copied node). A hit saves probing every
//! layer (two or three syscalls each); a negative hit answers ENOENT with no syscall at all.
//! Bounded: an LRU per shard, sharded by hash so threads rarely contend.
//! Kernel analog: the dcache, one level below the kernel's own.

use std::collections::hash_map::DefaultHasher;
use std::ffi::{OsStr, OsString};
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;
use parking_lot::Mutex;

use crate::inode::Ino;
use crate::lookup::Resolved;

const SHARDS: usize = 16;

/// A cached answer.
#[derive(Debug, Clone)]
pub enum Cached {
    Absent,
    Present(Resolved),
}

type Key = (Ino, OsString);

#[derive(Debug)]
pub struct PathIndex {
    shards: Vec<Mutex<LruCache<Key, Cached>>>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl PathIndex {
    /// An index holding at most about `capacity` names.
    pub fn new(capacity: usize) -> PathIndex {
        let per_shard = NonZeroUsize::new((capacity / SHARDS).max(16)).unwrap_or(NonZeroUsize::MIN);
        PathIndex {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
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

    pub fn insert(&self, parent: Ino, name: &OsStr, value: Cached) {
        self.shard(parent, name)
            .lock()
            .put((parent, name.to_os_string()), value);
    }

    pub fn invalidate(&self, parent: Ino, name: &OsStr) {
        self.shard(parent, name)
            .lock()
            .pop(&(parent, name.to_os_string()));
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
    fn bounded() {
        let idx = PathIndex::new(16);
        for i in 0..10_000u64 {
            idx.insert(i, OsStr::new("x"), Cached::Absent);
        }
        let held: usize = idx.shards.iter().map(|s| s.lock().len()).sum();
        assert!(held <= 16 * SHARDS);
    }
}
