//! The validated description of one mount: which directories, where, and how.
//!
//! `cli` fills a `MountConfig` from either grammar (`LOWERS UPPER MERGED` or fuse-overlayfs's
//! `-o`) with the paths as the user typed them; [`MountConfig::validate`] then turns it into the
//! one the filesystem may rely on: every path absolute and canonical (symlinks resolved, so a
//! lowerdir entry may be a symlink to a layer), every layer an existing directory, no directory
//! given twice, no writable directory nested in a lower or in the other writable one, the work
//! directory on the upper's filesystem, and the mount point disjoint from every layer (a union
//! mounted inside one of its own layers would see itself and deadlock on lookup). The one nesting
//! allowed is the default work directory, `<UPPER>/.unionfs-rs-work`, which the core creates and
//! hides from the merged view. Like the kernel (`ovl_check_layer`), lowers may nest each other.

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::SetupError;

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

impl WhiteoutFormat {
    /// Parses the value of `--whiteout` / `-o whiteout=`.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "auto" => Ok(WhiteoutFormat::Auto),
            "chardev" => Ok(WhiteoutFormat::CharDev),
            "oci" => Ok(WhiteoutFormat::Oci),
            _ => Err(format!(
                "invalid whiteout format '{value}' (auto, chardev or oci)"
            )),
        }
    }
}

/// Where ownership and mode are kept when the underlying filesystem cannot store them
/// (fuse-overlayfs's `xattr_permissions`): the xattr holds `uid:gid:mode[:type]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XattrPermissions {
    /// `0`: real ownership and mode only.
    #[default]
    Off,
    /// `1`: `security.fuseoverlayfs.override_stat`.
    Privileged,
    /// `2`: `user.containers.override_stat`.
    Containers,
}

/// One range of an id mapping, a fuse-overlayfs `uidmapping=`/`gidmapping=` triple in order:
/// ids `container..container+size` as *stored in the layers* are shown through the mount as
/// `host..host+size` (containers/storage writes ContainerID:HostID:Size, and the layers hold
/// container ids while the daemon answers in host ids). See `ownership`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapping {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

impl IdMapping {
    /// Parses `[:]C:H:S[:C:H:S...]`: an optional leading colon (containers/storage writes one),
    /// then triples. Ranges must be non-empty, fit in 32 bits and not overlap on either side,
    /// or the mapping would not be a bijection and ownership could not be written back.
    pub fn parse_list(value: &str) -> Result<Vec<IdMapping>, String> {
        let body = value.strip_prefix(':').unwrap_or(value);
        let fields: Vec<&str> = body.split(':').collect();
        if body.is_empty() || fields.len() % 3 != 0 {
            return Err(format!(
                "invalid id mapping '{value}': expected container:host:size triples"
            ));
        }
        let mut list = Vec::with_capacity(fields.len() / 3);
        for triple in fields.chunks_exact(3) {
            let num = |s: &str| -> Result<u32, String> {
                let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                let n = if digits { s.parse::<u32>().ok() } else { None };
                n.ok_or_else(|| format!("invalid id mapping '{value}': '{s}' is not a 32-bit id"))
            };
            let m = IdMapping {
                container: num(triple[0])?,
                host: num(triple[1])?,
                size: num(triple[2])?,
            };
            let fits = |start: u32| u64::from(start) + u64::from(m.size) <= 1 << 32;
            if m.size == 0 || !fits(m.container) || !fits(m.host) {
                return Err(format!(
                    "invalid id mapping '{value}': range {}:{}:{} is empty or past 2^32",
                    m.container, m.host, m.size
                ));
            }
            list.push(m);
        }
        check_disjoint(value, &list, |m| m.container)?;
        check_disjoint(value, &list, |m| m.host)?;
        Ok(list)
    }
}

/// Fails when two ranges of `list`, keyed by `start`, overlap.
fn check_disjoint(
    value: &str,
    list: &[IdMapping],
    start: fn(&IdMapping) -> u32,
) -> Result<(), String> {
    let mut ranges: Vec<(u64, u64)> = list
        .iter()
        .map(|m| (u64::from(start(m)), u64::from(start(m)) + u64::from(m.size)))
        .collect();
    ranges.sort_unstable();
    if ranges.windows(2).any(|w| w[1].0 < w[0].1) {
        return Err(format!("invalid id mapping '{value}': ranges overlap"));
    }
    Ok(())
}

/// The directories of a union, all absolute and canonical.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerPaths {
    /// Read-only layers, topmost first.
    pub lowers: Vec<PathBuf>,
    /// The writable layer; `None` for a read-only union.
    pub upper: Option<PathBuf>,
    /// Scratch space on the upper's filesystem for atomic copy-up; `None` with no upper.
    /// When the user gave none it is `<upper>/DEFAULT_WORKDIR_NAME`, which may not exist yet.
    pub workdir: Option<PathBuf>,
}

/// Default kernel cache timeout for names, attributes and negative entries.
pub const DEFAULT_TIMEOUT_SECS: u64 = 86_400;

/// How a copy-up is made durable (see `durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyUpSync {
    /// Not forced (`volatile`, `fsync=0`): a crash may leave a partial copy, as with
    /// fuse-overlayfs.
    Off,
    /// fsync before the copy goes into place, as kernel overlayfs does (`copy_up_sync=inline`).
    Inline,
    /// Into place at once, marked unsynced until a background sync: crash-safe without the wait.
    Background,
}

impl CopyUpSync {
    pub fn parse(s: &str) -> Result<CopyUpSync, String> {
        match s {
            "inline" => Ok(CopyUpSync::Inline),
            "background" => Ok(CopyUpSync::Background),
            _ => Err(format!(
                "copy_up_sync must be inline or background, not {s:?}"
            )),
        }
    }

    pub fn syncs(self) -> bool {
        self != CopyUpSync::Off
    }
}

/// Behaviour of the union itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsOptions {
    pub whiteout: WhiteoutFormat,
    /// How copied-up data reaches the disk (`fsync=0`/`volatile`: never forced).
    pub copy_up_sync: CopyUpSync,
    /// How long the kernel may cache names and attributes.
    pub timeout: Duration,
    /// Serve extended attributes (`noxattrs=1` turns them off: ENOTSUP).
    pub xattrs: bool,
    /// Report st_nlink 1 for every directory (`static_nlink`).
    pub static_nlink: bool,
    /// Squeeze inode numbers into 32 bits (`ino32_t`).
    pub ino32: bool,
    /// `uidmapping=`: translate owners between the mount and the layers; empty = identity.
    pub uid_mappings: Vec<IdMapping>,
    /// `gidmapping=`: as `uid_mappings`, for groups.
    pub gid_mappings: Vec<IdMapping>,
    /// Report every file as owned by this uid (`squash_to_uid=N`, or 0 for `squash_to_root`).
    pub squash_uid: Option<u32>,
    /// Report every file as owned by this gid (`squash_to_gid=N`, or 0 for `squash_to_root`).
    pub squash_gid: Option<u32>,
    /// `xattr_permissions=0|1|2`.
    pub xattr_permissions: XattrPermissions,
    /// Serve POSIX ACLs (`noacl` turns them off).
    pub posix_acl: bool,
    /// Nodes kept before the oldest names are handed back to the kernel (`max_nodes=`; 0: no
    /// bound). See `reaper`.
    pub max_nodes: usize,
}

/// Default `max_nodes`: about 25 MiB of nodes.
pub const DEFAULT_MAX_NODES: usize = 128 * 1024;

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            whiteout: WhiteoutFormat::Auto,
            copy_up_sync: CopyUpSync::Background,
            // The daemon is the only writer of the upper and lowers do not change while
            // mounted (as for kernel overlayfs), so what the kernel caches stays true until a
            // change the kernel itself makes and tracks: cache for a day (fuse-overlayfs: 1e9 s).
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            xattrs: true,
            static_nlink: false,
            ino32: false,
            uid_mappings: Vec::new(),
            gid_mappings: Vec::new(),
            squash_uid: None,
            squash_gid: None,
            xattr_permissions: XattrPermissions::Off,
            posix_acl: true,
            max_nodes: DEFAULT_MAX_NODES,
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
    /// Plain mount flags passed through, each at most once and never with its opposite:
    /// suid, nosuid, dev, nodev, exec, noexec, atime, noatime, sync, async, dirsync.
    pub flags: Vec<String>,
    /// Worker threads serving requests.
    pub threads: usize,
    /// Use the kernel's writeback cache (`writeback`).
    pub writeback: bool,
    /// Let the kernel do file I/O on upper files itself when it grants FUSE passthrough
    /// (`passthrough=on|off`; root mounts only, see `passthrough`).
    pub passthrough: bool,
    /// Name shown in /proc/mounts as the source.
    pub fsname: String,
    /// Shown in /proc/mounts as the type `fuse.<subtype>`.
    pub subtype: String,
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
            passthrough: true,
            fsname: "unionfs-rs".to_string(),
            subtype: "unionfs-rs".to_string(),
        }
    }
}

/// Everything needed to mount one union.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

/// What a directory is to the union, for checks and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Lower,
    Upper,
    Work,
    Mount,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Lower => "lower directory",
            Role::Upper => "upper directory",
            Role::Work => "work directory",
            Role::Mount => "mount point",
        })
    }
}

impl MountConfig {
    /// Canonicalizes and checks every path (see the module doc); the result is what
    /// `UnionFs::new` expects. Nothing is created or mounted here.
    pub fn validate(mut self) -> Result<MountConfig, SetupError> {
        if self.layers.lowers.is_empty() {
            return Err(SetupError::Usage("no lower directory given".into()));
        }
        let lowers = (self.layers.lowers.iter())
            .map(|p| canonical_dir(p, Role::Lower))
            .collect::<Result<Vec<_>, _>>()?;
        let upper = self
            .layers
            .upper
            .as_deref()
            .map(|p| canonical_dir(p, Role::Upper))
            .transpose()?;
        let given_workdir = match (&upper, &self.layers.workdir) {
            (None, Some(w)) => {
                return Err(SetupError::path(
                    w,
                    "a work directory needs an upper directory",
                ));
            }
            (Some(u), Some(w)) if !is_default_workdir(u, w) => Some(canonical_dir(w, Role::Work)?),
            _ => None,
        };
        let mountpoint = canonical_dir(&self.mountpoint, Role::Mount)?;

        let mut dirs: Vec<(Role, &Path)> =
            lowers.iter().map(|p| (Role::Lower, p.as_path())).collect();
        dirs.extend(upper.as_deref().map(|p| (Role::Upper, p)));
        dirs.extend(given_workdir.as_deref().map(|p| (Role::Work, p)));
        dirs.push((Role::Mount, &mountpoint));
        check_overlaps(&dirs)?;

        let workdir = match (&upper, given_workdir) {
            (Some(u), Some(w)) => Some(check_same_fs(u, w)?),
            (Some(u), None) => Some(default_workdir(u)?),
            (None, _) => None,
        };
        self.layers = LayerPaths {
            lowers,
            upper,
            workdir,
        };
        self.mountpoint = mountpoint;
        Ok(self)
    }
}

/// The default work directory named explicitly (or by an earlier `validate`, which makes
/// `validate` idempotent) is still the default: it may not exist yet and lives in the upper.
fn is_default_workdir(canonical_upper: &Path, workdir: &Path) -> bool {
    let default = canonical_upper.join(DEFAULT_WORKDIR_NAME);
    workdir == default || std::fs::canonicalize(workdir).is_ok_and(|w| w == default)
}

/// Resolves `path` (symlinks included) and requires a directory there.
fn canonical_dir(path: &Path, role: Role) -> Result<PathBuf, SetupError> {
    if path.as_os_str().is_empty() {
        return Err(SetupError::Usage(format!("empty {role} path")));
    }
    let canonical = std::fs::canonicalize(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => SetupError::path(path, format!("{role} does not exist")),
        io::ErrorKind::NotADirectory => {
            SetupError::path(path, format!("{role} is not a directory"))
        }
        _ => SetupError::path(path, format!("cannot resolve the {role}: {e}")),
    })?;
    match std::fs::metadata(&canonical) {
        Ok(meta) if meta.is_dir() => Ok(canonical),
        Ok(_) => Err(SetupError::path(path, format!("{role} is not a directory"))),
        Err(e) => Err(SetupError::path(
            path,
            format!("cannot stat the {role}: {e}"),
        )),
    }
}

/// Whether two directories in these roles may not be nested in each other.
fn nesting_forbidden(a: Role, b: Role) -> bool {
    !(a == Role::Lower && b == Role::Lower)
}

/// Rejects a directory given twice and every forbidden nesting, naming both paths.
fn check_overlaps(dirs: &[(Role, &Path)]) -> Result<(), SetupError> {
    for (i, &(ra, a)) in dirs.iter().enumerate() {
        for &(rb, b) in &dirs[i + 1..] {
            if a == b {
                let msg = if ra == rb {
                    format!("{} is given twice as a {ra}", a.display())
                } else {
                    format!("{} is given as both the {ra} and the {rb}", a.display())
                };
                return Err(SetupError::Conflict(msg));
            }
            if !nesting_forbidden(ra, rb) {
                continue;
            }
            let inside = |(ri, pi): (Role, &Path), (ro, po): (Role, &Path)| {
                SetupError::Conflict(format!(
                    "the {ri} {} is inside the {ro} {}",
                    pi.display(),
                    po.display()
                ))
            };
            if b.starts_with(a) {
                return Err(inside((rb, b), (ra, a)));
            }
            if a.starts_with(b) {
                return Err(inside((ra, a), (rb, b)));
            }
        }
    }
    Ok(())
}

/// Copy-up renames from the work directory into the upper, which only works on one filesystem.
fn check_same_fs(upper: &Path, workdir: PathBuf) -> Result<PathBuf, SetupError> {
    let dev = |p: &Path, role: Role| {
        std::fs::metadata(p)
            .map(|m| m.dev())
            .map_err(|e| SetupError::path(p, format!("cannot stat the {role}: {e}")))
    };
    if dev(upper, Role::Upper)? != dev(&workdir, Role::Work)? {
        return Err(SetupError::Conflict(format!(
            "the work directory {} is not on the same filesystem as the upper directory {}",
            workdir.display(),
            upper.display()
        )));
    }
    Ok(workdir)
}

/// `<upper>/.unionfs-rs-work`: created later by the core; if present it must be a real directory
/// (not a symlink that could point the scratch space somewhere else).
fn default_workdir(upper: &Path) -> Result<PathBuf, SetupError> {
    let workdir = upper.join(DEFAULT_WORKDIR_NAME);
    match std::fs::symlink_metadata(&workdir) {
        Ok(meta) if meta.is_dir() => Ok(workdir),
        Ok(_) => Err(SetupError::path(
            &workdir,
            "the default work directory exists but is not a directory",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(workdir),
        Err(e) => Err(SetupError::path(
            &workdir,
            format!("cannot stat the work directory: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(
        root: &Path,
        lowers: &[&str],
        upper: Option<&str>,
        work: Option<&str>,
        mnt: &str,
    ) -> MountConfig {
        let mut c = MountConfig::default();
        c.layers.lowers = lowers.iter().map(|l| root.join(l)).collect();
        c.layers.upper = upper.map(|u| root.join(u));
        c.layers.workdir = work.map(|w| root.join(w));
        c.mountpoint = root.join(mnt);
        c
    }

    fn tree(dirs: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for d in dirs {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        t
    }

    fn err(c: MountConfig) -> String {
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn valid_union_is_canonical_with_default_workdir() {
        let t = tree(&["l1", "l2", "u", "m"]);
        std::os::unix::fs::symlink(t.path().join("l2"), t.path().join("link")).unwrap();
        let c = config(t.path(), &["l1", "link"], Some("u"), None, "m")
            .validate()
            .unwrap();
        let root = t.path().canonicalize().unwrap();
        assert_eq!(c.layers.lowers, vec![root.join("l1"), root.join("l2")]);
        assert_eq!(
            c.layers.workdir,
            Some(root.join("u").join(DEFAULT_WORKDIR_NAME))
        );
        assert_eq!(c.mountpoint, root.join("m"));
    }

    #[test]
    fn read_only_union_has_no_workdir() {
        let t = tree(&["l1", "m"]);
        let c = config(t.path(), &["l1"], None, None, "m")
            .validate()
            .unwrap();
        assert_eq!(c.layers.upper, None);
        assert_eq!(c.layers.workdir, None);
    }

    #[test]
    fn each_error_names_the_problem() {
        let t = tree(&["l1", "l1/sub", "u", "u/w", "w", "m", "m/in"]);
        std::fs::write(t.path().join("file"), b"").unwrap();
        let p = t.path();
        let cases: &[(MountConfig, &str)] = &[
            (
                config(p, &["nope"], Some("u"), None, "m"),
                "lower directory does not exist",
            ),
            (
                config(p, &["file"], Some("u"), None, "m"),
                "lower directory is not a directory",
            ),
            (
                config(p, &["l1"], Some("u"), None, "file"),
                "mount point is not a directory",
            ),
            (
                config(p, &["l1", "l1"], Some("u"), None, "m"),
                "given twice as a lower directory",
            ),
            (
                config(p, &["l1"], Some("l1"), None, "m"),
                "both the lower directory and the upper",
            ),
            (
                config(p, &["l1"], Some("l1/sub"), None, "m"),
                "upper directory",
            ),
            (
                config(p, &["u/w"], Some("u"), None, "m"),
                "is inside the upper directory",
            ),
            (
                config(p, &["l1"], Some("u"), Some("u/w"), "m"),
                "work directory",
            ),
            (
                config(p, &["l1"], Some("u/w"), Some("u"), "m"),
                "inside the work directory",
            ),
            (
                config(p, &["l1"], Some("u"), Some("w"), "l1"),
                "both the lower directory and the mount",
            ),
            (
                config(p, &["l1"], Some("u"), Some("w"), "u/w"),
                "the mount point",
            ),
            (
                config(p, &["m/in"], Some("u"), Some("w"), "m"),
                "inside the mount point",
            ),
            (
                config(p, &["l1"], None, Some("w"), "m"),
                "needs an upper directory",
            ),
        ];
        for (c, want) in cases {
            let got = err(c.clone());
            assert!(got.contains(want), "{c:?}: got '{got}', want '{want}'");
            assert!(!got.contains('\n'));
        }
    }

    #[test]
    fn validate_is_idempotent() {
        let t = tree(&["l1", "u", "m"]);
        let once = config(t.path(), &["l1"], Some("u"), None, "m")
            .validate()
            .unwrap();
        assert_eq!(once.clone().validate().unwrap(), once);
    }

    #[test]
    fn nested_lowers_are_allowed() {
        let t = tree(&["l1", "l1/sub", "u", "m"]);
        assert!(
            config(t.path(), &["l1", "l1/sub"], Some("u"), None, "m")
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn default_workdir_must_be_a_directory() {
        let t = tree(&["l1", "u", "m"]);
        std::fs::write(t.path().join("u").join(DEFAULT_WORKDIR_NAME), b"").unwrap();
        assert!(err(config(t.path(), &["l1"], Some("u"), None, "m")).contains("default work"));
    }

    #[test]
    fn id_mappings_parse_and_validate() {
        let m = IdMapping::parse_list(":0:1:1001:1001:0:1:1002:1002:64535").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[1],
            IdMapping {
                container: 1001,
                host: 0,
                size: 1
            }
        );
        assert_eq!(IdMapping::parse_list("0:1000:1").unwrap().len(), 1);
        for bad in [
            "",
            ":",
            "0:1",
            "0:1:0",
            "a:1:1",
            "0:1:1:",
            "0:0:2:1:5:1",
            "0:0:1:1:0:1",
            "4294967295:0:2",
            "-1:0:1",
        ] {
            assert!(IdMapping::parse_list(bad).is_err(), "{bad}");
        }
    }
}
