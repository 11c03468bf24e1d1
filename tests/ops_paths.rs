//! Paths and names through a real mount: trees deeper than PATH_MAX (reached with `*at()`
//! calls, copied up through every ancestor), and names with blanks, newlines and bytes that
//! are not UTF-8.

mod common;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use common::*;

/// Components of the deep tree: 20 names of 200 bytes, 4020 bytes in all, so that any layer
/// prefix pushes the absolute path past PATH_MAX (4096).
fn deep_components() -> Vec<Vec<u8>> {
    (0..20)
        .map(|i| format!("{i:02}{}", "d".repeat(198)).into_bytes())
        .collect()
}

/// Builds the deep tree below `root` with one mkdirat/openat per level.
fn build_deep(root: &std::path::Path, leaf: &[u8]) {
    let mut dir = sys::open_dir(root).unwrap();
    for c in deep_components() {
        sys::mkdirat(&dir, &c, 0o755).unwrap();
        dir = sys::openat(&dir, &c, libc::O_DIRECTORY | libc::O_RDONLY, 0).unwrap();
    }
    let mut f = sys::openat(&dir, leaf, libc::O_CREAT | libc::O_WRONLY, 0o644).unwrap();
    f.write_all(b"deep data").unwrap();
}

/// Opens the deepest directory under `root` one level at a time.
fn open_deep(root: &std::path::Path) -> File {
    let mut dir = sys::open_dir(root).unwrap();
    for c in deep_components() {
        dir = sys::openat(&dir, &c, libc::O_DIRECTORY | libc::O_RDONLY, 0)
            .unwrap_or_else(|e| panic!("openat {}: {e}", String::from_utf8_lossy(&c[..2])));
    }
    dir
}

#[test]
fn trees_deeper_than_path_max() {
    both_backends(|b| {
        let st = Stack::new();
        build_deep(st.lower(1).root(), b"leaf");
        let m = st.mount(b);
        let deep = open_deep(m.root());
        let mut s = String::new();
        sys::openat(&deep, b"leaf", libc::O_RDONLY, 0)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "deep data");
        // One relative path of ~3800 bytes from the merged root, in a single openat.
        let root = sys::open_dir(m.root()).unwrap();
        let rel: Vec<u8> = deep_components()[..18].join(&b'/');
        assert!(rel.len() > 3600 && rel.len() < 4000);
        sys::openat(&root, &rel, libc::O_DIRECTORY | libc::O_RDONLY, 0).unwrap();
        // Writing copies up all 20 ancestors; the upper path is longer than PATH_MAX.
        let mut f = sys::openat(&deep, b"leaf", libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
        f.write_all(b"+more").unwrap();
        drop(f);
        let mut f = sys::openat(&deep, b"new", libc::O_CREAT | libc::O_WRONLY, 0o600).unwrap();
        f.write_all(b"new").unwrap();
        let up = open_deep(st.upper().root());
        let st_new = sys::fstatat(&up, b"new").unwrap();
        assert_eq!(st_new.st_size, 3, "new file in the upper");
        let mut s = String::new();
        sys::openat(&up, b"leaf", libc::O_RDONLY, 0)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "deep data+more");
        // And deletion at that depth leaves a whiteout there.
        let c = std::ffi::CString::new("leaf").unwrap();
        // SAFETY: valid fd and C string.
        let r = unsafe { libc::unlinkat(std::os::fd::AsRawFd::as_raw_fd(&deep), c.as_ptr(), 0) };
        assert_eq!(r, 0, "unlinkat: {}", std::io::Error::last_os_error());
        let wh = sys::fstatat(&up, b"leaf").unwrap();
        assert_eq!(
            wh.st_mode & libc::S_IFMT,
            libc::S_IFCHR,
            "whiteout at depth"
        );
    });
}

/// Raw names that are legal on Linux but hostile to path handling.
fn odd_names() -> Vec<Vec<u8>> {
    vec![
        b"with space".to_vec(),
        b"new\nline".to_vec(),
        b"tab\there".to_vec(),
        b"\xff\xfe not utf8".to_vec(),
        b"colon:and,comma".to_vec(),
        b"back\\slash".to_vec(),
        b"-starts-with-dash".to_vec(),
        "unicod\u{e9}".as_bytes().to_vec(),
    ]
}

fn raw_names(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    v.sort();
    v
}

#[test]
fn odd_names_in_every_operation() {
    both_backends(|b| {
        let st = Stack::new();
        for n in odd_names() {
            let p = st.lower(0).path("low").join(OsStr::from_bytes(&n));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, &n).unwrap();
        }
        let m = st.mount(b);
        let mut want = odd_names();
        want.sort();
        assert_eq!(raw_names(&m.path("low")), want);
        for n in odd_names() {
            let name = OsStr::from_bytes(&n);
            let p = m.path("low").join(name);
            assert_eq!(fs::read(&p).unwrap(), n, "read {:?}", name);
            // Copy-up, rename and delete with the odd name.
            fs::write(&p, b"changed").unwrap();
            let mut renamed = n.clone();
            renamed.extend_from_slice(b".renamed");
            let q = m.path("low").join(OsStr::from_bytes(&renamed));
            fs::rename(&p, &q).unwrap();
            let wh = fs::symlink_metadata(st.upper().path("low").join(name)).unwrap();
            assert!(
                wh.file_type().is_char_device() && wh.rdev() == 0,
                "whiteout {name:?}"
            );
            fs::remove_file(&q).unwrap();
            fs::create_dir(&p).unwrap();
        }
        assert_eq!(raw_names(&m.path("low")), want);
        raw_names(&st.upper().path("low")).len()
    });
}
