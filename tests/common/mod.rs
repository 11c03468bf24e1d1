//! Harness shared by the integration tests: build layer trees, mount them with kernel overlayfs
//! (the reference) or with the built `unionfs-rs` binary, and observe the merged view and what
//! landed in the upper.
//!
//! A scenario is meant to run through [`both_backends`]: first on kernel overlayfs, which proves
//! that the test encodes real overlayfs behaviour, then on unionfs-rs; the closure may return an
//! observation (errnos, listings, stat fields) that must be equal on both. Where unionfs-rs
//! differs on purpose (DESIGN.md: OCI whiteouts, `.wh.` names refused, ...) tests branch on the
//! backend and say why in a comment, or use [`unionfs_only`].
//!
//! Invariants: a [`Mount`] is unmounted when dropped, also while a test panics, and its daemon is
//! reaped; a daemon that hangs is killed by a watchdog so a test fails instead of blocking forever
//! (requests then fail with ENOTCONN); a [`Stack`]'s directory is removed only when nothing is
//! mounted on it, and kept (path printed) when the test failed, for inspection.
//!
//! Submodules: `daemon` (starting, watching and stopping the unionfs-rs binary, for a `Stack`
//! or for a test's own layer directories), `mounts` (the mount table, unmounting, a small
//! tmpfs), `scratch` (a test's directory, removed only when nothing is mounted in it).
//!
//! `UNIONFS_TEST_BACKENDS=kernel|unionfs` restricts the run to one backend;
//! `UNIONFS_TEST_TIMEOUT` (seconds, default 120) bounds one mount's life;
//! `UNIONFS_TEST_SHOW=1` prints each backend's observation.

#![allow(dead_code)]

mod daemon;
mod mounts;
mod scratch;

pub use daemon::*;
pub use mounts::*;
pub use scratch::*;

use std::ffi::{CString, OsStr};
use std::fmt::Debug;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Once;

/// The daemon under test, built by cargo for the integration tests.
pub const UNIONFS_BIN: &str = env!("CARGO_BIN_EXE_unionfs-rs");

/// Where every test builds its layers: a real disk filesystem (kernel overlayfs cannot use
/// another overlay as upper, and tmpfs would hide d_type/xattr differences). One directory per
/// user, so a run as a normal user never collides with root's.
fn test_root() -> PathBuf {
    if is_root() {
        PathBuf::from("/tmp/unionfs-rs-tests")
    } else {
        // SAFETY: getuid has no preconditions.
        PathBuf::from(format!("/tmp/unionfs-rs-tests-{}", unsafe {
            libc::getuid()
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Backends and running a scenario on them
// ---------------------------------------------------------------------------------------------

/// What serves the merged view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `mount -t overlay`: the behaviour we copy.
    Kernel,
    /// The `unionfs-rs` binary in the foreground.
    UnionFs,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Kernel => "kernel-overlayfs",
            Backend::UnionFs => "unionfs-rs",
        }
    }

    pub fn is_kernel(self) -> bool {
        self == Backend::Kernel
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("test")
        .rsplit("::")
        .next()
        .unwrap_or("test")
        .to_string()
}

/// Prints why the current test does nothing and returns false when not root.
pub fn require_root() -> bool {
    if !is_root() {
        eprintln!(
            "SKIP {}: needs root (overlay mounts, trusted.* xattrs, 0/0 devices)",
            test_name()
        );
    }
    is_root()
}

/// Like [`require_root`], for tests that run the daemon on their own layer directories: they
/// also need `/dev/fuse`.
pub fn require_fuse() -> bool {
    let fuse = Path::new("/dev/fuse").exists();
    if !is_root() || !fuse {
        eprintln!("SKIP {}: needs root and /dev/fuse", test_name());
    }
    is_root() && fuse
}

/// A size knob from the environment (`CRASH_MB=100`), `default` when unset or not a number.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn selected_backends() -> Vec<Backend> {
    match std::env::var("UNIONFS_TEST_BACKENDS").as_deref() {
        Ok("kernel") => vec![Backend::Kernel],
        Ok("unionfs") => vec![Backend::UnionFs],
        _ => vec![Backend::Kernel, Backend::UnionFs],
    }
}

/// Runs `f` on `b`; a panic is re-raised with the backend's name in front, since the same
/// assertion fails for different reasons on the two backends.
fn run_on<R>(b: Backend, f: &impl Fn(Backend) -> R) -> R {
    match panic::catch_unwind(AssertUnwindSafe(|| f(b))) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".to_string());
            panic!("[{}] {msg}", b.name());
        }
    }
}

/// Runs the scenario on kernel overlayfs, then on unionfs-rs, and requires both to return the
/// same observation. Skips (with a printed reason) when not root.
pub fn both_backends<R: Debug + PartialEq>(f: impl Fn(Backend) -> R) {
    if !require_root() {
        return;
    }
    let mut seen: Vec<(Backend, R)> = Vec::new();
    for b in selected_backends() {
        let r = run_on(b, &f);
        if std::env::var_os("UNIONFS_TEST_SHOW").is_some() {
            eprintln!("{} observed: {r:?}", b.name());
        }
        seen.push((b, r));
    }
    if let [(_, kernel), (_, ours)] = &seen[..] {
        assert_eq!(
            kernel, ours,
            "kernel overlayfs (left) and unionfs-rs (right) observed different results"
        );
    }
}

/// A scenario only unionfs-rs supports (an extension such as OCI whiteouts); the caller's
/// comment says why the kernel is not the reference here.
pub fn unionfs_only(f: impl Fn(Backend)) {
    if !require_root() {
        return;
    }
    if selected_backends().contains(&Backend::UnionFs) {
        run_on(Backend::UnionFs, &f);
    }
}

// ---------------------------------------------------------------------------------------------
// Layers: building and inspecting one directory tree
// ---------------------------------------------------------------------------------------------

/// How a directory is marked opaque.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opaque {
    /// `trusted.overlay.opaque=y` (kernel, as root).
    Trusted,
    /// `user.overlay.opaque=y` (kernel with `userxattr`, rootless).
    User,
    /// `user.fuseoverlayfs.opaque=y`.
    FuseOverlayfs,
    /// A `.wh..wh..opq` entry inside the directory (OCI/AUFS).
    OciMarker,
}

/// What a name is in one layer, whiteouts of any dialect folded into `Whiteout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Absent,
    File(Vec<u8>),
    Dir,
    Symlink(PathBuf),
    Whiteout,
    Other(u32),
}

pub const OCI_OPAQUE: &str = ".wh..wh..opq";

/// One layer directory; paths are relative to its root, `""` being the root itself.
/// Builders panic with the path on failure: they run before the scenario, never under test.
pub struct Layer {
    root: PathBuf,
}

fn split_parent(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    }
}

impl Layer {
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    fn parents(&self, rel: &str) {
        let (parent, _) = split_parent(rel);
        fs::create_dir_all(self.path(parent)).unwrap_or_else(|e| panic!("mkdir -p {parent}: {e}"));
    }

    pub fn file(&self, rel: &str, data: impl AsRef<[u8]>) -> &Self {
        self.parents(rel);
        fs::write(self.path(rel), data).unwrap_or_else(|e| panic!("write {rel}: {e}"));
        self
    }

    pub fn dir(&self, rel: &str) -> &Self {
        fs::create_dir_all(self.path(rel)).unwrap_or_else(|e| panic!("mkdir {rel}: {e}"));
        self
    }

    pub fn symlink(&self, rel: &str, target: &str) -> &Self {
        self.parents(rel);
        std::os::unix::fs::symlink(target, self.path(rel))
            .unwrap_or_else(|e| panic!("symlink {rel}: {e}"));
        self
    }

    pub fn hardlink(&self, existing: &str, new: &str) -> &Self {
        self.parents(new);
        fs::hard_link(self.path(existing), self.path(new))
            .unwrap_or_else(|e| panic!("link {existing} {new}: {e}"));
        self
    }

    pub fn fifo(&self, rel: &str) -> &Self {
        self.parents(rel);
        sys::mknod(&self.path(rel), libc::S_IFIFO | 0o644, 0)
            .unwrap_or_else(|e| panic!("mkfifo {rel}: {e}"));
        self
    }

    pub fn chmod(&self, rel: &str, mode: u32) -> &Self {
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {rel}: {e}"));
        self
    }

    pub fn chown(&self, rel: &str, uid: u32, gid: u32) -> &Self {
        std::os::unix::fs::lchown(self.path(rel), Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {rel}: {e}"));
        self
    }

    pub fn xattr(&self, rel: &str, name: &str, value: &[u8]) -> &Self {
        sys::lsetxattr(&self.path(rel), name, value, 0)
            .unwrap_or_else(|e| panic!("setxattr {rel} {name}: {e}"));
        self
    }

    /// Sets atime and mtime (seconds since the epoch) without following a symlink.
    pub fn times(&self, rel: &str, atime: i64, mtime: i64) -> &Self {
        sys::utimens(&self.path(rel), sys::ts(atime, 0), sys::ts(mtime, 0), true)
            .unwrap_or_else(|e| panic!("utimens {rel}: {e}"));
        self
    }

    /// A sparse file of `size` bytes holding `chunks` at their offsets and holes elsewhere.
    pub fn sparse(&self, rel: &str, size: u64, chunks: &[(u64, &[u8])]) -> &Self {
        use std::os::unix::fs::FileExt;
        self.parents(rel);
        let f = File::create(self.path(rel)).unwrap_or_else(|e| panic!("create {rel}: {e}"));
        f.set_len(size).unwrap();
        for (off, data) in chunks {
            f.write_all_at(data, *off).unwrap();
        }
        self
    }

    /// Kernel whiteout: a 0/0 character device.
    pub fn whiteout(&self, rel: &str) -> &Self {
        self.parents(rel);
        sys::mknod(&self.path(rel), libc::S_IFCHR | 0o600, 0)
            .unwrap_or_else(|e| panic!("mknod 0/0 {rel}: {e}"));
        self
    }

    /// OCI/AUFS whiteout: an empty `.wh.<name>` file beside the name.
    pub fn oci_whiteout(&self, rel: &str) -> &Self {
        let (parent, name) = split_parent(rel);
        let wh = if parent.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{parent}/.wh.{name}")
        };
        self.file(&wh, b"")
    }

    /// Kernel (6.7+) xattr whiteout: an empty file with `trusted.overlay.whiteout`.
    pub fn xattr_whiteout(&self, rel: &str) -> &Self {
        self.file(rel, b"");
        self.xattr(rel, "trusted.overlay.whiteout", b"y")
    }

    /// Creates `rel` as a directory (if missing) and marks it opaque the given way.
    pub fn opaque(&self, rel: &str, how: Opaque) -> &Self {
        self.dir(rel);
        match how {
            Opaque::Trusted => self.xattr(rel, "trusted.overlay.opaque", b"y"),
            Opaque::User => self.xattr(rel, "user.overlay.opaque", b"y"),
            Opaque::FuseOverlayfs => self.xattr(rel, "user.fuseoverlayfs.opaque", b"y"),
            Opaque::OciMarker => self.file(&join(rel, OCI_OPAQUE), b""),
        }
    }

    // -- inspection ---------------------------------------------------------------------------

    pub fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.path(rel)).is_ok()
    }

    pub fn stat(&self, rel: &str) -> fs::Metadata {
        fs::symlink_metadata(self.path(rel)).unwrap_or_else(|e| panic!("stat {rel} in layer: {e}"))
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.path(rel)).unwrap_or_else(|e| panic!("read {rel} in layer: {e}"))
    }

    pub fn get_xattr(&self, rel: &str, name: &str) -> Option<Vec<u8>> {
        sys::lgetxattr(&self.path(rel), name).ok()
    }

    /// True for a whiteout of any dialect at `rel`.
    pub fn is_whiteout(&self, rel: &str) -> bool {
        let (parent, name) = split_parent(rel);
        if self.exists(&join(parent, &format!(".wh.{name}"))) {
            return true;
        }
        let Ok(m) = fs::symlink_metadata(self.path(rel)) else {
            return false;
        };
        let chardev00 = m.file_type().is_char_device() && m.rdev() == 0;
        let xattr_wh = m.is_file()
            && m.len() == 0
            && (self.get_xattr(rel, "trusted.overlay.whiteout").is_some()
                || self.get_xattr(rel, "user.overlay.whiteout").is_some());
        chardev00 || xattr_wh
    }

    /// The kernel's own whiteout: a 0/0 character device.
    pub fn is_chardev_whiteout(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.path(rel))
            .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
            .unwrap_or(false)
    }

    /// True when the directory `rel` is opaque in any dialect.
    pub fn is_opaque(&self, rel: &str) -> bool {
        let y = Some(b"y".to_vec());
        self.get_xattr(rel, "trusted.overlay.opaque") == y
            || self.get_xattr(rel, "user.overlay.opaque") == y
            || self.get_xattr(rel, "user.fuseoverlayfs.opaque") == y
            || self.exists(&join(rel, OCI_OPAQUE))
    }

    pub fn entry(&self, rel: &str) -> Entry {
        if self.is_whiteout(rel) {
            return Entry::Whiteout;
        }
        let Ok(m) = fs::symlink_metadata(self.path(rel)) else {
            return Entry::Absent;
        };
        let t = m.file_type();
        if t.is_file() {
            Entry::File(self.read(rel))
        } else if t.is_dir() {
            Entry::Dir
        } else if t.is_symlink() {
            Entry::Symlink(fs::read_link(self.path(rel)).unwrap())
        } else {
            Entry::Other(m.mode())
        }
    }

    /// Sorted names in the directory `rel`, as stored (whiteout files included).
    pub fn names(&self, rel: &str) -> Vec<String> {
        names(&self.path(rel)).unwrap_or_else(|e| panic!("readdir {rel} in layer: {e}"))
    }
}

pub fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// Sorted names of a directory without `.` and `..`.
pub fn names(dir: &Path) -> io::Result<Vec<String>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        v.push(e?.file_name().to_string_lossy().into_owned());
    }
    v.sort();
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// Stack: the layer directories of one mount
// ---------------------------------------------------------------------------------------------

/// The directories of one union: `lowers[0]` on top, an optional upper, a work directory beside
/// it (same filesystem) and the mount point, all under one fresh directory.
pub struct Stack {
    pub dir: PathBuf,
    lowers: Vec<Layer>,
    upper: Option<Layer>,
    pub work: PathBuf,
    pub merged: PathBuf,
    /// Removes the directory once nothing is mounted on it (kept when the test failed).
    _scratch: Scratch,
}

impl Stack {
    /// Two lowers and an upper: enough for every layer position.
    pub fn new() -> Stack {
        Stack::build(2, true)
    }

    pub fn with_lowers(n: usize) -> Stack {
        Stack::build(n, true)
    }

    /// No upper: a read-only union.
    pub fn read_only(n: usize) -> Stack {
        Stack::build(n, false)
    }

    fn build(nlowers: usize, with_upper: bool) -> Stack {
        let scratch = Scratch::new("");
        let lowers = (0..nlowers)
            .map(|i| Layer {
                root: scratch.dir(format!("lower{i}")),
            })
            .collect();
        let upper = with_upper.then(|| Layer {
            root: scratch.dir("upper"),
        });
        Stack {
            dir: scratch.root.clone(),
            lowers,
            upper,
            work: scratch.dir("work"),
            merged: scratch.dir("merged"),
            _scratch: scratch,
        }
    }

    /// Lower `i`; 0 is the top one.
    pub fn lower(&self, i: usize) -> &Layer {
        &self.lowers[i]
    }

    pub fn upper(&self) -> &Layer {
        self.upper.as_ref().expect("this stack has no upper")
    }

    fn lowerdir_list(&self) -> String {
        let v: Vec<String> = self
            .lowers
            .iter()
            .map(|l| l.root.display().to_string())
            .collect();
        v.join(":")
    }

    /// Mounts with default options.
    pub fn mount(&self, b: Backend) -> Mount<'_> {
        self.mounter(b).mount()
    }

    /// A mount with extra options for one backend or the other.
    pub fn mounter(&self, b: Backend) -> Mounter<'_> {
        Mounter {
            stack: self,
            backend: b,
            kernel_opts: Vec::new(),
            unionfs_args: Vec::new(),
            default_workdir: false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mounting and unmounting
// ---------------------------------------------------------------------------------------------

/// Builder for a mount with backend-specific options.
pub struct Mounter<'a> {
    stack: &'a Stack,
    backend: Backend,
    kernel_opts: Vec<String>,
    unionfs_args: Vec<String>,
    default_workdir: bool,
}

impl<'a> Mounter<'a> {
    /// An extra `-o` option for kernel overlayfs (e.g. `userxattr`).
    pub fn kernel_opt(mut self, opt: &str) -> Self {
        self.kernel_opts.push(opt.to_string());
        self
    }

    /// An extra command line argument for unionfs-rs (e.g. `--whiteout=oci`).
    pub fn unionfs_arg(mut self, arg: &str) -> Self {
        self.unionfs_args.push(arg.to_string());
        self
    }

    /// unionfs-rs without `--workdir`: it then uses `UPPER/.unionfs-rs-work`.
    pub fn default_workdir(mut self) -> Self {
        self.default_workdir = true;
        self
    }

    pub fn mount(self) -> Mount<'a> {
        match self.backend {
            Backend::Kernel => self.mount_kernel(),
            Backend::UnionFs => self.mount_unionfs(),
        }
    }

    fn mount_kernel(self) -> Mount<'a> {
        let st = self.stack;
        // Pinned to the defaults this suite documents (no redirect_dir: renaming a lower
        // directory gives EXDEV), whatever the machine's module parameters say.
        let mut opts = vec![format!("lowerdir={}", st.lowerdir_list())];
        if let Some(up) = &st.upper {
            opts.push(format!("upperdir={}", up.root.display()));
            opts.push(format!("workdir={}", st.work.display()));
            // userxattr already implies these and refuses them spelled out.
            if !self.kernel_opts.iter().any(|o| o == "userxattr") {
                opts.push("redirect_dir=off".into());
                opts.push("index=off".into());
                opts.push("metacopy=off".into());
            }
        }
        opts.extend(self.kernel_opts);
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts.join(",")])
            .arg(&st.merged)
            .output()
            .expect("run mount(8)");
        assert!(
            out.status.success(),
            "mount -t overlay -o {} failed: {}",
            opts.join(","),
            String::from_utf8_lossy(&out.stderr)
        );
        Mount {
            stack: st,
            backend: Backend::Kernel,
            daemon: None,
        }
    }

    fn unionfs_command(&self) -> Command {
        let st = self.stack;
        let lowers: Vec<PathBuf> = st.lowers.iter().map(|l| l.root.clone()).collect();
        let mut cmd = match &st.upper {
            Some(up) => {
                let mut cmd = unionfs_command(&lowers, &up.root, &st.merged);
                if !self.default_workdir {
                    cmd.arg("--workdir").arg(&st.work);
                }
                cmd
            }
            None => {
                let mut cmd = Command::new(UNIONFS_BIN);
                cmd.arg("-f")
                    .arg("-o")
                    .arg(format!("lowerdir={}", st.lowerdir_list()))
                    .arg(&st.merged);
                cmd
            }
        };
        cmd.args(&self.unionfs_args);
        cmd
    }

    fn mount_unionfs(self) -> Mount<'a> {
        let log = self.stack.dir.join("daemon.log");
        let daemon = Daemon::spawn(self.unionfs_command(), &self.stack.merged, &log)
            .unwrap_or_else(|e| panic!("{e}"));
        Mount {
            stack: self.stack,
            backend: Backend::UnionFs,
            daemon: Some(daemon),
        }
    }
}

/// A live merged view; unmounted (and its daemon reaped) on drop.
pub struct Mount<'a> {
    stack: &'a Stack,
    backend: Backend,
    daemon: Option<Daemon>,
}

impl Mount<'_> {
    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn is_kernel(&self) -> bool {
        self.backend.is_kernel()
    }

    pub fn root(&self) -> &Path {
        &self.stack.merged
    }

    /// `rel` inside the merged view (`""` = its root).
    pub fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.stack.merged.clone()
        } else {
            self.stack.merged.join(rel)
        }
    }

    /// The unionfs-rs daemon's pid (None for the kernel).
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    /// What the daemon printed so far (empty for the kernel).
    pub fn daemon_output(&self) -> String {
        self.daemon.as_ref().map(Daemon::output).unwrap_or_default()
    }

    /// Unmounts now (e.g. to inspect the upper at rest); dropping afterwards is a no-op.
    /// Returns the daemon's exit status (None for the kernel, or a daemon that was killed).
    pub fn unmount(mut self) -> Option<ExitStatus> {
        self.stop()
    }

    fn stop(&mut self) -> Option<ExitStatus> {
        let status = match self.daemon.as_mut() {
            Some(d) => d.stop(),
            None => {
                unmount(&self.stack.merged, self.backend);
                None
            }
        };
        self.daemon = None;
        status
    }
}

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Observations
// ---------------------------------------------------------------------------------------------

/// The errno of a result, 0 for success: comparable across backends.
pub fn errno<T>(r: &io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

pub fn errname(e: i32) -> String {
    if e == 0 {
        "success".into()
    } else {
        format!("{} ({e})", io::Error::from_raw_os_error(e))
    }
}

/// Asserts that `r` failed with `want` (0 = succeeded).
#[track_caller]
pub fn expect_errno<T: Debug>(r: io::Result<T>, want: i32, what: &str) {
    let got = errno(&r);
    assert_eq!(
        got,
        want,
        "{what}: expected {}, got {} ({r:?})",
        errname(want),
        errname(got)
    );
}

/// Stat fields that must agree between backends (no inode numbers, devices or times).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub kind: &'static str,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u64,
}

pub fn kind_of(m: &fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_file() {
        "file"
    } else if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_char_device() {
        "chardev"
    } else if t.is_block_device() {
        "blockdev"
    } else {
        "socket"
    }
}

/// Comparable attributes of `p` (not followed); directories report size 0 since their size
/// is the backing filesystem's business.
pub fn attr(p: &Path) -> io::Result<Attr> {
    let m = fs::symlink_metadata(p)?;
    let dir = m.is_dir();
    Ok(Attr {
        kind: kind_of(&m),
        perm: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size: if dir { 0 } else { m.size() },
        nlink: if dir { 0 } else { m.nlink() },
    })
}

/// A merged tree flattened to `(path, description)`, for whole-view comparisons.
pub fn tree(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(root, "", &mut out);
    out
}

fn walk(root: &Path, rel: &str, out: &mut Vec<(String, String)>) {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    for name in names(&dir).unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display())) {
        let r = join(rel, &name);
        let p = root.join(&r);
        let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("stat {r}: {e}"));
        let desc = if m.is_dir() {
            "dir".to_string()
        } else if m.is_file() {
            format!("file {:?}", String::from_utf8_lossy(&fs::read(&p).unwrap()))
        } else if m.file_type().is_symlink() {
            format!("symlink -> {}", fs::read_link(&p).unwrap().display())
        } else {
            kind_of(&m).to_string()
        };
        out.push((r.clone(), desc));
        if m.is_dir() {
            walk(root, &r, out);
        }
    }
}

pub fn read_string(p: &Path) -> io::Result<String> {
    fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// (seconds, nanoseconds) pairs of a stat.
pub fn mtime(m: &fs::Metadata) -> (i64, i64) {
    (m.mtime(), m.mtime_nsec())
}

pub fn ctime(m: &fs::Metadata) -> (i64, i64) {
    (m.ctime(), m.ctime_nsec())
}

pub fn atime(m: &fs::Metadata) -> (i64, i64) {
    (m.atime(), m.atime_nsec())
}

/// A timestamp long ago, set on layer entries so that "changed" is a plain comparison.
pub const OLD: i64 = 946_684_800; // 2000-01-01

/// A name of `len` bytes.
pub fn long_name(len: usize) -> String {
    "n".repeat(len)
}

// ---------------------------------------------------------------------------------------------
// Acting as an unprivileged user
// ---------------------------------------------------------------------------------------------

pub const TEST_USER: &str = "unionfs-test";

/// An unprivileged account for the permission and rootless tests.
#[derive(Clone, Copy, Debug)]
pub struct TestUser {
    pub uid: u32,
    pub gid: u32,
}

fn id_of(flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, TEST_USER]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Creates the test user once (idempotent across runs) and opens /dev/fuse to everybody, as
/// udev would on a desktop; there is no udev here. Root only.
pub fn test_user() -> TestUser {
    static SETUP: Once = Once::new();
    SETUP.call_once(|| {
        if id_of("-u").is_none() {
            // Exit code 9: the user appeared meanwhile (another test binary); fine.
            let st = Command::new("useradd")
                .args(["--system", "--user-group", "--no-create-home"])
                .args(["--shell", "/usr/sbin/nologin", TEST_USER])
                .status()
                .expect("run useradd");
            assert!(
                st.success() || st.code() == Some(9),
                "useradd {TEST_USER}: {st}"
            );
        }
        let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666));
    });
    TestUser {
        uid: id_of("-u").expect("uid of test user"),
        gid: id_of("-g").expect("gid of test user"),
    }
}

/// Runs `f` on a fresh thread whose credentials are `user`'s. The raw setres*id/setgroups
/// syscalls change only the calling thread (glibc's wrappers would change the whole test
/// process), and the thread is discarded afterwards, so nothing leaks into other tests.
pub fn as_user<T: Send>(user: TestUser, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: raw credential syscalls on this thread only; arguments are plain ids.
            unsafe {
                let none: *const libc::gid_t = std::ptr::null();
                assert_eq!(libc::syscall(libc::SYS_setgroups, 0, none), 0);
                let (u, g) = (user.uid as libc::c_long, user.gid as libc::c_long);
                assert_eq!(libc::syscall(libc::SYS_setresgid, g, g, g), 0);
                assert_eq!(libc::syscall(libc::SYS_setresuid, u, u, u), 0);
            }
            f()
        })
        .join()
        .unwrap_or_else(|p| panic::resume_unwind(p))
    })
}

/// A command that runs `program` as the test user (via setpriv), with a plain environment.
pub fn user_command(user: TestUser, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .arg("--init-groups")
        .arg("--")
        .arg(program)
        .env("HOME", "/tmp")
        .env_remove("XDG_RUNTIME_DIR");
    cmd
}

// ---------------------------------------------------------------------------------------------
// Thin syscall wrappers the tests need and std lacks
// ---------------------------------------------------------------------------------------------

pub mod sys {
    use super::*;

    pub fn cstr(p: &Path) -> CString {
        CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
    }

    fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    fn cvt_size(r: isize) -> io::Result<usize> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    pub fn ts(sec: i64, nsec: i64) -> libc::timespec {
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        }
    }

    pub fn mknod(p: &Path, mode: u32, dev: u64) -> io::Result<()> {
        // SAFETY: valid C string.
        cvt(unsafe { libc::mknod(cstr(p).as_ptr(), mode, dev) }).map(drop)
    }

    pub fn renameat2(old: &Path, new: &Path, flags: u32) -> io::Result<()> {
        let (o, n) = (cstr(old), cstr(new));
        // SAFETY: valid C strings; AT_FDCWD with absolute paths.
        cvt(unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                o.as_ptr(),
                libc::AT_FDCWD,
                n.as_ptr(),
                flags,
            )
        })
        .map(drop)
    }

    /// utimensat with explicit timespecs (which may be UTIME_OMIT / UTIME_NOW).
    pub fn utimens(
        p: &Path,
        atime: libc::timespec,
        mtime: libc::timespec,
        nofollow: bool,
    ) -> io::Result<()> {
        let times = [atime, mtime];
        let flags = if nofollow {
            libc::AT_SYMLINK_NOFOLLOW
        } else {
            0
        };
        // SAFETY: valid C string and a two-element array.
        cvt(unsafe { libc::utimensat(libc::AT_FDCWD, cstr(p).as_ptr(), times.as_ptr(), flags) })
            .map(drop)
    }

    pub fn lsetxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
        let n = CString::new(name).unwrap();
        // SAFETY: valid C strings and buffer.
        cvt(unsafe {
            libc::lsetxattr(
                cstr(p).as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        })
        .map(drop)
    }

    pub fn lgetxattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
        let n = CString::new(name).unwrap();
        let mut buf = vec![0u8; 65536];
        // SAFETY: valid C strings; buffer of the given length.
        let len = cvt_size(unsafe {
            libc::lgetxattr(
                cstr(p).as_ptr(),
                n.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        })?;
        buf.truncate(len);
        Ok(buf)
    }

    /// lgetxattr into a buffer of exactly `size` bytes (0 asks for the length).
    pub fn lgetxattr_sized(p: &Path, name: &str, size: usize) -> io::Result<usize> {
        let n = CString::new(name).unwrap();
        let mut buf = vec![0u8; size.max(1)];
        // SAFETY: as above.
        cvt_size(unsafe {
            libc::lgetxattr(cstr(p).as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), size)
        })
    }

    /// Sorted xattr names of `p`.
    pub fn llistxattr(p: &Path) -> io::Result<Vec<String>> {
        let mut buf = vec![0u8; 65536];
        // SAFETY: valid C string; buffer of the given length.
        let len = cvt_size(unsafe {
            libc::llistxattr(cstr(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        })?;
        let mut v: Vec<String> = buf[..len]
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        v.sort();
        Ok(v)
    }

    /// llistxattr with a buffer of exactly `size` bytes (0 asks for the length).
    pub fn llistxattr_sized(p: &Path, size: usize) -> io::Result<usize> {
        let mut buf = vec![0u8; size.max(1)];
        // SAFETY: as above.
        cvt_size(unsafe { libc::llistxattr(cstr(p).as_ptr(), buf.as_mut_ptr().cast(), size) })
    }

    pub fn lremovexattr(p: &Path, name: &str) -> io::Result<()> {
        let n = CString::new(name).unwrap();
        // SAFETY: valid C strings.
        cvt(unsafe { libc::lremovexattr(cstr(p).as_ptr(), n.as_ptr()) }).map(drop)
    }

    pub fn statvfs(p: &Path) -> io::Result<libc::statvfs> {
        // SAFETY: zeroed POD out-parameter.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid C string and out-pointer.
        cvt(unsafe { libc::statvfs(cstr(p).as_ptr(), &mut s) })?;
        Ok(s)
    }

    pub fn access(p: &Path, mode: i32) -> io::Result<()> {
        // SAFETY: valid C string.
        cvt(unsafe { libc::access(cstr(p).as_ptr(), mode) }).map(drop)
    }

    pub fn lseek(f: &File, off: i64, whence: i32) -> io::Result<i64> {
        // SAFETY: plain syscall on an open fd.
        let r = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    pub fn fallocate(f: &File, mode: i32, off: i64, len: i64) -> io::Result<()> {
        // SAFETY: plain syscall on an open fd.
        cvt(unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) }).map(drop)
    }

    pub fn copy_file_range(
        from: &File,
        from_off: i64,
        to: &File,
        to_off: i64,
        len: usize,
    ) -> io::Result<usize> {
        let (mut a, mut b) = (from_off, to_off);
        // SAFETY: valid fds and offset pointers.
        cvt_size(unsafe {
            libc::copy_file_range(from.as_raw_fd(), &mut a, to.as_raw_fd(), &mut b, len, 0)
        })
    }

    pub fn flock(f: &File, op: i32) -> io::Result<()> {
        // SAFETY: plain syscall on an open fd.
        cvt(unsafe { libc::flock(f.as_raw_fd(), op) }).map(drop)
    }

    pub fn fcntl_lock(
        f: &File,
        cmd: i32,
        ltype: i32,
        start: i64,
        len: i64,
    ) -> io::Result<libc::flock> {
        // SAFETY: zeroed POD struct.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = ltype as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        fl.l_start = start;
        fl.l_len = len;
        // SAFETY: valid fd and struct pointer.
        cvt(unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut fl) })?;
        Ok(fl)
    }

    /// One directory entry as getdents64 returns it.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Dirent {
        pub ino: u64,
        pub off: i64,
        pub dtype: u8,
        pub name: String,
    }

    /// One getdents64 call with a buffer of `bufsize` bytes; empty at the end.
    pub fn getdents(dir: &File, bufsize: usize) -> io::Result<Vec<Dirent>> {
        let mut buf = vec![0u8; bufsize];
        // SAFETY: valid fd and buffer.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut pos = 0usize;
        while pos < n as usize {
            let rec = &buf[pos..];
            let ino = u64::from_ne_bytes(rec[0..8].try_into().unwrap());
            let off = i64::from_ne_bytes(rec[8..16].try_into().unwrap());
            let reclen = u16::from_ne_bytes(rec[16..18].try_into().unwrap()) as usize;
            let dtype = rec[18];
            let name_bytes = &rec[19..reclen];
            let end = name_bytes
                .iter()
                .position(|b| *b == 0)
                .unwrap_or(name_bytes.len());
            out.push(Dirent {
                ino,
                off,
                dtype,
                name: String::from_utf8_lossy(&name_bytes[..end]).into_owned(),
            });
            pos += reclen;
        }
        Ok(out)
    }

    /// Every entry of a directory read with getdents64 calls of `bufsize` bytes.
    pub fn read_all_dirents(dir: &Path, bufsize: usize) -> io::Result<Vec<Dirent>> {
        let f = open_dir(dir)?;
        let mut all = Vec::new();
        loop {
            let batch = getdents(&f, bufsize)?;
            if batch.is_empty() {
                return Ok(all);
            }
            all.extend(batch);
        }
    }

    pub fn open_dir(p: &Path) -> io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(p)
    }

    /// openat relative to a directory fd: reaches paths longer than PATH_MAX from the root.
    pub fn openat(dir: &File, rel: &[u8], flags: i32, mode: u32) -> io::Result<File> {
        use std::os::fd::FromRawFd;
        let c = CString::new(rel).unwrap();
        // SAFETY: valid fd and C string; the returned fd is owned by the File.
        let fd = cvt(unsafe {
            libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC, mode)
        })?;
        // SAFETY: fd was just returned by openat and is owned by nobody else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    pub fn mkdirat(dir: &File, rel: &[u8], mode: u32) -> io::Result<()> {
        let c = CString::new(rel).unwrap();
        // SAFETY: valid fd and C string.
        cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) }).map(drop)
    }

    pub fn fstatat(dir: &File, rel: &[u8]) -> io::Result<libc::stat> {
        let c = CString::new(rel).unwrap();
        // SAFETY: zeroed POD out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd, C string and out-pointer.
        cvt(unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        Ok(st)
    }

    pub fn fstat(f: &File) -> io::Result<libc::stat> {
        // SAFETY: zeroed POD out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and out-pointer.
        cvt(unsafe { libc::fstat(f.as_raw_fd(), &mut st) })?;
        Ok(st)
    }
}
