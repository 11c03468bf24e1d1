//! Objects the kernel still holds after their name is gone: a removed file held by an `O_PATH`
//! fd (which pins the kernel's inode without the daemon opening anything), a file replaced by
//! rename. Node ids are inode numbers, and the upper's filesystem (ext4 here) hands a freed
//! number to the next new object at once: a new object with a held number would make the
//! kernel mark the held inode bad (EIO for its holder) or take the new object for it. And an
//! open of a replaced file that looked the name up before the rename must open the old file
//! (as kernel overlayfs does), not fail with ESTALE.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirEntryExt, MetadataExt, OpenOptionsExt, PermissionsExt};

use common::*;

/// Holds an object the way a path walk does: the kernel keeps the inode, the daemon has no fd.
fn hold(path: &std::path::Path) -> File {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
        .unwrap_or_else(|e| panic!("O_PATH {}: {e}", path.display()))
}

fn is_eio<T>(r: std::io::Result<T>) -> bool {
    matches!(r, Err(e) if e.raw_os_error() == Some(libc::EIO))
}

/// Inode numbers of every entry directly in `dir` (not through the mount).
fn upper_inodes(dir: &std::path::Path) -> Vec<(String, u64)> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), e.ino())
        })
        .collect()
}

#[test]
fn new_objects_never_take_the_number_of_a_removed_file_still_held() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("keep", "x");
        let m = st.mount(b);
        fs::write(m.path("gone"), "held after unlink").unwrap();
        let held = hold(&m.path("gone"));
        let held_ino = held.metadata().unwrap().ino();
        fs::remove_file(m.path("gone")).unwrap();
        // Files and directories alike: on ext4 the freed number is the first one handed out.
        for i in 0..20 {
            fs::write(m.path(&format!("f{i}")), "new").unwrap();
            fs::create_dir(m.path(&format!("d{i}"))).unwrap();
            std::os::unix::fs::symlink("keep", m.path(&format!("s{i}"))).unwrap();
        }
        let reused: Vec<String> = upper_inodes(st.upper().root())
            .into_iter()
            .filter(|&(_, ino)| ino == held_ino)
            .map(|(name, _)| name)
            .collect();
        // A reused number would have made the holder's inode bad: EIO. (Without EIO, fstat
        // works on kernel overlayfs but gives ENOENT here: the daemon keeps nothing open for an
        // unlinked file, so that deleting frees space at once; see README.)
        (reused, is_eio(held.metadata()))
    });
}

#[test]
fn a_copy_up_never_takes_the_number_of_a_removed_file_still_held() {
    both_backends(|b| {
        let st = Stack::new();
        // Hard links: a copy of one records no origin, so it shows its own upper number after
        // the next lookup; symlinks likewise where the origin xattr cannot be set.
        for i in 0..10 {
            st.lower(0).file(&format!("l{i}"), "lower data");
            st.lower(0)
                .hardlink(&format!("l{i}"), &format!("l{i}.link"));
        }
        let m = st.mount(b);
        let mut holders = Vec::new();
        let mut reused = Vec::new();
        for i in 0..10 {
            let name = format!("u{i}");
            fs::write(m.path(&name), "upper").unwrap();
            let held = hold(&m.path(&name));
            let held_ino = held.metadata().unwrap().ino();
            fs::remove_file(m.path(&name)).unwrap();
            fs::set_permissions(m.path(&format!("l{i}")), fs::Permissions::from_mode(0o640))
                .unwrap();
            let copy_ino = fs::symlink_metadata(st.upper().path(&format!("l{i}")))
                .unwrap()
                .ino();
            if copy_ino == held_ino {
                reused.push(i);
            }
            holders.push(held);
        }
        let bad = holders.iter().filter(|h| is_eio(h.metadata())).count();
        (reused, bad)
    });
}

#[test]
fn an_open_of_a_file_replaced_by_rename_opens_the_old_file() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("from_lower", "lower version");
        let m = st.mount(b);
        fs::write(m.path("v"), "version 0").unwrap();
        let mut seen = Vec::new();
        for name in ["v", "from_lower"] {
            for round in 1..4 {
                // The holder stands for a reader that looked the name up just before a rename
                // replaced it; opening through it sends OPEN for the old node.
                let held = hold(&m.path(name));
                fs::write(m.path("tmp"), format!("version {round}")).unwrap();
                fs::rename(m.path("tmp"), m.path(name)).unwrap();
                let mut old = String::new();
                let reopened = File::open(format!("/proc/self/fd/{}", held.as_raw_fd()))
                    .and_then(|mut f| f.read_to_string(&mut old));
                let size = held.metadata().map(|md| md.len());
                seen.push((
                    name,
                    reopened.map(|_| old).map_err(|e| e.raw_os_error()),
                    size.map_err(|e| e.raw_os_error()),
                    fs::read_to_string(m.path(name)).unwrap(),
                ));
            }
        }
        seen
    });
}
