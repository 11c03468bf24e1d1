//! File I/O under FUSE passthrough (root mounts on Linux 6.9+: the kernel reads and writes the
//! upper file itself): data, sizes and times stay right, opens of one file in any mix of modes
//! never fail, a reader opened before a copy-up follows it, exec and mmap work, and
//! `passthrough=off` keeps the daemon on the data path. Kernel overlayfs is the reference.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::process::Command;

use common::*;

/// A pattern no two blocks share, so a misplaced block shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 12) as u8 ^ seed)
        .collect()
}

fn stats_field(m: &Mount<'_>, name: &str) -> u64 {
    let out = Command::new(UNIONFS_BIN)
        .arg("stats")
        .arg(m.root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

fn read_at(f: &mut File, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut buf).unwrap();
    buf
}

/// Writes, overwrites, appends, truncates and reads back through one file; returns what a
/// reader saw at each step and the sizes stat reported.
fn write_read_cycle(m: &Mount<'_>, rel: &str) -> (Vec<u64>, bool) {
    let path = m.path(rel);
    let data = pattern(3 << 20, 1);
    let mut sizes = Vec::new();
    let mut ok = true;
    {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        f.write_all(&data).unwrap();
        sizes.push(fs::metadata(&path).unwrap().len());
        sizes.push(f.metadata().unwrap().len());
        ok &= read_at(&mut f, 0, data.len()) == data;
        f.seek(SeekFrom::Start(4096 * 100 + 7)).unwrap();
        f.write_all(b"overwrite").unwrap();
        ok &= read_at(&mut f, 4096 * 100 + 7, 9) == b"overwrite";
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(b"tail").unwrap();
        sizes.push(fs::metadata(&path).unwrap().len());
        f.sync_all().unwrap();
        f.set_len(5000).unwrap();
        sizes.push(fs::metadata(&path).unwrap().len());
        ok &= read_at(&mut f, 0, 5000) == data[..5000];
        f.set_len(9000).unwrap();
        ok &= read_at(&mut f, 5000, 4000) == vec![0; 4000];
    }
    let reread = fs::read(&path).unwrap();
    ok &= reread.len() == 9000 && reread[..5000] == data[..5000];
    sizes.push(size_after_reopen(m, rel));
    (sizes, ok)
}

/// The size stat reports through the mount after a fresh open and close.
fn size_after_reopen(m: &Mount<'_>, rel: &str) -> u64 {
    drop(File::open(m.path(rel)).unwrap());
    fs::metadata(m.path(rel)).unwrap().len()
}

#[test]
fn data_through_passthrough_is_right() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("lower", pattern(1 << 20, 9));
        st.upper().file("upper", "u");
        let m = st.mount(b);
        let new = write_read_cycle(&m, "new");
        let upper = write_read_cycle(&m, "upper");
        let lower = write_read_cycle(&m, "lower");
        if b == Backend::UnionFs && is_passthrough_expected() {
            assert!(
                stats_field(&m, "passthrough_opens") > 0,
                "passthrough not used"
            );
        }
        (new, upper, lower)
    });
}

/// Passthrough needs root (CAP_SYS_ADMIN for the backing-file ioctl); the tests run as root.
fn is_passthrough_expected() -> bool {
    is_root()
}

#[test]
fn opens_in_every_mix_of_modes_never_fail() {
    both_backends(|b| {
        let st = Stack::new();
        st.upper().file("up", "upper data");
        st.lower(0).file("low", "lower data");
        let m = st.mount(b);
        let mut seen = Vec::new();
        for rel in ["up", "low"] {
            let path = m.path(rel);
            // A reader first, then a writer, then an O_DIRECT reader and another writer, all
            // open at once.
            let mut reader = File::open(&path).unwrap();
            let mut writer = OpenOptions::new().write(true).open(&path).unwrap();
            writer.write_all(b"WRITTEN").unwrap();
            let direct = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path);
            seen.push(direct.is_ok() as u64);
            let mut second = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            let mut s = String::new();
            reader.read_to_string(&mut s).unwrap();
            seen.push(s.len() as u64);
            let mut s2 = String::new();
            second.read_to_string(&mut s2).unwrap();
            seen.push((s == s2) as u64);
            seen.push(s.starts_with("WRITTEN") as u64);
        }
        seen
    });
}

#[test]
fn reader_opened_before_copy_up_sees_the_writer() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("f", pattern(256 << 10, 3));
        let m = st.mount(b);
        let mut reader = File::open(m.path("f")).unwrap();
        let before = read_at(&mut reader, 0, 16);
        let mut writer = OpenOptions::new().write(true).open(m.path("f")).unwrap();
        writer.write_all(b"copied up and changed").unwrap();
        let after = read_at(&mut reader, 0, 21);
        drop(writer);
        // The writer is gone; a new open (passthrough on unionfs-rs) sees the same.
        let fresh = fs::read(m.path("f")).unwrap()[..21].to_vec();
        let still = read_at(&mut reader, 0, 21);
        // The writer's data went to the copy, never to the file the reader opened first
        // (fuse-overlayfs 2.0 passes the lower file through and writes into it).
        assert_eq!(
            st.lower(0).read("f"),
            pattern(256 << 10, 3),
            "lower modified"
        );
        (before, after, fresh, still)
    });
}

#[test]
fn exec_and_mmap_of_union_files() {
    both_backends(|b| {
        let st = Stack::new();
        let echo = fs::read("/bin/echo").unwrap();
        st.lower(0)
            .file("lower_echo", &echo)
            .chmod("lower_echo", 0o755);
        st.upper()
            .file("upper_echo", &echo)
            .chmod("upper_echo", 0o755);
        st.lower(0).file("map", pattern(64 << 10, 5));
        let m = st.mount(b);
        // A binary written through the mount, then run (also while a reader keeps it open).
        fs::write(m.path("new_echo"), &echo).unwrap();
        fs::set_permissions(m.path("new_echo"), fs::Permissions::from_mode(0o755)).unwrap();
        let held = File::open(m.path("new_echo")).unwrap();
        let mut outs = Vec::new();
        for bin in ["lower_echo", "upper_echo", "new_echo"] {
            let out = Command::new(m.path(bin)).arg("hi").output().unwrap();
            outs.push(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        drop(held);
        (outs, mmap_round_trip(&m))
    });
}

/// A shared writable map of a lower file (copied up by the open for write) and a private map;
/// returns what read(2) and a new private map see afterwards.
fn mmap_round_trip(m: &Mount<'_>) -> (Vec<u8>, Vec<u8>, u64) {
    let path = m.path("map");
    let len = 64 << 10;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // SAFETY: a fresh mapping of a file we hold open, unmapped before returning; we only
    // touch bytes within `len`.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        std::ptr::copy_nonoverlapping(b"mapped!".as_ptr(), (p as *mut u8).add(4096), 7);
        assert_eq!(libc::msync(p, len, libc::MS_SYNC), 0);
        libc::munmap(p, len);
    }
    let via_read = fs::read(&path).unwrap()[4096..4103].to_vec();
    let r = File::open(&path).unwrap();
    // SAFETY: as above, read-only and private.
    let via_private = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            r.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let v = std::slice::from_raw_parts((p as *const u8).add(4096), 7).to_vec();
        libc::munmap(p, len);
        v
    };
    (via_read, via_private, fs::metadata(&path).unwrap().size())
}

#[test]
fn writes_through_passthrough_change_mtime_and_ctime() {
    both_backends(|b| {
        let st = Stack::new();
        st.upper()
            .file("up", "old")
            .times("up", 1_000_000, 1_000_000);
        let m = st.mount(b);
        let before = fs::metadata(m.path("up")).unwrap();
        let mut f = OpenOptions::new().append(true).open(m.path("up")).unwrap();
        f.write_all(b" and new").unwrap();
        let after = fs::metadata(m.path("up")).unwrap();
        let via_fd = f.metadata().unwrap();
        (
            after.mtime() > before.mtime(),
            after.ctime() >= before.ctime(),
            after.len(),
            via_fd.len(),
            fs::read_to_string(m.path("up")).unwrap(),
        )
    });
}

/// `passthrough=off`, and `writeback` (the kernel refuses passthrough with the writeback
/// cache): the daemon serves the data, which stays right.
#[test]
fn passthrough_off_keeps_the_daemon_on_the_data_path() {
    unionfs_only(|b| {
        for option in ["passthrough=off", "writeback"] {
            let st = Stack::new();
            st.lower(0).file("lower", "l");
            let m = st.mounter(b).unionfs_arg("-o").unionfs_arg(option).mount();
            let (_, ok) = write_read_cycle(&m, "new");
            let (_, ok2) = write_read_cycle(&m, "lower");
            assert!(ok && ok2, "{option}");
            assert_eq!(stats_field(&m, "passthrough_opens"), 0, "{option}");
        }
    });
}

/// A read-only union never copies up, so its lower files go passthrough too.
#[test]
fn read_only_union_reads_lower_files_through_passthrough() {
    both_backends(|b| {
        let st = Stack::read_only(2);
        st.lower(0).file("top", pattern(1 << 20, 1));
        st.lower(1).file("bottom", pattern(300_000, 2));
        let m = st.mount(b);
        let sums: Vec<bool> = [
            ("top", pattern(1 << 20, 1)),
            ("bottom", pattern(300_000, 2)),
        ]
        .iter()
        .map(|(rel, want)| fs::read(m.path(rel)).unwrap() == *want)
        .collect();
        if b == Backend::UnionFs && is_passthrough_expected() {
            assert!(stats_field(&m, "passthrough_opens") >= 2);
        }
        sums
    });
}

/// Threads opening the same files read-only, read-write and O_DIRECT at once, while lower
/// files get copied up under them: the daemon must always answer in a mode the kernel accepts,
/// so no open(2) ever fails (EIO, ETXTBSY or EBUSY would show a mixed io mode).
#[test]
fn racing_opens_in_mixed_modes_never_fail() {
    both_backends(|b| {
        let st = Stack::new();
        for i in 0..4 {
            st.lower(0).file(&format!("low{i}"), pattern(8192, i));
        }
        st.upper().file("up", pattern(8192, 9));
        let m = st.mount(b);
        let names = ["low0", "low1", "low2", "low3", "up"];
        let failures: Vec<String> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|t| {
                    let m = &m;
                    s.spawn(move || {
                        let mut failed = Vec::new();
                        // The last few files stay open, so opens overlap across threads.
                        let mut held = std::collections::VecDeque::new();
                        for i in 0..150usize {
                            let path = m.path(names[(i + t) % names.len()]);
                            let mut o = OpenOptions::new();
                            match (i + t) % 3 {
                                0 => o.read(true),
                                1 => o.read(true).write(true),
                                _ => o.read(true).custom_flags(libc::O_DIRECT),
                            };
                            let mut f = match o.open(&path) {
                                Ok(f) => f,
                                Err(e) => {
                                    failed.push(format!("{}: {e}", path.display()));
                                    continue;
                                }
                            };
                            match (i + t) % 3 {
                                0 => f.read_exact(&mut [0; 512]).unwrap(),
                                1 => f.write_all(&[t as u8; 512]).unwrap(),
                                _ => {}
                            }
                            held.push_back(f);
                            if held.len() > 3 {
                                held.pop_front();
                            }
                        }
                        failed
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        failures
    });
}
