//! The metrics view of a running mount: `unionfs-rs stats MERGED [--json]` reads what the
//! daemon counted (copy-ups, bytes, whiteouts, index hits) through the mount itself.

mod common;

use std::fs;
use std::process::Command;

use common::*;

fn stats(m: &Mount<'_>, json: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_unionfs-rs"));
    cmd.arg("stats").arg(m.root());
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "stats failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn field(report: &str, name: &str) -> String {
    report
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {report}"))
        .to_string()
}

#[test]
fn stats_count_copy_ups_and_whiteouts() {
    unionfs_only(|b| {
        let st = Stack::new();
        st.lower(0)
            .file("big", vec![7u8; 100_000])
            .file("gone", "x");
        let m = st.mount(b);
        let before = stats(&m, false);
        assert_eq!(field(&before, "copy_ups"), "0");
        fs::OpenOptions::new()
            .append(true)
            .open(m.path("big"))
            .unwrap();
        fs::remove_file(m.path("gone")).unwrap();
        let after = stats(&m, false);
        assert_eq!(field(&after, "copy_ups"), "1");
        assert_eq!(field(&after, "copy_up_bytes"), "100000");
        assert_eq!(field(&after, "whiteouts"), "1");
        let json = stats(&m, true);
        assert!(json.contains("\"copy_ups\":1"), "{json}");
    });
}

#[test]
fn stats_of_a_plain_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_unionfs-rs"))
        .arg("stats")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not a unionfs-rs mount"), "{err}");
}
