//! A foreground `unionfs-rs` daemon serving one mount: the only way the tests start the binary
//! for a mount, whether through a [`super::Stack`] or on layer directories a test lays out
//! itself (crash, full upper, hostile input).
//!
//! Invariants: [`Daemon::spawn`] returns only once the FUSE mount is live (or fails with the
//! daemon's output and leaves nothing behind); dropping a `Daemon` unmounts and reaps it, also
//! while the test panics; a daemon that outlives `UNIONFS_TEST_TIMEOUT` (seconds, default 120)
//! is killed by a watchdog, so a hung FUSE request fails the test with ENOTCONN instead of
//! blocking `cargo test` forever. The daemon's stdout and stderr go to a log file next to the
//! mount point, kept with the test's directory when the test fails.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::mounts::{detach, is_mounted, unmount, wait_for_mount};
use super::{Backend, UNIONFS_BIN};

/// `unionfs-rs -f LOWER[:LOWER...] UPPER MERGED`: our own grammar, the work directory left at
/// its default (`UPPER/.unionfs-rs-work`). Callers add options with `.args`.
pub fn unionfs_command(lowers: &[PathBuf], upper: &Path, merged: &Path) -> Command {
    let list = std::env::join_paths(lowers).unwrap_or_else(|e| panic!("lower list: {e}"));
    let mut cmd = Command::new(UNIONFS_BIN);
    cmd.arg("-f").arg(list).arg(upper).arg(merged);
    cmd
}

/// The foreground daemon of one unionfs-rs mount; unmounted and reaped on drop.
pub struct Daemon {
    pub merged: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    watchdog: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl Daemon {
    /// Runs `cmd` (a `unionfs-rs -f ...` command line) with its output in `log`, and waits for
    /// its mount at `merged`.
    pub fn spawn(mut cmd: Command, merged: &Path, log: &Path) -> Result<Daemon, String> {
        let logf = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let out = logf.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(logf)
            .spawn()
            .map_err(|e| format!("spawn {UNIONFS_BIN}: {e}"))?;
        let mut daemon = Daemon {
            merged: merged.to_path_buf(),
            child: Some(child),
            log: log.to_path_buf(),
            watchdog: None,
        };
        if let Err(why) = daemon.wait_for_mount() {
            daemon.stop();
            return Err(format!(
                "unionfs-rs mount at {} not live: {why}\n--- daemon output ---\n{}",
                merged.display(),
                daemon.output()
            ));
        }
        daemon.watchdog = Some(spawn_watchdog(daemon.pid(), merged));
        Ok(daemon)
    }

    /// `unionfs-rs -f [extra] LOWERS UPPER MERGED` with the default work directory; the log is
    /// `daemon.log` beside `merged`. Panics when the mount does not come up.
    pub fn start(lowers: &[PathBuf], upper: &Path, merged: &Path, extra: &[&str]) -> Daemon {
        let mut cmd = unionfs_command(lowers, upper, merged);
        cmd.args(extra);
        let log = merged.with_file_name("daemon.log");
        Daemon::spawn(cmd, merged, &log).unwrap_or_else(|e| panic!("{e}"))
    }

    fn wait_for_mount(&mut self) -> Result<(), String> {
        match self.child.as_mut() {
            Some(child) => wait_for_mount(&self.merged, child),
            None => Err("no daemon".into()),
        }
    }

    /// The daemon's pid (0 once it has been reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the daemon printed so far.
    pub fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test when the daemon has exited (or was reaped already).
    pub fn assert_alive(&mut self) {
        let running = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        assert!(
            running,
            "the daemon died\n--- daemon output ---\n{}",
            self.output()
        );
    }

    /// SIGKILL, as a crash would; reaps the daemon and detaches its dead mount, which must then
    /// be gone.
    pub fn kill(&mut self) {
        self.stop_watchdog();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        detach(&self.merged);
        assert!(!is_mounted(&self.merged), "dead mount still attached");
    }

    /// Stops the watchdog, unmounts and reaps the daemon, killing it if it does not exit.
    /// Returns the daemon's exit status, None when it had to be killed (or was reaped already).
    /// A daemon already killed and reaped is not touched again: the mount point may by now
    /// serve another daemon (a remount after [`Daemon::kill`]).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.stop_watchdog();
        let mut child = self.child.take()?;
        unmount(&self.merged, Backend::UnionFs);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        eprintln!("unionfs-rs daemon exited with {status}");
                    }
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break,
            }
        }
        eprintln!("unionfs-rs daemon did not exit after unmount; killing it");
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    fn stop_watchdog(&mut self) {
        if let Some((tx, handle)) = self.watchdog.take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn mount_timeout() -> Duration {
    let secs = std::env::var("UNIONFS_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

/// Kills a daemon that outlives the timeout: a hung FUSE request would otherwise block the
/// test (and `cargo test`) forever; killed, the kernel fails pending requests with ENOTCONN.
/// The pid stays valid until the guard reaps the child, which happens after this thread ends.
fn spawn_watchdog(pid: u32, merged: &Path) -> (mpsc::Sender<()>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let merged = merged.to_path_buf();
    let handle = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(mount_timeout()) {
            eprintln!(
                "WATCHDOG: unionfs-rs at {} still mounted after {:?}; killing daemon {pid}",
                merged.display(),
                mount_timeout()
            );
            // SAFETY: plain kill(2) of our own unreaped child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    (tx, handle)
}
