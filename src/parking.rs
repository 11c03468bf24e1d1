//! Keeping what the kernel still holds: inode numbers of removed objects, and objects replaced
//! by a rename.
//!
//! Node ids are inode numbers (fuser takes the FUSE node id from `st_ino`), so a new object
//! must not take a number the kernel still holds for a removed object: the kernel's `fuse_iget`
//! would find its old inode under that node id and either take the new object for the old one
//! (same generation and file type) or mark the old inode bad (`fuse_make_bad`: EIO for whoever
//! still uses it). The upper's filesystem hands freed numbers out again at once, so a new
//! object (create, mkdir, mknod, symlink, copy-up) that lands on a held number is *parked*:
//! moved into the work directory, where it keeps the number busy, and made again. A parked
//! object is removed once the kernel forgets the node that held its number, or at unmount
//! (anything left after a crash goes with the work directory's temporaries at the next mount).
//! Whiteouts need no parking: they never become nodes. Lower layers never gain objects.
//!
//! A rename over a name whose node the kernel holds *pins* the replaced object (an `O_PATH`
//! fd) until that node is forgotten: an open that looked the name up just before the rename
//! then opens the object it found, as on kernel overlayfs (which holds its real inode), instead
//! of failing with ESTALE when the VFS retry races the next rename too. A pin keeps a deleted
//! file's blocks until the kernel's FORGET arrives (asynchronously, normally within
//! microseconds, but after the rename has returned), so an upper object is only pinned while
//! the upper has ample free space and all pins together hold a small part of it: freeing
//! space on a nearly full upper takes effect at once, as `tests/enospc.rs` checks.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::inode::{Ino, Node};
use crate::layers::remove_tree;
use crate::lookup::Resolved;
use crate::sys::{self, Errno, Mode, OFlags, Stat, SysResult};
use crate::union::Union;

/// Below this much free space in the upper, replaced objects are not pinned.
const PIN_FREE_FLOOR: u64 = 256 << 20;

/// Pins together hold at most this fraction (1/N) of the upper's free space.
const PIN_FREE_SHARE: u64 = 16;

/// How often a new object is made again before giving up (see `make_unheld`).
const MAKE_ATTEMPTS: usize = 16;

/// A replaced object kept open for a node the kernel still holds.
#[derive(Debug)]
struct Pin {
    fd: OwnedFd,
    /// Space it keeps allocated (0 when other names or a lower keep it anyway).
    bytes: u64,
}

/// Objects parked in the work directory and objects pinned, by the node number they serve.
#[derive(Debug, Default)]
pub struct Parking {
    parked: Mutex<HashMap<Ino, Vec<OsString>>>,
    pins: Mutex<HashMap<Ino, Pin>>,
    /// How many are parked or pinned: lets every FORGET skip the locks when none is.
    count: AtomicUsize,
    pinned_bytes: AtomicU64,
}

impl Union {
    /// Makes a new object at `name` in `dir` with `make`, again while it lands on an inode
    /// number the kernel still holds (the previous one is parked). The filesystem hands out a
    /// different free number each time, so this ends; the bound only guards against a
    /// filesystem that would not.
    pub fn make_unheld<T>(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        mut make: impl FnMut() -> SysResult<T>,
    ) -> SysResult<T> {
        for _ in 0..MAKE_ATTEMPTS {
            let made = make()?;
            match self.park_if_held(dir, name) {
                Ok(false) => return Ok(made),
                Ok(true) => continue,
                Err(e) => {
                    let _ = remove_tree(dir, name);
                    return Err(e);
                }
            }
        }
        Err(Errno::AGAIN)
    }

    /// Whether a new object at `name` in the upper directory `dir` took a number the kernel
    /// still holds; if so it has been moved into the work directory, and the caller makes the
    /// object again. (Objects are made in the upper, so the upper's device tags the number.)
    fn park_if_held(&self, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<bool> {
        let upper = self.upper_idx()?;
        let st = sys::stat_at(dir, name)?;
        let ino = self.mapper.map(self.stack.get(upper).dev, st.st_ino);
        if self.nodes.try_get(ino).is_none() {
            return Ok(false);
        }
        let work = self.stack.work()?;
        let parked = work.temp_name();
        sys::rename_at(
            dir,
            name,
            work.fd.as_fd(),
            &parked,
            sys::RenameFlags::NOREPLACE,
        )?;
        self.parking
            .parked
            .lock()
            .entry(ino)
            .or_default()
            .push(parked);
        self.parking.count.fetch_add(1, Ordering::SeqCst);
        self.release_if_forgotten(ino);
        Ok(true)
    }

    /// Before a rename replaces `name` in `parent`: if the kernel holds the node of the
    /// non-directory there, keep that object open until the node is forgotten (see the module
    /// doc). Best effort: without a pin, an open racing the rename gets ESTALE.
    pub fn pin_replaced(&self, parent: &Node, name: &OsStr, found: &Resolved) {
        if found.kind.is_dir() {
            return; // directories are never opened through OPEN: nothing to serve
        }
        let ino = self.mapper.map(found.identity.0, found.identity.1);
        if self.nodes.try_get(ino).is_none() || self.parking.pins.lock().contains_key(&ino) {
            return;
        }
        let layer = found.placement.layer;
        let Ok(dir) = self.dir_in(parent, layer) else {
            return;
        };
        let Ok(fd) = sys::open_at(dir.as_fd(), name, OFlags::PATH, Mode::empty()) else {
            return;
        };
        // Only the upper's last name of an object frees space; a lower object stays anyway.
        // (The resolution's attributes may come from the index: ask the object itself.)
        let bytes = match sys::stat_fd(fd.as_fd()) {
            Ok(st) if self.stack.is_upper(layer) && st.st_nlink <= 1 => st.st_blocks as u64 * 512,
            Ok(_) => 0,
            Err(_) => return,
        };
        if bytes > 0 && !self.room_to_pin(bytes) {
            return;
        }
        if let Entry::Vacant(slot) = self.parking.pins.lock().entry(ino) {
            slot.insert(Pin { fd, bytes });
            self.parking.count.fetch_add(1, Ordering::SeqCst);
            self.parking
                .pinned_bytes
                .fetch_add(bytes, Ordering::Relaxed);
        }
        self.release_if_forgotten(ino);
    }

    /// Whether the upper has room for `bytes` more held by pins (see the module doc).
    fn room_to_pin(&self, bytes: u64) -> bool {
        let Ok(upper) = self.upper_idx() else {
            return false;
        };
        let Ok(vfs) = sys::statvfs_fd(self.stack.root(upper)) else {
            return false;
        };
        let free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
        let held = self.parking.pinned_bytes.load(Ordering::Relaxed) + bytes;
        free >= PIN_FREE_FLOOR && held.saturating_mul(PIN_FREE_SHARE) <= free
    }

    /// Opens the object pinned for an unlinked node (see `pin_replaced`), else ESTALE.
    pub fn reopen_pinned(&self, node: &Node, flags: OFlags) -> SysResult<OwnedFd> {
        let pins = self.parking.pins.lock();
        let pin = pins.get(&node.ino).ok_or(Errno::STALE)?;
        sys::reopen_fd(pin.fd.as_fd(), flags)
    }

    /// `fstat` of the object pinned for a node, if any.
    pub fn pinned_stat(&self, ino: Ino) -> Option<Stat> {
        let pins = self.parking.pins.lock();
        sys::stat_fd(pins.get(&ino)?.fd.as_fd()).ok()
    }

    /// The kernel dropped `n` references to node `ino`; once none is left, what was kept for
    /// it is let go.
    pub fn forget(&self, ino: Ino, n: u64) {
        self.nodes.forget(ino, n);
        if self.parking.count.load(Ordering::SeqCst) > 0 {
            self.release_if_forgotten(ino);
        }
    }

    /// A FORGET may land between the check that the kernel holds a node and the keeping of
    /// something for it: whoever comes second lets it go (the count is raised before this
    /// check, and FORGET reads it after dropping the node).
    fn release_if_forgotten(&self, ino: Ino) {
        if self.nodes.try_get(ino).is_none() {
            self.release(ino);
        }
    }

    /// Lets go of the pin and the parked objects kept for node `ino`.
    fn release(&self, ino: Ino) {
        if let Some(pin) = self.parking.pins.lock().remove(&ino) {
            self.parking.count.fetch_sub(1, Ordering::SeqCst);
            self.parking
                .pinned_bytes
                .fetch_sub(pin.bytes, Ordering::Relaxed);
        }
        let Some(names) = self.parking.parked.lock().remove(&ino) else {
            return;
        };
        self.parking.count.fetch_sub(names.len(), Ordering::SeqCst);
        if let Ok(work) = self.stack.work() {
            for name in names {
                let _ = remove_tree(work.fd.as_fd(), &name);
            }
        }
    }

    /// At unmount: everything kept goes (the kernel holds nothing any more).
    pub fn release_all_kept(&self) {
        let parked: Vec<Ino> = self.parking.parked.lock().keys().copied().collect();
        let pinned: Vec<Ino> = self.parking.pins.lock().keys().copied().collect();
        for ino in parked.into_iter().chain(pinned) {
            self.release(ino);
        }
    }
}
