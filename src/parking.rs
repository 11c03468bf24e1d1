//! Keeping inode numbers the kernel still holds out of circulation.
//!
//! Node ids are inode numbers (fuser takes the FUSE node id from `st_ino`), so a new object
//! must not take a number the kernel still holds for a removed object: the kernel would take
//! the new object for the old one (an open racing a rename-replace would read the new file's
//! data), or mark the old inode bad (EIO for whoever still uses it). The upper's filesystem
//! hands freed numbers out again at once, so a new object that lands on a held number is
//! parked: moved into the work directory, where it keeps the number busy, and made again.
//! A parked object is removed once the kernel forgets the node that held its number, and
//! anything left at unmount goes with the work directory's temporaries at the next mount.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::inode::Ino;
use crate::layers::remove_tree;
use crate::sys::SysResult;
use crate::union::Union;

/// Objects parked in the work directory, by the node number they keep busy.
#[derive(Debug, Default)]
pub struct Parking {
    parked: Mutex<HashMap<Ino, Vec<OsString>>>,
    /// How many are parked: lets every FORGET skip the lock when none is.
    count: AtomicUsize,
}

impl Union {
    /// Whether a new object at `name` in the upper directory `dir` took a number the kernel
    /// still holds; if so it has been moved into the work directory, and the caller makes the
    /// object again. (Objects are made in the upper, so the upper's device tags the number.)
    pub fn park_if_held(&self, dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> SysResult<bool> {
        let upper = self.upper_idx()?;
        let st = crate::sys::stat_at(dir, name)?;
        let ino = self.mapper.map(self.stack.get(upper).dev, st.st_ino);
        if self.nodes.try_get(ino).is_none() {
            return Ok(false);
        }
        let work = self.stack.work()?;
        let parked = work.temp_name();
        crate::sys::rename_at(
            dir,
            name,
            work.fd.as_fd(),
            &parked,
            crate::sys::RenameFlags::NOREPLACE,
        )?;
        self.parking
            .parked
            .lock()
            .entry(ino)
            .or_default()
            .push(parked);
        self.parking.count.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// The kernel dropped `n` references to node `ino`; once none is left, objects parked
    /// for its number are removed.
    pub fn forget(&self, ino: Ino, n: u64) {
        self.nodes.forget(ino, n);
        if self.parking.count.load(Ordering::Relaxed) == 0 || self.nodes.try_get(ino).is_some() {
            return;
        }
        let Some(names) = self.parking.parked.lock().remove(&ino) else {
            return;
        };
        self.parking.count.fetch_sub(names.len(), Ordering::Relaxed);
        if let Ok(work) = self.stack.work() {
            for name in names {
                let _ = remove_tree(work.fd.as_fd(), &name);
            }
        }
    }
}
