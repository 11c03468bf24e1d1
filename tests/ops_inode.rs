//! Inode numbers and link counts through a real mount: st_ino unique within the mount, stable
//! across copy-up (and remount), shared by hard links inside a layer, one st_dev for the
//! whole view, directory st_nlink that makes sense.

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;

/// (relative path, st_ino) of every entry below `root`, directories included.
fn inodes(root: &Path) -> Vec<(String, u64)> {
    tree(root)
        .into_iter()
        .map(|(rel, _)| {
            let ino = fs::symlink_metadata(root.join(&rel)).unwrap().ino();
            (rel, ino)
        })
        .collect()
}

/// A stack where equal inode numbers in different layers are likely: the same shape in each.
fn layered(st: &Stack) {
    for (i, l) in [st.upper(), st.lower(0), st.lower(1)].iter().enumerate() {
        l.file(&format!("only{i}"), "x");
        l.file("same", "x");
        l.file(&format!("d/f{i}"), "x");
        l.symlink(&format!("s{i}"), "same");
        l.dir(&format!("sub{i}"));
    }
    st.lower(1).hardlink("only2", "link2");
}

#[test]
fn inode_numbers_are_unique_in_the_view() {
    both_backends(|b| {
        let st = Stack::new();
        layered(&st);
        let m = st.mount(b);
        let mut seen: HashMap<u64, String> = HashMap::new();
        let root = fs::metadata(m.root()).unwrap().ino();
        seen.insert(root, "/".into());
        for (rel, ino) in inodes(m.root()) {
            if let Some(other) = seen.insert(ino, rel.clone()) {
                let pair = [other.as_str(), rel.as_str()];
                assert!(
                    pair == ["link2", "only2"] || pair == ["only2", "link2"],
                    "{other} and {rel} share st_ino {ino}"
                );
            }
        }
        let dev = fs::metadata(m.root()).unwrap().dev();
        for (rel, _) in tree(m.root()) {
            assert_eq!(
                fs::symlink_metadata(m.path(&rel)).unwrap().dev(),
                dev,
                "st_dev of {rel}"
            );
        }
    });
}

#[test]
fn copy_up_keeps_the_inode_number() {
    both_backends(|b| {
        let st = Stack::new();
        layered(&st);
        st.lower(0).file("dir_to_chmod/x", "x");
        let m = st.mount(b);
        let before = inodes(m.root());
        // Copy up a file by writing, one by chmod, a symlink by lchown, a directory by chmod.
        fs::write(m.path("only1"), "changed").unwrap();
        fs::set_permissions(m.path("d/f1"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::lchown(m.path("s1"), Some(5), None).unwrap();
        fs::set_permissions(m.path("dir_to_chmod"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(m.path("d/f2"), "changed").unwrap();
        for n in ["only1", "d/f1", "s1", "dir_to_chmod", "d/f2"] {
            assert!(st.upper().exists(n), "{n} not copied up");
        }
        let after = inodes(m.root());
        assert_eq!(before, after, "st_ino changed by copy-up");
        drop(m);
        // Both keep the number across a remount too (kernel: trusted.overlay.origin).
        let m = st.mount(b);
        assert_eq!(inodes(m.root()), after, "st_ino changed by remount");
    });
}

use std::os::unix::fs::PermissionsExt;

#[test]
fn hard_links_in_a_layer_share_the_inode_number() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0)
            .file("a", "data")
            .hardlink("a", "b")
            .hardlink("a", "sub/c");
        st.upper().file("u1", "u").hardlink("u1", "u2");
        let m = st.mount(b);
        let ino = |n: &str| fs::metadata(m.path(n)).unwrap().ino();
        let nlink = |n: &str| fs::metadata(m.path(n)).unwrap().nlink();
        assert_eq!(ino("a"), ino("b"));
        assert_eq!(ino("a"), ino("sub/c"));
        assert_eq!(ino("u1"), ino("u2"));
        assert_ne!(ino("a"), ino("u1"));
        let counts = (nlink("a"), nlink("u1"));
        assert_eq!(counts, (3, 2));
        // d_ino of the links agrees too.
        let sub = sys::read_all_dirents(&m.path("sub"), 4096).unwrap();
        let c = sub.iter().find(|e| e.name == "c").unwrap();
        assert_eq!(c.ino, ino("a"), "d_ino of a hard link");
        counts
    });
}

/// Reads `first` then `second` through a fresh mount: the order of lookups must not matter.
fn read_in_order(st: &Stack, b: Backend, first: &str, second: &str) -> (String, String) {
    let m = st.mount(b);
    let x = read_string(&m.path(first)).unwrap();
    let y = read_string(&m.path(second)).unwrap();
    (x, y)
}

#[test]
fn copied_up_hard_links_stay_consistent() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("a", "data").hardlink("a", "b");
        let m = st.mount(b);
        fs::write(m.path("a"), "changed").unwrap();
        assert_eq!(read_string(&m.path("a")).unwrap(), "changed");
        // The kernel without an index breaks the link at copy-up (b keeps "data");
        // unionfs-rs may keep a and b together. Either way equal st_ino must mean one file:
        // tar and rsync would merge them otherwise.
        let (ia, ib) = (
            fs::metadata(m.path("a")).unwrap(),
            fs::metadata(m.path("b")).unwrap(),
        );
        let b_now = read_string(&m.path("b")).unwrap();
        if ia.ino() == ib.ino() {
            assert_eq!(
                b_now,
                "changed",
                "a and b share st_ino {} but differ",
                ia.ino()
            );
        }
        drop(m);
        // After a remount, what a shows must not depend on which name is looked up first.
        let (b1, a1) = read_in_order(&st, b, "b", "a");
        let (a2, b2) = read_in_order(&st, b, "a", "b");
        assert_eq!(a1, "changed", "a lost its data when b was looked up first");
        assert_eq!(a2, "changed");
        assert_eq!(b1, b2, "b depends on lookup order");
    });
}

#[test]
fn new_entries_get_fresh_inode_numbers() {
    both_backends(|b| {
        let st = Stack::new();
        layered(&st);
        let m = st.mount(b);
        for i in 0..20 {
            fs::write(m.path(&format!("new{i}")), "n").unwrap();
            fs::create_dir(m.path(&format!("newdir{i}"))).unwrap();
            if i % 2 == 0 {
                fs::remove_file(m.path(&format!("new{i}"))).unwrap();
            }
        }
        let all = inodes(m.root());
        let mut inos: Vec<u64> = all
            .iter()
            .filter(|(n, _)| n != "link2")
            .map(|(_, i)| *i)
            .collect();
        let n = inos.len();
        inos.sort();
        inos.dedup();
        assert_eq!(inos.len(), n, "duplicate st_ino among {all:?}");
    });
}

#[test]
fn directory_link_counts() {
    both_backends(|b| {
        let st = Stack::new();
        st.upper().dir("updir/a").dir("updir/b");
        st.lower(0).dir("lowdir/a").dir("lowdir/b").dir("lowdir/c");
        st.lower(0).dir("merged/a");
        st.lower(1).dir("merged/b");
        let m = st.mount(b);
        let nlink = |n: &str| fs::metadata(m.path(n)).unwrap().nlink();
        // Directories that live in one layer report that layer's count: 2 + subdirectories.
        let plain = (nlink("updir"), nlink("lowdir"));
        assert_eq!(plain, (4, 5));
        // A merged directory: the kernel reports 1 ("pacifies find"); unionfs-rs may count
        // the merged subdirectories. Either is accepted, nothing else.
        let merged = nlink("merged");
        assert!(merged == 1 || merged == 4, "merged dir nlink {merged}");
        fs::create_dir(m.path("updir/c")).unwrap();
        fs::remove_dir(m.path("updir/a")).unwrap();
        fs::create_dir(m.path("updir/d")).unwrap();
        assert_eq!(nlink("updir"), 5, "nlink after mkdir/rmdir");
        plain
    });
}

#[test]
fn a_removed_object_still_in_use_keeps_its_inode_number_to_itself() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("keep", "x");
        let m = st.mount(b);
        // A process whose cwd is a directory that then goes away keeps the kernel holding
        // that inode. New objects made meanwhile must not get its number: the kernel would
        // take them for the held one (or mark the held one bad).
        fs::create_dir(m.path("gone")).unwrap();
        let held = fs::metadata(m.path("gone")).unwrap().ino();
        let mut holder = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(m.path("gone"))
            .spawn()
            .unwrap();
        fs::remove_dir(m.path("gone")).unwrap();
        let mut reused = Vec::new();
        for i in 0..20 {
            let dir = m.path(&format!("new{i}"));
            fs::create_dir(&dir).unwrap();
            fs::write(dir.join("f"), "in the new directory").unwrap();
            let file = fs::metadata(dir.join("f")).unwrap().ino();
            for ino in [fs::metadata(&dir).unwrap().ino(), file] {
                if ino == held {
                    reused.push(format!("new{i}"));
                }
            }
        }
        let _ = holder.kill();
        let _ = holder.wait();
        assert!(reused.is_empty(), "took the held inode number: {reused:?}");
        names(m.root()).unwrap().len()
    });
}
