//! Extended attributes through a real mount: get/list/set/remove in every layer position,
//! copy-up on change, flags and buffer sizes, permission checks, and the union's private
//! xattrs (opaque markers, origins) never visible or settable.

mod common;

use std::path::Path;

use common::*;

/// The user.* and trusted.* xattrs of `p` with values, sorted by name.
fn xattrs(p: &Path) -> Vec<(String, String)> {
    sys::llistxattr(p)
        .unwrap()
        .into_iter()
        .map(|n| {
            let v = sys::lgetxattr(p, &n).unwrap_or_else(|e| panic!("get {n}: {e}"));
            (n, String::from_utf8_lossy(&v).into_owned())
        })
        .collect()
}

fn positions(st: &Stack) {
    st.upper().file("up", "u").xattr("up", "user.a", b"up");
    st.lower(0).file("low", "l").xattr("low", "user.a", b"low");
    st.lower(0).xattr("low", "trusted.t", b"trusted");
    st.lower(1)
        .file("bottom", "b")
        .xattr("bottom", "user.a", b"bottom");
    st.lower(0)
        .file("both", "l")
        .xattr("both", "user.a", b"lower");
    st.upper()
        .file("both", "u")
        .xattr("both", "user.b", b"upper");
    st.lower(0).dir("dir").xattr("dir", "user.d", b"dir");
    st.lower(1).file("dir/child", "c");
}

const NAMES: [&str; 5] = ["up", "low", "bottom", "both", "dir"];

#[test]
fn get_and_list_in_every_position() {
    both_backends(|b| {
        let st = Stack::new();
        positions(&st);
        let m = st.mount(b);
        let got: Vec<_> = NAMES.iter().map(|n| (*n, xattrs(&m.path(n)))).collect();
        // The upper copy's xattrs win entirely; the lower's are not merged in.
        let both = &got[3].1;
        assert_eq!(both, &[("user.b".to_string(), "upper".to_string())]);
        let missing = sys::lgetxattr(&m.path("low"), "user.nope");
        expect_errno(missing, libc::ENODATA, "missing xattr");
        assert_eq!(
            st.upper().names(""),
            ["both", "up"],
            "reading xattrs copied up"
        );
        got
    });
}

#[test]
fn set_and_remove_copy_up_and_leave_the_lower_alone() {
    both_backends(|b| {
        let st = Stack::new();
        positions(&st);
        let m = st.mount(b);
        for n in NAMES {
            sys::lsetxattr(&m.path(n), "user.new", b"v", 0).unwrap();
        }
        sys::lremovexattr(&m.path("low"), "user.a").unwrap();
        sys::lremovexattr(&m.path("bottom"), "user.a").unwrap();
        let got: Vec<_> = NAMES.iter().map(|n| (*n, xattrs(&m.path(n)))).collect();
        assert_eq!(
            st.upper().get_xattr("low", "user.new").as_deref(),
            Some(&b"v"[..])
        );
        assert_eq!(st.upper().get_xattr("low", "user.a"), None);
        assert_eq!(
            st.upper().get_xattr("low", "trusted.t").as_deref(),
            Some(&b"trusted"[..])
        );
        assert_eq!(
            st.lower(0).get_xattr("low", "user.a").as_deref(),
            Some(&b"low"[..])
        );
        assert_eq!(
            st.lower(0).get_xattr("low", "user.new"),
            None,
            "lower modified"
        );
        // A directory copied up for an xattr keeps merging its lower entries.
        assert!(!st.upper().is_opaque("dir"));
        assert_eq!(names(&m.path("dir")).unwrap(), ["child"]);
        assert_eq!(st.upper().read("low"), b"l");
        got
    });
}

#[test]
fn create_and_replace_flags() {
    both_backends(|b| {
        let st = Stack::new();
        positions(&st);
        let m = st.mount(b);
        let set = |n: &str, k: &str, flags| errno(&sys::lsetxattr(&m.path(n), k, b"x", flags));
        let res = vec![
            set("low", "user.a", libc::XATTR_CREATE),
            set("low", "user.none", libc::XATTR_REPLACE),
            set("up", "user.a", libc::XATTR_REPLACE),
            set("bottom", "user.fresh", libc::XATTR_CREATE),
            errno(&sys::lremovexattr(&m.path("bottom"), "user.none")),
            errno(&sys::lremovexattr(&m.path("up"), "user.none")),
        ];
        assert_eq!(
            res,
            [
                libc::EEXIST,
                libc::ENODATA,
                0,
                0,
                libc::ENODATA,
                libc::ENODATA
            ]
        );
        res
    });
}

#[test]
fn sizes_and_erange() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0)
            .file("f", "x")
            .xattr("f", "user.long", &[b'v'; 100]);
        st.lower(0).xattr("f", "user.other", b"1");
        let m = st.mount(b);
        let p = m.path("f");
        let res = vec![
            errno(&sys::lgetxattr_sized(&p, "user.long", 10)),
            sys::lgetxattr_sized(&p, "user.long", 0).unwrap() as i32,
            errno(&sys::llistxattr_sized(&p, 3)),
            sys::llistxattr_sized(&p, 0).unwrap() as i32,
        ];
        // "user.long\0user.other\0" is 21 bytes.
        assert_eq!(res, [libc::ERANGE, 100, libc::ERANGE, 21]);
        res
    });
}

#[test]
fn private_overlay_xattrs_are_invisible() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(1).file("d/hidden", "h");
        st.lower(0).opaque("d", Opaque::Trusted).file("d/f", "f");
        st.lower(0).xattr("d", "user.visible", b"yes");
        st.lower(0).file("g", "g");
        st.lower(1).file("e/child", "c");
        let m = st.mount(b);
        // A copy-up makes both write their own bookkeeping (origin) into the upper.
        sys::lsetxattr(&m.path("g"), "user.x", b"1", 0).unwrap();
        std::fs::write(m.path("d/new"), "n").unwrap();
        let d = sys::llistxattr(&m.path("d")).unwrap();
        let g = sys::llistxattr(&m.path("g")).unwrap();
        assert_eq!(d, ["user.visible"]);
        assert_eq!(g, ["user.x"]);
        let get = sys::lgetxattr(&m.path("d"), "trusted.overlay.opaque");
        let del = sys::lremovexattr(&m.path("d"), "trusted.overlay.opaque");
        assert_ne!(errno(&get), 0, "private xattr readable");
        assert_ne!(errno(&del), 0, "private xattr removable");
        assert_eq!(names(&m.path("d")).unwrap(), ["f", "new"], "opacity lost");
        // Setting a private xattr must not forge an opaque directory. Known difference: the
        // kernel (6.7+) accepts it and stores it escaped (trusted.overlay.overlay.opaque);
        // unionfs-rs refuses it with EPERM.
        let set = sys::lsetxattr(&m.path("e"), "trusted.overlay.opaque", b"y", 0);
        let want = if b.is_kernel() { 0 } else { libc::EPERM };
        expect_errno(set, want, "setxattr trusted.overlay.opaque");
        assert_eq!(
            names(&m.path("e")).unwrap(),
            ["child"],
            "forged opaque directory"
        );
        (d, g)
    });
}

#[test]
fn union_private_user_xattrs_cannot_be_forged() {
    // Known difference: without `userxattr` the kernel treats user.overlay.* as ordinary
    // xattrs; unionfs-rs reads them as markers (rootless format) in every layer, so they are
    // private there and setting one would forge an opaque directory.
    unionfs_only(|b| {
        let st = Stack::new();
        st.lower(1).file("d/hidden", "h");
        st.lower(0).dir("d");
        let m = st.mount(b);
        for key in [
            "user.overlay.opaque",
            "user.fuseoverlayfs.opaque",
            "user.unionfs.origin",
            "trusted.unionfs.origin",
        ] {
            let r = sys::lsetxattr(&m.path("d"), key, b"y", 0);
            assert_ne!(errno(&r), 0, "{key} settable");
        }
        assert_eq!(names(&m.path("d")).unwrap(), ["hidden"]);
        assert!(!st.upper().is_opaque("d"));
    });
}

#[test]
fn unprivileged_xattr_permissions() {
    both_backends(|b| {
        let st = Stack::new();
        let user = test_user();
        st.lower(0)
            .file("mine", "m")
            .chown("mine", user.uid, user.gid);
        st.lower(0)
            .file("roots", "r")
            .xattr("roots", "user.r", b"r");
        st.lower(0).xattr("roots", "trusted.secret", b"s");
        let m = st.mount(b);
        let (mine, roots) = (m.path("mine"), m.path("roots"));
        let res = as_user(user, || {
            vec![
                errno(&sys::lsetxattr(&mine, "user.x", b"1", 0)),
                errno(&sys::lsetxattr(&roots, "user.x", b"1", 0)),
                errno(&sys::lgetxattr(&roots, "user.r")),
                errno(&sys::lsetxattr(&mine, "trusted.x", b"1", 0)),
                // trusted.* is invisible to the unprivileged.
                errno(&sys::lgetxattr(&roots, "trusted.secret")),
                sys::llistxattr(&roots)
                    .map(|v| v.len() as i32)
                    .unwrap_or(-1),
            ]
        });
        let want = [0, libc::EACCES, 0, libc::EPERM, libc::ENODATA, 1];
        assert_eq!(
            res, want,
            "the last is the listxattr count: trusted.* must not be listed"
        );
        assert!(!st.upper().exists("roots"), "a refused setxattr copied up");
        res
    });
}

#[test]
fn xattrs_on_symlinks_and_directories() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("target", "t");
        st.lower(0).symlink("link", "target");
        st.lower(0).file("dir/child", "c");
        let m = st.mount(b);
        let res = vec![
            // user.* is not allowed on symlinks (and must not follow to the target).
            errno(&sys::lsetxattr(&m.path("link"), "user.x", b"1", 0)),
            errno(&sys::lsetxattr(&m.path("link"), "trusted.x", b"1", 0)),
            errno(&sys::lsetxattr(&m.path("dir"), "user.x", b"1", 0)),
        ];
        assert_eq!(res, [libc::EPERM, 0, 0]);
        assert_eq!(
            sys::llistxattr(&m.path("target")).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(sys::llistxattr(&m.path("link")).unwrap(), ["trusted.x"]);
        assert_eq!(st.upper().entry("link"), Entry::Symlink("target".into()));
        assert!(!st.upper().exists("target"), "followed the symlink");
        assert_eq!(names(&m.path("dir")).unwrap(), ["child"]);
        res
    });
}

/// A POSIX ACL in the kernel's xattr encoding.
fn encode_acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// An encoded ACL as `getfacl -c` would print it, one entry per item.
fn decode_acl(raw: &[u8]) -> Vec<String> {
    raw[4..]
        .chunks_exact(8)
        .map(|e| {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let perm = u16::from_le_bytes([e[2], e[3]]);
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let kind = match tag {
                0x01 => "user:".to_string(),
                0x02 => format!("user:{id}"),
                0x04 => "group:".to_string(),
                0x08 => format!("group:{id}"),
                0x10 => "mask:".to_string(),
                _ => "other:".to_string(),
            };
            let bits: String = [(4, 'r'), (2, 'w'), (1, 'x')]
                .iter()
                .map(|&(b, c)| if perm & b != 0 { c } else { '-' })
                .collect();
            format!("{kind}:{bits}")
        })
        .collect()
}

/// `setfacl -d -m u::rwx,u:1234:rwx,g::rwx,m::rwx,o::r-x`.
fn default_acl_with_named_user() -> Vec<u8> {
    encode_acl(&[
        (0x01, 7, u32::MAX),
        (0x02, 7, 1234),
        (0x04, 7, u32::MAX),
        (0x10, 7, u32::MAX),
        (0x20, 5, u32::MAX),
    ])
}

/// Mode and both ACLs of `p`, readable.
fn mode_and_acls(p: &Path) -> (String, Option<Vec<String>>, Option<Vec<String>>) {
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::symlink_metadata(p).unwrap().mode();
    let acl = |key| sys::lgetxattr(p, key).ok().map(|v| decode_acl(&v));
    (
        format!("{mode:o}"),
        acl("system.posix_acl_access"),
        acl("system.posix_acl_default"),
    )
}

#[test]
fn new_objects_inherit_the_parents_default_acl() {
    both_backends(|b| {
        let st = Stack::new();
        let default = default_acl_with_named_user();
        st.lower(0)
            .dir("lowerdir")
            .xattr("lowerdir", "system.posix_acl_default", &default);
        st.lower(0).file("wh/gone", "x").dir("wh/gonedir");
        st.lower(0)
            .xattr("wh", "system.posix_acl_default", &default);
        let m = st.mount(b);
        std::fs::create_dir(m.path("updir")).unwrap();
        sys::lsetxattr(&m.path("updir"), "system.posix_acl_default", &default, 0).unwrap();
        std::fs::remove_file(m.path("wh/gone")).unwrap();
        std::fs::remove_dir(m.path("wh/gonedir")).unwrap();
        // In place, through the work dir (directories, names over whiteouts), a plain parent;
        // umask 022 and 077, which a default ACL replaces.
        let script = "umask 022 && touch updir/f lowerdir/f wh/gone plain_f && \
                      mkdir updir/d lowerdir/d wh/gonedir plain_d && mkfifo updir/p && \
                      umask 077 && touch updir/f077 plain_f077 && mkdir updir/d077 plain_d077";
        let status = std::process::Command::new("sh")
            .args(["-c", script])
            .current_dir(m.root())
            .status()
            .unwrap();
        assert!(status.success(), "{script}");
        let created = [
            "updir/f",
            "lowerdir/f",
            "wh/gone",
            "plain_f",
            "updir/d",
            "lowerdir/d",
            "wh/gonedir",
            "plain_d",
            "updir/p",
            "updir/f077",
            "plain_f077",
            "updir/d077",
            "plain_d077",
        ];
        created
            .iter()
            .map(|rel| (*rel, mode_and_acls(&m.path(rel))))
            .collect::<Vec<_>>()
    });
}

/// A copy-up keeps file capabilities and the owner: a binary with `security.capability` (ping,
/// say) chmod'ed or touched through the union must still carry it in the upper, as with kernel
/// overlayfs (a plain chown(2) of the copy would drop it).
#[test]
fn copy_up_keeps_file_capabilities() {
    if !require_root() {
        return;
    }
    // VFS_CAP_REVISION_2, effective, permitted = CAP_NET_RAW (bit 13).
    let cap: [u8; 20] = [
        0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0)
            .file("ping", "binary")
            .chmod("ping", 0o755)
            .chown("ping", 1000, 1000)
            .xattr("ping", "security.capability", &cap)
            .file("other", "o")
            .chown("other", 1000, 1000)
            .xattr("other", "security.capability", &cap);
        let m = st.mount(b);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(m.path("ping"), std::fs::Permissions::from_mode(0o750)).unwrap();
        sys::utimens(&m.path("other"), sys::ts(1, 0), sys::ts(2, 0), false).unwrap();
        let got: Vec<_> = ["ping", "other"]
            .iter()
            .map(|n| {
                let meta = st.upper().stat(n);
                let caps = st.upper().get_xattr(n, "security.capability");
                (
                    *n,
                    std::os::unix::fs::MetadataExt::uid(&meta),
                    std::os::unix::fs::MetadataExt::mode(&meta) & 0o7777,
                    caps,
                )
            })
            .collect();
        assert!(
            got.iter().all(|g| g.3.as_deref() == Some(&cap[..])),
            "{got:?}"
        );
        got
    });
}
