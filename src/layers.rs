//! The layer stack: one open root fd per layer, top to bottom, plus the work directory.
//!
//! Index 0 is the upper layer when there is one, then the lowers top-down, so "walk the layers
//! top-down" is always "iterate indices in order". Lowers are opened read-only and nothing in the
//! daemon ever writes through them. The work directory lives on the upper's filesystem; every
//! copy-up and atomic replacement is built there under a temporary name and renamed into place.
//! Kernel analog: `struct ovl_fs` (`ofs->layers`, `ofs->workdir`).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{LayerPaths, WhiteoutFormat};
use crate::error::SetupError;
use crate::sys::{self, Errno, Mode, OFlags, SysResult};

/// Position of a layer in the stack (0 is the topmost).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LayerIdx(pub u16);

impl LayerIdx {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One directory tree of the union.
#[derive(Debug)]
pub struct Layer {
    pub idx: LayerIdx,
    /// `O_PATH` fd of the layer root; every access is relative to it.
    pub root: OwnedFd,
    /// Only for messages.
    pub path: PathBuf,
    /// `st_dev` of the root: inode numbers are unique only within one device.
    pub dev: u64,
    pub writable: bool,
}

/// Prefix of every temporary name in the work directory; anything with it is stale at mount.
const TEMP_PREFIX: &str = "#unionfs-rs.";

/// Scratch directory on the upper's filesystem.
#[derive(Debug)]
pub struct WorkDir {
    pub fd: OwnedFd,
    next: AtomicU64,
}

impl WorkDir {
    /// A fresh name that nobody else uses (pid keeps two daemons on one workdir apart).
    pub fn temp_name(&self) -> OsString {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        OsString::from(format!("{TEMP_PREFIX}{}.{n}", std::process::id()))
    }

    /// Moves `dir/name` (any object, a directory with its contents) in here under a fresh name
    /// and removes it: the name is gone from `dir` in one atomic step, and the cleaning happens
    /// out of sight.
    pub fn discard(&self, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
        let tmp = self.temp_name();
        sys::rename_at(
            dir,
            name,
            self.fd.as_fd(),
            &tmp,
            sys::RenameFlags::NOREPLACE,
        )?;
        remove_tree(self.fd.as_fd(), &tmp)
    }

    /// Removes leftovers of a previous run that died mid-operation (a crash mid-copy-up leaves
    /// only a temporary here, never a partial file under a real name).
    fn remove_stale(&self) -> SysResult<usize> {
        let entries = sys::read_dir_entries(sys::open_dir_read(self.fd.as_fd(), b"")?)?;
        let mut removed = 0;
        for entry in entries
            .iter()
            .filter(|e| e.name.starts_with(TEMP_PREFIX.as_bytes()))
        {
            remove_tree(self.fd.as_fd(), OsStr::from_bytes(&entry.name))?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// Removes a name and, if it is a directory, everything below it (never following symlinks).
pub fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    match sys::unlink_at(dir, name) {
        Ok(()) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    let sub = sys::open_at(dir, name, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
    for entry in sys::read_dir_entries(sys::open_at(
        sub.as_fd(),
        OsStr::new("."),
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
    )?)? {
        remove_tree(sub.as_fd(), OsStr::from_bytes(&entry.name))?;
    }
    sys::rmdir_at(dir, name)
}

/// How this mount writes whiteouts and opaque markers, decided once at mount.
#[derive(Debug, Clone)]
pub struct WriteFormat {
    /// Deletions are 0/0 character devices (else `.wh.<name>` files).
    pub chardev_whiteouts: bool,
    /// Namespace of the xattrs we write: `trusted.` when permitted, else `user.`.
    pub xattr_prefix: &'static str,
}

impl WriteFormat {
    /// `<prefix>overlay.opaque`.
    pub fn opaque_xattr(&self) -> OsString {
        OsString::from(format!("{}overlay.opaque", self.xattr_prefix))
    }

    /// `<prefix>unionfs.origin`: the identity (inode number) a copied-up object keeps.
    pub fn origin_xattr(&self) -> OsString {
        OsString::from(format!("{}unionfs.origin", self.xattr_prefix))
    }
}

/// The whole stack.
#[derive(Debug)]
pub struct LayerStack {
    layers: Vec<Layer>,
    has_upper: bool,
    pub work: Option<WorkDir>,
    pub format: WriteFormat,
    /// The work directory's name when it sits inside the upper root (hidden from the view).
    pub hidden_root_name: Option<OsString>,
}

impl LayerStack {
    /// Opens every layer; with an upper, opens (creating if needed) and cleans the work dir.
    pub fn open(paths: &LayerPaths, whiteout: WhiteoutFormat) -> Result<LayerStack, SetupError> {
        let mut layers = Vec::new();
        if let Some(upper) = &paths.upper {
            layers.push(open_layer(upper, LayerIdx(0), true)?);
        }
        for lower in &paths.lowers {
            let idx = LayerIdx(u16::try_from(layers.len()).map_err(|_| too_many_layers())?);
            layers.push(open_layer(lower, idx, false)?);
        }
        if layers.is_empty() {
            return Err(SetupError::Usage(
                "at least one lower directory is needed".into(),
            ));
        }
        let has_upper = paths.upper.is_some();
        let work = match (&paths.upper, &paths.workdir) {
            (Some(upper), workdir) => Some(open_workdir(upper, workdir.as_deref())?),
            (None, _) => None,
        };
        let hidden_root_name = hidden_workdir_name(paths);
        let format = match &work {
            Some(w) => probe_write_format(w, whiteout)?,
            None => WriteFormat {
                chardev_whiteouts: false,
                xattr_prefix: "user.",
            },
        };
        Ok(LayerStack {
            layers,
            has_upper,
            work,
            format,
            hidden_root_name,
        })
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    pub fn get(&self, idx: LayerIdx) -> &Layer {
        &self.layers[idx.index()]
    }

    pub fn root(&self, idx: LayerIdx) -> BorrowedFd<'_> {
        self.layers[idx.index()].root.as_fd()
    }

    pub fn upper(&self) -> Option<&Layer> {
        if self.has_upper {
            self.layers.first()
        } else {
            None
        }
    }

    pub fn is_upper(&self, idx: LayerIdx) -> bool {
        self.has_upper && idx.0 == 0
    }

    /// All layer indices, topmost first.
    pub fn all(&self) -> impl Iterator<Item = LayerIdx> + '_ {
        self.layers.iter().map(|l| l.idx)
    }

    pub fn work(&self) -> SysResult<&WorkDir> {
        self.work.as_ref().ok_or(Errno::ROFS)
    }

    /// The layer whose statfs the mount reports: the upper, else the top lower.
    pub fn statfs_layer(&self) -> LayerIdx {
        LayerIdx(0)
    }
}

fn too_many_layers() -> SetupError {
    SetupError::Usage(format!("too many layers (at most {})", u16::MAX))
}

fn open_layer(path: &Path, idx: LayerIdx, writable: bool) -> Result<Layer, SetupError> {
    let root = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SetupError::path(path, format!("cannot open layer: {e}")))?;
    let st = sys::stat_fd(root.as_fd()).map_err(|e| SetupError::path(path, e.to_string()))?;
    Ok(Layer {
        idx,
        root,
        path: path.to_path_buf(),
        dev: st.st_dev,
        writable,
    })
}

/// The work dir as given, or `UPPER/.unionfs-rs-work`, created if missing, cleaned of stale
/// temporaries. It must be on the upper's filesystem or renames into the upper would fail.
fn open_workdir(upper: &Path, workdir: Option<&Path>) -> Result<WorkDir, SetupError> {
    let path = match workdir {
        Some(w) => w.to_path_buf(),
        None => upper.join(crate::config::DEFAULT_WORKDIR_NAME),
    };
    match std::fs::create_dir(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(SetupError::path(
                &path,
                format!("cannot create work directory: {e}"),
            ));
        }
    }
    let fd = rustix::fs::open(
        &path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SetupError::path(&path, format!("cannot open work directory: {e}")))?;
    let work_dev = sys::stat_fd(fd.as_fd())
        .map_err(|e| SetupError::path(&path, e.to_string()))?
        .st_dev;
    let upper_dev = std::fs::metadata(upper).map_err(|e| SetupError::path(upper, e.to_string()))?;
    if std::os::unix::fs::MetadataExt::dev(&upper_dev) != work_dev {
        return Err(SetupError::path(
            &path,
            "work directory is not on the upper's filesystem",
        ));
    }
    let work = WorkDir {
        fd,
        next: AtomicU64::new(0),
    };
    let removed = work
        .remove_stale()
        .map_err(|e| SetupError::path(&path, format!("cannot clean work directory: {e}")))?;
    if removed > 0 {
        tracing::info!(removed, "removed stale temporaries from the work directory");
    }
    Ok(work)
}

fn hidden_workdir_name(paths: &LayerPaths) -> Option<OsString> {
    let upper = paths.upper.as_ref()?;
    let default = upper.join(crate::config::DEFAULT_WORKDIR_NAME);
    match &paths.workdir {
        None => Some(OsString::from(crate::config::DEFAULT_WORKDIR_NAME)),
        Some(w) if w.parent() == Some(upper.as_path()) => w.file_name().map(OsStr::to_os_string),
        Some(w) if *w == default => Some(OsString::from(crate::config::DEFAULT_WORKDIR_NAME)),
        Some(_) => None,
    }
}

/// Tries what the upper's filesystem and our privileges allow: a 0/0 character device and a
/// `trusted.` xattr. Everything is tried on a temporary in the work dir and removed again.
fn probe_write_format(work: &WorkDir, want: WhiteoutFormat) -> Result<WriteFormat, SetupError> {
    let name = work.temp_name();
    let chardev = sys::mknod_whiteout(work.fd.as_fd(), &name).is_ok();
    if chardev {
        let _ = sys::unlink_at(work.fd.as_fd(), &name);
    }
    let chardev_whiteouts = match want {
        WhiteoutFormat::Auto => chardev,
        WhiteoutFormat::Oci => false,
        WhiteoutFormat::CharDev if chardev => true,
        WhiteoutFormat::CharDev => {
            return Err(SetupError::Environment(
                "whiteout=chardev: this kernel or user may not create 0/0 character devices".into(),
            ));
        }
    };
    Ok(WriteFormat {
        chardev_whiteouts,
        xattr_prefix: probe_xattr_prefix(work),
    })
}

fn probe_xattr_prefix(work: &WorkDir) -> &'static str {
    let name = work.temp_name();
    let Ok(file) = sys::open_at(
        work.fd.as_fd(),
        &name,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY,
        Mode::from_raw_mode(0o600),
    ) else {
        return "user.";
    };
    drop(file);
    let trusted = sys::xattr::set(
        work.fd.as_fd(),
        &name,
        OsStr::new("trusted.unionfs.probe"),
        b"y",
        sys::xattr::XattrFlags::empty(),
    )
    .is_ok();
    let _ = sys::unlink_at(work.fd.as_fd(), &name);
    if trusted { "trusted." } else { "user." }
}
