//! Namespace operations through a real mount: mkdir, rmdir, unlink, symlink, link, mknod and
//! rename (incl. renameat2 NOREPLACE/EXCHANGE) in every layer position, what each leaves in
//! the upper (whiteouts only where a lower still has the name, opaque directories over deleted
//! ones), directory times, and fstat of an unlinked open file.

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use common::*;

const NOREPLACE: u32 = libc::RENAME_NOREPLACE;
const EXCHANGE: u32 = libc::RENAME_EXCHANGE;

/// Names in every position, files and directories.
fn positions(st: &Stack) {
    st.upper().file("up", "u");
    st.lower(0).file("low", "l");
    st.lower(1).file("bottom", "b");
    st.lower(0).file("both", "lower");
    st.upper().file("both", "upper");
    st.lower(0).file("gone", "g");
    st.upper().whiteout("gone");
    st.lower(1).file("opq/hidden", "h");
    st.upper().opaque("opq", Opaque::Trusted);
    st.upper().file("opq/seen", "s");
    st.upper().dir("updir");
    st.lower(0).dir("lowdir");
    st.lower(0).file("fulldir/x", "x");
    st.lower(1).file("merged/a", "a");
    st.upper().file("merged/b", "b");
}

#[test]
fn mkdir_in_every_position() {
    both_backends(|b| {
        let st = Stack::new();
        positions(&st);
        st.lower(0).file("deleted/child", "c");
        st.upper().whiteout("deleted");
        let m = st.mount(b);
        let mk = |n: &str| errno(&fs::DirBuilder::new().mode(0o750).create(m.path(n)));
        let res: Vec<(&str, i32)> = [
            "new",
            "up",
            "low",
            "updir",
            "lowdir",
            "gone",
            "deleted",
            "lowdir/sub",
            "opq/hidden",
        ]
        .iter()
        .map(|n| (*n, mk(n)))
        .collect();
        // Re-created over a deleted directory: opaque, the lower child stays hidden.
        assert_eq!(names(&m.path("deleted")).unwrap(), Vec::<String>::new());
        assert!(
            st.upper().is_opaque("deleted"),
            "dir over a whiteout not opaque"
        );
        assert!(
            st.upper().is_opaque("gone"),
            "dir over a whited-out file not opaque"
        );
        // Where nothing was deleted, no opaque marker is needed.
        assert!(!st.upper().is_opaque("new"), "fresh dir marked opaque");
        assert!(
            !st.upper().is_opaque("lowdir"),
            "copied-up parent marked opaque"
        );
        assert_eq!(st.upper().stat("new").mode() & 0o7777, 0o750);
        assert_eq!(attr(&m.path("lowdir/sub")).unwrap().perm, 0o750);
        res
    });
}

#[test]
fn rmdir_in_every_position() {
    both_backends(|b| {
        let st = Stack::new();
        positions(&st);
        st.lower(1).file("allgone/a", "a");
        st.lower(0).file("allgone/b", "b");
        st.lower(0).file("opqfull/x", "x");
        st.upper().opaque("opqfull", Opaque::Trusted);
        let m = st.mount(b);
        // Empty a merged dir entry by entry first: rmdir must then see it as empty.
        fs::remove_file(m.path("allgone/a")).unwrap();
        fs::remove_file(m.path("allgone/b")).unwrap();
        let res: Vec<(&str, i32)> = [
            "updir", "lowdir", "fulldir", "merged", "allgone", "opqfull", "low", "gone", "missing",
        ]
        .iter()
        .map(|n| (*n, errno(&fs::remove_dir(m.path(n)))))
        .collect();
        assert_eq!(st.upper().entry("updir"), Entry::Absent, "upper-only dir");
        for n in ["lowdir", "allgone", "opqfull"] {
            assert!(st.upper().is_whiteout(n), "no whiteout for removed {n}");
        }
        assert!(
            !names(m.root()).unwrap().contains(&"allgone".into()),
            "allgone still listed"
        );
        res
    });
}

#[test]
fn unlink_in_every_position() {
    both_backends(|b| {
        let st = Stack::new();
        positions(&st);
        st.lower(1).file("opq/seen", "hidden lower twin");
        let m = st.mount(b);
        let res: Vec<(&str, i32)> = [
            "up",
            "low",
            "bottom",
            "both",
            "gone",
            "opq/seen",
            "opq/hidden",
            "lowdir",
            "missing",
        ]
        .iter()
        .map(|n| (*n, errno(&fs::remove_file(m.path(n)))))
        .collect();
        assert_eq!(st.upper().entry("up"), Entry::Absent, "upper-only file");
        for n in ["low", "bottom", "both"] {
            assert!(st.upper().is_whiteout(n), "no whiteout for {n}");
        }
        // Inside an opaque directory no lower name is visible, so no whiteout is needed.
        assert_eq!(
            st.upper().entry("opq/seen"),
            Entry::Absent,
            "whiteout in opaque dir"
        );
        assert_eq!(st.lower(0).read("low"), b"l", "lower modified");
        res
    });
}

#[test]
fn unlink_recreate_unlink_cycles() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("f", "lower");
        let m = st.mount(b);
        for round in 0..3 {
            fs::remove_file(m.path("f")).unwrap();
            expect_errno(fs::read(m.path("f")), libc::ENOENT, "read after unlink");
            assert!(st.upper().is_whiteout("f"), "round {round}: no whiteout");
            fs::write(m.path("f"), format!("round {round}")).unwrap();
            assert_eq!(read_string(&m.path("f")).unwrap(), format!("round {round}"));
            assert!(!st.upper().is_whiteout("f"), "round {round}: whiteout kept");
        }
        names(m.root()).unwrap()
    });
}

#[test]
fn symlink_in_every_position() {
    both_backends(|b| {
        let st = Stack::new();
        positions(&st);
        let m = st.mount(b);
        let res: Vec<(&str, i32)> = ["new", "up", "low", "gone", "lowdir/s", "opq/hidden"]
            .iter()
            .map(|n| (*n, errno(&std::os::unix::fs::symlink("tgt", m.path(n)))))
            .collect();
        for n in ["new", "gone", "lowdir/s", "opq/hidden"] {
            assert_eq!(
                fs::read_link(m.path(n)).unwrap().to_str(),
                Some("tgt"),
                "{n}"
            );
            assert_eq!(
                st.upper().entry(n),
                Entry::Symlink("tgt".into()),
                "upper {n}"
            );
        }
        res
    });
}

#[test]
fn link_in_every_position() {
    both_backends(|b| {
        let st = Stack::new();
        positions(&st);
        let m = st.mount(b);
        let ln = |from: &str, to: &str| errno(&fs::hard_link(m.path(from), m.path(to)));
        let res = vec![
            ln("up", "up2"),
            ln("low", "low2"),
            ln("bottom", "lowdir/bottom2"),
            ln("gone", "gone2"),
            ln("low", "both"),
            ln("lowdir", "dir2"),
            ln("up", "gone"),
        ];
        assert_eq!(res, [0, 0, 0, libc::ENOENT, libc::EEXIST, libc::EPERM, 0]);
        // "up" has three names: up, up2 and gone.
        for (a, c, n) in [
            ("up", "up2", 3),
            ("low", "low2", 2),
            ("bottom", "lowdir/bottom2", 2),
        ] {
            let (ma, mc) = (
                fs::metadata(m.path(a)).unwrap(),
                fs::metadata(m.path(c)).unwrap(),
            );
            assert_eq!(ma.ino(), mc.ino(), "{a} and {c} are not one inode");
            assert_eq!((ma.nlink(), mc.nlink()), (n, n), "{a} nlink");
            let (ua, uc) = (st.upper().stat(a), st.upper().stat(c));
            assert_eq!(ua.ino(), uc.ino(), "upper {a}/{c} not hard linked");
        }
        // Writing through one name shows through the other.
        fs::write(m.path("low2"), "via link").unwrap();
        assert_eq!(read_string(&m.path("low")).unwrap(), "via link");
        assert_eq!(st.lower(0).read("low"), b"l");
        assert_eq!(read_string(&m.path("gone")).unwrap(), "u");
        res
    });
}

#[test]
fn mknod_fifo_device_and_forged_whiteout() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("gone", "g");
        st.upper().whiteout("gone");
        st.lower(0).dir("d");
        let m = st.mount(b);
        let nod = |n: &str, mode: u32, dev: u64| errno(&sys::mknod(&m.path(n), mode, dev));
        let res = vec![
            nod("fifo", libc::S_IFIFO | 0o640, 0),
            nod("d/fifo", libc::S_IFIFO | 0o600, 0),
            nod("null", libc::S_IFCHR | 0o666, libc::makedev(1, 3)),
            nod("sock", libc::S_IFSOCK | 0o600, 0),
            // A 0/0 character device is the whiteout format: a user may not forge one.
            nod("forged", libc::S_IFCHR | 0o600, 0),
            nod("gone", libc::S_IFIFO | 0o600, 0),
            nod("fifo", libc::S_IFIFO | 0o600, 0),
        ];
        assert_eq!(res, [0, 0, 0, 0, libc::EPERM, 0, libc::EEXIST]);
        assert_eq!(attr(&m.path("fifo")).unwrap().kind, "fifo");
        assert_eq!(attr(&m.path("gone")).unwrap().kind, "fifo");
        assert_eq!(attr(&m.path("null")).unwrap().kind, "chardev");
        assert_eq!(st.upper().entry("forged"), Entry::Absent);
        assert_eq!(kind_of(&st.upper().stat("d/fifo")), "fifo");
        res
    });
}

#[test]
fn rename_files_in_every_position() {
    both_backends(|b| {
        let st = Stack::new();
        positions(&st);
        st.lower(1).file("lowdir/inner", "i");
        let m = st.mount(b);
        let mv = |a: &str, c: &str| errno(&fs::rename(m.path(a), m.path(c)));
        let res = vec![
            ("up->up_new", mv("up", "up_new")),
            ("low->low_new", mv("low", "low_new")),
            ("bottom->both", mv("bottom", "both")),
            (
                "lowdir/inner->updir/inner",
                mv("lowdir/inner", "updir/inner"),
            ),
            ("gone->x", mv("gone", "x")),
            ("opq/seen->gone", mv("opq/seen", "gone")),
            ("missing->y", mv("missing", "y")),
        ];
        let view = tree(m.root());
        // The old lower names are whited out; the new names hold copies.
        for old in ["low", "bottom", "lowdir/inner"] {
            assert!(st.upper().is_whiteout(old), "no whiteout at {old}");
        }
        assert_eq!(
            st.upper().entry("up"),
            Entry::Absent,
            "upper-only source left a trace"
        );
        assert_eq!(st.upper().entry("low_new"), Entry::File(b"l".to_vec()));
        assert_eq!(read_string(&m.path("both")).unwrap(), "b");
        assert_eq!(read_string(&m.path("gone")).unwrap(), "s");
        assert_eq!(st.lower(0).read("low"), b"l", "lower modified");
        (res, view)
    });
}

#[test]
fn rename_directories() {
    both_backends(|b| {
        let st = Stack::new();
        positions(&st);
        st.upper().file("updir/f", "f");
        st.upper().dir("emptyup");
        st.upper().file("fullup/x", "x");
        let m = st.mount(b);
        let mv = |a: &str, c: &str| errno(&fs::rename(m.path(a), m.path(c)));
        // Without redirect_dir a directory that exists in a lower cannot move: EXDEV, which
        // makes mv(1) fall back to copy and delete.
        let res = vec![
            ("updir->moved", mv("updir", "moved")),
            ("lowdir->x", mv("lowdir", "x")),
            ("merged->y", mv("merged", "y")),
            ("opq->z", mv("opq", "z")),
            ("moved->emptyup", mv("moved", "emptyup")),
            ("emptyup->fullup", mv("emptyup", "fullup")),
            ("emptyup->up", mv("emptyup", "up")),
            ("up->fullup", mv("up", "fullup")),
            ("emptyup->emptyup/sub", mv("emptyup", "emptyup/sub")),
        ];
        assert_eq!(read_string(&m.path("emptyup/f")).unwrap(), "f");
        (res, tree(m.root()))
    });
}

#[test]
fn renameat2_noreplace() {
    both_backends(|b| {
        let st = Stack::new();
        positions(&st);
        let m = st.mount(b);
        let mv = |a: &str, c: &str| errno(&sys::renameat2(&m.path(a), &m.path(c), NOREPLACE));
        let res = vec![
            mv("up", "low"),
            mv("up", "both"),
            mv("low", "up"),
            mv("up", "gone"),
            mv("low", "fresh"),
            mv("opq/seen", "opq/hidden"),
        ];
        assert_eq!(res, [libc::EEXIST, libc::EEXIST, libc::EEXIST, 0, 0, 0]);
        assert_eq!(read_string(&m.path("gone")).unwrap(), "u");
        assert_eq!(read_string(&m.path("fresh")).unwrap(), "l");
        (res, tree(m.root()))
    });
}

#[test]
fn renameat2_exchange() {
    both_backends(|b| {
        let st = Stack::new();
        positions(&st);
        st.upper().file("updir/f", "f");
        let m = st.mount(b);
        let xc = |a: &str, c: &str| errno(&sys::renameat2(&m.path(a), &m.path(c), EXCHANGE));
        let res = vec![
            ("low<->up", xc("low", "up")),
            ("bottom<->both", xc("bottom", "both")),
            ("up<->missing", xc("up", "missing")),
            ("up<->gone", xc("up", "gone")),
            ("updir<->low", xc("updir", "low")),
            ("lowdir<->up", xc("lowdir", "up")),
        ];
        assert_eq!(read_string(&m.path("low/f")).unwrap(), "f");
        assert_eq!(read_string(&m.path("updir")).unwrap(), "u");
        assert_eq!(read_string(&m.path("both")).unwrap(), "b");
        assert_eq!(read_string(&m.path("bottom")).unwrap(), "upper");
        assert_eq!(st.lower(1).read("bottom"), b"b", "lower modified");
        (res, tree(m.root()))
    });
}

#[test]
fn rename_whiteout_flag_is_refused() {
    both_backends(|b| {
        let st = Stack::new();
        st.upper().file("a", "a");
        let m = st.mount(b);
        // RENAME_WHITEOUT from a user would forge a whiteout; overlayfs takes only
        // NOREPLACE and EXCHANGE.
        let r = sys::renameat2(&m.path("a"), &m.path("b"), libc::RENAME_WHITEOUT);
        expect_errno(r, libc::EINVAL, "RENAME_WHITEOUT");
        assert_eq!(read_string(&m.path("a")).unwrap(), "a");
    });
}

#[test]
fn names_over_255_bytes_are_refused_everywhere() {
    both_backends(|b| {
        let st = Stack::new();
        st.upper().file("f", "f");
        st.lower(0).dir("lowdir");
        let m = st.mount(b);
        let (long, max) = (long_name(256), long_name(255));
        let l = m.path(&format!("lowdir/{long}"));
        let res = vec![
            errno(&File::create(&l)),
            errno(&fs::create_dir(&l)),
            errno(&std::os::unix::fs::symlink("f", &l)),
            errno(&fs::hard_link(m.path("f"), &l)),
            errno(&fs::rename(m.path("f"), &l)),
            errno(&sys::mknod(&l, libc::S_IFIFO | 0o600, 0)),
            errno(&File::create(m.path(&format!("lowdir/{max}")))),
        ];
        assert_eq!(res[..6], [libc::ENAMETOOLONG; 6]);
        assert_eq!(res[6], 0, "255 bytes must fit");
        res
    });
}

/// A lower directory with ancient times, so any change is a plain comparison.
fn old_dir(st: &Stack, d: &str) {
    st.lower(0).file(&format!("{d}/victim"), "v");
    st.lower(0).dir(&format!("{d}/subdir"));
    st.lower(0).times(d, OLD, OLD);
}

#[test]
fn directory_times_change_on_every_namespace_op() {
    both_backends(|b| {
        let st = Stack::new();
        let ops = [
            "create",
            "mkdir",
            "unlink",
            "rmdir",
            "symlink",
            "link",
            "rename_in",
            "rename_out",
            "mknod",
        ];
        for op in ops {
            old_dir(&st, op);
        }
        st.upper().file("src", "s");
        let m = st.mount(b);
        let p = |s: &str| m.path(s);
        File::create(p("create/new")).unwrap();
        fs::create_dir(p("mkdir/new")).unwrap();
        fs::remove_file(p("unlink/victim")).unwrap();
        fs::remove_dir(p("rmdir/subdir")).unwrap();
        std::os::unix::fs::symlink("x", p("symlink/new")).unwrap();
        fs::hard_link(p("src"), p("link/new")).unwrap();
        fs::rename(p("src"), p("rename_in/new")).unwrap();
        fs::rename(p("rename_out/victim"), p("moved")).unwrap();
        sys::mknod(&p("mknod/new"), libc::S_IFIFO | 0o600, 0).unwrap();
        for op in ops {
            let meta = fs::metadata(p(op)).unwrap();
            assert!(mtime(&meta).0 > OLD, "{op}: parent mtime unchanged");
            assert!(ctime(&meta).0 > OLD, "{op}: parent ctime unchanged");
        }
    });
}

#[test]
fn link_and_write_change_the_file_times() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("f", "x").times("f", OLD, OLD);
        st.lower(0).file("w", "x").times("w", OLD, OLD);
        let m = st.mount(b);
        let c0 = ctime(&fs::metadata(m.path("f")).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(30));
        fs::hard_link(m.path("f"), m.path("f2")).unwrap();
        let f = fs::metadata(m.path("f")).unwrap();
        assert!(ctime(&f) > c0, "link did not change ctime");
        assert_eq!(mtime(&f), (OLD, 0), "link changed mtime");
        fs::write(m.path("w"), "new").unwrap();
        let w = fs::metadata(m.path("w")).unwrap();
        assert!(
            mtime(&w).0 > OLD && ctime(&w) > c0,
            "write did not change times"
        );
    });
}

/// Opens `name`, unlinks it, and reports (fstat nlink, data still readable).
fn unlink_while_open(m: &Mount, name: &str) -> (u64, String) {
    let mut f = File::open(m.path(name)).unwrap();
    fs::remove_file(m.path(name)).unwrap();
    let nlink = sys::fstat(&f).unwrap().st_nlink;
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    (nlink, s)
}

#[test]
fn fstat_after_unlink_reports_nlink_zero() {
    both_backends(|b| {
        let st = Stack::new();
        st.upper().file("up", "upper data");
        st.lower(0).file("low", "lower data");
        let m = st.mount(b);
        let up = unlink_while_open(&m, "up");
        assert_eq!(up, (0, "upper data".to_string()));
        let low = unlink_while_open(&m, "low");
        assert_eq!(low.1, "lower data");
        // Known difference: kernel overlayfs reports the lower inode's own nlink (1) for a
        // deleted lower file that was never copied up; unionfs-rs reports 0 as POSIX says.
        if b.is_kernel() {
            assert_eq!(low.0, 1);
        } else {
            assert_eq!(low.0, 0, "fstat nlink of an unlinked lower file");
        }
        assert!(st.upper().is_whiteout("low"));
    });
}

#[test]
fn rename_across_lower_directories_copies_up_both_parents() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("a/f", "f").chmod("a", 0o711);
        st.lower(1).file("b/g", "g").chmod("b", 0o755);
        let m = st.mount(b);
        fs::rename(m.path("a/f"), m.path("b/f")).unwrap();
        assert_eq!(names(&m.path("a")).unwrap(), Vec::<String>::new());
        assert_eq!(names(&m.path("b")).unwrap(), ["f", "g"]);
        assert!(st.upper().is_whiteout("a/f"));
        assert_eq!(st.upper().stat("a").mode() & 0o7777, 0o711);
        assert_eq!(st.upper().entry("b/f"), Entry::File(b"f".to_vec()));
        // The directory is still removable once empty in the merged view.
        fs::remove_dir(m.path("a")).unwrap();
        assert!(st.upper().is_whiteout("a"));
        tree(m.root())
    });
}

#[test]
fn nested_dirs_created_deleted_and_recreated() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(1).file("t/x/y/z", "deep");
        let m = st.mount(b);
        fs::remove_dir_all(m.path("t")).unwrap();
        expect_errno(fs::metadata(m.path("t")), libc::ENOENT, "after rm -r");
        fs::create_dir_all(m.path("t/x/y")).unwrap();
        assert_eq!(names(&m.path("t/x/y")).unwrap(), Vec::<String>::new());
        assert!(st.upper().is_opaque("t"), "recreated t not opaque");
        fs::write(m.path("t/x/y/z"), "new").unwrap();
        assert!(Path::new(&st.lower(1).path("t/x/y/z")).exists());
        tree(m.root())
    });
}

#[test]
fn rename_onto_itself_or_a_hard_link_is_a_no_op() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("a", "data").hardlink("a", "b");
        st.upper().file("u", "u").hardlink("u", "v");
        let m = st.mount(b);
        let mv = |x: &str, y: &str| errno(&fs::rename(m.path(x), m.path(y)));
        // POSIX: renaming onto another link of the same file succeeds and changes nothing.
        let res = vec![mv("a", "a"), mv("a", "b"), mv("u", "v"), mv("u", "u")];
        assert_eq!(res, [0, 0, 0, 0]);
        let mut want = vec!["a", "b", "u", "v"];
        // Known difference: kernel overlayfs (no index) gives each lower link its own overlay
        // inode, so the rename copies a up over b and a disappears; unionfs-rs knows they are
        // one file and follows POSIX.
        if b.is_kernel() {
            want.remove(0);
        }
        let got: Vec<String> = tree(m.root()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(got, want);
        assert_eq!(read_string(&m.path("b")).unwrap(), "data");
    });
}

#[test]
fn unprivileged_namespace_permissions() {
    both_backends(|b| {
        let st = Stack::new();
        let user = test_user();
        st.lower(0).dir("open").chmod("open", 0o777);
        st.lower(0).dir("closed").chmod("closed", 0o755);
        st.lower(0).file("closed/f", "r");
        st.lower(0).file("sticky/roots", "r");
        st.lower(0).chmod("sticky", 0o1777);
        st.lower(0)
            .file("sticky/mine", "m")
            .chown("sticky/mine", user.uid, user.gid);
        let m = st.mount(b);
        let p = |n: &str| m.path(n);
        let res = as_user(user, || {
            vec![
                ("create in 0777", errno(&File::create(p("open/new")))),
                ("create in 0755", errno(&File::create(p("closed/new")))),
                ("unlink in 0755", errno(&fs::remove_file(p("closed/f")))),
                ("mkdir in 0755", errno(&fs::create_dir(p("closed/d")))),
                (
                    "rename out of 0755",
                    errno(&fs::rename(p("closed/f"), p("open/f"))),
                ),
                (
                    "unlink other's in sticky",
                    errno(&fs::remove_file(p("sticky/roots"))),
                ),
                (
                    "unlink own in sticky",
                    errno(&fs::remove_file(p("sticky/mine"))),
                ),
                (
                    "rename other's in sticky",
                    errno(&fs::rename(p("sticky/roots"), p("sticky/x"))),
                ),
            ]
        });
        let want = [
            0,
            libc::EACCES,
            libc::EACCES,
            libc::EACCES,
            libc::EACCES,
            libc::EPERM,
            0,
            libc::EPERM,
        ];
        let got: Vec<i32> = res.iter().map(|r| r.1).collect();
        assert_eq!(got, want, "{res:?}");
        assert_eq!(
            fs::metadata(p("open/new")).unwrap().uid(),
            user.uid,
            "owner of a new file"
        );
        assert_eq!(
            st.upper().stat("open/new").uid(),
            user.uid,
            "owner in the upper"
        );
        assert!(
            !st.upper().exists("closed/f"),
            "a refused unlink left a trace"
        );
        res
    });
}

#[test]
fn racing_creates_and_unlinks_have_one_winner() {
    both_backends(|b| {
        let st = Stack::new();
        for i in 0..20 {
            st.lower(0).file(&format!("victim{i}"), "v");
        }
        let m = st.mount(b);
        let threads = 4;
        let barrier = std::sync::Barrier::new(threads);
        let results = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    barrier.wait();
                    for i in 0..20 {
                        let c = fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(m.path(&format!("new{i}")));
                        let u = fs::remove_file(m.path(&format!("victim{i}")));
                        let d = fs::create_dir(m.path(&format!("dir{i}")));
                        results
                            .lock()
                            .unwrap()
                            .push((i, errno(&c), errno(&u), errno(&d)));
                    }
                });
            }
        });
        let results = results.into_inner().unwrap();
        for i in 0..20 {
            let mine: Vec<_> = results.iter().filter(|r| r.0 == i).collect();
            let wins = |pick: fn(&&(i32, i32, i32, i32)) -> i32| {
                mine.iter().filter(|r| pick(r) == 0).count()
            };
            assert_eq!(wins(|r| r.1), 1, "create_new new{i}: {mine:?}");
            assert_eq!(wins(|r| r.2), 1, "unlink victim{i}: {mine:?}");
            assert_eq!(wins(|r| r.3), 1, "mkdir dir{i}: {mine:?}");
            assert!(st.upper().is_whiteout(&format!("victim{i}")));
        }
        names(m.root()).unwrap().len()
    });
}

#[test]
fn an_upper_dir_moved_over_a_deleted_dir_does_not_merge_with_it() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(1).file("p/d/old", "lower");
        st.lower(1).file("q/old", "lower");
        st.upper().file("src/x", "x");
        st.upper().file("src2/y", "y");
        let m = st.mount(b);
        fs::remove_dir_all(m.path("p/d")).unwrap();
        fs::remove_dir_all(m.path("q")).unwrap();
        // The moved directories land where a lower directory of the same name still sits
        // under a whiteout: they must hide it (be opaque), not merge with it.
        fs::rename(m.path("src"), m.path("p/d")).unwrap();
        fs::rename(m.path("src2"), m.path("q")).unwrap();
        assert_eq!(names(&m.path("p/d")).unwrap(), ["x"]);
        assert_eq!(names(&m.path("q")).unwrap(), ["y"]);
        drop(m);
        // Also after a remount, when nothing is cached.
        let m = st.mount(b);
        assert_eq!(names(&m.path("p/d")).unwrap(), ["x"]);
        assert_eq!(names(&m.path("q")).unwrap(), ["y"]);
        tree(m.root())
    });
}

#[test]
fn setgid_directories_and_mode_bits_survive_copy_up() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0)
            .dir("sgid")
            .chown("sgid", 0, 4321)
            .chmod("sgid", 0o2775);
        st.lower(0).dir("sticky").chmod("sticky", 0o1777);
        st.lower(0).file("suid", "x").chmod("suid", 0o4755);
        let m = st.mount(b);
        File::create(m.path("sgid/new")).unwrap();
        fs::create_dir(m.path("sgid/sub")).unwrap();
        File::create(m.path("sticky/new")).unwrap();
        sys::utimens(&m.path("suid"), sys::ts(OLD, 0), sys::ts(OLD, 0), false).unwrap();
        let got: Vec<(&str, Attr)> = ["sgid", "sgid/new", "sgid/sub", "sticky", "suid"]
            .iter()
            .map(|n| (*n, attr(&m.path(n)).unwrap()))
            .collect();
        // New entries in a setgid directory take its group; subdirectories inherit the bit.
        assert_eq!(got[1].1.gid, 4321, "gid of a file in a setgid dir");
        assert_eq!((got[2].1.gid, got[2].1.perm & 0o2000), (4321, 0o2000));
        assert_eq!(st.upper().stat("sgid").mode() & 0o7777, 0o2775);
        assert_eq!(st.upper().stat("sticky").mode() & 0o7777, 0o1777);
        assert_eq!(st.upper().stat("suid").mode() & 0o7777, 0o4755);
        got
    });
}
