//! Copy-ups made durable in the background, without ever exposing a half-copied file.
//!
//! Kernel overlayfs fsyncs every copied-up file before renaming it into place, so a crash never
//! leaves a partial copy in the upper; a copy-up then costs the whole writeback (seconds for a
//! 1 GiB file). fuse-overlayfs does not fsync at all: after a power loss a copied-up file can be
//! empty or half-written in the upper, hiding the intact lower file for good.
//!
//! unionfs-rs keeps the guarantee without the wait. The copy goes into place with its `origin`
//! record (see [`OriginRecord`]) marked *unsynced*, together with the kernel's boot id; a syncer
//! thread then (about a second later, see `SYNC_DELAY_MS`) syncs its data and rewrites the
//! record without the mark. An fsync(2) of the file through the mount (and an `O_SYNC`/`O_DSYNC`
//! open) settles it at once, and so do a rename or a link of it, so a marked file is only ever
//! found under its copy-up name. A marked file this
//! daemon does not know (an earlier daemon died before its syncer got to it) is judged when it
//! is looked up:
//! - same boot id: the machine has not gone down since, so the page cache still holds every byte
//!   of the copy: it is synced, unmarked and kept;
//! - another boot id: the machine went down before the copy was synced, its data may be partial:
//!   it is removed, and the lower file shows again as if the copy-up had never happened. Writes
//!   made to it after the copy-up are lost with it, but none of them was synced through the mount
//!   (that would have cleared the mark).
//!
//! The one window: durability obtained by other means than the mount (sync(1), syncfs(2), msync
//! of a passthrough mapping) in the moments between a copy-up and its background sync does not
//! clear the mark; a power loss in that window reverts the file to its lower version.
//!
//! Where the mark cannot be written (no xattrs in the upper) or cleared later (an unprivileged
//! daemon cannot set xattrs on a file without owner write permission), the copy is synced before
//! it is renamed into place, as before.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::sys::{self, Errno, SysResult};

/// Copies waiting for their background sync at most; past that, copy-ups sync inline (each
/// waiting copy holds an fd).
const MAX_UNSYNCED: usize = 4096;

/// The syncer starts a second after the copy-ups it is given, as the kernel's own writeback
/// waits: a burst of copy-ups (a `chmod -R`) is synced as one batch, and the disk is not taken
/// from whatever runs right after a big copy-up (measured: a program started just after a
/// 256 MiB copy-up waited 70 ms for the disk with no delay, 5 ms with it). The price: the
/// window described in the module doc lasts this second longer.
const SYNC_DELAY_MS: u64 = 1000;

/// A batch this large is synced with one syncfs(2) instead of one fdatasync(2) per file.
const SYNCFS_BATCH: usize = 16;

/// What the `origin` xattr of an upper non-directory records: the identity its inode number
/// derives from (absent for a lower file that had other hard links), and whether its data may
/// still be unsynced (with the boot id of the kernel that wrote it).
///
/// Encoded `DEV:INO`, `DEV:INO unsynced BOOT_ID`, or `unsynced BOOT_ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRecord {
    pub identity: Option<(u64, u64)>,
    pub unsynced_boot: Option<Vec<u8>>,
}

const UNSYNCED_TAG: &[u8] = b"unsynced ";

impl OriginRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some((dev, ino)) = self.identity {
            out.extend_from_slice(format!("{dev}:{ino}").as_bytes());
        }
        if let Some(boot) = &self.unsynced_boot {
            if !out.is_empty() {
                out.push(b' ');
            }
            out.extend_from_slice(UNSYNCED_TAG);
            out.extend_from_slice(boot);
        }
        out
    }

    /// `None` for a value we did not write (junk in the xattr is no identity at all).
    pub fn decode(raw: &[u8]) -> Option<OriginRecord> {
        let (identity_part, unsynced_boot) = match find(raw, UNSYNCED_TAG) {
            Some(at) => (
                raw[..at].strip_suffix(b" ").unwrap_or(&raw[..at]),
                Some(raw[at + UNSYNCED_TAG.len()..].to_vec()),
            ),
            None => (raw, None),
        };
        let identity = if identity_part.is_empty() {
            None
        } else {
            let s = std::str::from_utf8(identity_part).ok()?;
            let (dev, ino) = s.split_once(':')?;
            Some((dev.parse().ok()?, ino.parse().ok()?))
        };
        if identity.is_none() && unsynced_boot.is_none() {
            return None;
        }
        Some(OriginRecord {
            identity,
            unsynced_boot,
        })
    }

    /// The same record once the data is known to be on disk.
    fn synced(&self) -> OriginRecord {
        OriginRecord {
            identity: self.identity,
            unsynced_boot: None,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What to do with a marked file no live copy-up accounts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Written during this boot: the page cache has it all; sync and keep it.
    Keep,
    /// Written before the machine went down: may be partial; remove it.
    Discard,
}

/// One copy waiting for its sync.
struct Unsynced {
    fd: OwnedFd,
    record: OriginRecord,
    /// Set once synced and unmarked, by whichever of the syncer or an fsync got there first.
    settled: Mutex<bool>,
}

#[derive(Default)]
struct Queue {
    /// By the copy's inode number in the upper.
    waiting: HashMap<u64, Arc<Unsynced>>,
    order: Vec<u64>,
    stopping: bool,
}

struct Shared {
    /// How long the syncer lets copies gather before it syncs them (`SYNC_DELAY`; tests and
    /// anyone studying recovery set `UNIONFS_RS_SYNC_DELAY_MS` to catch copies unsynced).
    delay: std::time::Duration,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// The name of the `origin` xattr in the upper.
    key: std::ffi::OsString,
    synced_later: AtomicU64,
    synced_inline: AtomicU64,
}

/// Background syncing of copy-ups (see the module doc).
pub struct Durability {
    /// This boot's id, read once: marks new copies, and judges marked copies found later.
    this_boot: Option<Vec<u8>>,
    /// Whether copies may defer their sync (the mount asked for it, and the syncer runs).
    defers: bool,
    shared: Arc<Shared>,
    syncer: Mutex<Option<JoinHandle<()>>>,
}

/// The kernel's id for this boot: it changes exactly when the machine restarts.
fn read_boot_id() -> Option<Vec<u8>> {
    let raw = std::fs::read("/proc/sys/kernel/random/boot_id").ok()?;
    let id = raw.trim_ascii().to_vec();
    (!id.is_empty() && id.iter().all(|b| b.is_ascii_hexdigit() || *b == b'-')).then_some(id)
}

impl Durability {
    /// `background`: whether copy-ups may defer their sync at all.
    pub fn new(background: bool, key: std::ffi::OsString) -> Durability {
        let this_boot = read_boot_id();
        let delay_ms = std::env::var("UNIONFS_RS_SYNC_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(SYNC_DELAY_MS);
        let shared = Arc::new(Shared {
            delay: std::time::Duration::from_millis(delay_ms),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            key,
            synced_later: AtomicU64::new(0),
            synced_inline: AtomicU64::new(0),
        });
        let syncer = (background && this_boot.is_some()).then(|| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("unionfs-syncer".into())
                .spawn(move || shared.run())
                .ok()
        });
        let syncer = syncer.flatten();
        Durability {
            defers: syncer.is_some(),
            this_boot,
            shared,
            syncer: Mutex::new(syncer),
        }
    }

    /// The mark for a copy about to be made, or `None` when it must be synced inline. `mode`
    /// is the copy's final mode: unprivileged, the mark can only be cleared on a file the daemon
    /// may write.
    pub fn unsynced_mark(&self, mode: u32) -> Option<Vec<u8>> {
        let boot = self.this_boot.as_ref().filter(|_| self.defers)?;
        if sys::euid() != 0 && mode & 0o200 == 0 {
            return None;
        }
        if self.shared.queue.lock().waiting.len() >= MAX_UNSYNCED {
            return None;
        }
        Some(boot.clone())
    }

    /// Counts a copy-up synced before it went into place.
    pub fn note_synced_inline(&self) {
        self.shared.synced_inline.fetch_add(1, Ordering::Relaxed);
    }

    /// Hands a marked copy, now in place, to the syncer (`ino`: its inode number in the upper).
    pub fn enqueue(&self, ino: u64, fd: OwnedFd, record: OriginRecord) {
        let entry = Arc::new(Unsynced {
            fd,
            record,
            settled: Mutex::new(false),
        });
        let mut q = self.shared.queue.lock();
        q.waiting.insert(ino, entry);
        q.order.push(ino);
        drop(q);
        self.shared.wake.notify_one();
    }

    /// Whether the upper file with inode number `ino` is a copy this daemon is still syncing.
    pub fn is_waiting(&self, ino: u64) -> bool {
        self.shared.queue.lock().waiting.contains_key(&ino)
    }

    pub fn any_waiting(&self) -> bool {
        !self.shared.queue.lock().waiting.is_empty()
    }

    /// Syncs and unmarks the copy open as `fd` now, if it is still waiting (fsync through the
    /// mount, a rename or link of it, an `O_SYNC` open).
    pub fn settle_fd(&self, fd: BorrowedFd<'_>) -> SysResult<()> {
        if !self.any_waiting() {
            return Ok(());
        }
        let ino = sys::stat_fd(fd)?.st_ino;
        self.settle(ino)
    }

    /// As `settle_fd`, for the upper file `dir/name`.
    pub fn settle_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
        if !self.any_waiting() {
            return Ok(());
        }
        match sys::stat_at_opt(dir, name)? {
            Some(st) => self.settle(st.st_ino),
            None => Ok(()),
        }
    }

    fn settle(&self, ino: u64) -> SysResult<()> {
        let entry = self.shared.queue.lock().waiting.get(&ino).cloned();
        match entry {
            Some(entry) => {
                self.shared.settle_one(&entry, true, true)?;
                self.shared.queue.lock().waiting.remove(&ino);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// What to do with a marked upper file that no waiting copy accounts for.
    pub fn verdict(&self, record: &OriginRecord) -> Verdict {
        match (&record.unsynced_boot, &self.this_boot) {
            (Some(theirs), Some(ours)) if theirs == ours => Verdict::Keep,
            _ => Verdict::Discard,
        }
    }

    /// Keeps a marked file of an earlier daemon of this boot: sync it, then unmark it.
    pub fn adopt(&self, dir: BorrowedFd<'_>, name: &OsStr, record: &OriginRecord) -> SysResult<()> {
        let fd = sys::open_at(
            dir,
            name,
            sys::OFlags::RDONLY | sys::OFlags::NOFOLLOW | sys::OFlags::NONBLOCK,
            sys::Mode::empty(),
        )?;
        let entry = Unsynced {
            fd,
            record: record.clone(),
            settled: Mutex::new(false),
        };
        self.shared.settle_one(&entry, true, false)
    }

    /// Copies still waiting, and copies synced in the background / inline so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        let waiting = self.shared.queue.lock().waiting.len() as u64;
        (
            waiting,
            self.shared.synced_later.load(Ordering::Relaxed),
            self.shared.synced_inline.load(Ordering::Relaxed),
        )
    }

    /// Syncs everything still waiting and stops the syncer (at unmount).
    pub fn drain(&self) {
        self.shared.queue.lock().stopping = true;
        self.shared.wake.notify_all();
        if let Some(handle) = self.syncer.lock().take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Durability {
    fn drop(&mut self) {
        self.drain();
    }
}

impl Shared {
    /// The syncer: waits for copies, syncs them in batches, unmarks them; on stop, finishes
    /// what is queued first.
    fn run(&self) {
        loop {
            let batch = {
                let mut q = self.queue.lock();
                while q.order.is_empty() && !q.stopping {
                    self.wake.wait(&mut q);
                }
                if q.order.is_empty() {
                    return;
                }
                self.hold(&mut q);
                let inos = std::mem::take(&mut q.order);
                inos.iter()
                    .filter_map(|ino| q.waiting.get(ino).map(|e| (*ino, e.clone())))
                    .collect::<Vec<_>>()
            };
            self.sync_batch(&batch);
            let mut q = self.queue.lock();
            for (ino, _) in &batch {
                q.waiting.remove(ino);
            }
        }
    }

    /// Waits out the configured delay (cut short by the unmount).
    fn hold(&self, q: &mut parking_lot::MutexGuard<'_, Queue>) {
        let until = std::time::Instant::now() + self.delay;
        while !q.stopping && std::time::Instant::now() < until {
            self.wake.wait_until(q, until);
        }
    }

    fn sync_batch(&self, batch: &[(u64, Arc<Unsynced>)]) {
        // One syncfs covers many small copies at the cost of one journal commit; a few big ones
        // are better served by their own fdatasync (syncfs would also write others' data).
        let synced_all = batch.len() >= SYNCFS_BATCH
            && batch
                .first()
                .is_some_and(|(_, e)| rustix::fs::syncfs(e.fd.as_fd()).is_ok());
        for (ino, entry) in batch {
            if let Err(e) = self.settle_one(entry, !synced_all, false) {
                // The mark stays: the file is judged again when next looked up.
                tracing::warn!(ino, error = %e, "background sync of a copy-up failed");
            }
        }
    }

    /// Syncs one copy's data (unless a syncfs just did), unmarks it, and when `durable_unmark`
    /// also syncs the unmarking: an fsync through the mount asks for the file to be whole on
    /// disk. The syncer need not: a lost unmark costs at worst the copy after a power loss
    /// within the next journal commit.
    fn settle_one(&self, entry: &Unsynced, sync_data: bool, durable_unmark: bool) -> SysResult<()> {
        let mut settled = entry.settled.lock();
        if *settled {
            return Ok(());
        }
        let fd = entry.fd.as_fd();
        if sync_data {
            sys::fsync_fd(fd, true)?;
        }
        let synced = entry.record.synced();
        if synced.identity.is_some() {
            rustix::fs::fsetxattr(
                fd,
                self.key.as_os_str(),
                &synced.encode(),
                rustix::fs::XattrFlags::empty(),
            )?;
        } else {
            match rustix::fs::fremovexattr(fd, self.key.as_os_str()) {
                Ok(()) | Err(Errno::NODATA) => {}
                Err(e) => return Err(e),
            }
        }
        if durable_unmark {
            sys::fsync_fd(fd, false)?;
        }
        *settled = true;
        self.synced_later.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        for record in [
            OriginRecord {
                identity: Some((2049, 123456)),
                unsynced_boot: None,
            },
            OriginRecord {
                identity: Some((1, 2)),
                unsynced_boot: Some(b"0b7e-11".to_vec()),
            },
            OriginRecord {
                identity: None,
                unsynced_boot: Some(b"abc".to_vec()),
            },
        ] {
            assert_eq!(OriginRecord::decode(&record.encode()), Some(record));
        }
    }

    #[test]
    fn old_records_still_read_and_junk_is_none() {
        let r = OriginRecord::decode(b"2049:123456").unwrap();
        assert_eq!(r.identity, Some((2049, 123456)));
        assert_eq!(r.unsynced_boot, None);
        assert_eq!(OriginRecord::decode(b"junk"), None);
        assert_eq!(OriginRecord::decode(b""), None);
    }

    #[test]
    fn this_boot_keeps_and_another_discards() {
        let d = Durability::new(false, "user.x".into());
        let Some(ours) = read_boot_id() else { return };
        let mine = OriginRecord {
            identity: None,
            unsynced_boot: Some(ours),
        };
        assert_eq!(d.verdict(&mine), Verdict::Keep);
        let before = OriginRecord {
            identity: None,
            unsynced_boot: Some(b"00000000-0000-0000-0000-000000000000".to_vec()),
        };
        assert_eq!(d.verdict(&before), Verdict::Discard);
    }
}
