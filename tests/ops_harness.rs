//! The harness itself: a mount guard must leave nothing mounted and no daemon running, whether
//! the test passes, panics, or the daemon dies under it. Every other test relies on this.

mod common;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

use common::*;

/// True while a process with this pid exists (zombies included).
fn process_exists(pid: u32) -> bool {
    fs::metadata(format!("/proc/{pid}")).is_ok()
}

#[test]
fn the_guard_unmounts_when_a_test_panics() {
    both_backends(|b| {
        let st = Stack::new();
        st.lower(0).file("f", "x");
        let mut seen: Option<(PathBuf, Option<u32>)> = None;
        let r = panic::catch_unwind(AssertUnwindSafe(|| {
            let m = st.mount(b);
            seen = Some((m.root().to_path_buf(), m.daemon_pid()));
            panic!("deliberate");
        }));
        assert!(r.is_err());
        let (merged, pid) = seen.unwrap();
        assert!(!is_mounted(&merged), "still mounted after a panic");
        if let Some(pid) = pid {
            assert!(!process_exists(pid), "daemon {pid} still there");
        }
    });
}

#[test]
fn fusermount_u_ends_the_daemon_with_status_0() {
    unionfs_only(|b| {
        let st = Stack::new();
        st.lower(0).file("f", "x");
        let m = st.mount(b);
        fs::write(m.path("f"), "y").unwrap();
        let status = m.unmount();
        assert!(
            status.is_some_and(|s| s.success()),
            "exit after fusermount3 -u: {status:?}"
        );
    });
}

#[test]
fn the_guard_cleans_up_after_a_dead_daemon() {
    unionfs_only(|b| {
        let st = Stack::new();
        st.lower(0).file("f", "x");
        let m = st.mount(b);
        let pid = m.daemon_pid().unwrap();
        // SAFETY: plain kill(2) of the daemon this guard owns (not yet reaped).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        // The kernel fails requests to a dead daemon instead of hanging.
        let mut tries = 0;
        while fs::read(m.path("f")).is_ok() && tries < 200 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            tries += 1;
        }
        let e = errno(&fs::read(m.path("f")));
        // ENOTCONN once the connection is gone; ECONNABORTED while it is being torn down.
        assert!(
            e == libc::ENOTCONN || e == libc::ECONNABORTED,
            "read from a dead daemon: {}",
            errname(e)
        );
        let merged = m.root().to_path_buf();
        drop(m);
        assert!(!is_mounted(&merged), "dead mount left behind");
        assert!(!process_exists(pid), "daemon not reaped");
    });
}

#[test]
fn sigterm_unmounts_a_foreground_daemon_cleanly() {
    unionfs_only(|b| {
        let st = Stack::new();
        st.lower(0).file("f", "x");
        let m = st.mount(b);
        let pid = m.daemon_pid().unwrap();
        // SAFETY: plain kill(2) of the daemon this guard owns.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while is_mounted(m.root()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!is_mounted(m.root()), "SIGTERM did not unmount (-f)");
        let status = m.unmount();
        assert!(
            status.is_some_and(|s| s.success()),
            "exit after SIGTERM: {status:?}"
        );
    });
}
