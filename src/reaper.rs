//! Keeping the node table bounded: the daemon holds a node for every inode the kernel holds,
//! and the kernel holds the inode of every name it has cached, until memory pressure (with a
//! lot of memory: never). A walk over a million files would leave a million nodes behind.
//!
//! Past `max_nodes`, names the kernel was given are invalidated (`FUSE_NOTIFY_INVAL_ENTRY`):
//! the kernel drops those dentries when nothing uses them, the inode goes with its dentry
//! (FUSE inodes are not cached without one), and the FORGET that follows frees the node. A name
//! used again is simply looked up again. Open files, working directories and names in use
//! stay: the kernel only unhashes their dentries.
//!
//! The victims are taken in the node table's own order, which is its hash order: random
//! replacement. Keeping an age order cost 8 bytes per node (a queue of every node created),
//! about 1 MB at 100k nodes, for a choice that matters little: a cold directory picked drops
//! its whole unused subtree with it.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use crate::inode::ROOT_INO;
use crate::union::Union;

/// How often the reaper looks at the node count.
const PERIOD: Duration = Duration::from_millis(500);

/// Reaping goes down to this share of `max_nodes`, so it runs in waves, not per node.
const LOW_WATER_PERCENT: usize = 90;

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
            let mut cursor = 0;
            while alive() {
                std::thread::sleep(PERIOD);
                cursor = reap(&union, &kernel, max, cursor);
            }
        })
        .map(|_| ())
}

/// One pass: invalidates names until the table would be under the low-water mark (the
/// FORGETs arrive afterwards, asynchronously). The victims are collected first and the node
/// table's locks released before the kernel is called: an invalidation waits for the
/// directory's lock, which an operation may hold while it waits for a worker, which may wait
/// for the table.
///
/// `cursor` is where in the table the last pass stopped: names still in use (which the kernel
/// keeps) are passed over next time instead of being picked again and again. Returns the next.
fn reap(union: &Union, kernel: &fuser::Notifier, max: usize, cursor: usize) -> usize {
    let live = union.nodes.len();
    if live <= max {
        return cursor;
    }
    let excess = live - max * LOW_WATER_PERCENT / 100;
    let start = cursor % live;
    let not_root = |ino| ino != ROOT_INO;
    let mut victims = union.nodes.some_names(start, excess, not_root);
    if victims.len() < excess {
        let rest = union.nodes.some_names(0, excess - victims.len(), not_root);
        victims.extend(rest);
    }
    for (parent, name) in victims {
        // ENOENT: the kernel had dropped the name already; nothing else is actionable.
        let _ = kernel.inval_entry(fuser::INodeNo(parent), OsStr::new(&name));
        union.metrics.record_reaped();
    }
    start + excess
}
