//! setattr through a real mount: chmod, chown, utimens (explicit, UTIME_OMIT, UTIME_NOW) in
//! every layer position, on files, directories and symlinks; permission checks for an
//! unprivileged caller; ctime bookkeeping. Each change to a lower entry copies it up and leaves
//! the lower untouched.

mod common;

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::*;

fn chmod(p: &Path, mode: u32) -> std::io::Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

fn positions(st: &Stack) {
    st.upper().file("up", "u");
    st.lower(0).file("low", "l");
    st.lower(1).file("bottom", "b");
    st.lower(0).file("both", "lower");
    st.upper().file("both", "upper");
    st.lower(0).file("gone", "g");
    st.upper().whiteout("gone");
    st.lower(1).file("opq/hidden", "h");
    st.lower(0).opaque("opq", Opaque::Trusted);
    st.lower(0).file("opq/seen", "s");
}

const NAMES: [&str; 7] = [
    "up",
    "low",
    "bottom",
    "both",
    "gone",
    "opq/hidden",
    "opq/seen",
];

#[test]
fn chmod_in_every_position() {
    both_backends(|b| {
        let st = Stack::new();
        positions(&st);
        let m = st.mount(b);
        let res: Vec<(&str, i32)> = NAMES
            .iter()
            .map(|n| (*n, errno(&chmod(&m.path(n), 0o611))))
            .collect();
        for (name, e) in &res {
            if *e == 0 {
                assert_eq!(attr(&m.path(name)).unwrap().perm, 0o611, "{name}");
                assert_eq!(st.upper().stat(name).mode() & 0o7777, 0o611, "upper {name}");
            }
        }
        assert_eq!(
            st.upper().read("low"),
            b"l",
            "data lost in a metadata copy-up"
        );
        assert_eq!(
            st.lower(0).stat("low").mode() & 0o7777,
            0o644,
            "lower modified"
        );
        res
    });
}

#[test]
fn chmod_of_a_lower_directory_keeps_its_lower_entries() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(1).file("d/bottom", "b");
        st.lower(0).file("d/top", "t");
        let m = st.mount(b);
        chmod(&m.path("d"), 0o700).unwrap();
        assert_eq!(attr(&m.path("d")).unwrap().perm, 0o700);
        assert!(st.upper().stat("d").is_dir(), "dir not copied up");
        assert!(!st.upper().is_opaque("d"), "a chmod made the dir opaque");
        assert_eq!(
            st.upper().names("d"),
            Vec::<String>::new(),
            "children copied up"
        );
        names(&m.path("d")).unwrap()
    });
}

#[test]
fn chown_as_root_in_every_position() {
    both_backends(|b| {
        let st = Stack::new();
        positions(&st);
        let m = st.mount(b);
        let res: Vec<(&str, i32)> = NAMES
            .iter()
            .map(|n| {
                let r = std::os::unix::fs::chown(m.path(n), Some(4242), Some(4343));
                (*n, errno(&r))
            })
            .collect();
        for (name, e) in &res {
            if *e == 0 {
                let up = st.upper().stat(name);
                assert_eq!((up.uid(), up.gid()), (4242, 4343), "upper {name}");
            }
        }
        assert_eq!(st.lower(0).stat("low").uid(), 0, "lower modified");
        res
    });
}

#[test]
fn chown_clears_setuid_like_the_kernel() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("suid", "x").chmod("suid", 0o6755);
        let m = st.mount(b);
        std::os::unix::fs::chown(m.path("suid"), Some(1), Some(1)).unwrap();
        attr(&m.path("suid")).unwrap().perm
    });
}

#[test]
fn unprivileged_owner_may_chmod_but_not_give_away() {
    both_backends(|b| {
        let st = Stack::new();
        let user = test_user();
        st.lower(0)
            .file("mine", "m")
            .chown("mine", user.uid, user.gid);
        st.lower(0).file("roots", "r");
        st.lower(0).dir("d").chmod("d", 0o777);
        let m = st.mount(b);
        let (mine, roots) = (m.path("mine"), m.path("roots"));
        let res = as_user(user, || {
            [
                errno(&chmod(&mine, 0o600)),
                errno(&std::os::unix::fs::chown(&mine, Some(0), None)),
                errno(&chmod(&roots, 0o777)),
                errno(&std::os::unix::fs::chown(&roots, Some(user.uid), None)),
            ]
        });
        assert_eq!(res, [0, libc::EPERM, libc::EPERM, libc::EPERM]);
        let up = st.upper().stat("mine");
        assert_eq!((up.uid(), up.mode() & 0o777), (user.uid, 0o600));
        assert!(!st.upper().exists("roots"), "a refused chmod copied up");
        res
    });
}

/// atime and mtime of `p` (not followed) as (sec, nsec) pairs.
fn times(p: &Path) -> ((i64, i64), (i64, i64)) {
    let m = fs::symlink_metadata(p).unwrap();
    (atime(&m), mtime(&m))
}

#[test]
fn utimens_explicit_omit_and_now() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("f", "x").times("f", OLD, OLD);
        st.upper().file("u", "x").times("u", OLD, OLD);
        let m = st.mount(b);
        for name in ["f", "u"] {
            let p = m.path(name);
            sys::utimens(&p, sys::ts(OLD + 1, 5), sys::ts(OLD + 2, 7), false).unwrap();
            assert_eq!(times(&p), ((OLD + 1, 5), (OLD + 2, 7)), "{name} explicit");
            let omit = sys::ts(0, libc::UTIME_OMIT);
            sys::utimens(&p, omit, sys::ts(OLD + 3, 0), false).unwrap();
            assert_eq!(
                times(&p),
                ((OLD + 1, 5), (OLD + 3, 0)),
                "{name} atime omitted"
            );
            sys::utimens(&p, sys::ts(OLD + 4, 0), omit, false).unwrap();
            assert_eq!(
                times(&p),
                ((OLD + 4, 0), (OLD + 3, 0)),
                "{name} mtime omitted"
            );
            let now = sys::ts(0, libc::UTIME_NOW);
            sys::utimens(&p, omit, now, false).unwrap();
            let (a, mt) = times(&p);
            assert_eq!(a, (OLD + 4, 0), "{name} atime after UTIME_NOW on mtime");
            assert!(mt.0 > OLD + 1_000_000, "{name}: UTIME_NOW gave {mt:?}");
        }
        assert_eq!(times(&st.lower(0).path("f")), ((OLD, 0), (OLD, 0)), "lower");
        assert_eq!(times(&st.upper().path("f")).0, (OLD + 4, 0), "upper copy");
    });
}

#[test]
fn utimens_and_lchown_of_a_lower_symlink_do_not_follow() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("target", "t").times("target", OLD, OLD);
        st.lower(0).symlink("link", "target");
        let m = st.mount(b);
        let p = m.path("link");
        sys::utimens(&p, sys::ts(OLD + 9, 0), sys::ts(OLD + 9, 0), true).unwrap();
        std::os::unix::fs::lchown(&p, Some(77), Some(78)).unwrap();
        assert_eq!(times(&p).1, (OLD + 9, 0));
        let a = attr(&p).unwrap();
        assert_eq!((a.kind, a.uid, a.gid), ("symlink", 77, 78));
        assert_eq!(times(&m.path("target")).1, (OLD, 0), "target followed");
        assert_eq!(
            st.upper().entry("link"),
            Entry::Symlink("target".into()),
            "symlink copy-up"
        );
        assert!(!st.upper().exists("target"));
        a
    });
}

#[test]
fn unprivileged_utimens_needs_ownership_for_explicit_times() {
    both_backends(|b| {
        let st = Stack::new();
        let user = test_user();
        st.lower(0)
            .file("mine", "x")
            .chown("mine", user.uid, user.gid);
        st.lower(0).file("shared", "x").chmod("shared", 0o666);
        st.lower(0).file("roots", "x");
        let m = st.mount(b);
        let paths = [m.path("mine"), m.path("shared"), m.path("roots")];
        let res = as_user(user, || {
            let mut out = Vec::new();
            for p in &paths {
                let now = sys::ts(0, libc::UTIME_NOW);
                out.push(errno(&sys::utimens(
                    p,
                    sys::ts(OLD, 0),
                    sys::ts(OLD, 0),
                    false,
                )));
                out.push(errno(&sys::utimens(p, now, now, false)));
            }
            out
        });
        // Owner: anything; writable: only "now"; neither: nothing.
        let want = [0, 0, libc::EPERM, 0, libc::EPERM, libc::EACCES];
        assert_eq!(res, want);
        res
    });
}

#[test]
fn ctime_changes_on_chmod_and_on_fchmod_of_an_old_fd() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("f", "x");
        st.lower(0).file("g", "y");
        let m = st.mount(b);
        let before = ctime(&fs::metadata(m.path("f")).unwrap());
        std::thread::sleep(Duration::from_millis(30));
        chmod(&m.path("f"), 0o600).unwrap();
        let after = ctime(&fs::metadata(m.path("f")).unwrap());
        assert!(after > before, "ctime {before:?} -> {after:?}");
        // fchmod through a read-only fd opened before the copy-up.
        let g = File::open(m.path("g")).unwrap();
        // SAFETY: valid fd.
        let r = unsafe { libc::fchmod(g.as_raw_fd(), 0o640) };
        assert_eq!(r, 0, "fchmod: {}", std::io::Error::last_os_error());
        assert_eq!(attr(&m.path("g")).unwrap().perm, 0o640);
        assert_eq!(st.upper().stat("g").mode() & 0o777, 0o640);
        assert_eq!(st.upper().read("g"), b"y");
    });
}

#[test]
fn utimens_and_chown_of_a_lower_directory() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(1).file("d/x", "x");
        st.lower(0).dir("d").times("d", OLD, OLD);
        let m = st.mount(b);
        sys::utimens(
            &m.path("d"),
            sys::ts(OLD + 5, 0),
            sys::ts(OLD + 6, 0),
            false,
        )
        .unwrap();
        std::os::unix::fs::chown(m.path("d"), Some(9), Some(9)).unwrap();
        assert_eq!(times(&m.path("d")), ((OLD + 5, 0), (OLD + 6, 0)));
        let up = st.upper().stat("d");
        assert_eq!((up.uid(), mtime(&up)), (9, (OLD + 6, 0)), "upper copy");
        assert_eq!(names(&m.path("d")).unwrap(), ["x"]);
        // Truncating a directory is EISDIR, on any layer.
        let r = fs::OpenOptions::new().write(true).open(m.path("d"));
        expect_errno(r, libc::EISDIR, "open dir for writing");
        attr(&m.path("d")).unwrap()
    });
}

#[test]
fn metadata_copy_up_keeps_times_and_special_files() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("f", "x").times("f", OLD, OLD + 1);
        st.lower(0).fifo("fifo").times("fifo", OLD, OLD + 2);
        st.lower(0).symlink("s", "f");
        let m = st.mount(b);
        chmod(&m.path("f"), 0o600).unwrap();
        chmod(&m.path("fifo"), 0o600).unwrap();
        // A metadata-only change keeps the data times of the copy.
        assert_eq!(times(&m.path("f")), ((OLD, 0), (OLD + 1, 0)));
        assert_eq!(times(&m.path("fifo")).1, (OLD + 2, 0));
        assert_eq!(
            kind_of(&st.upper().stat("fifo")),
            "fifo",
            "fifo copied up as a fifo"
        );
        assert_eq!(mtime(&st.upper().stat("f")), (OLD + 1, 0));
        (attr(&m.path("f")).unwrap(), attr(&m.path("fifo")).unwrap())
    });
}

/// A POSIX ACL in the kernel's xattr encoding: owner rw, `uid` r, group r, mask r, other none.
fn acl_granting_read(uid: u32) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    let entries: [(u16, u16, u32); 5] = [
        (0x01, 6, u32::MAX),
        (0x02, 4, uid),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ];
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

#[test]
fn posix_acls_apply_and_survive_copy_up() {
    both_backends(|b| {
        let st = Stack::new();
        let user = test_user();
        let acl = acl_granting_read(user.uid);
        st.lower(0).file("f", "secret").chmod("f", 0o640);
        st.lower(0).xattr("f", "system.posix_acl_access", &acl);
        st.lower(0).file("g", "plain").chmod("g", 0o640);
        let m = st.mount(b);
        let (f, g) = (m.path("f"), m.path("g"));
        let before = as_user(user, || (errno(&fs::read(&f)), errno(&fs::read(&g))));
        // A copy-up (root writes) must keep the ACL.
        fs::write(&f, "secret2").unwrap();
        let after = as_user(user, || errno(&fs::read(&f)));
        let stored = st.upper().get_xattr("f", "system.posix_acl_access");
        assert_eq!(stored.as_deref(), Some(&acl[..]), "ACL in the upper copy");
        let seen = sys::lgetxattr(&f, "system.posix_acl_access").ok();
        assert_eq!(seen.as_deref(), Some(&acl[..]), "ACL through the mount");
        assert_eq!(before, (0, libc::EACCES), "the ACL grants read on f only");
        assert_eq!(after, 0, "ACL not applied after copy-up");
        (before, after)
    });
}
