//! Keeping the node table bounded: the daemon holds a node for every inode the kernel holds,
//! and the kernel holds the inode of every name it has cached, until memory pressure (with a
//! lot of memory: never). A walk over a million files would leave a million nodes behind.
//!
//! Past `max_nodes`, the oldest names the kernel was given are invalidated
//! (`FUSE_NOTIFY_INVAL_ENTRY`): the kernel drops those dentries when nothing uses them, its
//! inode goes with the dentry (FUSE inodes are not cached without one), and the FORGET that
//! follows frees the node. A name used again is simply looked up again. Open files, working
//! directories and names in use stay: the kernel only unhashes their dentries.
//!
//! Oldest means first handed to the kernel: nodes are queued as they are created. A parent
//! is always older than its children, so invalidating one drops a whole cold subtree.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::inode::{Ino, ROOT_INO};
use crate::union::Union;

/// How often the reaper looks at the node count.
const PERIOD: Duration = Duration::from_millis(500);

/// Reaping goes down to this share of `max_nodes`, so it runs in waves, not per node.
const LOW_WATER_PERCENT: usize = 90;

/// The order in which nodes were handed to the kernel (some long gone: skipped when met).
#[derive(Debug, Default)]
pub struct Arrivals {
    queue: Mutex<VecDeque<Ino>>,
}

impl Arrivals {
    pub fn push(&self, ino: Ino) {
        self.queue.lock().push_back(ino);
    }

    fn pop(&self) -> Option<Ino> {
        self.queue.lock().pop_front()
    }

    /// Drops the numbers of nodes that are gone once they outnumber the live ones, so the
    /// queue stays proportional to the node table (an `rm -rf` forgets without reaping).
    ///
    /// `is_live` takes the node table's locks, and the table pushes here while holding them:
    /// it is never called with the queue locked (the queue is taken out, filtered, put back
    /// in front of what arrived meanwhile).
    fn compact(&self, live: usize, is_live: impl Fn(Ino) -> bool) {
        let mut old = {
            let mut q = self.queue.lock();
            if q.len() <= 2 * live + 4096 {
                return;
            }
            std::mem::take(&mut *q)
        };
        old.retain(|&ino| is_live(ino));
        let mut q = self.queue.lock();
        old.extend(q.drain(..));
        *q = old;
        q.shrink_to_fit();
    }
}

/// Starts the reaper thread of a mount; it ends when `alive` returns false.
pub fn spawn(
    union: Arc<Union>,
    kernel: fuser::Notifier,
    alive: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<()> {
    let max = union.opts.max_nodes;
    if max == 0 {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || {
            while alive() {
                std::thread::sleep(PERIOD);
                reap(&union, &kernel, max);
            }
        })
        .map(|_| ())
}

/// One pass: invalidates the oldest names until the table is under the low-water mark (the
/// FORGETs arrive afterwards, asynchronously).
fn reap(union: &Union, kernel: &fuser::Notifier, max: usize) {
    let live = union.nodes.len();
    union
        .nodes
        .arrivals
        .compact(live, |ino| union.nodes.try_get(ino).is_some());
    if live <= max {
        return;
    }
    let mut excess = live - max * LOW_WATER_PERCENT / 100;
    while excess > 0 {
        let Some(ino) = union.nodes.arrivals.pop() else {
            return;
        };
        if ino == ROOT_INO {
            continue;
        }
        let Some(node) = union.nodes.try_get(ino) else {
            continue;
        };
        if let Some(alias) = node.primary_alias() {
            // ENOENT: the kernel had dropped the name already; nothing else is actionable.
            let _ = kernel.inval_entry(fuser::INodeNo(alias.parent.ino), &alias.name);
            union.metrics.record_reaped();
            // Still in use, the node stays: it gets another turn after the others.
            union.nodes.arrivals.push(ino);
        }
        excess -= 1;
    }
}
