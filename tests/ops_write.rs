//! Data operations through a real mount: open/create/read/write, truncate, fsync, fallocate,
//! copy_file_range, mmap, and copy-up itself (what lands in the upper, holes kept, atomic,
//! once per file under races, lowers never modified).

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use common::*;

fn open_rw(p: &std::path::Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(p)
}

#[test]
fn writing_a_lower_file_copies_it_up_with_its_metadata() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(1).file("f", "bottom");
        st.lower(0)
            .file("f", "hello world")
            .chmod("f", 0o640)
            .chown("f", 1000, 2000)
            .xattr("f", "user.kept", b"value")
            .times("f", OLD, OLD);
        let m = st.mount(b);
        let ino = fs::metadata(m.path("f")).unwrap().ino();
        let f = open_rw(&m.path("f")).unwrap();
        f.write_all_at(b"HELLO", 0).unwrap();
        drop(f);
        assert_eq!(read_string(&m.path("f")).unwrap(), "HELLO world");
        let meta = fs::metadata(m.path("f")).unwrap();
        assert_eq!(meta.ino(), ino, "st_ino changed by copy-up");
        assert!(meta.mtime() > OLD, "write did not update mtime");
        assert_eq!(st.upper().read("f"), b"HELLO world", "upper copy");
        let up = st.upper().stat("f");
        assert_eq!(
            (up.mode() & 0o7777, up.uid(), up.gid()),
            (0o640, 1000, 2000)
        );
        let kept = st.upper().get_xattr("f", "user.kept");
        assert_eq!(kept.as_deref(), Some(&b"value"[..]), "xattr not copied");
        assert_eq!(st.lower(0).read("f"), b"hello world", "lower modified");
        assert_eq!(
            mtime(&st.lower(0).stat("f")),
            (OLD, 0),
            "lower mtime modified"
        );
        attr(&m.path("f")).unwrap()
    });
}

#[test]
fn o_trunc_on_a_lower_file_copies_no_data() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("f", "old contents").chmod("f", 0o604);
        let m = st.mount(b);
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(m.path("f"))
            .unwrap();
        f.write_all(b"new").unwrap();
        drop(f);
        assert_eq!(read_string(&m.path("f")).unwrap(), "new");
        assert_eq!(st.upper().read("f"), b"new");
        assert_eq!(st.upper().stat("f").mode() & 0o7777, 0o604);
        assert_eq!(st.lower(0).read("f"), b"old contents");
    });
}

#[test]
fn append_to_files_in_every_position() {
    both_backends(|b| {
        let st = Stack::new();
        st.upper().file("up", "u");
        st.lower(0).file("low", "l");
        st.lower(1).file("bottom", "b");
        st.lower(0).file("both", "lower");
        st.upper().file("both", "upper");
        let m = st.mount(b);
        let mut out = Vec::new();
        for name in ["up", "low", "bottom", "both"] {
            let mut f = OpenOptions::new().append(true).open(m.path(name)).unwrap();
            f.write_all(b"+1").unwrap();
            f.write_all(b"+2").unwrap();
            drop(f);
            out.push(read_string(&m.path(name)).unwrap());
        }
        assert_eq!(out, ["u+1+2", "l+1+2", "b+1+2", "upper+1+2"]);
        assert_eq!(st.lower(1).read("bottom"), b"b");
        out
    });
}

#[test]
fn creating_in_a_lower_directory_copies_up_its_ancestors() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(1).file("a/b/c/old", "o");
        st.lower(1).chmod("a", 0o751).chown("a", 11, 12);
        st.lower(1).chmod("a/b", 0o700).chown("a/b", 13, 14);
        st.lower(1).chmod("a/b/c", 0o775).chown("a/b/c", 15, 16);
        st.lower(1).xattr("a/b", "user.dir", b"x");
        let m = st.mount(b);
        fs::write(m.path("a/b/c/new"), "n").unwrap();
        assert_eq!(names(&m.path("a/b/c")).unwrap(), ["new", "old"]);
        let mut got = Vec::new();
        for (d, perm, uid, gid) in [
            ("a", 0o751, 11, 12),
            ("a/b", 0o700, 13, 14),
            ("a/b/c", 0o775, 15, 16),
        ] {
            let up = st.upper().stat(d);
            assert!(up.is_dir(), "{d} not copied up");
            assert_eq!(
                (up.mode() & 0o7777, up.uid(), up.gid()),
                (perm, uid, gid),
                "{d}"
            );
            assert!(!st.upper().is_opaque(d), "copied-up {d} must not be opaque");
            got.push(attr(&m.path(d)).unwrap());
        }
        let x = st.upper().get_xattr("a/b", "user.dir");
        assert_eq!(x.as_deref(), Some(&b"x"[..]), "dir xattr not copied");
        assert!(!st.upper().exists("a/b/c/old"), "sibling copied up");
        assert_eq!(st.upper().read("a/b/c/new"), b"n");
        got
    });
}

#[test]
fn copy_up_keeps_the_parent_directory_times() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("d/f", "x");
        st.lower(0).times("d", OLD, OLD);
        let m = st.mount(b);
        fs::write(m.path("d/f"), "changed").unwrap();
        // Writing a file's data does not change its directory (POSIX); copy-up must not
        // leak the upper directory's own time change into the merged view.
        let d = fs::metadata(m.path("d")).unwrap();
        assert_eq!(mtime(&d), (OLD, 0), "parent mtime after copy-up");
    });
}

#[test]
fn create_excl_in_every_position() {
    both_backends(|b| {
        let st = Stack::new();
        st.upper().file("up", "u");
        st.lower(0).file("low", "l");
        st.lower(0).file("both", "l");
        st.upper().file("both", "u");
        st.lower(0).file("gone", "l");
        st.upper().whiteout("gone");
        st.lower(1).file("opq/hidden", "h");
        st.upper().opaque("opq", Opaque::Trusted);
        st.lower(0).dir("dir");
        let m = st.mount(b);
        let excl = |n: &str| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o640)
                .open(m.path(n))
                .map(|mut f| f.write_all(b"new").unwrap())
        };
        let res: Vec<(&str, i32)> = ["up", "low", "both", "gone", "opq/hidden", "dir", "fresh"]
            .iter()
            .map(|n| (*n, errno(&excl(n))))
            .collect();
        let want = [
            ("up", libc::EEXIST),
            ("low", libc::EEXIST),
            ("both", libc::EEXIST),
            ("gone", 0),
            ("opq/hidden", 0),
            ("dir", libc::EEXIST),
            ("fresh", 0),
        ];
        assert_eq!(res, want);
        // The whiteout was replaced by the new file, not kept beside it.
        assert_eq!(st.upper().entry("gone"), Entry::File(b"new".to_vec()));
        assert_eq!(st.upper().stat("gone").mode() & 0o777, 0o640);
        assert_eq!(read_string(&m.path("gone")).unwrap(), "new");
        assert_eq!(st.lower(0).read("low"), b"l");
        res
    });
}

#[test]
fn truncate_in_every_position() {
    both_backends(|b| {
        let st = Stack::new();
        st.upper().file("up", "0123456789");
        st.lower(0).file("low", "0123456789");
        st.lower(1).file("bottom", "0123456789");
        st.lower(0).file("gone", "x");
        st.upper().whiteout("gone");
        let m = st.mount(b);
        let mut out = Vec::new();
        for (name, len) in [("up", 3), ("low", 4), ("bottom", 20)] {
            let f = OpenOptions::new().write(true).open(m.path(name)).unwrap();
            f.set_len(len).unwrap();
            drop(f);
            let data = fs::read(m.path(name)).unwrap();
            assert_eq!(data.len() as u64, len, "{name}");
            out.push(data);
            assert_eq!(st.upper().read(name), out.last().unwrap().clone(), "{name}");
        }
        // truncate(2) by path too.
        let c = sys::cstr(&m.path("gone"));
        // SAFETY: valid C string.
        let r = unsafe { libc::truncate(c.as_ptr(), 0) };
        let e = std::io::Error::last_os_error().raw_os_error();
        assert_eq!(
            (r, e),
            (-1, Some(libc::ENOENT)),
            "truncate of a whited-out name"
        );
        assert_eq!(st.lower(0).read("low"), b"0123456789");
        out
    });
}

#[test]
fn fsync_fdatasync_and_fsyncdir() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("low", "l");
        st.lower(0).file("d/x", "x");
        let m = st.mount(b);
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(m.path("new"))
            .unwrap();
        f.write_all(b"data").unwrap();
        f.sync_all().unwrap();
        f.sync_data().unwrap();
        // fsync of a read-only fd of a lower file: allowed, and it must not copy up.
        let ro = File::open(m.path("low")).unwrap();
        ro.sync_all().unwrap();
        assert!(!st.upper().exists("low"), "fsync copied up");
        for dir in ["", "d"] {
            sys::open_dir(&m.path(dir)).unwrap().sync_all().unwrap();
        }
    });
}

#[test]
fn fallocate_extends_and_punches_holes() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("low", vec![b'a'; 16384]);
        let m = st.mount(b);
        let f = open_rw(&m.path("low")).unwrap();
        sys::fallocate(&f, 0, 0, 32768).unwrap();
        assert_eq!(
            f.metadata().unwrap().len(),
            32768,
            "fallocate mode 0 extends"
        );
        sys::fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 0, 65536).unwrap();
        assert_eq!(
            f.metadata().unwrap().len(),
            32768,
            "KEEP_SIZE changed the size"
        );
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        sys::fallocate(&f, punch, 4096, 8192).unwrap();
        let mut buf = vec![0u8; 16384];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert!(buf[..4096].iter().all(|c| *c == b'a'));
        assert!(
            buf[4096..12288].iter().all(|c| *c == 0),
            "punched range not zero"
        );
        assert!(buf[12288..].iter().all(|c| *c == b'a'));
        let hole = sys::lseek(&f, 0, libc::SEEK_HOLE).unwrap();
        assert_eq!(hole, 4096, "punched hole not seen by SEEK_HOLE");
        drop(f);
        assert_eq!(st.lower(0).read("low"), vec![b'a'; 16384], "lower modified");
        assert_eq!(st.upper().stat("low").len(), 32768);
    });
}

#[test]
fn copy_file_range_between_layers() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("src", "0123456789abcdef");
        st.lower(1).file("dst", "................");
        let m = st.mount(b);
        let src = File::open(m.path("src")).unwrap();
        let dst = open_rw(&m.path("dst")).unwrap();
        assert_eq!(sys::copy_file_range(&src, 4, &dst, 2, 6).unwrap(), 6);
        let new = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(m.path("new"))
            .unwrap();
        assert_eq!(sys::copy_file_range(&src, 0, &new, 0, 100).unwrap(), 16);
        drop((src, dst, new));
        assert_eq!(read_string(&m.path("dst")).unwrap(), "..456789........");
        assert_eq!(read_string(&m.path("new")).unwrap(), "0123456789abcdef");
        assert_eq!(st.lower(1).read("dst"), b"................");
        assert!(!st.upper().exists("src"), "source of a copy was copied up");
    });
}

#[test]
fn copy_up_keeps_holes() {
    both_backends(|b| {
        let st = Stack::new();
        let mib = 1u64 << 20;
        st.lower(0)
            .sparse("sparse", 64 * mib, &[(0, b"head"), (32 * mib, b"mid")]);
        let m = st.mount(b);
        let f = open_rw(&m.path("sparse")).unwrap();
        f.write_all_at(b"tail", 64 * mib - 4).unwrap();
        drop(f);
        let up = st.upper().stat("sparse");
        assert_eq!(up.len(), 64 * mib);
        // A dense copy would allocate 64 MiB; allow a few extents of slack.
        assert!(
            up.blocks() * 512 < 4 * mib,
            "copy-up filled holes: {} bytes allocated",
            up.blocks() * 512
        );
        let f = File::open(m.path("sparse")).unwrap();
        let mut buf = [0u8; 4];
        f.read_exact_at(&mut buf, 32 * mib).unwrap();
        assert_eq!(&buf[..3], b"mid");
    });
}

/// A lower file large enough that copying it takes a while, with a recognisable pattern.
fn big_contents(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn copy_up_is_atomic_and_never_modifies_the_lower() {
    both_backends(|b| {
        let st = Stack::new();
        let len = 32 << 20;
        let data = big_contents(len);
        st.lower(0).file("big", &data).times("big", OLD, OLD);
        let m = st.mount(b);
        let upper_big = st.upper().path("big");
        let done = Arc::new(AtomicBool::new(false));
        // Watch the upper while the copy runs: the name may appear only complete.
        let watcher = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut partial = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    if let Ok(meta) = fs::symlink_metadata(&upper_big) {
                        if meta.len() != len as u64 {
                            partial.push(meta.len());
                        }
                    }
                }
                partial
            })
        };
        let f = OpenOptions::new().append(true).open(m.path("big")).unwrap();
        done.store(true, Ordering::Relaxed);
        let partial = watcher.join().unwrap();
        drop(f);
        assert!(partial.is_empty(), "upper showed partial sizes {partial:?}");
        assert_eq!(st.upper().read("big"), data, "copied data differs");
        assert_eq!(st.lower(0).read("big"), data, "lower modified");
        assert_eq!(mtime(&st.lower(0).stat("big")), (OLD, 0));
        // Nothing but the copy landed in the upper.
        assert_eq!(st.upper().names(""), ["big"]);
    });
}

#[test]
fn racing_writers_share_one_copy_up() {
    both_backends(|b| {
        let st = Stack::new();
        let threads = 8;
        st.lower(0).file("shared", vec![b'.'; threads * 4096]);
        let m = st.mount(b);
        let path = m.path("shared");
        let barrier = Barrier::new(threads);
        // Two copy-ups would let one writer's copy replace another's: a write would vanish.
        std::thread::scope(|s| {
            for i in 0..threads {
                let (path, barrier) = (&path, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let f = open_rw(path).unwrap();
                    f.write_all_at(&[b'0' + i as u8; 16], (i * 4096) as u64)
                        .unwrap();
                });
            }
        });
        let data = fs::read(&path).unwrap();
        for i in 0..threads {
            assert_eq!(
                &data[i * 4096..i * 4096 + 16],
                &[b'0' + i as u8; 16],
                "write of thread {i} lost"
            );
        }
        assert_eq!(st.upper().read("shared"), data);
    });
}

#[test]
fn an_fd_opened_before_copy_up_sees_the_new_data() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("f", "before");
        let m = st.mount(b);
        let mut old = File::open(m.path("f")).unwrap();
        let mut s = String::new();
        old.read_to_string(&mut s).unwrap();
        assert_eq!(s, "before");
        let w = open_rw(&m.path("f")).unwrap();
        w.write_all_at(b"AFTER!", 0).unwrap();
        w.sync_all().unwrap();
        s.clear();
        old.seek(SeekFrom::Start(0)).unwrap();
        old.read_to_string(&mut s).unwrap();
        // The kernel re-opens the real file after copy-up (since 4.19), so the old fd reads
        // the upper copy, not the stale lower file.
        assert_eq!(s, "AFTER!");
    });
}

#[test]
fn shared_mmap_writes_reach_the_upper() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("m", vec![b'x'; 8192]);
        let m = st.mount(b);
        let f = open_rw(&m.path("m")).unwrap();
        // SAFETY: a fresh shared mapping of an open fd, unmapped below; no aliasing in Rust.
        unsafe {
            use std::os::fd::AsRawFd;
            let prot = libc::PROT_READ | libc::PROT_WRITE;
            let p = libc::mmap(
                std::ptr::null_mut(),
                8192,
                prot,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(
                p,
                libc::MAP_FAILED,
                "mmap: {}",
                std::io::Error::last_os_error()
            );
            std::ptr::copy_nonoverlapping(b"MAPPED".as_ptr(), p.cast::<u8>().add(4096), 6);
            assert_eq!(libc::msync(p, 8192, libc::MS_SYNC), 0);
            libc::munmap(p, 8192);
        }
        drop(f);
        let data = fs::read(m.path("m")).unwrap();
        assert_eq!(&data[4096..4102], b"MAPPED");
        assert_eq!(&st.upper().read("m")[4096..4102], b"MAPPED");
        assert_eq!(st.lower(0).read("m"), vec![b'x'; 8192]);
    });
}

#[test]
fn large_writes_read_back_intact() {
    both_backends(|b| {
        let st = Stack::new();
        let m = st.mount(b);
        let data = big_contents(5 << 20);
        fs::write(m.path("large"), &data).unwrap();
        assert!(
            fs::read(m.path("large")).unwrap() == data,
            "read back differs"
        );
        assert!(st.upper().read("large") == data, "upper differs");
    });
}

#[test]
fn opening_directories_and_specials() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).dir("d");
        st.lower(0).fifo("fifo");
        let m = st.mount(b);
        let w = OpenOptions::new().write(true).open(m.path("d"));
        let r = File::open(m.path("d"));
        // A fifo opened non-blocking for reading needs no writer; it must not copy up.
        let fifo = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(m.path("fifo"));
        let res = (errno(&w), errno(&r), errno(&fifo));
        assert_eq!(res, (libc::EISDIR, 0, 0));
        assert!(
            !st.upper().exists("fifo"),
            "opening a fifo for reading copied it up"
        );
        res
    });
}

#[test]
fn only_opens_for_writing_copy_up() {
    both_backends(|b| {
        let st = Stack::new();
        for n in ["rdonly", "creat_rdonly", "rdwr", "wronly"] {
            st.lower(0).file(n, "lower");
        }
        let m = st.mount(b);
        let open = |n: &str, o: &mut OpenOptions| o.open(m.path(n)).map(drop);
        open("rdonly", OpenOptions::new().read(true)).unwrap();
        // O_CREAT on an existing file opens it; read-only, it must not copy up.
        open(
            "creat_rdonly",
            OpenOptions::new().read(true).custom_flags(libc::O_CREAT),
        )
        .unwrap();
        // Opening for writing copies up at open, even if nothing is written.
        open("rdwr", OpenOptions::new().read(true).write(true)).unwrap();
        open("wronly", OpenOptions::new().write(true)).unwrap();
        let copied: Vec<String> = st.upper().names("");
        assert_eq!(copied, ["rdwr", "wronly"]);
        assert_eq!(st.upper().read("rdwr"), b"lower");
        copied
    });
}

/// A buffer aligned for O_DIRECT.
struct Aligned(*mut u8, std::alloc::Layout);

impl Aligned {
    fn new(len: usize, fill: u8) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: non-zero size; freed in Drop with the same layout.
        let p = unsafe { std::alloc::alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: p points to len writable bytes.
        unsafe { std::ptr::write_bytes(p, fill, len) };
        Aligned(p, layout)
    }

    fn slice(&mut self) -> &mut [u8] {
        // SAFETY: the allocation is live and exactly this long.
        unsafe { std::slice::from_raw_parts_mut(self.0, self.1.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in new with this layout.
        unsafe { std::alloc::dealloc(self.0, self.1) };
    }
}

#[test]
fn o_direct_reads_and_writes() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("d", vec![b'l'; 8192]);
        let m = st.mount(b);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(m.path("d"))
            .unwrap();
        let mut w = Aligned::new(4096, b'D');
        f.write_all_at(w.slice(), 4096).unwrap();
        let mut r = Aligned::new(8192, 0);
        f.read_exact_at(r.slice(), 0).unwrap();
        assert!(r.slice()[..4096].iter().all(|c| *c == b'l'));
        assert!(r.slice()[4096..].iter().all(|c| *c == b'D'));
        drop(f);
        assert_eq!(&st.upper().read("d")[4096..4100], b"DDDD");
    });
}

#[test]
fn open_files_follow_renames_and_survive_unlink() {
    both_backends(|b| {
        let st = Stack::new();
        st.upper().file("up", "u");
        st.lower(0).file("low", "l");
        let m = st.mount(b);
        let up = open_rw(&m.path("up")).unwrap();
        let low = open_rw(&m.path("low")).unwrap();
        fs::rename(m.path("up"), m.path("up_moved")).unwrap();
        fs::rename(m.path("low"), m.path("low_moved")).unwrap();
        up.write_all_at(b"U2", 1).unwrap();
        low.write_all_at(b"L2", 1).unwrap();
        let moved = (
            read_string(&m.path("up_moved")).unwrap(),
            read_string(&m.path("low_moved")).unwrap(),
        );
        assert_eq!(moved, ("uU2".to_string(), "lL2".to_string()));
        // Unlinked while open: still readable and writable through the fd, gone by name.
        fs::remove_file(m.path("low_moved")).unwrap();
        low.write_all_at(b"!", 3).unwrap();
        let mut buf = [0u8; 4];
        low.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"lL2!");
        assert_eq!(low.metadata().unwrap().len(), 4);
        expect_errno(
            fs::metadata(m.path("low_moved")),
            libc::ENOENT,
            "after unlink",
        );
        assert_eq!(st.lower(0).read("low"), b"l");
        moved
    });
}

#[test]
fn a_directory_opened_before_copy_up_lists_new_entries_after_rewind() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("d/old", "o");
        st.lower(1).file("d/older", "o");
        let m = st.mount(b);
        let c = sys::cstr(&m.path("d"));
        // SAFETY: valid C string; closed below.
        let dir = unsafe { libc::opendir(c.as_ptr()) };
        assert!(!dir.is_null());
        let list = |dir: *mut libc::DIR| {
            let mut v = Vec::new();
            loop {
                // SAFETY: dir is open; the entry is read before the next call.
                let e = unsafe { libc::readdir(dir) };
                if e.is_null() {
                    break;
                }
                // SAFETY: d_name is NUL-terminated.
                let n = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) };
                let n = n.to_string_lossy().into_owned();
                if n != "." && n != ".." {
                    v.push(n);
                }
            }
            v.sort();
            v
        };
        assert_eq!(list(dir), ["old", "older"]);
        fs::write(m.path("d/new"), "n").unwrap();
        fs::remove_file(m.path("d/older")).unwrap();
        // SAFETY: dir is open.
        unsafe { libc::rewinddir(dir) };
        let after = list(dir);
        // SAFETY: closing the stream opened above.
        unsafe { libc::closedir(dir) };
        assert_eq!(after, ["new", "old"]);
        after
    });
}

#[test]
fn racing_copy_ups_share_their_ancestors() {
    both_backends(|b| {
        let st = Stack::new();
        let threads = 8;
        for i in 0..threads {
            st.lower(1).file(&format!("a/b/c/f{i}"), "lower");
            st.lower(0).file(&format!("a/b/g{i}"), "lower");
        }
        st.lower(0).chmod("a/b", 0o750);
        let m = st.mount(b);
        let barrier = Barrier::new(threads);
        // Every thread needs a, a/b and a/b/c copied up first: they must not trip over each
        // other (EEXIST) or lose a file.
        std::thread::scope(|s| {
            for i in 0..threads {
                let (m, barrier) = (&m, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    fs::write(m.path(&format!("a/b/c/f{i}")), format!("t{i}")).unwrap();
                    fs::write(m.path(&format!("a/b/g{i}")), format!("t{i}")).unwrap();
                    fs::write(m.path(&format!("a/b/c/new{i}")), "n").unwrap();
                });
            }
        });
        for i in 0..threads {
            assert_eq!(
                read_string(&m.path(&format!("a/b/c/f{i}"))).unwrap(),
                format!("t{i}")
            );
            assert_eq!(
                st.upper().read(&format!("a/b/g{i}")),
                format!("t{i}").as_bytes()
            );
        }
        assert_eq!(names(&m.path("a/b/c")).unwrap().len(), 2 * threads);
        assert_eq!(st.upper().stat("a/b").mode() & 0o7777, 0o750);
        tree(m.root())
    });
}
