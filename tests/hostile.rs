//! Hostile and extreme input: what layers, names and command lines can throw at the daemon.
//!
//! - Symlinks in layers pointing outside (`../../..`, `/etc/passwd`, a directory outside) are
//!   returned as symlinks, and copy-up copies the link itself; nothing outside changes.
//! - A layer directory (lower or upper) replaced by a symlink to a directory outside while
//!   mounted: the daemon never follows it; operations under it fail cleanly or act on the
//!   union's own state, nothing outside is read into the view or modified, and the daemon keeps
//!   serving. A layer root swapped for a symlink is not followed either (the daemon holds fds).
//! - Names of 255 bytes (lookup, read, rename, delete: `.wh.` plus 255 bytes does not fit, so the
//!   deletion needs another whiteout form, also with `--whiteout oci`), 256 bytes (ENAMETOOLONG),
//!   names with newlines, spaces, control bytes and invalid UTF-8, kept byte for byte.
//! - 1,000 lower layers; a directory with 100,000 entries; a tree 500 levels deep, deeper than
//!   PATH_MAX, walked with openat chains through the mount.
//! - The option parser fed arbitrary argv and `-o` strings (proptest): it returns, never panics.
//!
//! Root only (mknod, trusted xattrs, mounts), except the parser test; others skip with a message.
//! `HOSTILE_LAYERS`, `HOSTILE_ENTRIES`, `HOSTILE_DEPTH`, `HOSTILE_FUZZ_CASES` resize the big ones.

mod common;

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};

use common::{Daemon, Scratch, env_num, require_fuse, sys};

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn mknod_whiteout(p: &Path) {
    sys::mknod(p, libc::S_IFCHR, 0).unwrap_or_else(|e| panic!("mknod {}: {e}", p.display()));
}

/// Everything observable about a tree outside the union: (type, mode, content or target,
/// xattrs, mtime) per relative path. Used to prove nothing there changed.
fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    snap_into(root, b"", &mut out);
    out
}

fn snap_into(dir: &Path, rel: &[u8], out: &mut BTreeMap<Vec<u8>, String>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.filter_map(Result::ok) {
        let mut r = rel.to_vec();
        r.extend_from_slice(e.file_name().as_bytes());
        let p = e.path();
        let md = fs::symlink_metadata(&p).unwrap();
        let what = if md.is_dir() {
            "dir".to_string()
        } else if md.file_type().is_symlink() {
            format!("link {:?}", fs::read_link(&p).unwrap())
        } else {
            format!("file {:?}", fs::read(&p).unwrap_or_default())
        };
        let xattrs = xattr_names(&p);
        out.insert(
            r.clone(),
            format!(
                "{what} mode {:o} mtime {}.{} xattrs {xattrs:?}",
                md.mode(),
                md.mtime(),
                md.mtime_nsec()
            ),
        );
        if md.is_dir() {
            r.push(b'/');
            snap_into(&p, &r, out);
        }
    }
}

fn xattr_names(p: &Path) -> Vec<u8> {
    let c = sys::cstr(p);
    let mut buf = vec![0u8; 4096];
    // SAFETY: owned buffer of the given size.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    buf.truncate(n.max(0) as usize);
    buf
}

fn names(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_vec())
        .collect();
    v.sort();
    v
}

fn errno_of<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().map(|e| e.raw_os_error().unwrap_or(-1))
}

// ---------------------------------------------------------------------------------------------
// Symlinks pointing outside

#[test]
fn symlinks_pointing_outside_stay_links() {
    if !require_fuse() {
        return;
    }
    let s = Scratch::new("links");
    let (l1, u, m, outside) = (s.dir("l1"), s.dir("u"), s.dir("m"), s.dir("outside"));
    fs::write(outside.join("secret"), b"outside data").unwrap();
    fs::create_dir(outside.join("sub")).unwrap();
    let links: [(&str, PathBuf); 5] = [
        ("up", PathBuf::from("../../..")),
        ("abs", PathBuf::from("/etc/passwd")),
        ("esc", outside.clone()),
        ("relesc", PathBuf::from("../outside")),
        ("loop", PathBuf::from("loop")),
    ];
    for (name, target) in &links {
        std::os::unix::fs::symlink(target, l1.join(name)).unwrap();
    }
    fs::create_dir(l1.join("d")).unwrap();
    std::os::unix::fs::symlink("../../outside/secret", l1.join("d").join("inner")).unwrap();
    let before = snapshot(&outside);
    let passwd = fs::metadata("/etc/passwd").unwrap();
    let d = Daemon::start(std::slice::from_ref(&l1), &u, &m, &[]);

    for (name, target) in &links {
        let p = m.join(name);
        let md = fs::symlink_metadata(&p).unwrap();
        assert!(md.file_type().is_symlink(), "{name} is not a symlink");
        assert_eq!(&fs::read_link(&p).unwrap(), target, "readlink {name}");
        assert_eq!(md.len(), target.as_os_str().len() as u64, "size of {name}");
    }
    assert_eq!(
        fs::read_link(m.join("d").join("inner")).unwrap(),
        Path::new("../../outside/secret")
    );
    let listed: Vec<(String, bool)> = fs::read_dir(&m)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.file_type().unwrap().is_symlink(),
            )
        })
        .collect();
    for (name, _) in &links {
        assert!(
            listed.contains(&(name.to_string(), true)),
            "{name} not listed as a symlink: {listed:?}"
        );
    }

    // Copy-up of a symlink copies the link: lchown (setattr), rename, link, unlink.
    let c = sys::cstr(&m.join("abs"));
    // SAFETY: NUL-terminated path.
    assert_eq!(unsafe { libc::lchown(c.as_ptr(), 0, 0) }, 0, "lchown abs");
    let up = fs::symlink_metadata(u.join("abs")).unwrap();
    assert!(up.file_type().is_symlink(), "abs copied up as a non-link");
    assert_eq!(
        fs::read_link(u.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    fs::rename(m.join("esc"), m.join("esc2")).unwrap();
    assert_eq!(fs::read_link(u.join("esc2")).unwrap(), outside);
    assert!(fs::symlink_metadata(m.join("esc")).is_err());
    fs::hard_link(m.join("relesc"), m.join("relesc2")).unwrap();
    assert_eq!(
        fs::read_link(m.join("relesc2")).unwrap(),
        Path::new("../outside")
    );
    assert!(
        fs::symlink_metadata(u.join("relesc2"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    fs::remove_file(m.join("up")).unwrap();
    assert!(fs::symlink_metadata(m.join("up")).is_err());
    // A new file next to a link inside a lower directory copies the directory up, not the link.
    fs::write(m.join("d").join("new"), b"x").unwrap();
    assert!(fs::symlink_metadata(u.join("d").join("inner")).is_err());
    assert_eq!(
        fs::read_link(m.join("d").join("inner")).unwrap(),
        Path::new("../../outside/secret")
    );
    // ELOOP comes from the client's own resolution; the daemon just answers readlink.
    assert_eq!(
        errno_of(File::open(m.join("loop"))),
        Some(libc::ELOOP),
        "open of a self-loop"
    );
    drop(d);

    assert_eq!(
        snapshot(&outside),
        before,
        "something outside the layers changed"
    );
    let after = fs::metadata("/etc/passwd").unwrap();
    assert_eq!(
        (after.mtime(), after.ctime(), after.len()),
        (passwd.mtime(), passwd.ctime(), passwd.len()),
        "/etc/passwd was touched"
    );
}

// ---------------------------------------------------------------------------------------------
// A layer directory replaced by a symlink while mounted

/// Client-side calls relative to directory fds opened before a swap: the client never resolves
/// the swapped-in symlink itself, so whatever reaches outside would be the daemon's doing.
mod at {
    use super::*;

    fn c(name: &str) -> CString {
        CString::new(name).unwrap()
    }

    fn ret(r: libc::c_int) -> Result<(), i32> {
        if r < 0 { Err(errno()) } else { Ok(()) }
    }

    pub fn dir(d: &OwnedFd, name: &str) -> Result<OwnedFd, i32> {
        openat(
            d,
            name.as_bytes(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
    }

    pub fn read(d: &OwnedFd, name: &str) -> Result<Vec<u8>, i32> {
        openat(d, name.as_bytes(), libc::O_RDONLY | libc::O_NOFOLLOW, 0).map(read_fd)
    }

    pub fn write(d: &OwnedFd, name: &str, flags: i32, data: &[u8]) -> Result<(), i32> {
        let fd = openat(
            d,
            name.as_bytes(),
            libc::O_WRONLY | libc::O_NOFOLLOW | flags,
            0o644,
        )?;
        File::from(fd)
            .write_all(data)
            .map_err(|e| e.raw_os_error().unwrap_or(-1))
    }

    pub fn mkdir(d: &OwnedFd, name: &str) -> Result<(), i32> {
        mkdirat(d, name.as_bytes())
    }

    pub fn unlink(d: &OwnedFd, name: &str) -> Result<(), i32> {
        // SAFETY: valid fd, NUL-terminated name.
        ret(unsafe { libc::unlinkat(d.as_raw_fd(), c(name).as_ptr(), 0) })
    }

    pub fn rename(d: &OwnedFd, name: &str, to: &OwnedFd, new: &str) -> Result<(), i32> {
        // SAFETY: valid fds, NUL-terminated names.
        ret(unsafe {
            libc::renameat(
                d.as_raw_fd(),
                c(name).as_ptr(),
                to.as_raw_fd(),
                c(new).as_ptr(),
            )
        })
    }

    pub fn chmod(d: &OwnedFd, name: &str, mode: u32) -> Result<(), i32> {
        // SAFETY: valid fd, NUL-terminated name.
        ret(unsafe { libc::fchmodat(d.as_raw_fd(), c(name).as_ptr(), mode, 0) })
    }

    pub fn list(d: &OwnedFd) -> Result<Vec<Vec<u8>>, i32> {
        let fd = openat(d, b".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let dir = rustix::fs::Dir::read_from(&fd).map_err(|e| e.raw_os_error())?;
        Ok(dir
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_bytes().to_vec())
            .filter(|n| n != b"." && n != b"..")
            .collect())
    }

    /// Reads `rel` beneath `root` without following any symlink (for checking the upper).
    pub fn read_beneath(root: &Path, rel: &str) -> Option<Vec<u8>> {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        let r = open_dir(root);
        let fd = rustix::fs::openat2(
            &r,
            rel,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        )
        .ok()?;
        Some(read_fd(fd))
    }
}

#[test]
fn layer_directory_replaced_by_symlink_is_not_followed() {
    if !require_fuse() {
        return;
    }
    let s = Scratch::new("swap");
    let (l1, u, m, outside) = (s.dir("l1"), s.dir("u"), s.dir("m"), s.dir("outside"));
    fs::create_dir_all(l1.join("a/sub")).unwrap();
    fs::write(l1.join("a/f"), b"lower f").unwrap();
    fs::write(l1.join("a/sub/g"), b"lower g").unwrap();
    fs::create_dir(l1.join("b")).unwrap();
    fs::write(l1.join("b/h"), b"lower h").unwrap();
    fs::create_dir(l1.join("c")).unwrap();
    fs::write(l1.join("keep"), b"keep").unwrap();
    for d in [&outside, &outside.join("sub")] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("f"), b"OUTSIDE f").unwrap();
        fs::write(d.join("g"), b"OUTSIDE g").unwrap();
        fs::write(d.join("secret"), b"OUTSIDE secret").unwrap();
    }
    let before = snapshot(&outside);
    let mut d = Daemon::start(std::slice::from_ref(&l1), &u, &m, &[]);
    let root = open_dir(&m);
    let (a, b) = (at::dir(&root, "a").unwrap(), at::dir(&root, "b").unwrap());
    let sub = at::dir(&a, "sub").unwrap();
    assert_eq!(at::read(&a, "f").unwrap(), b"lower f");
    assert_eq!(at::read(&sub, "g").unwrap(), b"lower g");

    let no_outside = |what: &str, data: Result<Vec<u8>, i32>| {
        if let Ok(v) = data {
            assert!(
                !v.starts_with(b"OUTSIDE"),
                "{what}: the daemon read through the swapped-in symlink"
            );
        }
    };
    let no_secret = |what: &str, listed: Result<Vec<Vec<u8>>, i32>| {
        if let Ok(v) = listed {
            assert!(
                !v.contains(&b"secret".to_vec()),
                "{what}: the daemon listed the outside directory: {v:?}"
            );
        }
    };

    // 1. The lower's `a` becomes a symlink to outside; the kernel still holds a, a/sub.
    fs::rename(l1.join("a"), s.root.join("a.moved")).unwrap();
    std::os::unix::fs::symlink(&outside, l1.join("a")).unwrap();
    no_outside("read a/f", at::read(&a, "f"));
    no_outside("read a/sub/g", at::read(&sub, "g"));
    no_outside("read a/secret", at::read(&a, "secret"));
    no_secret("readdir a", at::list(&a));
    no_secret("readdir a/sub", at::list(&sub));
    // Writes and namespace changes under `a` fail or stay in the union (results ignored: the
    // property is what they did not do).
    let _ = at::write(&a, "f", libc::O_APPEND, b"+");
    let _ = at::write(&a, "new", libc::O_CREAT | libc::O_EXCL, b"new");
    let _ = at::write(&sub, "g", libc::O_TRUNC, b"trunc");
    let _ = at::mkdir(&sub, "deeper");
    let _ = at::unlink(&sub, "g");
    let _ = at::unlink(&a, "secret");
    let _ = at::rename(&a, "f", &b, "f2");
    let _ = at::chmod(&a, "secret", 0o600);
    let _ = at::chmod(&a, "f", 0o600);
    for rel in ["a/f", "a/new", "a/sub/g", "b/f2"] {
        no_outside(&format!("upper {rel}"), at::read_beneath(&u, rel).ok_or(0));
    }
    if let Ok(md) = fs::symlink_metadata(u.join("a")) {
        assert!(
            !md.file_type().is_symlink(),
            "the swapped-in symlink was copied up over a directory"
        );
    }
    d.assert_alive();

    // 2. The upper's copy of `b` (copied up by a create) becomes a symlink to outside.
    at::write(&b, "mine", libc::O_CREAT | libc::O_EXCL, b"mine").unwrap();
    assert!(u.join("b").is_dir());
    fs::rename(u.join("b"), s.root.join("b.moved")).unwrap();
    std::os::unix::fs::symlink(&outside, u.join("b")).unwrap();
    no_outside("read b/mine", at::read(&b, "mine"));
    no_outside("read b/secret", at::read(&b, "secret"));
    no_secret("readdir b", at::list(&b));
    let _ = at::write(&b, "evil", libc::O_CREAT | libc::O_EXCL, b"evil");
    let _ = at::write(&b, "f", libc::O_TRUNC, b"overwrite");
    let _ = at::write(&b, "mine", libc::O_TRUNC, b"overwrite");
    let _ = at::unlink(&b, "h");
    let _ = at::unlink(&b, "g");
    let _ = at::mkdir(&b, "evildir");
    let _ = at::rename(&b, "g", &root, "stolen");
    d.assert_alive();

    // 3. A whole layer root swapped: the daemon keeps its open root, never the new link.
    fs::rename(&l1, s.root.join("l1.moved")).unwrap();
    std::os::unix::fs::symlink(&outside, &l1).unwrap();
    assert_eq!(at::read(&root, "keep").unwrap(), b"keep");
    no_secret("readdir root", at::list(&root));
    let _ = fs::write(m.join("c/new"), b"new");
    d.assert_alive();

    // Still serving.
    fs::write(m.join("fresh"), b"fresh").unwrap();
    assert_eq!(fs::read(m.join("fresh")).unwrap(), b"fresh");
    drop((a, b, sub, root));
    drop(d);
    assert_eq!(
        snapshot(&outside),
        before,
        "something outside the layers changed"
    );
    for l in [l1, u.join("b")] {
        let _ = fs::remove_file(l);
    }
}

// ---------------------------------------------------------------------------------------------
// Names: 255 bytes, and odd bytes

fn name255(c: u8) -> Vec<u8> {
    vec![c; 255]
}

fn check_long_names(whiteout: &str) {
    let s = Scratch::new(&format!("long-{whiteout}"));
    let (l1, u, m) = (s.dir("l1"), s.dir("u"), s.dir("m"));
    let (a, b, dn, c, n) = (
        name255(b'a'),
        name255(b'b'),
        name255(b'd'),
        name255(b'c'),
        name255(b'n'),
    );
    fs::write(l1.join(os(&a)), b"A").unwrap();
    fs::write(l1.join(os(&b)), b"B").unwrap();
    fs::create_dir(l1.join(os(&dn))).unwrap();
    fs::write(l1.join(os(&dn)).join(os(&c)), b"C").unwrap();
    let extra = ["--whiteout", whiteout];
    let d = Daemon::start(std::slice::from_ref(&l1), &u, &m, &extra);
    assert_eq!(names(&m), vec![a.clone(), b.clone(), dn.clone()]);
    assert_eq!(fs::read(m.join(os(&a))).unwrap(), b"A");
    assert_eq!(fs::read(m.join(os(&dn)).join(os(&c))).unwrap(), b"C");

    // Delete a lower name of 255 bytes: `.wh.` + 255 bytes cannot exist, yet it must go.
    fs::remove_file(m.join(os(&a)))
        .unwrap_or_else(|e| panic!("unlink of a 255-byte lower name ({whiteout}): {e}"));
    assert!(fs::symlink_metadata(m.join(os(&a))).is_err());
    // Same for a 255-byte directory, after emptying it.
    fs::remove_file(m.join(os(&dn)).join(os(&c)))
        .unwrap_or_else(|e| panic!("unlink of a 255-byte name in a lower dir ({whiteout}): {e}"));
    fs::remove_dir(m.join(os(&dn)))
        .unwrap_or_else(|e| panic!("rmdir of a 255-byte lower dir ({whiteout}): {e}"));
    // Rename a lower 255-byte name to another one (copy-up + whiteout of the old name).
    fs::rename(m.join(os(&b)), m.join(os(&n)))
        .unwrap_or_else(|e| panic!("rename of a 255-byte lower name ({whiteout}): {e}"));
    assert_eq!(fs::read(m.join(os(&n))).unwrap(), b"B");
    // New 255-byte names work; 256 bytes do not.
    fs::write(m.join(os(&name255(b'z'))), b"Z").unwrap();
    fs::create_dir(m.join(os(&name255(b'y')))).unwrap();
    let mut long = name255(b'x');
    long.push(b'x');
    assert_eq!(
        errno_of(fs::write(m.join(os(&long)), b"")),
        Some(libc::ENAMETOOLONG)
    );
    let want = vec![n.clone(), name255(b'y'), name255(b'z')];
    assert_eq!(names(&m), want);
    drop(d);
    // The deletions are in the upper for good.
    let d = Daemon::start(std::slice::from_ref(&l1), &u, &m, &extra);
    assert_eq!(names(&m), want, "after remount ({whiteout})");
    drop(d);
}

#[test]
fn names_of_255_bytes() {
    if !require_fuse() {
        return;
    }
    check_long_names("auto");
    check_long_names("oci");
}

const ODD: [&[u8]; 14] = [
    b"new\nline",
    b"\nleading-newline",
    b" lead",
    b"trail ",
    b"in side",
    b"\xff\xfe-invalid-utf8",
    b"tab\t",
    b"\x01ctl",
    b"-dash",
    b"*star?",
    b"back\\slash",
    b"colon:x,comma",
    b"...",
    b".wh",
];

fn check_odd_names(whiteout: &str) {
    let s = Scratch::new(&format!("odd-{whiteout}"));
    let (l1, u, m) = (s.dir("l1"), s.dir("u"), s.dir("m"));
    let sub = l1.join(os(b"dir \n\xff"));
    fs::create_dir(&sub).unwrap();
    for n in ODD {
        fs::write(l1.join(os(n)), n).unwrap();
        fs::write(sub.join(os(n)), n).unwrap();
    }
    let extra = ["--whiteout", whiteout];
    let d = Daemon::start(std::slice::from_ref(&l1), &u, &m, &extra);
    let msub = m.join(os(b"dir \n\xff"));
    let mut want: Vec<Vec<u8>> = ODD.iter().map(|n| n.to_vec()).collect();
    want.sort();
    assert_eq!(names(&msub), want);
    let mut want_root = want.clone();
    want_root.push(b"dir \n\xff".to_vec());
    want_root.sort();
    assert_eq!(names(&m), want_root);
    for (i, n) in ODD.iter().enumerate() {
        assert_eq!(fs::read(m.join(os(n))).unwrap(), *n);
        let p = msub.join(os(n));
        match i % 3 {
            // Copy-up by appending.
            0 => OpenOptions::new()
                .append(true)
                .open(&p)
                .and_then(|mut f| f.write_all(b"+"))
                .unwrap_or_else(|e| panic!("append to {n:?}: {e}")),
            // Rename within the directory (copy-up + whiteout).
            1 => {
                let mut to = n.to_vec();
                to.extend_from_slice(b"\n2");
                fs::rename(&p, msub.join(os(&to))).unwrap_or_else(|e| panic!("rename {n:?}: {e}"));
            }
            // Delete (whiteout of an odd name).
            _ => fs::remove_file(&p).unwrap_or_else(|e| panic!("unlink {n:?}: {e}")),
        }
        let mut new = b"new ".to_vec();
        new.extend_from_slice(n);
        fs::write(m.join(os(&new)), &new).unwrap_or_else(|e| panic!("create {new:?}: {e}"));
    }
    let expect_sub = || {
        let mut v = Vec::new();
        for (i, n) in ODD.iter().enumerate() {
            match i % 3 {
                0 => v.push(n.to_vec()),
                1 => {
                    let mut to = n.to_vec();
                    to.extend_from_slice(b"\n2");
                    v.push(to);
                }
                _ => {}
            }
        }
        v.sort();
        v
    };
    assert_eq!(names(&msub), expect_sub());
    drop(d);
    let d = Daemon::start(std::slice::from_ref(&l1), &u, &m, &extra);
    assert_eq!(names(&msub), expect_sub(), "after remount ({whiteout})");
    for (i, n) in ODD.iter().enumerate() {
        if i % 3 == 0 {
            let mut want = n.to_vec();
            want.push(b'+');
            assert_eq!(fs::read(msub.join(os(n))).unwrap(), want);
        }
        let mut new = b"new ".to_vec();
        new.extend_from_slice(n);
        assert_eq!(fs::read(m.join(os(&new))).unwrap(), new);
    }
    drop(d);
    // The lower is untouched.
    assert_eq!(names(&sub), want);
}

#[test]
fn names_with_newlines_spaces_and_invalid_utf8() {
    if !require_fuse() {
        return;
    }
    check_odd_names("auto");
    check_odd_names("oci");
}

// ---------------------------------------------------------------------------------------------
// Sizes

#[test]
fn thousand_lower_layers() {
    if !require_fuse() {
        return;
    }
    let n = env_num("HOSTILE_LAYERS", 1000) as usize;
    let started = Instant::now();
    let s = Scratch::new("layers");
    let (u, m) = (s.dir("u"), s.dir("m"));
    let lowers: Vec<PathBuf> = (0..n).map(|i| s.dir(format!("L/{i}"))).collect();
    for (i, l) in lowers.iter().enumerate() {
        fs::write(l.join(format!("f{i}")), i.to_string()).unwrap();
        fs::create_dir(l.join("common")).unwrap();
        fs::write(l.join("common").join(format!("c{i}")), b"").unwrap();
    }
    fs::write(lowers[n - 1].join("bottom"), b"from the bottom layer").unwrap();
    // The top layer deletes one name of a layer far below.
    mknod_whiteout(&lowers[0].join(format!("f{}", n / 2)));
    let mut d = Daemon::start(&lowers, &u, &m, &[]);
    let mounted = started.elapsed();
    assert_eq!(
        fs::read(m.join("bottom")).unwrap(),
        b"from the bottom layer"
    );
    assert_eq!(
        fs::read_to_string(m.join(format!("f{}", n - 1))).unwrap(),
        (n - 1).to_string()
    );
    assert!(fs::symlink_metadata(m.join(format!("f{}", n / 2))).is_err());
    let root = names(&m);
    assert_eq!(
        root.len(),
        n - 1 + 2,
        "f* minus the whited-out one, common, bottom"
    );
    assert_eq!(names(&m.join("common")).len(), n);
    // Copy-up from the bottom layer, then readdir again.
    OpenOptions::new()
        .append(true)
        .open(m.join("bottom"))
        .and_then(|mut f| f.write_all(b"!"))
        .unwrap();
    assert_eq!(
        fs::read(u.join("bottom")).unwrap(),
        b"from the bottom layer!"
    );
    fs::write(m.join("common").join("new"), b"").unwrap();
    assert_eq!(names(&m.join("common")).len(), n + 1);
    d.assert_alive();
    drop(d);
    eprintln!(
        "hostile: {n} lower layers: mounted in {:.2} s, all checks in {:.2} s",
        mounted.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn directory_with_100k_entries() {
    if !require_fuse() {
        return;
    }
    let n = env_num("HOSTILE_ENTRIES", 100_000) as usize;
    let started = Instant::now();
    let s = Scratch::new("bigdir");
    let (l1, u, m) = (s.dir("l1"), s.dir("u"), s.dir("m"));
    let big = l1.join("big");
    fs::create_dir(&big).unwrap();
    for i in 0..n {
        File::create(big.join(format!("e{i:06}"))).unwrap();
    }
    // The upper deletes some lower names and adds as many: the merged count is still n.
    let k = (n / 200).max(1);
    fs::create_dir(u.join("big")).unwrap();
    for i in 0..k {
        mknod_whiteout(&u.join(format!("big/e{i:06}")));
        File::create(u.join(format!("big/u{i:06}"))).unwrap();
    }
    let built = started.elapsed();
    let d = Daemon::start(std::slice::from_ref(&l1), &u, &m, &[]);
    let t = Instant::now();
    let listed = names(&m.join("big"));
    let took = t.elapsed();
    assert_eq!(listed.len(), n, "readdir count");
    let mut dedup = listed.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), n, "readdir returned duplicates");
    assert!(!listed.contains(&b"e000000".to_vec()));
    assert!(listed.contains(&format!("e{:06}", n - 1).into_bytes()));
    assert!(listed.contains(&b"u000000".to_vec()));
    // A second listing (offsets restart at 0) agrees.
    assert_eq!(names(&m.join("big")).len(), n);
    drop(d);
    eprintln!(
        "hostile: {n} entries: built in {:.1} s, listed in {:.1} s",
        built.as_secs_f64(),
        took.as_secs_f64()
    );
}

/// `openat` relative to `dir` (never a full path: the tree is deeper than PATH_MAX).
fn openat(dir: &OwnedFd, name: &[u8], flags: i32, mode: u32) -> Result<OwnedFd, i32> {
    let c = CString::new(name).unwrap();
    // SAFETY: valid fd, NUL-terminated name; the returned fd is owned.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

fn mkdirat(dir: &OwnedFd, name: &[u8]) -> Result<(), i32> {
    let c = CString::new(name).unwrap();
    // SAFETY: valid fd, NUL-terminated name.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) } < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn open_dir(p: &Path) -> OwnedFd {
    OwnedFd::from(File::open(p).unwrap())
}

/// Level `i`'s name: 12 bytes, so 500 levels make a path of 6,500 bytes.
fn level(i: usize) -> Vec<u8> {
    format!("level-{i:06}").into_bytes()
}

/// Walks `depth` levels down from `root` by openat; returns the deepest directory.
fn walk_down(root: &Path, depth: usize) -> Result<OwnedFd, (usize, i32)> {
    let mut fd = open_dir(root);
    for i in 0..depth {
        fd = openat(&fd, &level(i), libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(|e| (i, e))?;
    }
    Ok(fd)
}

fn read_fd(fd: OwnedFd) -> Vec<u8> {
    let mut v = Vec::new();
    File::from(fd).read_to_end(&mut v).unwrap();
    v
}

#[test]
fn tree_500_levels_deep() {
    if !require_fuse() {
        return;
    }
    let depth = env_num("HOSTILE_DEPTH", 500) as usize;
    let started = Instant::now();
    let s = Scratch::new("deep");
    let (l1, u, m) = (s.dir("l1"), s.dir("u"), s.dir("m"));
    // A lower tree as deep, built with openat chains too.
    let mut fd = open_dir(&l1);
    for i in 0..depth {
        mkdirat(&fd, &level(i)).unwrap();
        fd = openat(&fd, &level(i), libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    }
    let f = openat(&fd, b"lowerleaf", libc::O_WRONLY | libc::O_CREAT, 0o644).unwrap();
    File::from(f).write_all(b"deep lower").unwrap();
    drop(fd);
    let path_len = depth * (level(0).len() + 1);
    assert!(path_len > 4096, "the tree must be deeper than PATH_MAX");

    let mut d = Daemon::start(std::slice::from_ref(&l1), &u, &m, &[]);
    // Through the mount: look up and read at the bottom of the lower tree ...
    let bottom = walk_down(&m, depth).unwrap_or_else(|(i, e)| panic!("walk: level {i}: errno {e}"));
    let leaf = openat(&bottom, b"lowerleaf", libc::O_RDONLY, 0).unwrap();
    assert_eq!(read_fd(leaf), b"deep lower");
    // ... copy it up (all its ancestors with it) by appending ...
    let leaf = openat(&bottom, b"lowerleaf", libc::O_WRONLY | libc::O_APPEND, 0)
        .unwrap_or_else(|e| panic!("copy-up {depth} levels deep: errno {e}"));
    File::from(leaf).write_all(b"!").unwrap();
    // ... create new levels below it, and a file at the very bottom.
    let mut fd = bottom;
    for i in depth..depth + 10 {
        mkdirat(&fd, &level(i)).unwrap_or_else(|e| panic!("mkdir level {i}: errno {e}"));
        fd = openat(&fd, &level(i), libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    }
    let f = openat(&fd, b"newleaf", libc::O_WRONLY | libc::O_CREAT, 0o600).unwrap();
    File::from(f).write_all(b"new at the bottom").unwrap();
    // stat through a fresh walk from the root.
    let again = walk_down(&m, depth + 10).unwrap_or_else(|(i, e)| panic!("rewalk: {i}: {e}"));
    let leaf = openat(&again, b"newleaf", libc::O_RDONLY, 0).unwrap();
    let md = File::from(leaf).metadata().unwrap();
    assert_eq!((md.len(), md.mode() & 0o777), (17, 0o600));
    let up = walk_down(&m, depth).unwrap();
    assert_eq!(
        read_fd(openat(&up, b"lowerleaf", libc::O_RDONLY, 0).unwrap()),
        b"deep lower!"
    );
    // Each level lists exactly its one child (readdir deep down).
    let mut fd = open_dir(&m);
    for i in 0..depth {
        let dup = fd.try_clone().unwrap();
        let names = list_fd(dup);
        assert_eq!(names, vec![level(i)], "level {i}");
        fd = openat(&fd, &level(i), libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    }
    d.assert_alive();
    drop(d);
    // The copy-up landed in the upper, the lower is unchanged.
    let ub = walk_down(&u, depth).unwrap_or_else(|(i, e)| panic!("upper walk: {i}: {e}"));
    assert_eq!(
        read_fd(openat(&ub, b"lowerleaf", libc::O_RDONLY, 0).unwrap()),
        b"deep lower!"
    );
    let lb = walk_down(&l1, depth).unwrap();
    assert_eq!(
        read_fd(openat(&lb, b"lowerleaf", libc::O_RDONLY, 0).unwrap()),
        b"deep lower"
    );
    // remove_dir_all copes with depth (it walks with openat too).
    eprintln!(
        "hostile: {depth} levels ({path_len} byte paths) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Names in a directory fd (consumed), without `.` and `..`.
fn list_fd(fd: OwnedFd) -> Vec<Vec<u8>> {
    let dir = rustix::fs::Dir::read_from(&fd).unwrap();
    let mut v: Vec<Vec<u8>> = dir
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_bytes().to_vec())
        .filter(|n| n != b"." && n != b"..")
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// The option parser

/// Pieces that make interesting `-o` strings: real keys, separators, escapes, odd values.
const PIECES: &[&[u8]] = &[
    b",",
    b"\"",
    b"\\",
    b":",
    b"=",
    b"lowerdir",
    b"upperdir",
    b"workdir",
    b"uidmapping",
    b"gidmapping",
    b"timeout",
    b"threads",
    b"fsync",
    b"squash_to_uid",
    b"xattr_permissions",
    b"whiteout",
    b"context",
    b"fsname",
    b"subtype",
    b"ro",
    b"rw",
    b"allow_other",
    b"nosuid",
    b"redirect_dir",
    b"debug",
    b"volatile",
    b"copy_up_sync",
    b"inline",
    b"background",
    b"passthrough",
    b"1",
    b"0",
    b"-1",
    b"18446744073709551616",
    b"1e309",
    b"nan",
    b"inf",
    b"/",
    b"/tmp",
    b".",
    b"..",
    b"\xff",
    b"\0",
    b"\n",
    b" ",
    b"oci",
    b"chardev",
    b"auto",
    b"4294967295:0:1",
];

fn option_string() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(PIECES), 0..16).prop_map(|v| v.concat()),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn arg() -> impl Strategy<Value = OsString> {
    let flags: &[&str] = &[
        "-o",
        "-f",
        "-d",
        "--workdir",
        "--threads",
        "--whiteout",
        "--foreground",
        "--debug",
        "--help",
        "--version",
        "-h",
        "-V",
        "--",
        "-",
        "-of",
        "--unionfs-rs-daemon",
        "--workdir=",
        "--threads=0",
        "/tmp",
        "/",
        "a:b",
        "",
    ];
    prop_oneof![
        3 => prop::sample::select(flags).prop_map(OsString::from),
        3 => option_string().prop_map(OsString::from_vec),
        1 => ".*".prop_map(OsString::from),
    ]
}

#[test]
fn option_parser_never_panics() {
    let cases = env_num("HOSTILE_FUZZ_CASES", 3000) as u32;
    let config = Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let argv = (
        prop::collection::vec(arg(), 0..8),
        prop::collection::vec(option_string(), 0..3),
    );
    runner
        .run(&argv, |(mut args, opts)| {
            for o in opts {
                args.push(OsString::from("-o"));
                args.push(OsString::from_vec(o));
            }
            args.insert(0, OsString::from("unionfs-rs"));
            // Returning at all is the property: a panic fails the case (proptest catches it
            // and shrinks the argv).
            let _ = unionfs_rs::cli::parse_args(args.clone());
            // And with a plausible tail, so the option values reach validation.
            args.extend(["/tmp", "/tmp", "/tmp"].map(OsString::from));
            let _ = unionfs_rs::cli::parse_args(args);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("the option parser panicked: {e}"));
}
