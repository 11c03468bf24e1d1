//! Ownership as seen through the mount versus as stored in the layers.
//!
//! Container tools ask for three translations, all fuse-overlayfs options:
//! - `uidmapping=`/`gidmapping=` triples `DISK:VIEW:SIZE`: an id `DISK+n` stored in a layer is
//!   shown as `VIEW+n` (and a chown through the mount stores the reverse). Ids outside every
//!   range show as the overflow id 65534 and cannot be stored (EINVAL), as with user namespaces.
//! - `squash_to_uid`/`squash_to_gid` (`squash_to_root`): every object is shown owned by that id;
//!   a chown through the mount then has nothing to change.
//! - `xattr_permissions=1|2`: ownership and mode live in an xattr `uid:gid:mode[:type]`
//!   (`security.fuseoverlayfs.override_stat` or `user.containers.override_stat`), for rootless
//!   users who cannot chown; the xattr wins over the real owner and mode, and chown/chmod write it.
//!
//! The order on the way out is: override xattr, then mapping, then squash. With none of the
//! options set every function here is the identity and costs nothing.

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;

use crate::config::{FsOptions, IdMapping, XattrPermissions};
use crate::sys::{Errno, SysResult};

/// The id shown for a stored id that no mapping covers.
pub const OVERFLOW_ID: u32 = 65534;

/// Owner and permission bits of one object, in layer (disk) terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (07777) only.
    pub perm: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Ownership {
    uids: Vec<IdMapping>,
    gids: Vec<IdMapping>,
    squash_uid: Option<u32>,
    squash_gid: Option<u32>,
    override_key: Option<&'static str>,
}

impl Ownership {
    pub fn new(opts: &FsOptions) -> Ownership {
        Ownership {
            uids: opts.uid_mappings.clone(),
            gids: opts.gid_mappings.clone(),
            squash_uid: opts.squash_uid,
            squash_gid: opts.squash_gid,
            override_key: match opts.xattr_permissions {
                XattrPermissions::Off => None,
                XattrPermissions::Privileged => Some("security.fuseoverlayfs.override_stat"),
                XattrPermissions::Containers => Some("user.containers.override_stat"),
            },
        }
    }

    /// The xattr that holds ownership, when `xattr_permissions` is on.
    pub fn override_key(&self) -> Option<&'static OsStr> {
        self.override_key.map(OsStr::new)
    }

    /// The override xattr for one object, if ownership lives in one: the kernel allows `user.`
    /// xattrs only on regular files and directories (EPERM on fifos, sockets, devices and
    /// symlinks), so with `xattr_permissions=2` those keep their owner and mode in the inode.
    pub fn override_key_for(&self, file_or_dir: bool) -> Option<&'static OsStr> {
        self.override_key
            .filter(|k| file_or_dir || !k.starts_with("user."))
            .map(OsStr::new)
    }

    /// Whether an xattr name is this mount's ownership store (hidden from the view).
    pub fn is_override_key(&self, key: &[u8]) -> bool {
        self.override_key.is_some_and(|k| k.as_bytes() == key)
    }

    /// Stored ids -> shown ids.
    pub fn to_view(&self, uid: u32, gid: u32) -> (u32, u32) {
        let uid = self.squash_uid.unwrap_or_else(|| map_out(&self.uids, uid));
        let gid = self.squash_gid.unwrap_or_else(|| map_out(&self.gids, gid));
        (uid, gid)
    }

    /// A uid given through the mount -> the uid to store.
    pub fn uid_to_disk(&self, uid: u32) -> SysResult<u32> {
        map_in(&self.uids, uid)
    }

    /// A gid given through the mount -> the gid to store.
    pub fn gid_to_disk(&self, gid: u32) -> SysResult<u32> {
        map_in(&self.gids, gid)
    }

    /// With squashing, a chown has nothing to change: every owner is shown as the squash id.
    pub fn squashes(&self) -> bool {
        self.squash_uid.is_some() || self.squash_gid.is_some()
    }
}

fn map_out(list: &[IdMapping], id: u32) -> u32 {
    if list.is_empty() {
        return id;
    }
    list.iter()
        .find(|m| id >= m.container && id - m.container < m.size)
        .map(|m| m.host + (id - m.container))
        .unwrap_or(OVERFLOW_ID)
}

fn map_in(list: &[IdMapping], id: u32) -> SysResult<u32> {
    if list.is_empty() {
        return Ok(id);
    }
    list.iter()
        .find(|m| id >= m.host && id - m.host < m.size)
        .map(|m| m.container + (id - m.host))
        .ok_or(Errno::INVAL)
}

/// Parses `uid:gid:mode[:type]` (mode in octal), as fuse-overlayfs and containers/storage write.
pub fn parse_override(raw: &[u8]) -> Option<Owner> {
    let text = std::str::from_utf8(raw).ok()?.trim_end_matches('\0');
    let mut fields = text.split(':');
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    let mode = u32::from_str_radix(fields.next()?, 8).ok()?;
    Some(Owner {
        uid,
        gid,
        perm: mode & 0o7777,
    })
}

/// Writes `owner` into the override xattr `key` of `name` in `dir`.
pub fn store_override(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    key: &OsStr,
    owner: Owner,
) -> SysResult<()> {
    crate::sys::xattr::set(
        dir,
        name,
        key,
        &format_override(owner),
        crate::sys::xattr::XattrFlags::empty(),
    )
}

/// Formats an override value; the real object's type is kept by the object itself.
pub fn format_override(owner: Owner) -> Vec<u8> {
    format!("{}:{}:0{:o}", owner.uid, owner.gid, owner.perm).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> FsOptions {
        FsOptions::default()
    }

    #[test]
    fn identity_without_options() {
        let o = Ownership::new(&opts());
        assert_eq!(o.to_view(1000, 100), (1000, 100));
        assert_eq!(o.uid_to_disk(5).unwrap(), 5);
        assert!(o.override_key().is_none());
    }

    #[test]
    fn mappings_translate_both_ways() {
        let mut f = opts();
        // containers/storage's example: `:0:1:1001:1001:0:1:1002:1002:64535`
        f.uid_mappings = IdMapping::parse_list(":0:1:1001:1001:0:1:1002:1002:64535").unwrap();
        let o = Ownership::new(&f);
        assert_eq!(o.to_view(0, 0).0, 1);
        assert_eq!(o.to_view(1001, 0).0, 0);
        assert_eq!(o.to_view(5000, 0).0, 5000);
        assert_eq!(o.uid_to_disk(1).unwrap(), 0);
        assert_eq!(o.uid_to_disk(0).unwrap(), 1001);
        let narrow = IdMapping::parse_list("0:100000:10").unwrap();
        f.uid_mappings = narrow;
        let o = Ownership::new(&f);
        assert_eq!(o.to_view(50, 0).0, OVERFLOW_ID);
        assert_eq!(o.uid_to_disk(5), Err(Errno::INVAL));
    }

    #[test]
    fn user_override_only_on_files_and_dirs() {
        let mut f = opts();
        f.xattr_permissions = XattrPermissions::Containers;
        let o = Ownership::new(&f);
        assert!(o.override_key_for(true).is_some());
        assert!(o.override_key_for(false).is_none());
        f.xattr_permissions = XattrPermissions::Privileged;
        let o = Ownership::new(&f);
        assert!(o.override_key_for(false).is_some());
    }

    #[test]
    fn squash_wins() {
        let mut f = opts();
        f.squash_uid = Some(0);
        f.squash_gid = Some(0);
        let o = Ownership::new(&f);
        assert_eq!(o.to_view(1000, 1000), (0, 0));
        assert!(o.squashes());
    }

    #[test]
    fn override_values_round_trip() {
        let owner = Owner {
            uid: 12,
            gid: 34,
            perm: 0o4755,
        };
        assert_eq!(parse_override(&format_override(owner)), Some(owner));
        assert_eq!(
            parse_override(b"0:0:0644:file"),
            Some(Owner {
                uid: 0,
                gid: 0,
                perm: 0o644
            })
        );
        assert_eq!(parse_override(b"junk"), None);
    }
}
