//! Directories spanning many layers: lookups use the per-directory name index (see `index`),
//! which must stay exact as the directory changes under it: names created, copied up,
//! deleted and re-created between lookups, with and without a readdir filling the index.

mod common;

use std::fs;

use common::*;

const LAYERS: usize = 40;

fn stack() -> Stack {
    let st = Stack::with_lowers(LAYERS);
    for i in 0..LAYERS {
        st.lower(i)
            .file(&format!("d/only{i}"), format!("layer {i}"));
    }
    st.lower(LAYERS - 1).file("d/shared", "bottom");
    st.lower(3).file("d/shared", "layer 3");
    st.lower(7).whiteout("d/only9");
    st
}

fn check(m: &Mount<'_>, list_first: bool) {
    if list_first {
        assert_eq!(
            names(&m.path("d")).unwrap().len(),
            LAYERS,
            "only9 is whited out, shared added"
        );
    }
    assert_eq!(read_string(&m.path("d/shared")).unwrap(), "layer 3");
    assert_eq!(
        read_string(&m.path(&format!("d/only{}", LAYERS - 1))).unwrap(),
        format!("layer {}", LAYERS - 1)
    );
    expect_errno(
        fs::metadata(m.path("d/only9")),
        libc::ENOENT,
        "whited out in layer 7",
    );
    expect_errno(
        fs::metadata(m.path("d/never")),
        libc::ENOENT,
        "listed nowhere",
    );
    // Create, look up, copy up, delete, re-create: every answer follows the change.
    fs::write(m.path("d/new"), "new").unwrap();
    assert_eq!(read_string(&m.path("d/new")).unwrap(), "new");
    fs::write(m.path("d/only5"), "changed").unwrap();
    assert_eq!(read_string(&m.path("d/only5")).unwrap(), "changed");
    fs::remove_file(m.path("d/shared")).unwrap();
    expect_errno(fs::metadata(m.path("d/shared")), libc::ENOENT, "deleted");
    fs::write(m.path("d/only9"), "back").unwrap();
    assert_eq!(read_string(&m.path("d/only9")).unwrap(), "back");
    if list_first {
        let listed = names(&m.path("d")).unwrap();
        assert!(listed.contains(&"new".to_string()) && listed.contains(&"only9".to_string()));
        assert!(!listed.contains(&"shared".to_string()));
    }
}

#[test]
fn lookups_in_a_forty_layer_directory_follow_every_change() {
    both_backends(|b| {
        let st = stack();
        let m = st.mount(b);
        check(&m, false);
        tree(&m.path("d"))
    });
}

#[test]
fn lookups_after_a_readdir_follow_every_change() {
    both_backends(|b| {
        let st = stack();
        let m = st.mount(b);
        check(&m, true);
        tree(&m.path("d"))
    });
}
