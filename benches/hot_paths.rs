//! In-process hot paths of the union, each beside a baseline doing the same work directly:
//! - the path index (hit, negative hit, miss) against a locked `HashMap`;
//! - resolving a name that only the bottom layer has, across 1, 16 and 256 layers, against one
//!   `fstatat` in the right layer (what a lookup would cost if depth were free) and one per
//!   layer (what a naive union pays);
//! - a repeated lookup through `Union::lookup` (index hit + attributes) against one `fstatat`;
//! - the merged listing of a directory split over two layers against reading both directories
//!   and deduplicating the names.
//!
//! Run: `cargo bench --bench hot_paths [-- FILTER]`. Scratch data lives in /tmp/bench-cargo-*.

#[path = "harness/mod.rs"]
mod harness;

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use harness::{Bench, scratch};
use unionfs_rs::config::{LayerPaths, MountConfig, WhiteoutFormat};
use unionfs_rs::index::{Cached, PathIndex};
use unionfs_rs::inode::ROOT_INO;
use unionfs_rs::layers::{LayerIdx, LayerStack};
use unionfs_rs::lookup;
use unionfs_rs::sys;
use unionfs_rs::union::Union;

fn main() {
    let mut b = Bench::from_args();
    index(&mut b);
    lookup_depth(&mut b);
    readdir(&mut b);
}

fn index(b: &mut Bench) {
    b.header("path index: (parent, name) -> resolution, 10,000 names held");
    let idx = PathIndex::new(64 * 1024);
    let plain: Mutex<HashMap<(u64, OsString), u64>> = Mutex::new(HashMap::new());
    let names: Vec<OsString> = (0..10_000)
        .map(|i| OsString::from(format!("name-{i:05}")))
        .collect();
    for (i, n) in names.iter().enumerate() {
        let parent = (i % 100) as u64 + 2;
        let value = if i % 2 == 0 {
            Cached::Absent
        } else {
            present_dummy()
        };
        idx.insert(parent, n, value);
        plain.lock().unwrap().insert((parent, n.clone()), i as u64);
    }
    let mut i = 0usize;
    let mut next = || {
        i = (i + 7919) % names.len();
        ((i % 100) as u64 + 2, &names[i])
    };
    let mut j = 0usize;
    let mut next_plain = || {
        j = (j + 7919) % names.len();
        ((j % 100) as u64 + 2, names[j].clone())
    };
    b.compare(
        "index hit (positive or negative)",
        || {
            let (p, n) = next();
            idx.get(p, n).is_some()
        },
        "Mutex<HashMap>::get",
        || {
            let key = next_plain();
            plain.lock().unwrap().get(&key).is_some()
        },
    );
    let missing = OsString::from("not-there");
    b.compare(
        "index miss",
        || idx.get(1, &missing).is_some(),
        "Mutex<HashMap>::get (miss)",
        || plain.lock().unwrap().get(&(1, missing.clone())).is_some(),
    );
}

/// A `Cached::Present` with a real resolution (of /tmp), for filling the index.
fn present_dummy() -> Cached {
    thread_local! {
        static ONE: Cached = {
            let dir = scratch();
            std::fs::write(dir.path().join("f"), b"x").unwrap();
            let stack = open_stack(&[dir.path().to_path_buf()], None);
            let found = lookup::resolve(&stack, &|l| open_in(&stack, l, b""), &[LayerIdx(0)], OsStr::new("f"), None)
                .unwrap()
                .unwrap();
            Cached::Present(found)
        };
    }
    ONE.with(|c| c.clone())
}

fn open_stack(lowers: &[PathBuf], upper: Option<(&Path, &Path)>) -> LayerStack {
    let paths = LayerPaths {
        lowers: lowers.to_vec(),
        upper: upper.map(|u| u.0.to_path_buf()),
        workdir: upper.map(|u| u.1.to_path_buf()),
    };
    LayerStack::open(&paths, WhiteoutFormat::default()).expect("opening the layer stack")
}

fn open_in(stack: &LayerStack, layer: LayerIdx, rel: &[u8]) -> sys::SysResult<Arc<OwnedFd>> {
    sys::open_dir_path(stack.root(layer), rel).map(Arc::new)
}

/// `layers` lowers, each with `d/l<i>` and a few files; only the bottom one has `d/bottom`.
fn deep_stack(root: &Path, layers: usize) -> Vec<PathBuf> {
    (0..layers)
        .map(|i| {
            let layer = root.join(format!("{i}"));
            let d = layer.join("d");
            std::fs::create_dir_all(&d).unwrap();
            for j in 0..4 {
                std::fs::write(d.join(format!("l{i}_{j}")), b"x").unwrap();
            }
            if i + 1 == layers {
                std::fs::write(d.join("bottom"), b"x").unwrap();
            }
            layer
        })
        .collect()
}

fn lookup_depth(b: &mut Bench) {
    for depth in [1usize, 16, 256] {
        b.header(&format!("lookup of a bottom-layer file, {depth} layers"));
        let dir = scratch();
        let lowers = deep_stack(dir.path(), depth);
        let stack = open_stack(&lowers, None);
        let all: Vec<LayerIdx> = stack.all().collect();
        let name = OsStr::new("bottom");
        // The directory opened once per layer, as a cache of directory fds would hold it.
        let fds: Vec<Arc<OwnedFd>> = all
            .iter()
            .map(|&l| open_in(&stack, l, b"d").unwrap())
            .collect();
        let bottom_fd = fds.last().unwrap().clone();
        b.compare(
            &format!("resolve, dir fds cached ({depth} layers)"),
            || lookup::resolve(&stack, &|l| Ok(fds[l.index()].clone()), &all, name, None).unwrap(),
            "fstatat in the bottom layer",
            || sys::stat_at(bottom_fd.as_fd(), name).unwrap(),
        );
        b.compare(
            &format!("resolve, dir opened per layer ({depth} layers)"),
            || lookup::resolve(&stack, &|l| open_in(&stack, l, b"d"), &all, name, None).unwrap(),
            "fstatat in every layer",
            || {
                for fd in &fds {
                    let _ = sys::stat_at_opt(fd.as_fd(), name);
                }
            },
        );
        let config = MountConfig {
            layers: LayerPaths {
                lowers: lowers.clone(),
                upper: None,
                workdir: None,
            },
            ..Default::default()
        };
        let union = Union::new(&config).expect("building the union");
        let root = union.node(ROOT_INO).unwrap();
        let (d, _) = union.lookup(&root, OsStr::new("d")).unwrap();
        b.compare(
            &format!("Union::lookup, repeated ({depth} layers)"),
            || union.lookup(&d, name).unwrap(),
            "fstatat in the bottom layer",
            || sys::stat_at(bottom_fd.as_fd(), name).unwrap(),
        );
        let missing = OsStr::new("missing");
        b.compare(
            &format!("Union::lookup of a missing name ({depth} layers)"),
            || union.lookup(&d, missing).is_err(),
            "fstatat in the top layer (ENOENT)",
            || sys::stat_at_opt(fds[0].as_fd(), missing).unwrap().is_none(),
        );
    }
}

fn readdir(b: &mut Bench) {
    for entries in [1_000usize, 10_000] {
        b.header(&format!(
            "merged listing of a {entries}-entry directory split over 2 layers"
        ));
        let dir = scratch();
        let lowers: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("{i}"))).collect();
        for l in &lowers {
            std::fs::create_dir_all(l.join("big")).unwrap();
        }
        for e in 0..entries {
            std::fs::write(lowers[e % 2].join("big").join(format!("entry-{e:06}")), b"").unwrap();
        }
        let config = MountConfig {
            layers: LayerPaths {
                lowers: lowers.clone(),
                upper: None,
                workdir: None,
            },
            ..Default::default()
        };
        let union = Union::new(&config).expect("building the union");
        let root = union.node(ROOT_INO).unwrap();
        let (big, _) = union.lookup(&root, OsStr::new("big")).unwrap();
        b.compare(
            &format!("merged_listing ({entries} entries)"),
            || union.merged_listing(&big).unwrap().len(),
            "read_dir of both layers + dedup",
            || {
                let mut seen = HashSet::new();
                for l in &lowers {
                    for e in std::fs::read_dir(l.join("big")).unwrap() {
                        seen.insert(e.unwrap().file_name());
                    }
                }
                seen.len()
            },
        );
    }
}
