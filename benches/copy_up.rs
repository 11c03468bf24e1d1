//! Copy-up by file size, in process: `Union::copy_up` of a lower file into a fresh upper, beside
//! a baseline that copies the same file with `std::fs::copy` (copy_file_range) and fsyncs it,
//! which is the least any crash-safe copy-up can do. The gap is the union's own work: the
//! temporary in the work directory, metadata, the origin xattr, the rename into place.
//!
//! Run: `cargo bench --bench copy_up [-- FILTER]`; `COPY_UP_MAX_MIB` (default 64) caps the
//! largest size. Scratch data lives in /tmp/bench-cargo-* (the filesystem of /tmp matters:
//! on btrfs or xfs both sides reflink).

#[path = "harness/mod.rs"]
mod harness;

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use harness::{Bench, scratch};
use unionfs_rs::config::{LayerPaths, MountConfig};
use unionfs_rs::copy_up::CopyUpData;
use unionfs_rs::inode::ROOT_INO;
use unionfs_rs::union::Union;

fn main() {
    let mut b = Bench::from_args();
    let max_mib: u64 = std::env::var("COPY_UP_MAX_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    b.header("copy-up of one lower file into an empty upper");
    let data = scratch();
    let lower = data.path().join("lower");
    std::fs::create_dir_all(&lower).unwrap();
    for (label, size) in [
        ("4 KiB", 4u64 << 10),
        ("1 MiB", 1 << 20),
        ("64 MiB", 64 << 20),
        ("256 MiB", 256 << 20),
    ] {
        if size > max_mib << 20 {
            continue;
        }
        let name = format!("file-{size}");
        write_random(&lower.join(&name), size);
        let runs = if size >= 64 << 20 { 5 } else { 15 };
        b.compare_timed(
            &format!("Union::copy_up ({label})"),
            runs,
            || copy_up_once(&lower, &name),
            "fs::copy + fsync",
            || copy_once(&lower.join(&name)),
        );
    }
}

fn write_random(path: &Path, size: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 16];
    let mut left = size;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
}

/// A fresh union over `lower` with an empty upper; times only the copy-up itself.
fn copy_up_once(lower: &Path, name: &str) -> Duration {
    let top = scratch();
    let (upper, work) = (top.path().join("upper"), top.path().join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let config = MountConfig {
        layers: LayerPaths {
            lowers: vec![lower.to_path_buf()],
            upper: Some(upper),
            workdir: Some(work),
        },
        ..Default::default()
    };
    let union = Union::new(&config).expect("building the union");
    let root = union.node(ROOT_INO).unwrap();
    let (node, _) = union.lookup(&root, OsStr::new(name)).unwrap();
    let t = Instant::now();
    union.copy_up(&node, CopyUpData::Full).expect("copy-up");
    t.elapsed()
}

fn copy_once(src: &Path) -> Duration {
    let top = scratch();
    let dst = top.path().join("copy");
    let t = Instant::now();
    std::fs::copy(src, &dst).unwrap();
    std::fs::File::open(&dst).unwrap().sync_all().unwrap();
    t.elapsed()
}
