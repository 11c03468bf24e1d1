//! The validated description of one mount: which directories, where, and how.
//!
//! `cli` fills it from either grammar (`LOWERS UPPER MERGED` or fuse-overlayfs's `-o`); the
//! filesystem only ever sees a `MountConfig` whose paths exist, are absolute and canonical, and do
//! not overlap.

use std::path::PathBuf;
use std::time::Duration;

/// Name of the default work directory, created inside the upper and hidden from the merged view.
pub const DEFAULT_WORKDIR_NAME: &str = ".unionfs-rs-work";

/// How deletions and opaque directories are written into the upper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutFormat {
    /// A 0/0 character device when the kernel lets us make one, else `.wh.<name>` files.
    #[default]
    Auto,
    /// Kernel overlayfs: 0/0 character devices (fails at mount if they cannot be created).
    CharDev,
    /// OCI/AUFS: `.wh.<name>` files.
    Oci,
}

/// The directories of a union, all absolute and canonical.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerPaths {
    /// Read-only layers, topmost first.
    pub lowers: Vec<PathBuf>,
    /// The writable layer; `None` for a read-only union.
    pub upper: Option<PathBuf>,
    /// Scratch space on the upper's filesystem for atomic copy-up; `None` with no upper.
    pub workdir: Option<PathBuf>,
}

/// Behaviour of the union itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsOptions {
    pub whiteout: WhiteoutFormat,
    /// fsync copied-up data before it is renamed into place (off with `fsync=0` or `volatile`).
    pub sync_copy_up: bool,
    /// How long the kernel may cache names and attributes.
    pub timeout: Duration,
    /// Serve extended attributes (`noxattrs=1` turns them off: ENOTSUP).
    pub xattrs: bool,
    /// Report st_nlink 1 for every directory (`static_nlink`).
    pub static_nlink: bool,
    /// Squeeze inode numbers into 32 bits (`ino32_t`).
    pub ino32: bool,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            whiteout: WhiteoutFormat::Auto,
            sync_copy_up: true,
            timeout: Duration::from_secs(1),
            xattrs: true,
            static_nlink: false,
            ino32: false,
        }
    }
}

/// How the FUSE session is mounted and served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseOptions {
    pub allow_other: bool,
    pub allow_root: bool,
    /// Kernel checks permissions from the attributes we report (always on unless disabled).
    pub default_permissions: bool,
    pub read_only: bool,
    /// Plain mount flags passed through: suid, nosuid, dev, nodev, exec, noexec, noatime, ...
    pub flags: Vec<String>,
    /// Worker threads serving requests.
    pub threads: usize,
    /// Use the kernel's writeback cache (`writeback`).
    pub writeback: bool,
    /// Name shown in /proc/mounts as the source.
    pub fsname: String,
}

impl Default for FuseOptions {
    fn default() -> Self {
        FuseOptions {
            allow_other: false,
            allow_root: false,
            default_permissions: true,
            read_only: false,
            flags: Vec::new(),
            threads: 4,
            writeback: false,
            fsname: "unionfs-rs".to_string(),
        }
    }
}

/// Everything needed to mount one union.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountConfig {
    pub layers: LayerPaths,
    pub mountpoint: PathBuf,
    /// Stay in the foreground (`-f`); otherwise return once the mount is live.
    pub foreground: bool,
    pub fs: FsOptions,
    pub fuse: FuseOptions,
    /// Options that were recognised but have no effect here, for one warning at start.
    pub ignored_options: Vec<String>,
}
