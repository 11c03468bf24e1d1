//! A fresh directory for one test's layers, mount points and logs, under the shared test
//! root: named after the test, so a kept one is easy to find.
//!
//! Invariant: it is removed on drop only when nothing is mounted at or below it (removing
//! through a live mount would delete from the layers behind it, or hang), and it is kept,
//! with its path printed, when the test failed, for inspection.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::mounts::is_mounted_below;
use super::{test_name, test_root};

static NEXT_SCRATCH: AtomicUsize = AtomicUsize::new(0);

pub struct Scratch {
    pub root: PathBuf,
}

impl Scratch {
    /// `TEST_ROOT/<test>[-<label>]-<pid>-<n>`, empty and world-traversable (tests acting as an
    /// unprivileged user must reach the mounts inside).
    pub fn new(label: &str) -> Scratch {
        let n = NEXT_SCRATCH.fetch_add(1, Ordering::Relaxed);
        let label = if label.is_empty() {
            String::new()
        } else {
            format!("-{label}")
        };
        let name = format!("{}{label}-{}-{n}", test_name(), std::process::id());
        let root = test_root().join(name);
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        for d in [&test_root(), &root] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        Scratch { root }
    }

    /// `rel` inside, created (with its parents) if missing.
    pub fn dir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.root.join(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if is_mounted_below(&self.root) {
            eprintln!("leaving {}: still mounted", self.root.display());
        } else if std::thread::panicking() {
            eprintln!("test failed; layers kept in {}", self.root.display());
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}
