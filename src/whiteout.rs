//! Whiteouts and opaque directories in every dialect the container world uses.
//!
//! Read in every layer:
//! - kernel overlayfs: a 0/0 character device named like the deleted entry; a zero-size file
//!   with an `overlay.whiteout` xattr when its directory carries `overlay.whiteouts`;
//! - OCI/AUFS: a file `.wh.<name>`; `.wh..wh..opq` inside a directory makes it opaque;
//! - opaque xattrs: `trusted.overlay.opaque=y`, `user.overlay.opaque=y`,
//!   `user.fuseoverlayfs.opaque=y`.
//!
//! Written into the upper as `WriteFormat` says (decided at mount, see `layers`). A whiteout only
//! ever hides names in the layers *below* its own; whiteout entries never show in the view, and no
//! name that looks like one can be created through the mount. Kernel analog: `fs/overlayfs/util.c`
//! (`ovl_is_whiteout`, `ovl_is_opaquedir`) and `dir.c` (`ovl_whiteout`).

use std::ffi::{OsStr, OsString};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use crate::layers::{WorkDir, WriteFormat};
use crate::sys::{self, Errno, Mode, OFlags, Stat, SysResult};

/// Prefix of OCI/AUFS whiteout files.
pub const WH_PREFIX: &[u8] = b".wh.";
/// OCI/AUFS opaque-directory marker.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Xattrs that make a directory opaque when set to `y`.
const OPAQUE_XATTRS: [&str; 3] = [
    "trusted.overlay.opaque",
    "user.overlay.opaque",
    "user.fuseoverlayfs.opaque",
];
/// Xattrs that make a zero-size file a whiteout (kernel "data-only" whiteouts).
const WHITEOUT_XATTRS: [&str; 2] = ["trusted.overlay.whiteout", "user.overlay.whiteout"];
/// Directory xattrs that announce zero-size xattr whiteouts inside.
const WHITEOUTS_DIR_XATTRS: [&str; 2] = ["trusted.overlay.whiteouts", "user.overlay.whiteouts"];

/// What one raw directory entry means to the union.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryRole {
    /// An ordinary entry that shows in the view.
    Visible,
    /// Deletes this name in the layers below.
    WhiteoutFor(Vec<u8>),
    /// Marks its directory opaque (never shown).
    OpaqueMarker,
}

/// Classifies a listed entry by name and type alone (char-device whiteouts need `rdev`, which a
/// directory listing lacks: callers stat character devices, see `is_whiteout_stat`).
pub fn role_by_name(name: &[u8]) -> EntryRole {
    if name == OPAQUE_MARKER {
        EntryRole::OpaqueMarker
    } else if let Some(target) = name.strip_prefix(WH_PREFIX) {
        EntryRole::WhiteoutFor(target.to_vec())
    } else {
        EntryRole::Visible
    }
}

/// The name a listed entry speaks about: `.wh.X` speaks about `X`, anything else about itself.
pub fn listed_name(name: &[u8]) -> &[u8] {
    match name.strip_prefix(WH_PREFIX) {
        Some(target) if name != OPAQUE_MARKER => target,
        _ => name,
    }
}

/// True for a kernel whiteout: a character device with device number 0/0.
pub fn is_whiteout_stat(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

/// True when a name could be mistaken for a whiteout or marker, so it may not be created.
pub fn is_reserved_name(name: &[u8]) -> bool {
    name.starts_with(WH_PREFIX)
}

/// `.wh.<name>`, or `None` when it would exceed the 255-byte name limit.
pub fn oci_whiteout_name(name: &[u8]) -> Option<OsString> {
    if name.len() + WH_PREFIX.len() > 255 {
        return None;
    }
    let mut v = WH_PREFIX.to_vec();
    v.extend_from_slice(name);
    Some(OsStr::from_bytes(&v).to_os_string())
}

/// A zero-size regular file with an `overlay.whiteout` xattr, honoured only in directories that
/// announce such whiteouts (as the kernel does), so ordinary empty files cost nothing.
pub fn is_xattr_whiteout(dir: BorrowedFd<'_>, name: &OsStr, st: &Stat) -> SysResult<bool> {
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size != 0 {
        return Ok(false);
    }
    if !dir_has_xattr_whiteouts(dir)? {
        return Ok(false);
    }
    for key in WHITEOUT_XATTRS {
        if sys::xattr::get_opt(dir, name, OsStr::new(key))?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What a directory's own xattrs say about it in its layer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DirMarkers {
    /// `overlay.opaque=y` (or fuse-overlayfs's): nothing below merges in.
    pub opaque: bool,
    /// Zero-size files with `overlay.whiteout` inside are whiteouts: announced by
    /// `overlay.opaque=x` (kernel 6.7+) or an `overlay.whiteouts` xattr.
    pub xattr_whiteouts: bool,
}

/// Reads a directory's markers with one `listxattr` (and a `getxattr` only for keys present),
/// since this runs for every directory of every layer a lookup or listing touches.
pub fn dir_markers(dir: BorrowedFd<'_>) -> SysResult<DirMarkers> {
    let here = OsStr::new("");
    let names = match sys::xattr::list(dir, here) {
        Ok(n) => n,
        Err(Errno::NOTSUP) | Err(Errno::PERM) | Err(Errno::ACCESS) => {
            return Ok(DirMarkers::default());
        }
        Err(e) => return Err(e),
    };
    let mut markers = DirMarkers::default();
    for name in &names {
        let key = name.as_bytes();
        if OPAQUE_XATTRS.iter().any(|k| k.as_bytes() == key) {
            match sys::xattr::get_opt(dir, here, name)?.as_deref() {
                Some(b"y") => markers.opaque = true,
                Some(b"x") => markers.xattr_whiteouts = true,
                _ => {}
            }
        } else if WHITEOUTS_DIR_XATTRS.iter().any(|k| k.as_bytes() == key) {
            markers.xattr_whiteouts = true;
        }
    }
    Ok(markers)
}

/// Whether a directory announces zero-size xattr whiteouts inside it.
pub fn dir_has_xattr_whiteouts(dir: BorrowedFd<'_>) -> SysResult<bool> {
    Ok(dir_markers(dir)?.xattr_whiteouts)
}

/// True when the directory `dir` (an fd of the directory itself) is opaque in its layer.
pub fn is_opaque_dir(dir: BorrowedFd<'_>) -> SysResult<bool> {
    if dir_markers(dir)?.opaque {
        return Ok(true);
    }
    Ok(sys::stat_at_opt(dir, OsStr::from_bytes(OPAQUE_MARKER))?.is_some())
}

/// True when an xattr name belongs to the union's own bookkeeping and must never be shown or
/// set through the mount.
pub fn is_private_xattr(key: &[u8]) -> bool {
    const PRIVATE: [&[u8]; 6] = [
        b"trusted.overlay.",
        b"user.overlay.",
        b"user.fuseoverlayfs.",
        b"security.fuseoverlayfs.",
        b"trusted.unionfs.",
        b"user.unionfs.",
    ];
    PRIVATE.iter().any(|p| key.starts_with(p))
}

/// Creates a whiteout for `name` directly in the upper directory `dir`, where `name` is free.
pub fn create_whiteout(dir: BorrowedFd<'_>, name: &OsStr, format: &WriteFormat) -> SysResult<()> {
    if format.chardev_whiteouts {
        return sys::mknod_whiteout(dir, name);
    }
    let Some(wh) = oci_whiteout_name(name.as_bytes()) else {
        // `.wh.` plus a name near NAME_MAX does not fit: the kernel's form is the one left.
        return sys::mknod_whiteout(dir, name);
    };
    let fd = sys::open_at(
        dir,
        &wh,
        OFlags::CREATE | OFlags::WRONLY,
        Mode::from_raw_mode(0o600),
    )?;
    drop(fd);
    Ok(())
}

/// Replaces the existing non-directory `name` in `dir` by a whiteout, atomically: a char-device
/// whiteout is built in the work dir and renamed over the name; an OCI whiteout is created
/// beside the name first (both present still shows the old entry), then the name is unlinked.
pub fn replace_with_whiteout(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    work: &WorkDir,
    format: &WriteFormat,
) -> SysResult<()> {
    // A name too long for `.wh.<name>` gets the char-device form (see `create_whiteout`).
    if format.chardev_whiteouts || oci_whiteout_name(name.as_bytes()).is_none() {
        let tmp = work.temp_name();
        sys::mknod_whiteout(sys::fd(&work.fd), &tmp)?;
        if let Err(e) = sys::rename_at(
            sys::fd(&work.fd),
            &tmp,
            dir,
            name,
            sys::RenameFlags::empty(),
        ) {
            let _ = sys::unlink_at(sys::fd(&work.fd), &tmp);
            return Err(e);
        }
        return Ok(());
    }
    create_whiteout(dir, name, format)?;
    sys::unlink_at(dir, name)
}

/// Removes the whiteout for `name` in `dir` if there is one (before creating over it).
/// Returns whether one was there.
pub fn remove_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<bool> {
    let mut found = false;
    if let Some(st) = sys::stat_at_opt(dir, name)? {
        if is_whiteout_stat(&st) {
            sys::unlink_at(dir, name)?;
            found = true;
        }
    }
    if let Some(wh) = oci_whiteout_name(name.as_bytes()) {
        match sys::unlink_at(dir, &wh) {
            Ok(()) => found = true,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

/// Marks a directory (an fd of the directory itself) opaque: the xattr, plus the OCI marker
/// file so tools that only read OCI layouts agree.
pub fn make_opaque(dir: BorrowedFd<'_>, format: &WriteFormat) -> SysResult<()> {
    sys::xattr::set(
        dir,
        OsStr::new(""),
        &format.opaque_xattr(),
        b"y",
        sys::xattr::XattrFlags::empty(),
    )?;
    if !format.chardev_whiteouts {
        let marker = sys::open_at(
            dir,
            OsStr::from_bytes(OPAQUE_MARKER),
            OFlags::CREATE | OFlags::WRONLY,
            Mode::from_raw_mode(0o600),
        )?;
        drop(marker);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified() {
        assert_eq!(role_by_name(b"file"), EntryRole::Visible);
        assert_eq!(
            role_by_name(b".wh.file"),
            EntryRole::WhiteoutFor(b"file".to_vec())
        );
        assert_eq!(role_by_name(b".wh..wh..opq"), EntryRole::OpaqueMarker);
        assert_eq!(role_by_name(b".whfile"), EntryRole::Visible);
    }

    #[test]
    fn reserved_names() {
        assert!(is_reserved_name(b".wh.x"));
        assert!(is_reserved_name(b".wh..wh..opq"));
        assert!(!is_reserved_name(b".w"));
        assert!(!is_reserved_name(b"x.wh.y"));
    }

    #[test]
    fn oci_name_respects_name_max() {
        assert!(oci_whiteout_name(&[b'a'; 251]).is_some());
        assert!(oci_whiteout_name(&[b'a'; 252]).is_none());
    }

    #[test]
    fn private_xattrs() {
        assert!(is_private_xattr(b"trusted.overlay.opaque"));
        assert!(is_private_xattr(b"user.unionfs.origin"));
        assert!(!is_private_xattr(b"user.mime_type"));
        assert!(!is_private_xattr(b"security.capability"));
    }
}
