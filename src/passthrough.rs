//! FUSE passthrough: the kernel reads, writes and maps an open file through its backing file in
//! the upper layer, without a round trip to the daemon per request (Linux 6.9+). Registering a
//! backing file needs CAP_SYS_ADMIN, so only root mounts get it; everything else keeps the
//! cached path (the daemon serves READ/WRITE through `handles`).
//!
//! The kernel keeps each inode in one io mode at a time (`fs/fuse/iomode.c`): a passthrough
//! open while cached opens exist fails the user's open(2), and so does a cached open while
//! passthrough opens exist; concurrent passthrough opens must name the same backing file. The
//! daemon therefore decides per node, counting its opens of each mode:
//! - a node with live passthrough opens answers every new open passthrough, with the node's one
//!   `BackingId`, dropped when its last open is released;
//! - a node with live cached opens answers every new open cached;
//! - a node with no live opens starts passthrough only if the open is eligible: the node is in
//!   the upper layer (write opens are copied up before) or the union is read-only (no upper),
//!   so no copy-up can ever happen under a passthrough open (a lower file's passthrough open would keep reading the lower copy
//!   while writers changed the upper one), and the open is not O_DIRECT (the daemon keeps
//!   serving those, as before: the upper's filesystem may not do direct I/O).
//!
//! RELEASE reaches the daemon after the kernel dropped its own count, so the daemon's counts
//! are never lower than the kernel's: an answer chosen from them is always one the kernel
//! accepts. A node never goes back from the upper to a lower layer, so eligibility stays true.
//!
//! Passthrough answers do not keep the node's page cache: the kernel drops pages left by an
//! earlier cached phase, and nothing fills it while the node is in passthrough mode, so a later
//! cached phase never sees stale pages. The kernel refuses passthrough together with the
//! writeback cache (`writeback` turns passthrough off).
//!
//! Locks: a shard of the node table here is taken with no other lock held (in OPEN, CREATE and
//! RELEASE); registering a backing file under it takes only handle-table and node-state locks.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::os::fd::OwnedFd;

use dashmap::DashMap;

use crate::handles::Fh;
use crate::inode::Ino;
use crate::union::Union;

/// The live opens of one node, all in the same io mode.
#[derive(Debug)]
struct NodeOpens<B> {
    handles: HashSet<Fh>,
    /// The node's backing file in passthrough mode; `None` in cached mode.
    backing: Option<Arc<B>>,
}

/// The io mode of every node with live opens. `B` is the kernel's backing-file registration
/// (`fuser::BackingId`); generic so the bookkeeping is testable without a mount.
#[derive(Debug)]
pub struct IoModes<B> {
    nodes: DashMap<Ino, NodeOpens<B>>,
    /// False when the mount option, the kernel or missing privilege rule passthrough out.
    enabled: AtomicBool,
}

/// Why registering a backing file failed, as far as the choice of io mode cares.
fn lacks_privilege(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::EACCES | libc::ENOTTY | libc::ENOSYS)
    )
}

impl<B> IoModes<B> {
    pub fn new(enabled: bool) -> Self {
        IoModes {
            nodes: DashMap::new(),
            enabled: AtomicBool::new(enabled),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Turns passthrough off for the rest of the mount (the kernel did not grant it).
    pub fn disable(&self) {
        self.enabled.store(false, Ordering::Relaxed);
    }

    /// Counts the new open `fh` of node `ino` and chooses its io mode: `Some(backing)` to answer
    /// it passthrough, `None` for the cached path. `eligible` says whether this open may start
    /// passthrough on a node without live opens; `register` registers the node's backing file
    /// with the kernel, called only when a node starts passthrough. A failed registration falls
    /// back to the cached path; one for lack of privilege turns passthrough off for good, so a
    /// rootless mount tries once.
    pub fn open(
        &self,
        ino: Ino,
        fh: Fh,
        eligible: bool,
        register: impl FnOnce() -> std::io::Result<B>,
    ) -> Option<Arc<B>> {
        let mut entry = self.nodes.entry(ino).or_insert_with(|| NodeOpens {
            handles: HashSet::new(),
            backing: None,
        });
        if entry.handles.is_empty() && eligible && self.enabled() {
            match register() {
                Ok(backing) => entry.backing = Some(Arc::new(backing)),
                Err(e) if lacks_privilege(&e) => self.disable(),
                Err(_) => {}
            }
        }
        entry.handles.insert(fh);
        entry.backing.clone()
    }

    /// Forgets the released open `fh` of node `ino`; the last one of a node drops its backing
    /// file registration.
    pub fn release(&self, ino: Ino, fh: Fh) {
        self.nodes.remove_if_mut(&ino, |_, opens| {
            opens.handles.remove(&fh);
            opens.handles.is_empty()
        });
    }

    /// Nodes with live opens (for tests).
    pub fn live_nodes(&self) -> usize {
        self.nodes.len()
    }
}

impl Union {
    /// Whether the open `fh` (opened with `flags`) may start passthrough: it is not O_DIRECT
    /// and no copy-up can ever move its node, which is in the upper layer or in a read-only
    /// union (no upper: nothing is ever copied up). See the module comment.
    pub fn may_start_passthrough(&self, fh: Fh, flags: i32) -> bool {
        let Ok(file) = self.handles.file(fh) else {
            return false;
        };
        let settled = match self.upper_idx() {
            Ok(upper) => file.node.layer() == upper,
            Err(_) => self.read_only(),
        };
        flags & libc::O_DIRECT == 0 && settled
    }

    /// The real file behind the open `fh`, to register as its node's backing file.
    pub fn backing_file(&self, fh: Fh) -> std::io::Result<Arc<OwnedFd>> {
        Ok(self.handles.file(fh)?.fd(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::io::Error;

    fn registers(calls: &Cell<u32>) -> impl FnOnce() -> std::io::Result<u32> + '_ {
        || {
            calls.set(calls.get() + 1);
            Ok(calls.get())
        }
    }

    #[test]
    fn passthrough_opens_of_a_node_share_one_backing() {
        let modes = IoModes::new(true);
        let calls = Cell::new(0);
        let a = modes.open(7, 1, true, registers(&calls)).unwrap();
        // Not eligible (O_DIRECT, say), but the node is in passthrough mode: it must follow.
        let b = modes.open(7, 2, false, registers(&calls)).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(calls.get(), 1);
        modes.release(7, 1);
        assert!(modes.open(7, 3, true, registers(&calls)).is_some());
        assert_eq!(calls.get(), 1, "still the same backing");
        modes.release(7, 2);
        modes.release(7, 3);
        assert_eq!(modes.live_nodes(), 0);
        assert!(modes.open(7, 4, true, registers(&calls)).is_some());
        assert_eq!(
            calls.get(),
            2,
            "a fresh backing once all opens were released"
        );
    }

    #[test]
    fn cached_opens_keep_a_node_cached() {
        let modes = IoModes::new(true);
        let calls = Cell::new(0);
        assert!(modes.open(7, 1, false, registers(&calls)).is_none());
        assert!(modes.open(7, 2, true, registers(&calls)).is_none());
        assert_eq!(calls.get(), 0);
        modes.release(7, 1);
        modes.release(7, 2);
        assert!(modes.open(7, 3, true, registers(&calls)).is_some());
    }

    #[test]
    fn refused_registration_falls_back_and_privilege_turns_it_off() {
        let modes: IoModes<u32> = IoModes::new(true);
        let loops = || Err(Error::from_raw_os_error(libc::ELOOP));
        assert!(modes.open(7, 1, true, loops).is_none());
        assert!(modes.enabled(), "one file's refusal says nothing of others");
        modes.release(7, 1);
        let denied = || Err(Error::from_raw_os_error(libc::EPERM));
        assert!(modes.open(8, 2, true, denied).is_none());
        assert!(!modes.enabled());
        let calls = Cell::new(0);
        assert!(modes.open(9, 3, true, registers(&calls)).is_none());
        assert_eq!(calls.get(), 0);
    }

    #[test]
    fn release_of_unknown_handles_is_harmless() {
        let modes: IoModes<u32> = IoModes::new(false);
        modes.release(1, 1);
        assert!(modes.open(1, 1, true, || Ok(1)).is_none());
        modes.release(1, 99);
        assert_eq!(modes.live_nodes(), 1);
        modes.release(1, 1);
        assert_eq!(modes.live_nodes(), 0);
    }
}
