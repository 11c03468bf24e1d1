//! A file replaced by rename while someone still holds it (an open file, or only an `O_PATH`
//! fd, which pins the kernel's inode without the daemon opening anything): the old file's
//! inode number must not be handed to a new file while the kernel still holds the old inode,
//! or the holder sees another file's attributes, readers get torn data, or EIO.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

use common::*;

fn content(round: usize) -> Vec<u8> {
    format!("version {round:06} ")
        .repeat(50 + round % 7)
        .into_bytes()
}

#[test]
fn holders_of_a_replaced_file_keep_the_old_one() {
    both_backends(|b| {
        let st = Stack::new();
        st.upper().file("v", content(0));
        let m = st.mount(b);
        let mut held = Vec::new();
        for round in 1..80 {
            let before = content(round - 1);
            let mut reader = File::open(m.path("v")).unwrap();
            let pinned = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH)
                .open(m.path("v"))
                .unwrap();
            fs::write(m.path("tmp"), content(round)).unwrap();
            fs::rename(m.path("tmp"), m.path("v")).unwrap();
            drop(reader.try_clone().unwrap());
            // New files are likely to get the freed inode numbers of earlier versions.
            for i in 0..3 {
                fs::write(m.path(&format!("other{round}_{i}")), "x").unwrap();
            }
            let mut got = Vec::new();
            reader.read_to_end(&mut got).unwrap();
            assert_eq!(
                got, before,
                "round {round}: the open file changed under its reader"
            );
            assert_eq!(
                fs::read(m.path("v")).unwrap(),
                content(round),
                "round {round}"
            );
            drop(reader);
            held.push((pinned, before.len() as u64));
            // Every earlier version is still held: none may have turned into a newer file.
            for (i, (fd, len)) in held.iter().enumerate() {
                let now = fd
                    .metadata()
                    .unwrap_or_else(|e| panic!("round {round}: holder {i}: {e}"));
                assert_eq!(
                    now.len(),
                    *len,
                    "round {round}: holder {i} sees another file"
                );
            }
        }
        held.len()
    });
}
