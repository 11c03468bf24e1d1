//! Crash safety: the daemon is killed with SIGKILL in the middle of copy-ups of large files, of
//! unlink/rename/link storms and of directory creation; the dead mount is detached and the same
//! layers are mounted again. Whatever moment the kill hit, every name must show its old state or
//! its new state, never a partial one: a copied-up file holds the whole lower content (plus a
//! prefix of what was appended), a renamed file is under exactly one of its two names, a
//! directory made over a whiteout never shows the lower's old entries. Data fsync'ed before the
//! kill is there after it, a tree half deleted by `rm -rf` shows a subset of its entries with
//! their content, the lower layers are untouched, and stale temporaries in the work
//! directory (`#unionfs-rs.*`, including ones planted by the test) are gone once the new mount is
//! live.
//!
//! Root only (skipped with a message otherwise). Sizes are bounded so the default run stays
//! short; `CRASH_MB` (size of each large lower file, default 24), `CRASH_ROUNDS` (kills per
//! scenario, default 3) and `CRASH_FILES` (names per storm, default 600) make it bigger.

mod common;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Daemon, Scratch, env_num, is_mounted, require_fuse, sys};

const WORK_NAME: &str = ".unionfs-rs-work";
const TEMP_PREFIX: &[u8] = b"#unionfs-rs.";

/// One lower, one upper (with the default work directory inside it) and the mount point, in a
/// scratch directory of the test's own.
struct Stack {
    scratch: Scratch,
}

impl Stack {
    fn new(name: &str) -> Stack {
        let scratch = Scratch::new(name);
        for d in ["l1", "u", "m"] {
            scratch.dir(d);
        }
        Stack { scratch }
    }
    fn lower(&self) -> PathBuf {
        self.scratch.root.join("l1")
    }
    fn upper(&self) -> PathBuf {
        self.scratch.root.join("u")
    }
    fn merged(&self) -> PathBuf {
        self.scratch.root.join("m")
    }
    fn work(&self) -> PathBuf {
        self.upper().join(WORK_NAME)
    }
    /// A fresh upper for the next round.
    fn reset_upper(&self) {
        assert!(!is_mounted(&self.merged()));
        let _ = fs::remove_dir_all(self.upper());
        fs::create_dir_all(self.upper()).unwrap();
    }
    /// `unionfs-rs -f` on the stack, with the default work directory (inside the upper).
    fn mount(&self) -> Daemon {
        Daemon::start(&[self.lower()], &self.upper(), &self.merged(), &[])
    }
}

/// Temporaries in the work directory.
fn temporaries(work: &Path) -> Vec<String> {
    match fs::read_dir(work) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|n| n.as_bytes().starts_with(TEMP_PREFIX))
            .map(|n| n.to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Plants stale temporaries of a dead daemon (a file and a non-empty directory) so the cleaning
/// at mount is tested even when the kill hit no operation in flight.
fn plant_stale(work: &Path) {
    fs::create_dir_all(work).unwrap();
    fs::write(work.join("#unionfs-rs.999999.1"), b"stale").unwrap();
    let d = work.join("#unionfs-rs.999999.2");
    fs::create_dir_all(d.join("sub")).unwrap();
    fs::write(d.join("sub").join("f"), b"stale").unwrap();
}

/// Remounts after a kill and checks the work directory was cleaned before the mount went live.
fn remount_clean(s: &Stack) -> Daemon {
    plant_stale(&s.work());
    let d = s.mount();
    let left = temporaries(&s.work());
    assert!(left.is_empty(), "stale temporaries after remount: {left:?}");
    d
}

/// Mounts, lets three workers (each given every third index below `n`) run on the mount,
/// kills the daemon at a moment that varies with `round`, waits for the workers (they see the
/// mount die), and remounts cleanly.
fn kill_amid_workers(s: &Stack, round: u64, n: usize, worker: fn(PathBuf, Vec<usize>)) -> Daemon {
    let mut d = s.mount();
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let root = d.merged.clone();
            let idx: Vec<usize> = (0..n).filter(|i| i % 3 == t).collect();
            std::thread::spawn(move || worker(root, idx))
        })
        .collect();
    std::thread::sleep(delay(round, 20, 400));
    d.kill();
    for t in threads {
        t.join().unwrap();
    }
    remount_clean(s)
}

/// Kill delays spread over a range, varied per round and run.
fn delay(round: u64, lo_ms: u64, hi_ms: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let span = hi_ms - lo_ms;
    Duration::from_millis(lo_ms + (round * span / 3 + nanos % (span / 3 + 1)) % (span + 1))
}

// ---------------------------------------------------------------------------------------------
// Large copy-ups

/// Byte `pos` of large lower file `f`: 8-byte words naming the file and the word's index.
fn lower_bytes(f: u64, start: u64, len: usize) -> Vec<u8> {
    pattern(0x4c00 | f, start, len)
}

/// What the writers append to file `f` (at absolute offsets).
fn append_bytes(f: u64, start: u64, len: usize) -> Vec<u8> {
    pattern(0xa900 | f, start, len)
}

fn pattern(tag: u64, start: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    let mut word = start / 8;
    let skip = (start % 8) as usize;
    while out.len() < len + skip {
        out.extend_from_slice(&((tag << 48) | word).to_le_bytes());
        word += 1;
    }
    out.drain(..skip);
    out.truncate(len);
    out
}

fn write_lower_file(p: &Path, f: u64, size: u64) {
    let mut file = File::create(p).unwrap();
    let chunk = 1 << 20;
    let mut pos = 0;
    while pos < size {
        let n = chunk.min(size - pos) as usize;
        file.write_all(&lower_bytes(f, pos, n)).unwrap();
        pos += n as u64;
    }
}

/// Checks that `p` holds the whole lower content of file `f` followed by a prefix of the
/// appended data, and at least `synced` bytes. Returns the length.
fn check_appended(p: &Path, f: u64, lower_size: u64, synced: u64) -> u64 {
    let mut file = File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let len = file.metadata().unwrap().len();
    assert!(
        len >= lower_size,
        "{}: partial copy-up: {len} bytes of {lower_size}",
        p.display()
    );
    assert!(
        len >= synced,
        "{}: fsync'ed data lost: {len} bytes, {synced} were fsync'ed",
        p.display()
    );
    let mut pos = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while pos < len {
        let n = file.read(&mut buf).unwrap();
        assert!(n > 0, "{}: short read at {pos} of {len}", p.display());
        let want = expected_range(f, lower_size, pos, n);
        if buf[..n] != want[..] {
            let i = buf[..n]
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap();
            panic!(
                "{}: wrong byte at offset {} (file {len} bytes, lower {lower_size})",
                p.display(),
                pos + i as u64
            );
        }
        pos += n as u64;
    }
    len
}

fn expected_range(f: u64, lower_size: u64, start: u64, len: usize) -> Vec<u8> {
    let end = start + len as u64;
    let mut out = Vec::with_capacity(len);
    if start < lower_size {
        let n = (lower_size.min(end) - start) as usize;
        out.extend(lower_bytes(f, start, n));
    }
    if end > lower_size {
        let s = start.max(lower_size);
        out.extend(append_bytes(f, s, (end - s) as usize));
    }
    out
}

/// Appends to `p` (opening it copies it up) in 64 KiB chunks, fsyncing every 1 MiB and
/// publishing the fsync'ed length, until an error (the daemon died) or `stop`.
fn appender(p: PathBuf, f: u64, lower_size: u64, synced: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let Ok(mut file) = OpenOptions::new().append(true).open(&p) else {
        return;
    };
    let mut len = lower_size;
    let chunk = 64 << 10;
    while !stop.load(Ordering::Relaxed) {
        if file.write_all(&append_bytes(f, len, chunk)).is_err() {
            return;
        }
        len += chunk as u64;
        if len % (1 << 20) == 0 {
            if file.sync_all().is_err() {
                return;
            }
            synced.store(len, Ordering::SeqCst);
        }
    }
}

/// New file written and fsync'ed chunk by chunk: all of the fsync'ed prefix must survive.
fn fresh_writer(p: PathBuf, synced: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let Ok(mut file) = OpenOptions::new().write(true).create_new(true).open(&p) else {
        return;
    };
    let mut len = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if file.write_all(&append_bytes(99, len, 4096)).is_err() || file.sync_data().is_err() {
            return;
        }
        len += 4096;
        synced.store(len, Ordering::SeqCst);
    }
}

#[test]
fn kill_during_large_copy_ups() {
    if !require_fuse() {
        return;
    }
    let started = Instant::now();
    let size = env_num("CRASH_MB", 24) << 20;
    let rounds = env_num("CRASH_ROUNDS", 3);
    let files = 3u64;
    let s = Stack::new("copyup");
    for f in 0..files {
        write_lower_file(&s.lower().join(format!("big{f}")), f, size);
    }
    let lower_mtimes: Vec<i64> = (0..files)
        .map(|f| {
            fs::metadata(s.lower().join(format!("big{f}")))
                .unwrap()
                .mtime()
        })
        .collect();
    let mut in_flight = 0;
    for round in 0..rounds {
        s.reset_upper();
        let mut d = s.mount();
        let stop = Arc::new(AtomicBool::new(false));
        let synced: Vec<Arc<AtomicU64>> =
            (0..=files).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let mut threads = Vec::new();
        for f in 0..files {
            let (p, sy, st) = (
                d.merged.join(format!("big{f}")),
                synced[f as usize].clone(),
                stop.clone(),
            );
            threads.push(std::thread::spawn(move || appender(p, f, size, sy, st)));
        }
        let (p, sy, st) = (
            d.merged.join("fresh"),
            synced[files as usize].clone(),
            stop.clone(),
        );
        threads.push(std::thread::spawn(move || fresh_writer(p, sy, st)));
        std::thread::sleep(delay(round, 1, 150));
        d.kill();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        if !temporaries(&s.work()).is_empty() {
            in_flight += 1;
        }
        let d = remount_clean(&s);
        for f in 0..files {
            let sy = synced[f as usize].load(Ordering::SeqCst);
            check_appended(&d.merged.join(format!("big{f}")), f, size, sy);
        }
        let sy = synced[files as usize].load(Ordering::SeqCst);
        if sy > 0 || d.merged.join("fresh").exists() {
            check_appended(&d.merged.join("fresh"), 99, 0, sy);
        }
        drop(d);
    }
    for f in 0..files {
        let p = s.lower().join(format!("big{f}"));
        let md = fs::metadata(&p).unwrap();
        assert_eq!(md.len(), size, "lower {} changed size", p.display());
        assert_eq!(
            md.mtime(),
            lower_mtimes[f as usize],
            "lower {} modified",
            p.display()
        );
    }
    eprintln!(
        "crash: {rounds} kills during copy-ups of {} MiB files ({in_flight} caught a temporary in \
         the work dir) in {:.1} s",
        size >> 20,
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Namespace storms

/// What happens to name `f<i>` in the storm, by `i % 5`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fate {
    /// unlink(f) of a lower file.
    Unlink,
    /// rename(f, r) to a new name.
    RenameNew,
    /// rename(f, t) over lower file t.
    RenameOver,
    /// link(f, h).
    Link,
    /// rename(f, r) of a file that lives in the upper.
    RenameUpper,
}

fn fate(i: usize) -> Fate {
    [
        Fate::Unlink,
        Fate::RenameNew,
        Fate::RenameOver,
        Fate::Link,
        Fate::RenameUpper,
    ][i % 5]
}

fn content(kind: &str, i: usize) -> Vec<u8> {
    format!("{kind}-{i}\n").repeat(1 + i % 7).into_bytes()
}

fn build_storm_layers(s: &Stack, n: usize) {
    let l = s.lower();
    for i in 0..n {
        if fate(i) != Fate::RenameUpper {
            fs::write(l.join(format!("f{i}")), content("orig", i)).unwrap();
        }
        if fate(i) == Fate::RenameOver {
            fs::write(l.join(format!("t{i}")), content("target", i)).unwrap();
        }
    }
}

fn build_storm_upper(s: &Stack, n: usize) {
    for i in (0..n).filter(|&i| fate(i) == Fate::RenameUpper) {
        fs::write(s.upper().join(format!("f{i}")), content("orig", i)).unwrap();
    }
}

/// Runs each index's operation; stops at the first failure (the daemon died) unless
/// `finishing`, where operations already done fail with ENOENT/EEXIST and are skipped.
fn storm_worker(root: PathBuf, indices: Vec<usize>, finishing: bool) {
    for i in indices {
        let f = root.join(format!("f{i}"));
        let r = match fate(i) {
            Fate::Unlink => fs::remove_file(&f),
            Fate::RenameNew | Fate::RenameUpper => fs::rename(&f, root.join(format!("r{i}"))),
            Fate::RenameOver => fs::rename(&f, root.join(format!("t{i}"))),
            Fate::Link => fs::hard_link(&f, root.join(format!("h{i}"))),
        };
        if r.is_err() && !finishing {
            return;
        }
    }
}

fn read_opt(p: &Path) -> Option<Vec<u8>> {
    match fs::read(p) {
        Ok(v) => Some(v),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("{}: {e}", p.display()),
    }
}

/// Every name in its old or its new state; returns how many operations had happened.
fn check_storm(root: &Path, n: usize) -> usize {
    let mut done = 0;
    let mut allowed = BTreeSet::new();
    for i in 0..n {
        let p = |k: &str| root.join(format!("{k}{i}"));
        let orig = content("orig", i);
        let f = read_opt(&p("f"));
        for k in ["f", "r", "t", "h"] {
            allowed.insert(format!("{k}{i}"));
        }
        let ok = match fate(i) {
            Fate::Unlink => {
                done += usize::from(f.is_none());
                f.is_none() || f.as_ref() == Some(&orig)
            }
            Fate::RenameNew | Fate::RenameUpper => {
                let r = read_opt(&p("r"));
                done += usize::from(r.is_some());
                match (&f, &r) {
                    (Some(a), None) | (None, Some(a)) => *a == orig,
                    _ => false,
                }
            }
            Fate::RenameOver => {
                let t = read_opt(&p("t"));
                done += usize::from(f.is_none());
                match (&f, &t) {
                    (Some(a), Some(b)) => *a == orig && *b == content("target", i),
                    (None, Some(b)) => *b == orig,
                    _ => false,
                }
            }
            Fate::Link => {
                let h = read_opt(&p("h"));
                done += usize::from(h.is_some());
                let same_file = || {
                    let (a, b) = (fs::metadata(p("f")).unwrap(), fs::metadata(p("h")).unwrap());
                    a.ino() == b.ino() && a.nlink() == 2
                };
                f.as_ref() == Some(&orig) && (h.is_none() || (h == f && same_file()))
            }
        };
        assert!(
            ok,
            "name {i} ({:?}) is in a state that is neither old nor new: f={:?}",
            fate(i),
            f.map(|v| String::from_utf8_lossy(&v).into_owned())
        );
    }
    for e in fs::read_dir(root).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            allowed.contains(&name),
            "unexpected name {name:?} in the merged view"
        );
    }
    done
}

#[test]
fn kill_during_unlink_rename_link_storm() {
    if !require_fuse() {
        return;
    }
    let started = Instant::now();
    let n = env_num("CRASH_FILES", 600) as usize;
    let rounds = env_num("CRASH_ROUNDS", 3);
    let s = Stack::new("storm");
    build_storm_layers(&s, n);
    let mut report = Vec::new();
    for round in 0..rounds {
        s.reset_upper();
        build_storm_upper(&s, n);
        let d = kill_amid_workers(&s, round, n, |root, idx| storm_worker(root, idx, false));
        report.push(check_storm(&d.merged, n));
        // The surviving state is a consistent union: finishing the storm now works.
        storm_worker(d.merged.clone(), (0..n).collect(), true);
        assert_eq!(
            check_storm(&d.merged, n),
            n,
            "storm did not complete after remount"
        );
    }
    eprintln!(
        "crash: {rounds} kills during storms of {n} names (operations done at the kill: \
         {report:?}) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Directory creation

fn build_dir_layers(s: &Stack, n: usize) {
    for i in 0..n {
        // Deleted in the upper (whiteout): recreating it must give an opaque directory.
        let old = s.lower().join(format!("D{i}"));
        fs::create_dir(&old).unwrap();
        fs::write(old.join("old"), b"old").unwrap();
        // Deep lower directories: creating inside copies the ancestors up.
        let deep = s.lower().join(format!("deep/a/b/c{i}"));
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("keep"), b"keep").unwrap();
    }
}

fn whiteout_dirs_in_upper(s: &Stack, n: usize) {
    for i in 0..n {
        sys::mknod(&s.upper().join(format!("D{i}")), libc::S_IFCHR, 0).unwrap();
    }
}

fn mkdir_worker(root: PathBuf, indices: Vec<usize>) {
    for i in indices {
        let steps = [
            root.join(format!("D{i}")),
            root.join(format!("D{i}/sub")),
            root.join(format!("N{i}")),
            root.join(format!("N{i}/a")),
            root.join(format!("N{i}/a/b")),
            root.join(format!("deep/a/b/c{i}/new")),
        ];
        for p in steps {
            if fs::create_dir(&p).is_err() {
                return;
            }
        }
    }
}

fn check_dirs(root: &Path, n: usize) -> usize {
    let mut made = 0;
    let names = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    for i in 0..n {
        let d = root.join(format!("D{i}"));
        if let Ok(md) = fs::symlink_metadata(&d) {
            made += 1;
            assert!(md.is_dir(), "D{i} is not a directory");
            let list = names(&d);
            assert!(
                list.is_empty() || list == ["sub"],
                "D{i} made over a whiteout shows {list:?} (the lower's old entries must stay hidden)"
            );
        }
        let mut p = root.join(format!("N{i}"));
        for next in ["a", "b", ""] {
            match fs::symlink_metadata(&p) {
                Ok(md) => assert!(md.is_dir(), "{} is not a directory", p.display()),
                Err(_) => break,
            }
            let list = names(&p);
            assert!(
                list.is_empty() || list == [next],
                "{}: unexpected entries {list:?}",
                p.display()
            );
            p = p.join(next);
        }
        let c = root.join(format!("deep/a/b/c{i}"));
        let list = names(&c);
        assert!(
            list == ["keep"] || list == ["keep", "new"],
            "{}: {list:?}: the lower's entries must stay visible after the ancestors' copy-up",
            c.display()
        );
    }
    made
}

#[test]
fn kill_during_directory_creation() {
    if !require_fuse() {
        return;
    }
    let started = Instant::now();
    let n = env_num("CRASH_FILES", 600) as usize / 2;
    let rounds = env_num("CRASH_ROUNDS", 3);
    let s = Stack::new("mkdir");
    build_dir_layers(&s, n);
    let mut report = Vec::new();
    for round in 0..rounds {
        s.reset_upper();
        whiteout_dirs_in_upper(&s, n);
        let d = kill_amid_workers(&s, round, n, mkdir_worker);
        report.push(check_dirs(&d.merged, n));
    }
    eprintln!(
        "crash: {rounds} kills during creation of {n} directory sets (made at the kill: \
         {report:?}) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Recursive deletion

const TREE_FILES: usize = 6;

/// `R<i>/` in the lower with files `f0..f5` and a subdirectory `s/` holding `g`; odd trees also
/// have an upper part (`R<i>/u` created in the upper), so the directory is merged.
fn build_delete_layers(s: &Stack, n: usize) {
    for i in 0..n {
        let r = s.lower().join(format!("R{i}"));
        fs::create_dir_all(r.join("s")).unwrap();
        for f in 0..TREE_FILES {
            fs::write(r.join(format!("f{f}")), content("tree", i * 10 + f)).unwrap();
        }
        fs::write(r.join("s/g"), content("g", i)).unwrap();
    }
}

fn build_delete_upper(s: &Stack, n: usize) {
    for i in (0..n).filter(|i| i % 2 == 1) {
        let r = s.upper().join(format!("R{i}"));
        fs::create_dir_all(&r).unwrap();
        fs::write(r.join("u"), content("upper", i)).unwrap();
    }
}

/// `rm -rf R<i>` through the mount, bottom-up.
fn delete_worker(root: PathBuf, indices: Vec<usize>) {
    for i in indices {
        let r = root.join(format!("R{i}"));
        let mut steps: Vec<std::io::Result<()>> = Vec::new();
        steps.push(fs::remove_file(r.join("s/g")));
        steps.push(fs::remove_dir(r.join("s")));
        for f in 0..TREE_FILES {
            steps.push(fs::remove_file(r.join(format!("f{f}"))));
        }
        if i % 2 == 1 {
            steps.push(fs::remove_file(r.join("u")));
        }
        if steps.iter().any(Result::is_err) || fs::remove_dir(&r).is_err() {
            return;
        }
    }
}

/// Every tree is absent or a subset of its original entries with their original content.
fn check_deleted(root: &Path, n: usize) -> usize {
    let mut gone = 0;
    for i in 0..n {
        let r = root.join(format!("R{i}"));
        let Ok(list) = fs::read_dir(&r) else {
            assert!(
                fs::symlink_metadata(&r).is_err(),
                "R{i} unreadable but present"
            );
            gone += 1;
            continue;
        };
        for e in list {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let p = r.join(&name);
            match name.as_str() {
                "s" => {
                    let inner: Vec<_> = fs::read_dir(&p)
                        .unwrap()
                        .map(|e| e.unwrap().file_name())
                        .collect();
                    assert!(inner.is_empty() || inner == ["g"], "R{i}/s holds {inner:?}");
                    if !inner.is_empty() {
                        assert_eq!(fs::read(p.join("g")).unwrap(), content("g", i));
                    }
                }
                "u" if i % 2 == 1 => assert_eq!(fs::read(&p).unwrap(), content("upper", i)),
                f if f.starts_with('f') => {
                    let k: usize = f[1..].parse().unwrap();
                    assert!(k < TREE_FILES);
                    assert_eq!(
                        fs::read(&p).unwrap(),
                        content("tree", i * 10 + k),
                        "R{i}/{f}"
                    );
                }
                other => panic!("R{i} shows an entry that never existed: {other:?}"),
            }
        }
    }
    gone
}

#[test]
fn kill_during_recursive_delete() {
    if !require_fuse() {
        return;
    }
    let started = Instant::now();
    let n = env_num("CRASH_FILES", 600) as usize / 4;
    let rounds = env_num("CRASH_ROUNDS", 3);
    let s = Stack::new("rmrf");
    build_delete_layers(&s, n);
    let mut report = Vec::new();
    for round in 0..rounds {
        s.reset_upper();
        build_delete_upper(&s, n);
        let d = kill_amid_workers(&s, round, n, delete_worker);
        report.push(check_deleted(&d.merged, n));
        // What survived is a consistent union: deleting the rest now works.
        for i in 0..n {
            let r = d.merged.join(format!("R{i}"));
            if r.exists() {
                fs::remove_dir_all(&r).unwrap_or_else(|e| panic!("rm -rf R{i} after remount: {e}"));
            }
        }
        assert_eq!(check_deleted(&d.merged, n), n);
    }
    eprintln!(
        "crash: {rounds} kills during rm -rf of {n} trees (trees gone at the kill: {report:?}) \
         in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn fsynced_data_survives_a_kill() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new("fsync");
    fs::write(s.lower().join("lowerfile"), b"lower\n").unwrap();
    let mut d = s.mount();
    let m = d.merged.clone();
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(m.join("new"))
        .unwrap();
    f.write_all(b"fsynced\n").unwrap();
    f.sync_all().unwrap();
    let mut g = OpenOptions::new()
        .append(true)
        .open(m.join("lowerfile"))
        .unwrap();
    g.write_all(b"appended\n").unwrap();
    g.sync_data().unwrap();
    fs::create_dir(m.join("dir")).unwrap();
    d.kill();
    drop((f, g));
    let d = remount_clean(&s);
    assert_eq!(fs::read(d.merged.join("new")).unwrap(), b"fsynced\n");
    assert_eq!(
        fs::metadata(d.merged.join("new")).unwrap().mode() & 0o777,
        0o640
    );
    assert_eq!(
        fs::read(d.merged.join("lowerfile")).unwrap(),
        b"lower\nappended\n"
    );
    assert!(d.merged.join("dir").is_dir());
    assert_eq!(fs::read(s.lower().join("lowerfile")).unwrap(), b"lower\n");
}
