//! A full upper: the upper and its work directory live on an 8 MiB tmpfs, the lower on the
//! normal disk holds a file bigger than that. Copy-ups and writes that do not fit fail with
//! ENOSPC; a failed copy-up leaves the upper as it was (no partial file under the name, no
//! temporary in the work directory), so the merged view still shows the lower file unchanged
//! (content, size, mode); the daemon keeps serving other requests; and once space is freed,
//! the same operations succeed.
//!
//! Root only (mounting the tmpfs); skipped with a message otherwise.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{Daemon, Scratch, Tmpfs, require_fuse};

const MB: u64 = 1 << 20;
const BIG: u64 = 12 * MB;
const SMALL: u64 = 256 << 10;

/// `l1` on disk, `t` an 8 MiB tmpfs holding the upper `t/u`, and the mount point `m`.
struct Setup {
    // Declared first so it is unmounted before the scratch directory is removed.
    tmpfs: Tmpfs,
    scratch: Scratch,
}

impl Setup {
    fn new() -> Result<Setup, String> {
        let scratch = Scratch::new("enospc");
        for d in ["l1", "t", "m"] {
            scratch.dir(d);
        }
        let tmpfs = Tmpfs::mount(&scratch.root.join("t"), "8m")?;
        let s = Setup { tmpfs, scratch };
        fs::create_dir(s.upper()).map_err(|e| e.to_string())?;
        Ok(s)
    }
    fn lower(&self) -> PathBuf {
        self.scratch.root.join("l1")
    }
    fn upper(&self) -> PathBuf {
        self.tmpfs.path.join("u")
    }
    fn work(&self) -> PathBuf {
        self.upper().join(".unionfs-rs-work")
    }
    fn merged(&self) -> PathBuf {
        self.scratch.root.join("m")
    }
    /// `unionfs-rs -f` with the default work directory, on the tmpfs with the upper.
    fn mount(&self) -> Daemon {
        Daemon::start(&[self.lower()], &self.upper(), &self.merged(), &[])
    }
}

fn pattern(seed: u8, start: u64, len: usize) -> Vec<u8> {
    (start..start + len as u64)
        .map(|i| seed ^ (i as u8) ^ ((i >> 9) as u8))
        .collect()
}

fn write_pattern(p: &Path, seed: u8, size: u64) {
    let mut f = File::create(p).unwrap();
    let mut pos = 0;
    while pos < size {
        let n = MB.min(size - pos);
        f.write_all(&pattern(seed, pos, n as usize)).unwrap();
        pos += n;
    }
}

/// Asserts that `p` holds `size` bytes of `pattern(seed)`.
fn assert_pattern(p: &Path, seed: u8, size: u64) {
    let mut f = File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).unwrap();
    assert_eq!(buf.len() as u64, size, "{}: size", p.display());
    assert!(
        buf == pattern(seed, 0, size as usize),
        "{}: content changed",
        p.display()
    );
}

fn enospc<T>(r: std::io::Result<T>, what: &str) {
    match r {
        Ok(_) => panic!("{what}: succeeded on a full upper"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{what}: {e}"),
    }
}

/// Names in the upper other than the work directory, and temporaries in the work directory.
fn upper_state(s: &Setup) -> (Vec<String>, Vec<String>) {
    let names = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(p)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let upper = names(&s.upper())
        .into_iter()
        .filter(|n| n != ".unionfs-rs-work")
        .collect();
    (upper, names(&s.work()))
}

/// Writes `p` until the filesystem is full; returns the bytes written.
fn fill(p: &Path) -> u64 {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .unwrap();
    let chunk = vec![0x5au8; 64 << 10];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", p.display()),
        }
        assert!(n < 64 * MB, "the 8 MiB upper never filled up");
    }
    n
}

#[test]
fn full_upper_fails_cleanly_and_recovers() {
    if !require_fuse() {
        return;
    }
    let s = match Setup::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("enospc: skipped: {e}");
            return;
        }
    };
    write_pattern(&s.lower().join("big"), 1, BIG);
    write_pattern(&s.lower().join("small"), 2, SMALL);
    fs::set_permissions(s.lower().join("small"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(s.lower().join("d")).unwrap();
    write_pattern(&s.lower().join("d").join("inner"), 3, SMALL);
    let mut d = s.mount();
    let m = d.merged.clone();
    let big = m.join("big");

    // 1. A copy-up bigger than the upper: every way of asking for it fails with ENOSPC and
    //    leaves nothing behind.
    enospc(
        OpenOptions::new().append(true).open(&big),
        "append-open of big",
    );
    enospc(
        OpenOptions::new().write(true).open(&big),
        "write-open of big",
    );
    enospc(
        fs::set_permissions(&big, fs::Permissions::from_mode(0o600)),
        "chmod of big",
    );
    enospc(fs::rename(&big, m.join("big2")), "rename of big");
    enospc(fs::hard_link(&big, m.join("big3")), "link of big");
    assert_pattern(&big, 1, BIG);
    assert_eq!(fs::metadata(&big).unwrap().mode() & 0o777, 0o644);
    assert!(!m.join("big2").exists() && !m.join("big3").exists());
    assert_eq!(
        upper_state(&s),
        (vec![], vec![]),
        "failed copy-ups left something in the upper or the work dir"
    );
    d.assert_alive();

    // 2. Fill the upper with a new file: writes then fail with ENOSPC, small copy-ups too.
    let filled = fill(&m.join("filler"));
    assert!(filled > 4 * MB && filled <= 8 * MB, "filled {filled} bytes");
    enospc(
        fs::set_permissions(m.join("small"), fs::Permissions::from_mode(0o600)),
        "chmod (copy-up) of small on a full upper",
    );
    enospc(
        OpenOptions::new()
            .append(true)
            .open(m.join("small"))
            .and_then(|mut f| f.write_all(b"more")),
        "append to small on a full upper",
    );
    enospc(
        OpenOptions::new()
            .append(true)
            .open(m.join("d").join("inner")),
        "copy-up of d/inner on a full upper",
    );
    assert_pattern(&m.join("small"), 2, SMALL);
    assert_eq!(fs::metadata(m.join("small")).unwrap().mode() & 0o777, 0o644);
    assert_pattern(&m.join("d").join("inner"), 3, SMALL);
    assert_pattern(&big, 1, BIG);
    let (upper, work) = upper_state(&s);
    assert!(
        work.is_empty(),
        "temporaries left in the work dir: {work:?}"
    );
    // The copy-up of d/inner may have made the directory d in the upper (it fits in an inode);
    // nothing else may have appeared.
    for n in &upper {
        assert!(n == "filler" || n == "d", "unexpected upper entry {n}");
    }
    if s.upper().join("d").exists() {
        let inner: Vec<_> = fs::read_dir(s.upper().join("d")).unwrap().collect();
        assert!(inner.is_empty(), "partial copy-up under d: {inner:?}");
    }

    // 3. The daemon keeps serving what needs no space.
    d.assert_alive();
    let mut listing: Vec<String> = fs::read_dir(&m)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    listing.sort();
    assert_eq!(listing, ["big", "d", "filler", "small"]);
    assert_eq!(fs::metadata(m.join("filler")).unwrap().len(), filled);
    let mut head = vec![0u8; 4096];
    File::open(&big).unwrap().read_exact(&mut head).unwrap();
    assert_eq!(head, pattern(1, 0, 4096));
    // Deleting a lower name writes a whiteout (an inode, no data blocks); either it fits or it
    // fails with ENOSPC, and the view agrees with the result.
    match fs::remove_file(m.join("d").join("inner")) {
        Ok(()) => assert!(!m.join("d").join("inner").exists()),
        Err(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "unlink: {e}");
            assert_pattern(&m.join("d").join("inner"), 3, SMALL);
        }
    }

    // 4. Free the space: everything that fits works again.
    fs::remove_file(m.join("filler")).unwrap();
    fs::set_permissions(m.join("small"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::metadata(m.join("small")).unwrap().mode() & 0o777, 0o600);
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.join("small"))
        .unwrap();
    f.write_all(b"more").unwrap();
    drop(f);
    assert_eq!(fs::metadata(m.join("small")).unwrap().len(), SMALL + 4);
    let mut f = File::create(m.join("new")).unwrap();
    f.write_all(&vec![7u8; MB as usize]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    // Still too big as a whole ...
    enospc(
        OpenOptions::new().append(true).open(&big),
        "append-open of big",
    );
    assert_pattern(&big, 1, BIG);
    // ... but a truncating copy-up copies only what is kept.
    let t = File::options().write(true).truncate(true).open(&big);
    match t {
        Ok(_) => assert_eq!(fs::metadata(&big).unwrap().len(), 0),
        Err(e) => panic!("O_TRUNC open of big copies no data, yet failed: {e}"),
    }
    assert_eq!(fs::read(s.lower().join("big")).unwrap().len() as u64, BIG);
    assert!(upper_state(&s).1.is_empty());
    d.assert_alive();
    // The lower is untouched.
    assert_pattern(&s.lower().join("small"), 2, SMALL);
}
