//! Differential test against kernel overlayfs: the kernel is the specification.
//!
//! Each case generates three layer trees (upper, top lower, bottom lower) holding files,
//! directories, symlinks, `user.*` xattrs, 0/0 character-device whiteouts and
//! `trusted.overlay.opaque` directories, builds two identical copies, mounts kernel overlayfs over
//! one and unionfs-rs over the other, applies the same random operation sequence to both, and
//! requires the same result (value or errno) for every operation and the same merged view after
//! it: names, types, sizes, contents, modes, owners, `user.*` xattrs and link counts. Then both
//! are remounted and compared again (what was written to the upper reads back the same), and
//! kernel overlayfs is mounted over the layers unionfs-rs wrote and must show the same tree (our
//! whiteouts and opaque markers are the kernel's format).
//!
//! Inode numbers are not compared for equality (each implementation numbers its own way); they
//! are checked for what overlayfs promises: names that are hard links of one file share an
//! inode number in ours exactly when they do in the kernel's; a name no successful destructive
//! operation touched keeps its inode number across the sequence (so copy-up keeps it); and
//! `d_ino` from readdir equals `st_ino`.
//!
//! Root only (mknod of whiteouts, trusted xattrs, kernel mounts); skipped with a message
//! otherwise. `DIFFTEST_CASES` (default 32) sets the number of cases, `DIFFTEST_SEED` the base
//! seed (default: from the clock); each case runs from its own seed, which a failure prints
//! together with the shrunk layer trees and operation sequence, so
//! `DIFFTEST_SEED=<seed> DIFFTEST_CASES=1 cargo test --test difftest` replays it.
//! `scripts/difftest.sh` runs many cases; `UNIONFS_BIN` names another daemon binary;
//! `DIFFTEST_WHITEOUT=oci` makes unionfs-rs write OCI whiteouts (`--whiteout oci`).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr};
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{
    Config, FileFailurePersistence, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner,
};

const BIN: &str = env!("CARGO_BIN_EXE_unionfs-rs");

/// The daemon: `UNIONFS_BIN` when set (scripts/difftest.sh runs a copy, so a rebuild during
/// a long run does not pull the binary away), else the one cargo built.
fn bin() -> String {
    std::env::var("UNIONFS_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// Top-level names; the last one is never in a layer (only created by operations).
const TOP: [&str; 5] = ["a", "b", "c", "d", "n"];
/// Names inside a top-level directory; the last one is never in a layer.
const CHILD: [&str; 3] = ["x", "y", "n"];
/// Symlink targets, all relative and inside the mount (`..` would leave it, and the two mounts'
/// parents differ). Some dangle, `a` can loop.
const TARGETS: [&str; 6] = ["a", "x", "a/x", "b/y", "missing", "n"];
const FILE_SIZES: [usize; 5] = [0, 1, 100, 5000, 70_000];
const FILE_MODES: [u32; 6] = [0o644, 0o600, 0o755, 0o444, 0o4755, 0o2750];
const DIR_MODES: [u32; 4] = [0o755, 0o700, 0o555, 0o1777];

// ---------------------------------------------------------------------------------------------
// Layer trees

/// A non-directory entry, or an empty directory, in one layer.
#[derive(Clone, Debug)]
enum Leaf {
    Absent,
    File {
        size: usize,
        seed: u8,
        mode: u32,
        xattr: Option<u8>,
    },
    Symlink(&'static str),
    Whiteout,
    Dir {
        mode: u32,
        opaque: bool,
    },
}

/// A top-level entry in one layer.
#[derive(Clone, Debug)]
enum Top {
    Leaf(Leaf),
    Dir {
        mode: u32,
        opaque: bool,
        xattr: Option<u8>,
        children: [Leaf; 2],
    },
}

/// Layers top-down: `[upper, lower1, lower2]`; each holds `TOP[0..4]`.
#[derive(Clone, Debug)]
struct Tree {
    layers: [[Top; 4]; 3],
}

fn leaf() -> impl Strategy<Value = Leaf> {
    prop_oneof![
        2 => Just(Leaf::Absent),
        4 => (
            prop::sample::select(&FILE_SIZES[..]),
            any::<u8>(),
            prop::sample::select(&FILE_MODES[..]),
            prop::option::weighted(0.3, any::<u8>()),
        )
            .prop_map(|(size, seed, mode, xattr)| Leaf::File { size, seed, mode, xattr }),
        1 => prop::sample::select(&TARGETS[..]).prop_map(Leaf::Symlink),
        1 => Just(Leaf::Whiteout),
        2 => (prop::sample::select(&DIR_MODES[..]), prop::bool::weighted(0.2))
            .prop_map(|(mode, opaque)| Leaf::Dir { mode, opaque }),
    ]
}

fn top() -> impl Strategy<Value = Top> {
    prop_oneof![
        2 => leaf().prop_map(Top::Leaf),
        4 => (
            prop::sample::select(&DIR_MODES[..]),
            prop::bool::weighted(0.2),
            prop::option::weighted(0.3, any::<u8>()),
            [leaf(), leaf()],
        )
            .prop_map(|(mode, opaque, xattr, children)| Top::Dir { mode, opaque, xattr, children }),
    ]
}

fn tree() -> impl Strategy<Value = Tree> {
    let layer = || [top(), top(), top(), top()];
    [layer(), layer(), layer()].prop_map(|layers| sanitize(Tree { layers }))
}

/// Drops whiteouts from directories that are not merged with a directory below: overlayfs never
/// writes those (a directory made over a whiteout is opaque), and the kernel treats them as real
/// entries there (lists them, refuses to rename over the directory with ENOTEMPTY), a state no
/// implementation needs to agree on.
fn sanitize(mut t: Tree) -> Tree {
    for i in 0..TOP.len() - 1 {
        for l in 0..t.layers.len() {
            let below_is_dir = t.layers[l + 1..]
                .iter()
                .map(|layer| &layer[i])
                .find(|top| !matches!(top, Top::Leaf(Leaf::Absent)))
                .is_some_and(|top| matches!(top, Top::Dir { .. } | Top::Leaf(Leaf::Dir { .. })));
            if let Top::Dir {
                opaque, children, ..
            } = &mut t.layers[l][i]
                && (*opaque || !below_is_dir)
            {
                for c in children.iter_mut() {
                    if matches!(c, Leaf::Whiteout) {
                        *c = Leaf::Absent;
                    }
                }
            }
        }
    }
    t
}

fn file_data(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(7)) ^ (i >> 8) as u8)
        .collect()
}

fn build_leaf(path: &Path, leaf: &Leaf) {
    match leaf {
        Leaf::Absent => {}
        Leaf::File {
            size,
            seed,
            mode,
            xattr,
        } => {
            std::fs::write(path, file_data(*size, *seed)).unwrap();
            if let Some(v) = xattr {
                set_xattr(path, "user.k", &[*v]).unwrap();
            }
            chmod(path, *mode);
        }
        Leaf::Symlink(target) => std::os::unix::fs::symlink(target, path).unwrap(),
        Leaf::Whiteout => {
            let c = cstr(path);
            let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) };
            assert_eq!(r, 0, "mknod {}", path.display());
        }
        Leaf::Dir { mode, opaque } => build_dir(path, *mode, *opaque, None),
    }
}

fn build_dir(path: &Path, mode: u32, opaque: bool, xattr: Option<u8>) {
    std::fs::create_dir(path).unwrap();
    if opaque {
        set_xattr(path, "trusted.overlay.opaque", b"y").unwrap();
    }
    if let Some(v) = xattr {
        set_xattr(path, "user.k", &[v]).unwrap();
    }
    chmod(path, mode);
}

fn build_layer(root: &Path, layer: &[Top; 4]) {
    std::fs::create_dir_all(root).unwrap();
    for (name, t) in TOP.iter().zip(layer) {
        let p = root.join(name);
        match t {
            Top::Leaf(l) => build_leaf(&p, l),
            Top::Dir {
                mode,
                opaque,
                xattr,
                children,
            } => {
                // Children first, with the directory still writable; its mode comes last.
                build_dir(&p, 0o755, *opaque, *xattr);
                for (cname, c) in CHILD.iter().zip(children) {
                    build_leaf(&p.join(cname), c);
                }
                chmod(&p, *mode);
            }
        }
    }
}

/// Renders the trees as one line per entry, for failure reports.
fn describe_tree(t: &Tree) -> String {
    let mut s = String::new();
    for (li, layer) in t.layers.iter().enumerate() {
        let lname = ["upper", "lower1 (top)", "lower2 (bottom)"][li];
        let _ = writeln!(s, "  {lname}:");
        for (name, top) in TOP.iter().zip(layer) {
            match top {
                Top::Leaf(Leaf::Absent) => {}
                Top::Leaf(l) => {
                    let _ = writeln!(s, "    {name}: {l:?}");
                }
                Top::Dir {
                    mode,
                    opaque,
                    xattr,
                    children,
                } => {
                    let _ = writeln!(
                        s,
                        "    {name}/: dir mode {mode:o} opaque {opaque} xattr {xattr:?}"
                    );
                    for (c, l) in CHILD.iter().zip(children) {
                        if !matches!(l, Leaf::Absent) {
                            let _ = writeln!(s, "    {name}/{c}: {l:?}");
                        }
                    }
                }
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Operations

/// A path in the operation universe: `TOP[t]` or `TOP[t]/CHILD[c]`.
#[derive(Clone, Copy, PartialEq, Eq)]
struct P(u8, Option<u8>);

impl P {
    fn rel(self) -> String {
        match self.1 {
            None => TOP[self.0 as usize].to_string(),
            Some(c) => format!("{}/{}", TOP[self.0 as usize], CHILD[c as usize]),
        }
    }
    fn leaf(self) -> &'static str {
        match self.1 {
            None => TOP[self.0 as usize],
            Some(c) => CHILD[c as usize],
        }
    }
}

impl std::fmt::Debug for P {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.rel())
    }
}

/// `P(EXISTING + k, None)` stands for the k-th name some layer holds (see `resolve_ops`):
/// operations on names that exist mostly succeed and so exercise copy-up and whiteouts, where
/// names drawn from the whole universe mostly fail with ENOENT.
const EXISTING: u8 = 100;

fn path() -> impl Strategy<Value = P> {
    prop_oneof![
        5 => (0..32u8).prop_map(|k| P(EXISTING + k, None)),
        1 => (0..TOP.len() as u8).prop_map(|t| P(t, None)),
        2 => (0..TOP.len() as u8, 0..CHILD.len() as u8).prop_map(|(t, c)| P(t, Some(c))),
    ]
}

/// Mostly names no layer holds (`n`, `*/n`), for creations and rename/link targets.
fn fresh() -> impl Strategy<Value = P> {
    let n = TOP.len() as u8 - 1;
    let cn = CHILD.len() as u8 - 1;
    prop_oneof![
        3 => (0..n).prop_map(move |t| P(t, Some(cn))),
        1 => Just(P(n, None)),
        3 => path(),
    ]
}

/// The names some layer holds (not absent, not a whiteout), in a fixed order.
fn layer_names(t: &Tree) -> Vec<P> {
    let present = |l: &Leaf| !matches!(l, Leaf::Absent | Leaf::Whiteout);
    let mut out = Vec::new();
    for ti in 0..TOP.len() - 1 {
        let tops = t.layers.iter().map(|layer| &layer[ti]);
        if tops.clone().any(|top| match top {
            Top::Leaf(l) => present(l),
            Top::Dir { .. } => true,
        }) {
            out.push(P(ti as u8, None));
        }
        for ci in 0..CHILD.len() - 1 {
            if tops
                .clone()
                .any(|top| matches!(top, Top::Dir { children, .. } if present(&children[ci])))
            {
                out.push(P(ti as u8, Some(ci as u8)));
            }
        }
    }
    out
}

/// Replaces the `EXISTING` placeholders by concrete names of `t`.
fn resolve_ops(t: &Tree, ops: &[Op]) -> Vec<Op> {
    let names = layer_names(t);
    let r = |p: P| match p {
        P(k, None) if k >= EXISTING => names
            .get(usize::from(k - EXISTING) % names.len().max(1))
            .copied()
            .unwrap_or(P(TOP.len() as u8 - 1, None)),
        p => p,
    };
    ops.iter()
        .map(|op| match *op {
            Op::Create {
                p,
                excl,
                trunc,
                mode,
            } => Op::Create {
                p: r(p),
                excl,
                trunc,
                mode,
            },
            Op::Write {
                p,
                off,
                len,
                byte,
                append,
            } => Op::Write {
                p: r(p),
                off,
                len,
                byte,
                append,
            },
            Op::Truncate { p, size } => Op::Truncate { p: r(p), size },
            Op::Rename { from, to, flags } => Op::Rename {
                from: r(from),
                to: r(to),
                flags,
            },
            Op::Unlink(p) => Op::Unlink(r(p)),
            Op::Mkdir { p, mode } => Op::Mkdir { p: r(p), mode },
            Op::Rmdir(p) => Op::Rmdir(r(p)),
            Op::Link { from, to } => Op::Link {
                from: r(from),
                to: r(to),
            },
            Op::Symlink { target, p } => Op::Symlink { target, p: r(p) },
            Op::Chmod { p, mode } => Op::Chmod { p: r(p), mode },
            Op::Chown { p, uid } => Op::Chown { p: r(p), uid },
            Op::Setxattr { p, name, value } => Op::Setxattr {
                p: r(p),
                name,
                value,
            },
            Op::Removexattr { p, name } => Op::Removexattr { p: r(p), name },
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RenameFlags {
    Plain,
    NoReplace,
    Exchange,
}

#[derive(Clone, Debug)]
enum Op {
    /// open(O_CREAT|O_WRONLY [|O_EXCL] [|O_TRUNC], mode)
    Create {
        p: P,
        excl: bool,
        trunc: bool,
        mode: u32,
    },
    /// open(O_WRONLY [|O_APPEND]) and pwrite/write of `len` bytes of `byte` at `off`.
    Write {
        p: P,
        off: u64,
        len: usize,
        byte: u8,
        append: bool,
    },
    Truncate {
        p: P,
        size: u64,
    },
    Rename {
        from: P,
        to: P,
        flags: RenameFlags,
    },
    Unlink(P),
    Mkdir {
        p: P,
        mode: u32,
    },
    Rmdir(P),
    Link {
        from: P,
        to: P,
    },
    Symlink {
        target: &'static str,
        p: P,
    },
    Chmod {
        p: P,
        mode: u32,
    },
    Chown {
        p: P,
        uid: u32,
    },
    Setxattr {
        p: P,
        name: &'static str,
        value: u8,
    },
    Removexattr {
        p: P,
        name: &'static str,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let mode = || prop::sample::select(&[0o644u32, 0o600, 0o755, 0o4755, 0o444][..]);
    let xname = || prop::sample::select(&["user.k", "user.l"][..]);
    prop_oneof![
        3 => (fresh(), any::<bool>(), prop::bool::weighted(0.3), mode())
            .prop_map(|(p, excl, trunc, mode)| Op::Create { p, excl, trunc, mode }),
        5 => (
            path(),
            prop::sample::select(&[0u64, 1, 4095, 4096, 65_536, 100_000][..]),
            prop::sample::select(&[1usize, 10, 5000][..]),
            any::<u8>(),
            prop::bool::weighted(0.2),
        )
            .prop_map(|(p, off, len, byte, append)| Op::Write { p, off, len, byte, append }),
        2 => (path(), prop::sample::select(&[0u64, 1, 3000, 70_000][..]))
            .prop_map(|(p, size)| Op::Truncate { p, size }),
        4 => (
            path(),
            fresh(),
            prop::sample::select(
                &[RenameFlags::Plain, RenameFlags::Plain, RenameFlags::NoReplace, RenameFlags::Exchange][..]
            ),
        )
            .prop_map(|(from, to, flags)| Op::Rename { from, to, flags }),
        3 => path().prop_map(Op::Unlink),
        2 => (fresh(), prop::sample::select(&[0o755u32, 0o700][..]))
            .prop_map(|(p, mode)| Op::Mkdir { p, mode }),
        2 => path().prop_map(Op::Rmdir),
        2 => (path(), fresh()).prop_map(|(from, to)| Op::Link { from, to }),
        1 => (prop::sample::select(&TARGETS[..]), fresh())
            .prop_map(|(target, p)| Op::Symlink { target, p }),
        2 => (path(), mode()).prop_map(|(p, mode)| Op::Chmod { p, mode }),
        1 => (path(), prop::sample::select(&[0u32, 1000][..]))
            .prop_map(|(p, uid)| Op::Chown { p, uid }),
        2 => (path(), xname(), any::<u8>())
            .prop_map(|(p, name, value)| Op::Setxattr { p, name, value }),
        1 => (path(), xname()).prop_map(|(p, name)| Op::Removexattr { p, name }),
    ]
}

/// An operation's outcome: a value (bytes written, or 0) or an errno.
type Outcome = Result<i64, i32>;

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn check(r: libc::c_int) -> Outcome {
    if r < 0 { Err(errno()) } else { Ok(0) }
}

fn run_op(root: &Path, op: &Op) -> Outcome {
    let at = |p: P| cstr(&root.join(p.rel()));
    // SAFETY (all blocks below): plain syscalls on NUL-terminated paths and owned buffers.
    unsafe {
        match *op {
            Op::Create {
                p,
                excl,
                trunc,
                mode,
            } => {
                let mut flags = libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC;
                if excl {
                    flags |= libc::O_EXCL;
                }
                if trunc {
                    flags |= libc::O_TRUNC;
                }
                let fd = libc::open(at(p).as_ptr(), flags, mode);
                if fd < 0 {
                    return Err(errno());
                }
                check(libc::close(fd))
            }
            Op::Write {
                p,
                off,
                len,
                byte,
                append,
            } => {
                let flags =
                    libc::O_WRONLY | libc::O_CLOEXEC | if append { libc::O_APPEND } else { 0 };
                let fd = libc::open(at(p).as_ptr(), flags);
                if fd < 0 {
                    return Err(errno());
                }
                let buf = vec![byte; len];
                let n = if append {
                    libc::write(fd, buf.as_ptr().cast(), len)
                } else {
                    libc::pwrite(fd, buf.as_ptr().cast(), len, off as libc::off_t)
                };
                let r = if n < 0 { Err(errno()) } else { Ok(n as i64) };
                let c = check(libc::close(fd));
                r.and_then(|n| c.map(|_| n))
            }
            Op::Truncate { p, size } => check(libc::truncate(at(p).as_ptr(), size as libc::off_t)),
            Op::Rename { from, to, flags } => {
                let f = match flags {
                    RenameFlags::Plain => 0,
                    RenameFlags::NoReplace => libc::RENAME_NOREPLACE,
                    RenameFlags::Exchange => libc::RENAME_EXCHANGE,
                };
                check(libc::renameat2(
                    libc::AT_FDCWD,
                    at(from).as_ptr(),
                    libc::AT_FDCWD,
                    at(to).as_ptr(),
                    f,
                ))
            }
            Op::Unlink(p) => check(libc::unlink(at(p).as_ptr())),
            Op::Mkdir { p, mode } => check(libc::mkdir(at(p).as_ptr(), mode)),
            Op::Rmdir(p) => check(libc::rmdir(at(p).as_ptr())),
            Op::Link { from, to } => check(libc::link(at(from).as_ptr(), at(to).as_ptr())),
            Op::Symlink { target, p } => {
                let t = CString::new(target).unwrap();
                check(libc::symlink(t.as_ptr(), at(p).as_ptr()))
            }
            Op::Chmod { p, mode } => check(libc::chmod(at(p).as_ptr(), mode)),
            Op::Chown { p, uid } => check(libc::lchown(at(p).as_ptr(), uid, uid)),
            Op::Setxattr { p, name, value } => {
                let n = CString::new(name).unwrap();
                check(libc::setxattr(
                    at(p).as_ptr(),
                    n.as_ptr(),
                    [value].as_ptr().cast(),
                    1,
                    0,
                ))
            }
            Op::Removexattr { p, name } => {
                let n = CString::new(name).unwrap();
                check(libc::removexattr(at(p).as_ptr(), n.as_ptr()))
            }
        }
    }
}

/// The paths whose object a successful operation may have replaced or moved. Over-approximated
/// by name: a symlinked top-level directory makes `c/x` the same object as `a/x`, so every path
/// with a component named like a destructive operation's last component is excluded.
fn destroyed_names(ops: &[Op], outcomes: &[Outcome]) -> BTreeSet<&'static str> {
    let mut names = BTreeSet::new();
    for (op, out) in ops.iter().zip(outcomes) {
        if out.is_err() {
            continue;
        }
        match op {
            Op::Rename { from, to, .. } => {
                names.insert(from.leaf());
                names.insert(to.leaf());
            }
            Op::Unlink(p) | Op::Rmdir(p) => {
                names.insert(p.leaf());
            }
            _ => {}
        }
    }
    names
}

// ---------------------------------------------------------------------------------------------
// Views

/// What one name shows through a mount, inode number aside.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u64,
    /// File content digest, or symlink target.
    data: String,
    xattrs: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, Default)]
struct View {
    entries: BTreeMap<String, Entry>,
    inos: BTreeMap<String, u64>,
    /// `d_ino` from readdir that differs from `st_ino`: (path, d_ino, st_ino).
    dino_mismatch: Vec<(String, u64, u64)>,
}

fn digest(data: &[u8]) -> String {
    // FNV-1a: a content fingerprint, and the length for a readable report.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    format!("{} bytes, fnv {h:016x}", data.len())
}

fn user_xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = cstr(p);
    let mut out = BTreeMap::new();
    let mut buf = vec![0u8; 4096];
    // SAFETY: buffers are owned and sized as passed.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return out;
    }
    for name in buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        if !name.starts_with(b"user.") {
            continue;
        }
        let cname = CString::new(name).unwrap();
        let mut val = vec![0u8; 4096];
        let m = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                val.as_mut_ptr().cast(),
                val.len(),
            )
        };
        let v = if m < 0 {
            format!("<errno {}>", errno()).into_bytes()
        } else {
            val[..m as usize].to_vec()
        };
        out.insert(String::from_utf8_lossy(name).into_owned(), v);
    }
    out
}

fn walk(root: &Path) -> View {
    let mut view = View::default();
    walk_dir(root, "", &mut view);
    view
}

fn walk_dir(dir: &Path, rel: &str, view: &mut View) {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            view.entries.insert(
                format!("{rel}<readdir>"),
                Entry {
                    kind: "error",
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    size: 0,
                    nlink: 0,
                    data: e.to_string(),
                    xattrs: BTreeMap::new(),
                },
            );
            return;
        }
    };
    let mut children: Vec<_> = rd.filter_map(Result::ok).collect();
    children.sort_by_key(|e| e.file_name());
    for de in children {
        let name = de.file_name();
        let r = format!("{rel}{}", String::from_utf8_lossy(name.as_bytes()));
        let p = de.path();
        let md = match std::fs::symlink_metadata(&p) {
            Ok(md) => md,
            Err(e) => {
                view.entries.insert(
                    r,
                    Entry {
                        kind: "error",
                        mode: 0,
                        uid: 0,
                        gid: 0,
                        size: 0,
                        nlink: 0,
                        data: format!("listed but stat fails: {e}"),
                        xattrs: BTreeMap::new(),
                    },
                );
                continue;
            }
        };
        if de.ino() != md.ino() {
            view.dino_mismatch.push((r.clone(), de.ino(), md.ino()));
        }
        let ft = md.file_type();
        let (kind, data) = if ft.is_dir() {
            ("dir", String::new())
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&p).map(|t| t.into_os_string());
            (
                "symlink",
                match t {
                    Ok(t) => String::from_utf8_lossy(t.as_bytes()).into_owned(),
                    Err(e) => format!("<readlink: {e}>"),
                },
            )
        } else if ft.is_file() {
            let mut buf = Vec::new();
            let d = match std::fs::File::open(&p).and_then(|mut f| f.read_to_end(&mut buf)) {
                Ok(_) => digest(&buf),
                Err(e) => format!("<read: {e}>"),
            };
            ("file", d)
        } else if ft.is_char_device() {
            ("chardev", format!("rdev {:x}", md.rdev()))
        } else {
            ("other", String::new())
        };
        view.entries.insert(
            r.clone(),
            Entry {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: if kind == "dir" { 0 } else { md.size() },
                nlink: md.nlink(),
                data,
                xattrs: user_xattrs(&p),
            },
        );
        view.inos.insert(r.clone(), md.ino());
        if ft.is_dir() {
            walk_dir(&p, &format!("{r}/"), view);
        }
    }
}

/// Differences between two views, one line each.
fn diff_views(ours: &View, kernel: &View, ignore: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let keys: BTreeSet<&String> = ours.entries.keys().chain(kernel.entries.keys()).collect();
    for k in keys {
        if ignore(k) {
            continue;
        }
        match (ours.entries.get(k), kernel.entries.get(k)) {
            (Some(o), Some(kk)) if o == kk => {}
            (Some(o), Some(kk)) => {
                out.push(format!("{k}:\n      ours   {o:?}\n      kernel {kk:?}"))
            }
            (Some(o), None) => out.push(format!("{k}: only in ours: {o:?}")),
            // Known kernel quirk, not ours to copy: the kernel lists a directory that has no
            // lower below it straight from the upper, whiteouts included, which then fail to
            // stat. unionfs-rs hides whiteouts everywhere.
            (None, Some(kk)) if kk.kind == "error" && kk.data.contains("os error 2") => {}
            (None, Some(kk)) => out.push(format!("{k}: only in kernel: {kk:?}")),
            (None, None) => {}
        }
    }
    out
}

/// The hard-link classes of a view: sets of names sharing an inode number (only classes of two
/// or more; directories excluded).
fn link_classes(v: &View) -> BTreeSet<Vec<String>> {
    let mut by_ino: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (k, ino) in &v.inos {
        if v.entries.get(k).is_some_and(|e| e.kind != "dir") {
            by_ino.entry(*ino).or_default().push(k.clone());
        }
    }
    by_ino.into_values().filter(|c| c.len() > 1).collect()
}

// ---------------------------------------------------------------------------------------------
// Mounts

fn set_xattr(p: &Path, name: &str, value: &[u8]) -> Result<(), i32> {
    let (c, n) = (cstr(p), CString::new(name).unwrap());
    // SAFETY: NUL-terminated strings and an owned buffer.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

fn chmod(p: &Path, mode: u32) {
    let c = cstr(p);
    // SAFETY: NUL-terminated path.
    assert_eq!(
        unsafe { libc::chmod(c.as_ptr(), mode) },
        0,
        "chmod {}",
        p.display()
    );
}

fn is_mounted(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = p.as_os_str().as_bytes();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m.as_bytes() == want)
}

fn umount(p: &Path) {
    let c = cstr(p);
    // SAFETY: NUL-terminated path.
    unsafe {
        if libc::umount2(c.as_ptr(), 0) != 0 {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// A kernel overlayfs mount, unmounted on drop.
struct KernelMount {
    merged: PathBuf,
}

impl KernelMount {
    fn new(lowers: &[PathBuf], upper: &Path, work: &Path, merged: &Path) -> Result<Self, String> {
        let lowers: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
        // redirect_dir=off: renaming a lower directory gives EXDEV, as unionfs-rs does;
        // index/metacopy off: the default behaviour unionfs-rs follows.
        let data = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off,index=off,metacopy=off,xino=off",
            lowers.join(":"),
            upper.display(),
            work.display()
        );
        let (src, fstype, target, data_c) = (
            CString::new("overlay").unwrap(),
            CString::new("overlay").unwrap(),
            cstr(merged),
            CString::new(data.clone()).unwrap(),
        );
        // SAFETY: NUL-terminated strings.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                data_c.as_ptr().cast(),
            )
        };
        if r != 0 {
            return Err(format!(
                "mount -t overlay -o {data}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(KernelMount {
            merged: merged.to_path_buf(),
        })
    }
}

impl Drop for KernelMount {
    fn drop(&mut self) {
        umount(&self.merged);
    }
}

/// How unionfs-rs writes whiteouts (`DIFFTEST_WHITEOUT`: auto, chardev or oci; default auto).
/// With `oci` the kernel-over-our-upper check is skipped: the kernel does not read `.wh.` files.
fn whiteout_format() -> String {
    std::env::var("DIFFTEST_WHITEOUT").unwrap_or_else(|_| "auto".into())
}

/// A unionfs-rs daemon run with `-f`, unmounted and reaped on drop.
struct FuseMount {
    merged: PathBuf,
    child: Option<Child>,
}

impl FuseMount {
    fn new(lowers: &[PathBuf], upper: &Path, work: &Path, merged: &Path) -> Result<Self, String> {
        let lowers: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
        let child = Command::new(bin())
            .arg("-f")
            .arg(lowers.join(":"))
            .arg(upper)
            .arg(merged)
            .arg("--workdir")
            .arg(work)
            .arg("--whiteout")
            .arg(whiteout_format())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin()))?;
        let mut m = FuseMount {
            merged: merged.to_path_buf(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(merged) {
            if let Some(c) = m.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                m.child = None;
                return Err(format!("unionfs-rs exited before mounting: {status}"));
            }
            if Instant::now() > deadline {
                return Err("unionfs-rs did not mount within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(m)
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        umount(&self.merged);
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
    }
}

/// One side's directories: `l1 l2 u w m` under `root`.
struct Side {
    root: PathBuf,
}

impl Side {
    fn lowers(&self) -> Vec<PathBuf> {
        vec![self.root.join("l1"), self.root.join("l2")]
    }
    fn upper(&self) -> PathBuf {
        self.root.join("u")
    }
    fn work(&self, n: u32) -> PathBuf {
        let w = self.root.join(format!("w{n}"));
        std::fs::create_dir_all(&w).unwrap();
        w
    }
    fn merged(&self) -> PathBuf {
        self.root.join("m")
    }
    fn build(&self, t: &Tree) {
        for (layer, dir) in t.layers.iter().zip(["u", "l1", "l2"]) {
            build_layer(&self.root.join(dir), layer);
        }
        std::fs::create_dir_all(self.merged()).unwrap();
    }
}

/// The scratch directory of one case; removed on drop unless something is still mounted in it.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = self.0.display().to_string();
        if info.contains(&prefix) {
            eprintln!("difftest: leaving {prefix} in place: still mounted");
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// One case

static CASE: AtomicU32 = AtomicU32::new(0);
/// Operations run on each side, and how many of them succeeded (a sanity figure: a test whose
/// operations all fail with ENOENT would compare little).
static OPS_RUN: AtomicU32 = AtomicU32::new(0);
static OPS_OK: AtomicU32 = AtomicU32::new(0);

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

fn run_case(tree: &Tree, ops: &[Op]) -> Result<(), TestCaseError> {
    let ops = &resolve_ops(tree, ops)[..];
    let n = CASE.fetch_add(1, Ordering::Relaxed);
    let scratch = Scratch(PathBuf::from(format!(
        "/tmp/ht-diff-{}-{n}",
        std::process::id()
    )));
    let _ = std::fs::remove_dir_all(&scratch.0);
    let ks = Side {
        root: scratch.0.join("k"),
    };
    let fs = Side {
        root: scratch.0.join("f"),
    };
    ks.build(tree);
    fs.build(tree);

    let (k_before, f_before, k_out, f_out, k_after, f_after) = {
        let km =
            KernelMount::new(&ks.lowers(), &ks.upper(), &ks.work(0), &ks.merged()).map_err(fail)?;
        let fm =
            FuseMount::new(&fs.lowers(), &fs.upper(), &fs.work(0), &fs.merged()).map_err(fail)?;
        let k_before = walk(&km.merged);
        let f_before = walk(&fm.merged);
        let k_out: Vec<Outcome> = ops.iter().map(|o| run_op(&km.merged, o)).collect();
        let f_out: Vec<Outcome> = ops.iter().map(|o| run_op(&fm.merged, o)).collect();
        OPS_RUN.fetch_add(ops.len() as u32, Ordering::Relaxed);
        OPS_OK.fetch_add(
            k_out.iter().filter(|o| o.is_ok()).count() as u32,
            Ordering::Relaxed,
        );
        let k_after = walk(&km.merged);
        let f_after = walk(&fm.merged);
        (k_before, f_before, k_out, f_out, k_after, f_after)
    };

    let mut problems = Vec::new();
    let d = diff_views(&f_before, &k_before, &|_| false);
    if !d.is_empty() {
        problems.push(format!(
            "views differ right after mount:\n    {}",
            d.join("\n    ")
        ));
    }
    for (i, (o, k)) in ops.iter().zip(f_out.iter().zip(&k_out)).enumerate() {
        if k.0 != k.1 {
            problems.push(format!(
                "op {i} {o:?}: ours {} kernel {}",
                show(k.0),
                show(k.1)
            ));
        }
    }
    let d = diff_views(&f_after, &k_after, &|_| false);
    if !d.is_empty() {
        problems.push(format!(
            "views differ after the operations:\n    {}",
            d.join("\n    ")
        ));
    }
    if link_classes(&f_after) != link_classes(&k_after) {
        problems.push(format!(
            "hard-link classes differ: ours {:?} kernel {:?}",
            link_classes(&f_after),
            link_classes(&k_after)
        ));
    }
    for v in [&f_before, &f_after] {
        for (p, d, s) in &v.dino_mismatch {
            problems.push(format!("ours: {p}: readdir d_ino {d} != st_ino {s}"));
        }
    }
    let destroyed = destroyed_names(ops, &k_out);
    for (p, ino0) in &f_before.inos {
        if p.split('/').any(|c| destroyed.contains(c)) {
            continue;
        }
        let (Some(ino1), Some(k0), Some(k1)) = (
            f_after.inos.get(p),
            k_before.inos.get(p),
            k_after.inos.get(p),
        ) else {
            continue;
        };
        if k0 == k1 && ino0 != ino1 {
            problems.push(format!(
                "ours: {p}: st_ino changed {ino0} -> {ino1} (kernel kept {k0})"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(fail(problems.join("\n  ")));
    }

    // Remount both: the upper as written must read back the same.
    let (k_re, f_re, x_re) = {
        let km =
            KernelMount::new(&ks.lowers(), &ks.upper(), &ks.work(1), &ks.merged()).map_err(fail)?;
        let fm =
            FuseMount::new(&fs.lowers(), &fs.upper(), &fs.work(1), &fs.merged()).map_err(fail)?;
        let k_re = walk(&km.merged);
        let f_re = walk(&fm.merged);
        drop(fm);
        // Kernel overlayfs over the layers unionfs-rs wrote; it cannot read OCI whiteouts.
        let x_re = if whiteout_format() == "oci" {
            None
        } else {
            let km2 = KernelMount::new(&fs.lowers(), &fs.upper(), &fs.work(2), &fs.merged())
                .map_err(fail)?;
            Some(walk(&km2.merged))
        };
        (k_re, f_re, x_re)
    };
    let d = diff_views(&f_re, &k_re, &|_| false);
    if !d.is_empty() {
        problems.push(format!(
            "views differ after remount:\n    {}",
            d.join("\n    ")
        ));
    }
    // unionfs-rs marks an opaque directory with the xattr the kernel reads and also a
    // `.wh..wh..opq` entry for OCI tools (DESIGN.md section 1); the kernel lists that entry.
    let opq = |k: &str| k.ends_with(".wh..wh..opq");
    let d = x_re
        .map(|x| diff_views(&f_re, &x, &opq))
        .unwrap_or_default();
    if !d.is_empty() {
        problems.push(format!(
            "kernel overlayfs over the upper unionfs-rs wrote shows another tree \
             (\"kernel\" below):\n    {}",
            d.join("\n    ")
        ));
    }
    drop(scratch);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(fail(problems.join("\n  ")))
    }
}

fn show(o: &Outcome) -> String {
    match o {
        Ok(v) => format!("Ok({v})"),
        Err(e) => format!("Err({})", std::io::Error::from_raw_os_error(*e)),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Checks that this process may run the test: root and kernel overlayfs available.
fn preconditions() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("not root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("no /dev/fuse".into());
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.contains("overlay") {
        // The module may load on first mount; try it.
        let scratch = Scratch(PathBuf::from(format!(
            "/tmp/ht-diff-probe-{}",
            std::process::id()
        )));
        for d in ["l", "u", "w", "m"] {
            std::fs::create_dir_all(scratch.0.join(d)).map_err(|e| e.to_string())?;
        }
        let j = |d: &str| scratch.0.join(d);
        KernelMount::new(&[j("l")], &j("u"), &j("w"), &j("m"))?;
    }
    Ok(())
}

fn mix(seed: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    out
}

#[test]
fn differential_against_kernel_overlayfs() {
    // The composed strategies are deep generic values: debug builds need a big stack.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(differential)
        .unwrap()
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

fn differential() {
    if let Err(why) = preconditions() {
        eprintln!("difftest: skipped ({why}); it needs root, /dev/fuse and kernel overlayfs");
        return;
    }
    let cases = env_u64("DIFFTEST_CASES").unwrap_or(32);
    let base = env_u64("DIFFTEST_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000_000)
            .unwrap_or(1)
    });
    let max_ops = env_u64("DIFFTEST_MAX_OPS").unwrap_or(12) as usize;
    eprintln!("difftest: {cases} cases from DIFFTEST_SEED={base}");
    let strategy = (tree(), prop::collection::vec(op(), 1..=max_ops.max(1)));
    let started = Instant::now();
    for i in 0..cases {
        let seed = base.wrapping_add(i);
        let config = Config {
            cases: 1,
            failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
            max_shrink_iters: env_u64("DIFFTEST_SHRINK_ITERS").unwrap_or(400) as u32,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &mix(seed)));
        let result = runner.run(&strategy, |(tree, ops)| run_case(&tree, &ops));
        match result {
            Ok(()) => {}
            Err(TestError::Fail(why, (tree, ops))) => {
                let mut s = String::new();
                let n_ops = ops.len();
                for (j, o) in resolve_ops(&tree, &ops).iter().enumerate() {
                    let _ = writeln!(s, "  {j}: {o:?}");
                }
                panic!(
                    "difftest: unionfs-rs differs from kernel overlayfs.\n\
                     Replay: DIFFTEST_SEED={seed} DIFFTEST_CASES=1 cargo test --test difftest\n\
                     Shrunk layer trees:\n{}Shrunk operations ({n_ops}):\n{s}Differences:\n  {why}",
                    describe_tree(&tree)
                );
            }
            Err(TestError::Abort(why)) => panic!("difftest aborted (seed {seed}): {why}"),
        }
    }
    eprintln!(
        "difftest: {cases} cases passed in {:.1} s ({} operations per side, {} of them \
         succeeded on kernel overlayfs)",
        started.elapsed().as_secs_f64(),
        OPS_RUN.load(Ordering::Relaxed),
        OPS_OK.load(Ordering::Relaxed)
    );
}

#[test]
fn view_walk_sees_names_as_bytes() {
    // The comparison is only as good as the walk: check it on a plain directory.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("f"), b"abc").unwrap();
    std::fs::create_dir(d.path().join("g")).unwrap();
    std::os::unix::fs::symlink("f", d.path().join("g").join("s")).unwrap();
    std::fs::write(d.path().join(OsStr::from_bytes(b"\xff")), b"").unwrap();
    let v = walk(d.path());
    let names: Vec<&String> = v.entries.keys().collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(v.entries["f"].data, digest(b"abc"));
    assert_eq!(v.entries["g/s"].data, "f");
    assert!(v.dino_mismatch.is_empty());
}

fn empty_layer() -> [Top; 4] {
    std::array::from_fn(|_| Top::Leaf(Leaf::Absent))
}

/// Cases the random search found, kept so they run every time.
#[test]
fn regressions() {
    if let Err(why) = preconditions() {
        eprintln!("difftest: skipped ({why}); it needs root, /dev/fuse and kernel overlayfs");
        return;
    }
    let file = Leaf::File {
        size: 0,
        seed: 0,
        mode: 0o644,
        xattr: None,
    };
    let dir = |children: [Leaf; 2]| Top::Dir {
        mode: 0o755,
        opaque: false,
        xattr: None,
        children,
    };
    let mut cases: Vec<(&str, Tree, Vec<Op>)> = Vec::new();

    // A hard link to a copied-up file: readdir's d_ino of the new name must be the origin's
    // inode number that stat reports (the link did not mark its directory impure).
    let mut t = Tree {
        layers: [empty_layer(), empty_layer(), empty_layer()],
    };
    t.layers[1][3] = dir([Leaf::Absent, file.clone()]);
    cases.push((
        "link of a lower file keeps d_ino == st_ino",
        t,
        vec![Op::Link {
            from: P(3, Some(1)),
            to: P(0, None),
        }],
    ));

    // RENAME_EXCHANGE moves a copied-up lower file into an upper directory, which must then
    // report the origin's inode number as d_ino too.
    let mut t = Tree {
        layers: [empty_layer(), empty_layer(), empty_layer()],
    };
    t.layers[0][2] = dir([
        Leaf::Dir {
            mode: 0o755,
            opaque: false,
        },
        Leaf::Absent,
    ]);
    t.layers[0][3] = dir([Leaf::Absent, Leaf::Absent]);
    t.layers[1][3] = dir([Leaf::Absent, file.clone()]);
    cases.push((
        "exchange of an upper dir with a lower file keeps d_ino == st_ino",
        t,
        vec![Op::Rename {
            from: P(2, Some(0)),
            to: P(3, Some(1)),
            flags: RenameFlags::Exchange,
        }],
    ));

    for (what, tree, ops) in cases {
        let stack = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(move || run_case(&tree, &ops).map_err(|e| e.to_string()))
            .unwrap()
            .join()
            .unwrap();
        if let Err(e) = stack {
            panic!("regression '{what}': {e}");
        }
    }
}
