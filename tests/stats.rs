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

/// `max_nodes`: past it, the daemon asks the kernel to drop its oldest names, so the node
/// table (the daemon's memory) stays bounded however much is walked; everything stays
/// reachable (dropped names are looked up again) and an open file keeps working.
#[test]
fn the_node_table_stays_bounded_and_reaped_names_still_work() {
    unionfs_only(|b| {
        let st = Stack::new();
        for d in 0..6 {
            st.lower(0).dir(&format!("d{d}"));
            for f in 0..1000 {
                st.lower(0).file(&format!("d{d}/f{f}"), format!("{d}/{f}"));
            }
        }
        let m = st
            .mounter(b)
            .unionfs_arg("-o")
            .unionfs_arg("max_nodes=1500")
            .mount();
        let mut held = fs::File::open(m.path("d0/f0")).unwrap();
        for d in 0..6 {
            for f in 0..1000 {
                fs::symlink_metadata(m.path(&format!("d{d}/f{f}"))).unwrap();
            }
        }
        // The reaper runs twice a second; the FORGETs follow its invalidations.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let nodes = loop {
            let report = stats(&m, false);
            let nodes: usize = field(&report, "nodes").parse().unwrap();
            if nodes <= 1500 || std::time::Instant::now() > deadline {
                break nodes;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        assert!(nodes <= 1500, "{nodes} nodes after walking 6000 names");
        assert_ne!(field(&stats(&m, false), "nodes_reaped"), "0");
        for d in 0..6 {
            for f in (0..1000).step_by(7) {
                let got = fs::read_to_string(m.path(&format!("d{d}/f{f}"))).unwrap();
                assert_eq!(got, format!("{d}/{f}"));
            }
        }
        let mut content = String::new();
        std::io::Read::read_to_string(&mut held, &mut content).unwrap();
        assert_eq!(content, "0/0");
        fs::write(m.path("d5/f999"), "changed").unwrap();
        assert_eq!(fs::read_to_string(m.path("d5/f999")).unwrap(), "changed");
    });
}
