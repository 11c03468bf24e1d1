//! Container engines unmount a union and mount a new one at the same path at once (Docker
//! does for every container start). The old daemon, ending, must never take the new mount
//! down with it (fuser 0.18 unmounts by path when its session ends; see `mount`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn mount(lower: &Path, upper: &Path, merged: &Path) {
    let out = Command::new(UNIONFS_BIN)
        .arg(lower)
        .arg(upper)
        .arg(merged)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// umount(8), as a container engine does; it must succeed.
fn umount(merged: &Path) {
    let status = Command::new("umount").arg(merged).status().unwrap();
    assert!(status.success(), "umount {}: {status}", merged.display());
}

#[test]
fn a_new_mount_at_the_same_path_survives_the_old_daemons_exit() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (lower, merged) = (dir.path().join("lower"), dir.path().join("merged"));
    for d in [&lower, &merged] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(lower.join("f"), "x").unwrap();
    for round in 0..5 {
        let upper = dir.path().join(format!("upper{round}"));
        std::fs::create_dir(&upper).unwrap();
        mount(&lower, &upper, &merged);
        umount(&merged);
        let next = dir.path().join(format!("next{round}"));
        std::fs::create_dir(&next).unwrap();
        mount(&lower, &next, &merged);
        // The first daemon notices its unmount and exits meanwhile.
        std::thread::sleep(Duration::from_millis(700));
        assert!(
            is_mounted(&merged),
            "round {round}: the new mount was taken down"
        );
        assert_eq!(read_string(&merged.join("f")).unwrap(), "x");
        umount(&merged);
    }
}
