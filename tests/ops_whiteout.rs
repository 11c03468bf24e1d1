//! Whiteouts and opaque directories: every dialect read in every layer, never listed, the
//! formats unionfs-rs writes, whiteouts written only where a lower still has the name, and
//! forged whiteouts refused.
//!
//! Kernel overlayfs reads only its own dialects (0/0 character devices, xattr whiteouts,
//! `overlay.opaque` xattrs); the OCI/AUFS `.wh.` files and `user.fuseoverlayfs.opaque` are
//! unionfs-rs extensions (DESIGN.md section 1), tested with `unionfs_only`.

mod common;

use std::fs::{self, File};

use common::*;

/// Hides names of lower(1) from lower(0) and from the upper with `mark`.
fn hide_below(st: &Stack, mark: impl Fn(&Layer, &str)) {
    st.lower(1).file("f_by_top", "bottom");
    st.lower(1).file("d_by_top/x", "bottom");
    st.lower(1).file("keep", "k");
    mark(st.lower(0), "f_by_top");
    mark(st.lower(0), "d_by_top");
    st.lower(0).file("f_by_upper", "top");
    st.lower(1).file("d_by_upper/x", "bottom");
    st.lower(0).file("d_by_upper/y", "top");
    mark(st.upper(), "f_by_upper");
    mark(st.upper(), "d_by_upper");
    // A whiteout in a lower does not stop the upper from providing the name again.
    st.lower(1).file("back", "bottom");
    mark(st.lower(0), "back");
    st.upper().file("back", "upper again");
}

/// The merged view of [`hide_below`]'s stack.
fn check_hidden(m: &Mount) {
    for n in ["f_by_top", "d_by_top", "f_by_upper", "d_by_upper"] {
        expect_errno(fs::symlink_metadata(m.path(n)), libc::ENOENT, n);
    }
    assert_eq!(names(m.root()).unwrap(), ["back", "keep"]);
    assert_eq!(read_string(&m.path("back")).unwrap(), "upper again");
}

#[test]
fn chardev_whiteouts_hide_names_below_them() {
    both_backends(|b| {
        let st = Stack::new();
        hide_below(&st, |l, n| {
            l.whiteout(n);
        });
        let m = st.mount(b);
        check_hidden(&m);
        tree(m.root())
    });
}

#[test]
fn xattr_whiteouts_hide_names_below_them() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(1).file("d/gone", "bottom");
        st.lower(1).file("d/kept", "bottom");
        // Kernel 6.7+ format: an empty file with overlay.whiteout, in a directory marked
        // `overlay.opaque=x` ("has xattr whiteouts", which is not opaque).
        st.lower(0).xattr_whiteout("d/gone");
        st.lower(0).xattr("d", "trusted.overlay.opaque", b"x");
        let m = st.mount(b);
        expect_errno(
            fs::symlink_metadata(m.path("d/gone")),
            libc::ENOENT,
            "d/gone",
        );
        assert_eq!(
            names(&m.path("d")).unwrap(),
            ["kept"],
            "opaque=x hid the lower"
        );
        tree(m.root())
    });
}

#[test]
fn oci_whiteout_files_hide_names_below_them() {
    unionfs_only(|b| {
        let st = Stack::new();
        hide_below(&st, |l, n| {
            l.oci_whiteout(n);
        });
        let m = st.mount(b);
        check_hidden(&m);
        // The whiteout files themselves are neither listed nor reachable by name.
        for n in [".wh.f_by_top", ".wh.f_by_upper", ".wh.back"] {
            expect_errno(fs::symlink_metadata(m.path(n)), libc::ENOENT, n);
        }
    });
}

/// lower(1) has `o/hidden`; `mark` makes `o` opaque in `layer` which adds `o/own`.
fn opaque_stack(st: &Stack, in_upper: bool, how: Opaque) {
    st.lower(1).file("o/hidden", "bottom");
    st.lower(1).file("o/sub/deep", "bottom");
    let top = if in_upper { st.upper() } else { st.lower(0) };
    top.opaque("o", how);
    top.file("o/own", "own");
}

fn check_opaque(m: &Mount) {
    assert_eq!(names(&m.path("o")).unwrap(), ["own"]);
    expect_errno(fs::metadata(m.path("o/hidden")), libc::ENOENT, "o/hidden");
    expect_errno(fs::metadata(m.path("o/sub")), libc::ENOENT, "o/sub");
}

#[test]
fn trusted_opaque_xattr_in_upper_and_lower() {
    both_backends(|b| {
        for in_upper in [true, false] {
            let st = Stack::new();
            opaque_stack(&st, in_upper, Opaque::Trusted);
            check_opaque(&st.mount(b));
        }
    });
}

#[test]
fn user_opaque_xattr_in_upper_and_lower() {
    // The kernel reads user.overlay.* only with `userxattr` (its rootless mode); unionfs-rs
    // always reads both namespaces.
    both_backends(|b| {
        for in_upper in [true, false] {
            let st = Stack::new();
            opaque_stack(&st, in_upper, Opaque::User);
            check_opaque(&st.mounter(b).kernel_opt("userxattr").mount());
        }
    });
}

#[test]
fn fuse_overlayfs_and_oci_opaque_markers() {
    unionfs_only(|b| {
        for how in [Opaque::FuseOverlayfs, Opaque::OciMarker] {
            for in_upper in [true, false] {
                let st = Stack::new();
                opaque_stack(&st, in_upper, how);
                let m = st.mount(b);
                check_opaque(&m);
                let marker = fs::symlink_metadata(m.path(&format!("o/{OCI_OPAQUE}")));
                expect_errno(marker, libc::ENOENT, "lookup of the opaque marker");
            }
        }
    });
}

#[test]
fn all_dialects_mixed_in_one_directory_are_never_listed() {
    unionfs_only(|b| {
        let st = Stack::with_lowers(3);
        for i in 0..6 {
            st.lower(2).file(&format!("d/f{i}"), "bottom");
        }
        st.lower(1).whiteout("d/f0");
        st.lower(1).oci_whiteout("d/f1");
        st.lower(0).xattr_whiteout("d/f2");
        st.lower(0).xattr("d", "trusted.overlay.opaque", b"x");
        st.upper().whiteout("d/f3");
        st.upper().oci_whiteout("d/f4");
        let m = st.mount(b);
        assert_eq!(names(&m.path("d")).unwrap(), ["f5"]);
        let all = sys::read_all_dirents(&m.path("d"), 256).unwrap();
        let mut got: Vec<String> = all.into_iter().map(|e| e.name).collect();
        got.sort();
        assert_eq!(got, [".", "..", "f5"]);
    });
}

#[test]
fn default_whiteout_format_written_as_root() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("f", "x");
        st.lower(0).file("d/x", "x");
        let m = st.mount(b);
        fs::remove_file(m.path("f")).unwrap();
        fs::remove_dir_all(m.path("d")).unwrap();
        fs::create_dir(m.path("d")).unwrap();
        // Root can make 0/0 devices: both write the kernel's own format.
        assert!(
            st.upper().is_chardev_whiteout("f"),
            "f: {:?}",
            st.upper().entry("f")
        );
        assert!(!st.upper().exists(".wh.f"));
        let y = Some(b"y".to_vec());
        assert_eq!(st.upper().get_xattr("d", "trusted.overlay.opaque"), y);
        // With chardev whiteouts the upper stays in the kernel's format, readable by kernel
        // overlayfs: no `.wh..wh..opq` file, which the kernel would show as an entry.
        assert!(
            !st.upper().exists(&format!("d/{OCI_OPAQUE}")),
            "OCI marker in a kernel-format upper"
        );
        names(&m.path("d")).unwrap()
    });
}

#[test]
fn oci_whiteout_format_when_asked() {
    unionfs_only(|b| {
        let st = Stack::new();
        st.lower(0).file("f", "x");
        st.lower(0).file("d/x", "x");
        let m = st.mounter(b).unionfs_arg("--whiteout=oci").mount();
        fs::remove_file(m.path("f")).unwrap();
        assert!(
            st.upper().exists(".wh.f"),
            "no .wh.f: {:?}",
            st.upper().names("")
        );
        assert!(!st.upper().exists("f"));
        expect_errno(fs::metadata(m.path("f")), libc::ENOENT, "f after unlink");
        fs::remove_dir_all(m.path("d")).unwrap();
        assert!(st.upper().exists(".wh.d"));
        fs::create_dir(m.path("d")).unwrap();
        // Both markers: the xattr for overlay readers, `.wh..wh..opq` for OCI tools.
        let y = Some(b"y".to_vec());
        assert_eq!(st.upper().get_xattr("d", "trusted.overlay.opaque"), y);
        assert!(
            st.upper().exists(&format!("d/{OCI_OPAQUE}")),
            "no OCI opaque marker"
        );
        assert!(
            !st.upper().exists(".wh.d"),
            "whiteout kept beside the new dir"
        );
        assert_eq!(names(&m.path("d")).unwrap(), Vec::<String>::new());
        // Re-creating the file removes its whiteout file.
        fs::write(m.path("f"), "again").unwrap();
        assert!(!st.upper().exists(".wh.f"));
        assert_eq!(names(m.root()).unwrap(), ["d", "f"]);
    });
}

#[test]
fn whiteouts_only_where_a_lower_still_has_the_name() {
    both_backends(|b| {
        let st = Stack::new();
        // Hidden below by a whiteout in lower(0): nothing left to hide after unlink.
        st.lower(1).file("shadow", "bottom");
        st.lower(0).whiteout("shadow");
        st.upper().file("shadow", "upper");
        st.upper().file("fresh_dir/x", "x");
        let m = st.mount(b);
        fs::remove_file(m.path("shadow")).unwrap();
        File::create(m.path("new")).unwrap();
        fs::remove_file(m.path("new")).unwrap();
        fs::remove_dir_all(m.path("fresh_dir")).unwrap();
        let upper = st.upper().names("");
        assert_eq!(upper, Vec::<String>::new(), "needless whiteouts");
        upper
    });
}

#[test]
fn a_whiteout_in_a_lower_stops_a_new_upper_dir_from_merging() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(1).file("d/old", "bottom");
        st.lower(0).whiteout("d");
        let m = st.mount(b);
        fs::create_dir(m.path("d")).unwrap();
        assert_eq!(names(&m.path("d")).unwrap(), Vec::<String>::new());
        tree(m.root())
    });
}

/// Every way a caller could name a `.wh.` entry; errno per operation.
fn forge_attempts(m: &Mount) -> Vec<(&'static str, i32)> {
    let p = |n: &str| m.path(n);
    vec![
        ("create", errno(&File::create(p(".wh.new")))),
        ("mkdir", errno(&fs::create_dir(p(".wh.dir")))),
        (
            "symlink",
            errno(&std::os::unix::fs::symlink("x", p(".wh.sym"))),
        ),
        ("link", errno(&fs::hard_link(p("file"), p(".wh.link")))),
        ("rename", errno(&fs::rename(p("file2"), p(".wh.file")))),
        (
            "mknod",
            errno(&sys::mknod(&p(".wh.fifo"), libc::S_IFIFO | 0o600, 0)),
        ),
        ("opq", errno(&File::create(p(&format!("d/{OCI_OPAQUE}"))))),
        ("lookup", errno(&fs::symlink_metadata(p(".wh.gone")))),
    ]
}

#[test]
fn forged_whiteout_names_are_refused() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("file", "f");
        st.lower(0).file("file2", "f");
        st.lower(0).dir("d");
        // In a lower, `.wh.gone` is an OCI whiteout for "gone".
        st.lower(0).oci_whiteout("gone");
        let m = st.mount(b);
        let got = forge_attempts(&m);
        // Known difference: the kernel gives `.wh.` no meaning, so it creates and shows these
        // names; unionfs-rs reads `.wh.` as a whiteout and so must refuse to create one.
        let want: Vec<(&str, i32)> = if b.is_kernel() {
            got.iter().map(|(op, _)| (*op, 0)).collect()
        } else {
            let mut v: Vec<(&str, i32)> = got.iter().map(|(op, _)| (*op, libc::EINVAL)).collect();
            v[7].1 = libc::ENOENT;
            v
        };
        assert_eq!(got, want);
        if !b.is_kernel() {
            assert_eq!(
                st.upper().names(""),
                Vec::<String>::new(),
                "something was created"
            );
        }
    });
}

/// Copies `o` up (chmod, new child), then checks lower(1)'s entries stay hidden.
fn copy_up_opaque_dir(m: &Mount) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(m.path("o"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(m.path("o/added"), "a").unwrap();
    fs::remove_file(m.path("o/own")).unwrap();
    let seen = names(&m.path("o")).unwrap();
    assert_eq!(
        seen,
        ["added"],
        "lower entries leaked into a copied-up opaque dir"
    );
    // Empty in the merged view, so removable, even though lower(1) still has entries.
    fs::remove_file(m.path("o/added")).unwrap();
    fs::remove_dir(m.path("o")).unwrap();
    expect_errno(fs::metadata(m.path("o")), libc::ENOENT, "o after rmdir");
    seen
}

#[test]
fn copying_up_an_opaque_lower_dir_keeps_it_opaque() {
    both_backends(|b| {
        let st = Stack::new();
        opaque_stack(&st, false, Opaque::Trusted);
        copy_up_opaque_dir(&st.mount(b))
    });
}

#[test]
fn copying_up_an_oci_opaque_lower_dir_keeps_it_opaque() {
    unionfs_only(|b| {
        for how in [Opaque::OciMarker, Opaque::FuseOverlayfs, Opaque::User] {
            let st = Stack::new();
            opaque_stack(&st, false, how);
            copy_up_opaque_dir(&st.mount(b));
        }
    });
}
