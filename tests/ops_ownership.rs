//! Ownership options container tools pass (fuse-overlayfs's grammar): `uidmapping=`/
//! `gidmapping=`, `squash_to_uid`/`squash_to_gid`/`squash_to_root`, and `xattr_permissions`.
//! Kernel overlayfs has no equivalent, so these run on unionfs-rs only; each checks both what
//! the mount shows and what lands in the layers.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;

fn owner(p: &std::path::Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

fn chown(p: &std::path::Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
}

#[test]
fn id_mappings_translate_shown_and_stored_owners() {
    unionfs_only(|b| {
        let st = Stack::new();
        st.lower(0).file("img", "x").chown("img", 0, 0);
        st.lower(0).file("other", "x").chown("other", 1000, 1000);
        st.lower(0).file("far", "x").chown("far", 4000, 4000);
        // Stored 0..1000 show as 100000..101000.
        let m = st
            .mounter(b)
            .unionfs_arg("-o")
            .unionfs_arg("uidmapping=0:100000:2000,gidmapping=0:200000:2000")
            .mount();
        assert_eq!(owner(&m.path("img")), (100000, 200000));
        assert_eq!(owner(&m.path("other")), (101000, 201000));
        assert_eq!(
            owner(&m.path("far")),
            (65534, 65534),
            "unmapped ids show as overflow"
        );
        // A chown through the mount stores the reverse mapping.
        chown(&m.path("img"), 100005, 200007).unwrap();
        assert_eq!(owner(&m.path("img")), (100005, 200007));
        assert_eq!(owner(&st.upper().path("img")), (5, 7));
        expect_errno(
            chown(&m.path("img"), 5, 7),
            libc::EINVAL,
            "chown to an unmapped id",
        );
        // New files are created for the caller (root, id 0 in the mount: not mapped, stored as is).
        fs::write(m.path("new"), "n").unwrap();
        assert_eq!(owner(&st.upper().path("new")), (0, 0));
    });
}

#[test]
fn squash_shows_every_owner_as_one_id() {
    unionfs_only(|b| {
        let st = Stack::new();
        st.lower(0).file("a", "x").chown("a", 1234, 5678);
        let m = st
            .mounter(b)
            .unionfs_arg("-o")
            .unionfs_arg("squash_to_root")
            .mount();
        assert_eq!(owner(&m.path("a")), (0, 0));
        assert_eq!(owner(m.root()), (0, 0));
        // chown has nothing to change, and must not fail tools like tar.
        chown(&m.path("a"), 42, 42).unwrap();
        assert_eq!(owner(&m.path("a")), (0, 0));
        drop(m);
        let m = st
            .mounter(b)
            .unionfs_arg("-o")
            .unionfs_arg("squash_to_uid=7,squash_to_gid=8")
            .mount();
        assert_eq!(owner(&m.path("a")), (7, 8));
    });
}

#[test]
fn xattr_permissions_keep_ownership_in_the_override_xattr() {
    unionfs_only(|b| {
        let st = Stack::new();
        st.lower(0).file("a", "x").chmod("a", 0o644);
        st.lower(0)
            .file("pre", "x")
            .xattr("pre", "user.containers.override_stat", b"33:44:0600");
        let m = st
            .mounter(b)
            .unionfs_arg("-o")
            .unionfs_arg("xattr_permissions=2")
            .mount();
        let pre = fs::metadata(m.path("pre")).unwrap();
        assert_eq!(
            (pre.uid(), pre.gid(), pre.permissions().mode() & 0o7777),
            (33, 44, 0o600)
        );
        chown(&m.path("a"), 1000, 1001).unwrap();
        fs::set_permissions(m.path("a"), fs::Permissions::from_mode(0o640)).unwrap();
        let a = fs::metadata(m.path("a")).unwrap();
        assert_eq!(
            (a.uid(), a.gid(), a.permissions().mode() & 0o7777),
            (1000, 1001, 0o640)
        );
        // The real file kept its owner and mode; the xattr carries the new ones.
        let real = st.upper().stat("a");
        assert_eq!((real.uid(), real.mode() & 0o7777), (0, 0o644));
        assert_eq!(
            st.upper()
                .get_xattr("a", "user.containers.override_stat")
                .as_deref(),
            Some(&b"1000:1001:0640"[..])
        );
        // The store is the union's own: not listed, not settable through the mount.
        let listed = sys::llistxattr(&m.path("a")).unwrap();
        assert!(
            !listed.iter().any(|n| n == "user.containers.override_stat"),
            "{listed:?}"
        );
        expect_errno(
            sys::lsetxattr(
                &m.path("a"),
                "user.containers.override_stat",
                b"0:0:0777",
                0,
            ),
            libc::EPERM,
            "forging the override",
        );
        // New objects record their creator.
        fs::write(m.path("new"), "n").unwrap();
        assert!(
            st.upper()
                .get_xattr("new", "user.containers.override_stat")
                .is_some()
        );
    });
}
