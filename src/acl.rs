//! POSIX ACL inheritance for new objects: what mode and ACLs a new object gets from its
//! parent directory's default ACL.
//!
//! A filesystem applies the parent's default ACL itself when an object is created in place,
//! but objects built in the work directory (a directory, anything over a whiteout) are created
//! where there is no default ACL and renamed into place, so the daemon computes the result the
//! kernel's `posix_acl_create` would and writes it on the new object, as kernel overlayfs does
//! in `ovl_create_over_whiteout`. The rules (`posix_acl_create`, `posix_acl_create_masq`):
//! with no default ACL the caller's umask applies; with one, the umask does not, the new
//! object's access ACL is the default ACL with each permission class limited by the requested
//! mode (and the mode by the ACL), it is only stored when it says more than the mode, and a
//! directory also inherits the default ACL as its own default.
//!
//! ACLs travel in the kernel's xattr encoding (`system.posix_acl_*`): a little-endian u32
//! version 2, then 8-byte entries (u16 tag, u16 permissions, u32 id).

/// The xattr holding a directory's default ACL.
pub const DEFAULT_XATTR: &str = "system.posix_acl_default";
/// The xattr holding an object's access ACL.
pub const ACCESS_XATTR: &str = "system.posix_acl_access";

const VERSION: u32 = 2;
const HEADER: usize = 4;
const ENTRY: usize = 8;

const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

const RWX: u32 = 0o7;

/// What a new object gets from its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inherited {
    /// The mode to create with (file type and set-id bits kept as asked).
    pub mode: u32,
    /// The access ACL to store, when it says more than the mode.
    pub access: Option<Vec<u8>>,
    /// The default ACL to store (directories only).
    pub default: Option<Vec<u8>>,
}

/// The mode and ACLs of a new object created with `mode` by a caller with `umask`, in a
/// directory whose default ACL is `parent_default` (its xattr value, if any). A value that
/// does not parse is treated as no default ACL, as the kernel would refuse to have stored it.
pub fn inherit(parent_default: Option<&[u8]>, mode: u32, umask: u32, is_dir: bool) -> Inherited {
    let Some(mut entries) = parent_default.and_then(parse) else {
        return Inherited {
            mode: mode & !(umask & 0o777),
            access: None,
            default: None,
        };
    };
    let (mode, says_more) = create_masq(&mut entries, mode);
    Inherited {
        mode,
        access: says_more.then(|| encode(&entries)),
        default: if is_dir {
            parent_default.map(<[u8]>::to_vec)
        } else {
            None
        },
    }
}

/// (tag, permissions, id) entries of an encoded ACL; `None` when malformed or empty.
fn parse(raw: &[u8]) -> Option<Vec<(u16, u16, u32)>> {
    let body = raw.get(HEADER..)?;
    let version = u32::from_le_bytes(raw.get(..HEADER)?.try_into().ok()?);
    if version != VERSION || body.is_empty() || body.len() % ENTRY != 0 {
        return None;
    }
    let entries: Vec<(u16, u16, u32)> = body
        .chunks_exact(ENTRY)
        .map(|e| {
            (
                u16::from_le_bytes([e[0], e[1]]),
                u16::from_le_bytes([e[2], e[3]]),
                u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            )
        })
        .collect();
    let has = |tag| entries.iter().any(|&(t, _, _)| t == tag);
    (has(USER_OBJ) && has(GROUP_OBJ) && has(OTHER)).then_some(entries)
}

fn encode(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut out = VERSION.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// The kernel's `posix_acl_create_masq`: limits the owner, group (or mask) and other entries
/// by the requested mode and the mode by them. Returns the new mode and whether the ACL has
/// entries the mode cannot express (named users or groups, a mask).
fn create_masq(entries: &mut [(u16, u16, u32)], mode: u32) -> (u32, bool) {
    let mut mode = mode;
    let mut says_more = false;
    let mut group_obj = None;
    let mut mask_obj = None;
    for (i, entry) in entries.iter_mut().enumerate() {
        let perm = u32::from(entry.1);
        match entry.0 {
            USER_OBJ => {
                let limited = perm & ((mode >> 6) & RWX);
                entry.1 = limited as u16;
                mode = (mode & !(RWX << 6)) | (limited << 6);
            }
            USER | GROUP => says_more = true,
            GROUP_OBJ => group_obj = Some(i),
            OTHER => {
                let limited = perm & (mode & RWX);
                entry.1 = limited as u16;
                mode = (mode & !RWX) | limited;
            }
            MASK => {
                mask_obj = Some(i);
                says_more = true;
            }
            _ => {}
        }
    }
    // The group class is the mask when there is one, else the owning group's entry.
    if let Some(i) = mask_obj.or(group_obj) {
        let limited = u32::from(entries[i].1) & ((mode >> 3) & RWX);
        entries[i].1 = limited as u16;
        mode = (mode & !(RWX << 3)) | (limited << 3);
    }
    (mode, says_more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        encode(entries)
    }

    const NOBODY: u32 = u32::MAX;

    /// `u::rwx,u:1234:rwx,g::rwx,m::rwx,o::r-x` as setfacl writes it.
    fn with_named_user() -> Vec<u8> {
        acl(&[
            (USER_OBJ, 7, NOBODY),
            (USER, 7, 1234),
            (GROUP_OBJ, 7, NOBODY),
            (MASK, 7, NOBODY),
            (OTHER, 5, NOBODY),
        ])
    }

    #[test]
    fn no_default_acl_means_the_umask_applies() {
        let got = inherit(None, libc::S_IFREG | 0o666, 0o022, false);
        assert_eq!(got.mode, libc::S_IFREG | 0o644);
        assert_eq!((got.access, got.default), (None, None));
    }

    #[test]
    fn a_default_acl_replaces_the_umask_and_masks_the_mode() {
        let default = with_named_user();
        let got = inherit(Some(&default), libc::S_IFREG | 0o666, 0o077, false);
        // The umask is ignored; the mask (group class) is limited to the mode's rw-.
        assert_eq!(got.mode, libc::S_IFREG | 0o664);
        let access = parse(got.access.as_deref().unwrap()).unwrap();
        assert!(
            access.contains(&(USER, 7, 1234)),
            "named entries kept whole"
        );
        assert!(access.contains(&(MASK, 6, NOBODY)));
        assert!(access.contains(&(USER_OBJ, 6, NOBODY)));
        assert!(access.contains(&(OTHER, 4, NOBODY)));
        assert_eq!(got.default, None, "files get no default ACL");
    }

    #[test]
    fn directories_inherit_the_default_acl_itself() {
        let default = with_named_user();
        let got = inherit(Some(&default), libc::S_IFDIR | 0o777, 0o022, true);
        assert_eq!(got.mode, libc::S_IFDIR | 0o775);
        assert_eq!(got.default.as_deref(), Some(&default[..]));
    }

    #[test]
    fn a_minimal_default_acl_is_only_a_mode() {
        let default = acl(&[
            (USER_OBJ, 7, NOBODY),
            (GROUP_OBJ, 5, NOBODY),
            (OTHER, 0, NOBODY),
        ]);
        let got = inherit(Some(&default), 0o4777, 0o022, false);
        assert_eq!(
            got.mode, 0o4750,
            "set-id bits stay, classes limited by the ACL"
        );
        assert_eq!(got.access, None);
    }

    #[test]
    fn malformed_acls_count_as_none() {
        assert_eq!(parse(b""), None);
        assert_eq!(parse(&[2, 0, 0, 0, 1, 0]), None);
        assert_eq!(parse(&acl(&[(USER_OBJ, 7, NOBODY)])), None);
        let got = inherit(Some(b"junk"), 0o666, 0o022, false);
        assert_eq!(got.mode, 0o644);
    }
}
