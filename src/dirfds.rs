//! A bounded cache of `O_PATH` directory fds, keyed by (directory node, layer).
//!
//! Every operation starts by opening a directory of some layer; walking its path again each
//! time (one `openat2` per layer per request) was the largest syscall cost of a lookup. An fd
//! pins the directory's inode, so a cached fd stays right when the directory is renamed, and its
//! inode number cannot be reused while cached. Directories that go away (rmdir, a directory
//! renamed over) are dropped with `forget`. Bounded by an LRU, so the daemon's fd count stays
//! flat however many directories are walked; only successful opens are cached (a directory
//! that appears later, by copy-up, is then opened afresh).

use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use crate::inode::Ino;
use crate::layers::LayerIdx;
use crate::sys::SysResult;

const SHARDS: usize = 8;

type Key = (Ino, LayerIdx);

#[derive(Debug)]
pub struct DirFds {
    shards: Vec<Mutex<LruCache<Key, Arc<OwnedFd>>>>,
}

impl DirFds {
    /// A cache holding at most about `capacity` fds.
    pub fn new(capacity: usize) -> DirFds {
        let per_shard = NonZeroUsize::new((capacity / SHARDS).max(4)).unwrap_or(NonZeroUsize::MIN);
        DirFds {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
        }
    }

    fn shard(&self, ino: Ino) -> &Mutex<LruCache<Key, Arc<OwnedFd>>> {
        &self.shards[(ino as usize).wrapping_mul(0x9E37_79B9) % SHARDS]
    }

    /// The cached fd, or the one `open` makes (cached if it succeeds). The shard lock is not
    /// held while opening.
    pub fn get_or_open(
        &self,
        ino: Ino,
        layer: LayerIdx,
        open: impl FnOnce() -> SysResult<OwnedFd>,
    ) -> SysResult<Arc<OwnedFd>> {
        if let Some(fd) = self.shard(ino).lock().get(&(ino, layer)) {
            return Ok(fd.clone());
        }
        let fd = Arc::new(open()?);
        self.shard(ino).lock().put((ino, layer), fd.clone());
        Ok(fd)
    }

    /// Drops every cached fd of a directory that no longer exists where it was.
    pub fn forget(&self, ino: Ino, layers: impl IntoIterator<Item = LayerIdx>) {
        let mut shard = self.shard(ino).lock();
        for layer in layers {
            shard.pop(&(ino, layer));
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Errno, Mode, OFlags};

    fn open_tmp() -> SysResult<OwnedFd> {
        rustix::fs::open(
            "/tmp",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
    }

    #[test]
    fn caches_successes_only_and_stays_bounded() {
        let c = DirFds::new(32);
        assert_eq!(
            c.get_or_open(1, LayerIdx(0), || Err(Errno::NOENT))
                .unwrap_err(),
            Errno::NOENT
        );
        assert!(c.is_empty());
        let a = c.get_or_open(1, LayerIdx(0), open_tmp).unwrap();
        let b = c
            .get_or_open(1, LayerIdx(0), || panic!("must be cached"))
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        for ino in 0..1000 {
            c.get_or_open(ino, LayerIdx(1), open_tmp).unwrap();
        }
        assert!(c.len() <= 32 + SHARDS * 4);
        c.forget(1, [LayerIdx(0), LayerIdx(1)]);
        assert!(c.get_or_open(1, LayerIdx(0), || Err(Errno::NOENT)).is_err());
    }
}
