//! A read-only union (lowers only, no upper): the merged view reads like any other, every
//! write fails with EROFS, and statfs reports the top lower, read-only.

mod common;

use std::fs::{self, File, OpenOptions};

use common::*;

fn layers(st: &Stack) {
    st.lower(0).file("top", "t");
    st.lower(1).file("bottom", "b");
    st.lower(1).file("shadowed", "old");
    st.lower(0).file("shadowed", "new");
    st.lower(1).file("gone", "g");
    st.lower(0).whiteout("gone");
    st.lower(1).file("d/x", "x");
    st.lower(0).file("d/y", "y");
    st.lower(0).symlink("link", "top");
}

#[test]
fn reads_merge_the_lowers() {
    both_backends(|b| {
        let st = Stack::read_only(2);
        layers(&st);
        let m = st.mount(b);
        assert_eq!(read_string(&m.path("shadowed")).unwrap(), "new");
        assert_eq!(read_string(&m.path("link")).unwrap(), "t");
        expect_errno(fs::metadata(m.path("gone")), libc::ENOENT, "whited out");
        tree(m.root())
    });
}

#[test]
fn every_write_is_erofs() {
    both_backends(|b| {
        let st = Stack::read_only(2);
        layers(&st);
        let m = st.mount(b);
        let p = |n: &str| m.path(n);
        let res = vec![
            (
                "open-w",
                errno(&OpenOptions::new().write(true).open(p("top"))),
            ),
            ("create", errno(&File::create(p("new")))),
            (
                "trunc",
                errno(
                    &OpenOptions::new()
                        .write(true)
                        .truncate(true)
                        .open(p("bottom")),
                ),
            ),
            ("mkdir", errno(&fs::create_dir(p("nd")))),
            ("unlink", errno(&fs::remove_file(p("top")))),
            ("rmdir", errno(&fs::remove_dir(p("d")))),
            ("rename", errno(&fs::rename(p("top"), p("t2")))),
            ("link", errno(&fs::hard_link(p("top"), p("t3")))),
            ("symlink", errno(&std::os::unix::fs::symlink("x", p("s")))),
            (
                "mknod",
                errno(&sys::mknod(&p("fifo"), libc::S_IFIFO | 0o600, 0)),
            ),
            (
                "chmod",
                errno(&fs::set_permissions(
                    p("top"),
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )),
            ),
            (
                "chown",
                errno(&std::os::unix::fs::chown(p("top"), Some(1), Some(1))),
            ),
            (
                "utimens",
                errno(&sys::utimens(
                    &p("top"),
                    sys::ts(1, 0),
                    sys::ts(1, 0),
                    false,
                )),
            ),
            (
                "setxattr",
                errno(&sys::lsetxattr(&p("top"), "user.x", b"1", 0)),
            ),
            (
                "removexattr",
                errno(&sys::lremovexattr(&p("top"), "user.x")),
            ),
        ];
        for (op, e) in &res {
            assert_eq!(*e, libc::EROFS, "{op}: {}", errname(*e));
        }
        // Reading stays possible, including opening O_RDONLY.
        File::open(p("top")).unwrap();
        assert_eq!(errno(&sys::access(&p("top"), libc::W_OK)), libc::EROFS);
        res
    });
}

#[test]
fn statfs_reports_the_top_lower_read_only() {
    both_backends(|b| {
        let st = Stack::read_only(2);
        layers(&st);
        let m = st.mount(b);
        let merged = sys::statvfs(m.root()).unwrap();
        let top = sys::statvfs(st.lower(0).root()).unwrap();
        assert_eq!(merged.f_blocks, top.f_blocks);
        assert_eq!(merged.f_bsize, top.f_bsize);
        assert_ne!(merged.f_flag & libc::ST_RDONLY, 0, "ST_RDONLY missing");
    });
}

#[test]
fn a_single_lower_is_a_valid_read_only_union() {
    // Known difference: kernel overlayfs refuses a single lowerdir without an upper ("at
    // least 2 lowerdir are needed"); unionfs-rs serves it, e.g. to view one OCI layer.
    unionfs_only(|b| {
        let st = Stack::read_only(1);
        st.lower(0).file("f", "only");
        st.lower(0).file(".wh.g", "");
        let m = st.mount(b);
        assert_eq!(read_string(&m.path("f")).unwrap(), "only");
        // A whiteout in the bottom layer hides nothing, and still never shows.
        assert_eq!(names(m.root()).unwrap(), ["f"]);
        expect_errno(File::create(m.path("x")), libc::EROFS, "create");
    });
}
