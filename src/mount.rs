//! Mounting and serving one union: environment checks, the FUSE session, signals, daemon mode.
//!
//! Order of events, chosen so that a failure leaves nothing behind: the environment is
//! checked (`/dev/fuse`, and `fusermount3` when we cannot mount ourselves) before anything is
//! touched; `UnionFs::new` opens the layers; `fuser::Session::new` mounts and returns only after
//! the kernel's FUSE INIT handshake, so once it returns the mount is live, and if anything fails
//! after the mount the session's drop unmounts it. The session then serves until the mount goes
//! away: by `fusermount3 -u` / `umount` from outside (the kernel ends the connection and we exit
//! 0), or by SIGINT/SIGTERM/SIGHUP, which unmount (lazily if the mount is busy) and then exit 0.
//!
//! Background mode (the default) needs the caller to return once the mount is live while a daemon
//! keeps serving. Forking a multi-threaded Rust process is unsound, so instead the launcher
//! re-executes `/proc/self/exe` with the same arguments plus a hidden flag and reads the child's
//! stdout: the child mounts, writes `ready`, then points stdin/stdout/stderr at /dev/null. The
//! launcher exits 0 on `ready`; on EOF it exits with the child's code (the child printed its own
//! one-line error on the stderr they share). Detaching stderr matters: podman reads our stderr
//! pipe until EOF, so a daemon holding it open would hang the container start.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fuser::{MountOption, SessionACL};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};

use crate::cli::DAEMON_FLAG;
use crate::config::{FuseOptions, MountConfig};
use crate::error::SetupError;
use crate::fs::UnionFs;

/// The line the daemon writes on its stdout once the mount is live.
const READY: &str = "ready";

/// Validates `config`, mounts it and serves it: in the foreground with `config.foreground`,
/// otherwise through a re-executed daemon, returning once the mount is live.
pub fn run(config: MountConfig) -> Result<(), SetupError> {
    let config = config.validate()?;
    check_environment()?;
    if config.foreground {
        mount_and_serve(&config, || {})
    } else {
        launch_daemon()
    }
}

/// The re-executed daemon's side of background mode (the process started with the hidden flag).
pub fn run_daemon(config: MountConfig) -> Result<(), SetupError> {
    let config = config.validate()?;
    check_environment()?;
    // Leave the caller's session: no terminal signals, and the caller may be killed with its
    // whole process group without taking the mount down. Already a leader: nothing to do.
    let _ = rustix::process::setsid();
    // Every path in `config` is absolute; do not keep the caller's cwd (and its mount) busy.
    std::env::set_current_dir("/").map_err(|e| SetupError::io("chdir /", e))?;
    mount_and_serve(&config, announce_ready)
}

/// Fails, before anything is mounted, when the mount cannot work here.
pub fn check_environment() -> Result<(), SetupError> {
    match std::fs::metadata("/dev/fuse") {
        Ok(m) if m.file_type().is_char_device() => {}
        Ok(_) => {
            return Err(SetupError::Environment(
                "/dev/fuse is not a character device".into(),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SetupError::Environment(
                "/dev/fuse does not exist: load the fuse module (modprobe fuse), or pass the \
                 device into this container"
                    .into(),
            ));
        }
        Err(e) => return Err(SetupError::Environment(format!("/dev/fuse: {e}"))),
    }
    if !can_mount_directly() && find_fusermount().is_none() {
        return Err(SetupError::Environment(
            "fusermount3 not found in PATH: it is needed to mount as an unprivileged user \
             (install the fuse3 package)"
                .into(),
        ));
    }
    Ok(())
}

/// Root, or CAP_SYS_ADMIN (root in a user namespace, as rootless podman runs us): fuser then
/// mounts with mount(2) itself; otherwise it goes through the setuid `fusermount3`.
fn can_mount_directly() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    rustix::thread::capabilities(None)
        .map(|caps| {
            caps.effective
                .contains(rustix::thread::CapabilitySet::SYS_ADMIN)
        })
        .unwrap_or(false)
}

/// The helper fuser will run: `$FUSERMOUNT_PATH`, else `fusermount3` (or the older `fusermount`)
/// in `$PATH`.
fn find_fusermount() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FUSERMOUNT_PATH") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    std::env::split_paths(&path)
        .flat_map(|dir| ["fusermount3", "fusermount"].map(|name| dir.join(name)))
        .find(|p| executable(p))
}

/// The fuser session settings for `fuse`: mount options, access policy, worker threads.
pub fn session_config(fuse: &FuseOptions) -> fuser::Config {
    let mut options = vec![
        MountOption::FSName(fuse.fsname.clone()),
        MountOption::Subtype(fuse.subtype.clone()),
        // fuser hands `Subtype` only to fusermount3; on its own mount(2) path the kernel needs
        // it in the data string to show the type as `fuse.<subtype>`. fusermount3 takes the last
        // of the two, which is the same value.
        MountOption::CUSTOM(format!("subtype={}", fuse.subtype)),
    ];
    if fuse.default_permissions {
        options.push(MountOption::DefaultPermissions);
    }
    if fuse.read_only {
        options.push(MountOption::RO);
    }
    options.extend(fuse.flags.iter().filter_map(|f| flag_option(f)));
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.acl = match (fuse.allow_other, fuse.allow_root) {
        (true, _) => SessionACL::All,
        (false, true) => SessionACL::RootAndOwner,
        (false, false) => SessionACL::Owner,
    };
    config.n_threads = Some(fuse.threads.max(1));
    // One /dev/fuse fd per worker thread: no contention on a single fd's request queue.
    config.clone_fd = true;
    config
}

/// The fuser option for one of the plain mount flags `cli` accepts.
fn flag_option(flag: &str) -> Option<MountOption> {
    Some(match flag {
        "suid" => MountOption::Suid,
        "nosuid" => MountOption::NoSuid,
        "dev" => MountOption::Dev,
        "nodev" => MountOption::NoDev,
        "exec" => MountOption::Exec,
        "noexec" => MountOption::NoExec,
        "atime" => MountOption::Atime,
        "noatime" => MountOption::NoAtime,
        "sync" => MountOption::Sync,
        "async" => MountOption::Async,
        "dirsync" => MountOption::DirSync,
        _ => return None,
    })
}

/// Mounts, calls `on_live` once the mount answers requests, serves until it goes away.
fn mount_and_serve(config: &MountConfig, on_live: impl FnOnce()) -> Result<(), SetupError> {
    // Installed before mounting so a signal that arrives meanwhile is queued, not fatal: a
    // default SIGTERM during the mount would leave a dead mount behind.
    let signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1])
        .map_err(|e| SetupError::io("installing signal handlers", e))?;
    let fs = UnionFs::new(config)?;
    // New objects get exactly the mode worked out for them (the caller's umask, or the
    // parent's default ACL instead, see `acl`); the daemon's own umask must not mask it again.
    rustix::process::umask(rustix::fs::Mode::empty());
    let union = fs.union();
    let mountpoint = config.mountpoint.clone();
    let session = fuser::Session::new(fs, &mountpoint, &session_config(&config.fuse))
        .map_err(|e| SetupError::io(format!("mounting {}", mountpoint.display()), e))?;
    info!(mountpoint = %mountpoint.display(), "mounted");
    let serving = Arc::new(AtomicBool::new(true));
    let still_serving = serving.clone();
    crate::reaper::spawn(union.clone(), session.notifier(), move || {
        still_serving.load(Ordering::Relaxed)
    })
    .map_err(|e| SetupError::io("starting the reaper thread", e))?;
    // fuser 0.18 unmounts the mountpoint *by path* when a session ends, even when the kernel
    // has already ended the connection (its liveness check on /dev/fuse is inverted; fixed
    // upstream, fuser issue 658). Container tools unmount us from outside and often mount a
    // new union at the same path right away (docker: the -init layer, then the container;
    // `podman mount` then `start`), and our late unmount then removed *their* new mount.
    // `spawn` moves fuser's mount handle out of the session; it is never dropped, so fuser
    // never unmounts: the mount ends from outside, or from our signal handler below.
    let background = std::mem::ManuallyDrop::new(
        session
            .spawn()
            .map_err(|e| SetupError::io("starting the FUSE session", e))?,
    );
    let handle = signals.handle();
    let watched = mountpoint.clone();
    let watcher = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || watch_signals(signals, watched, union))
        .map_err(|e| SetupError::io("starting the signal thread", e))?;
    on_live();
    while !background.guard.is_finished() {
        std::thread::park_timeout(std::time::Duration::from_millis(100));
    }
    serving.store(false, Ordering::Relaxed);
    handle.close();
    let _ = watcher.join();
    info!(mountpoint = %mountpoint.display(), "unmounted; exiting");
    Ok(())
}

/// Turns termination signals into an unmount; the session then ends and `run` returns.
/// SIGUSR1 prints the metrics report (on stderr: visible with `-f`; a background daemon's
/// stderr is /dev/null, so there `unionfs-rs stats MERGED` is the way to read it).
fn watch_signals(
    mut signals: Signals,
    mountpoint: PathBuf,
    union: std::sync::Arc<crate::union::Union>,
) {
    let mut unmounting = false;
    for signal in signals.forever() {
        if signal == SIGUSR1 {
            let _ = writeln!(std::io::stderr(), "{}", crate::stats::report(&union));
            continue;
        }
        if unmounting {
            info!(signal, "already unmounting");
            continue;
        }
        unmounting = true;
        // Unmount first, log after: whatever happens to logging, the mount must not outlive
        // the process as a dead "transport endpoint".
        match rustix::mount::unmount(&mountpoint, rustix::mount::UnmountFlags::empty()) {
            Ok(()) => info!(signal, mountpoint = %mountpoint.display(), "unmounted"),
            // not root: only fusermount3 may unmount us, which detach() runs
            Err(rustix::io::Errno::PERM) => detach(&mountpoint),
            Err(e) => {
                detach(&mountpoint);
                warn!("unmount failed ({e}); detached lazily");
            }
        }
    }
}

/// Lazy unmount: the mount disappears from the namespace now and the session ends once the last
/// open file on it is closed (what libfuse does on a signal).
fn detach(mountpoint: &Path) {
    match rustix::mount::unmount(mountpoint, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) => {}
        Err(rustix::io::Errno::PERM) => {
            let status = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg("--")
                .arg(mountpoint)
                .status();
            if !status.is_ok_and(|s| s.success()) {
                error!("fusermount3 -u -z {} failed", mountpoint.display());
            }
        }
        Err(e) => error!("lazy unmount of {} failed: {e}", mountpoint.display()),
    }
}

/// Daemon side: tell the launcher the mount is live, then let go of its stdio.
fn announce_ready() {
    let mut out = std::io::stdout();
    // The launcher may be gone (killed while waiting); the mount still stands, so serve on.
    let _ = writeln!(out, "{READY}").and_then(|()| out.flush());
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        Ok(null) => {
            let results = [
                rustix::stdio::dup2_stdin(&null),
                rustix::stdio::dup2_stdout(&null),
                rustix::stdio::dup2_stderr(&null),
            ];
            if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
                error!("redirecting stdio to /dev/null: {e}");
            }
        }
        Err(e) => error!("opening /dev/null: {e}"),
    }
}

/// Launcher side: re-executes this program as the daemon and waits until the mount is live or
/// the daemon has failed.
fn launch_daemon() -> Result<(), SetupError> {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| OsString::from("unionfs-rs"));
    let mut child = Command::new("/proc/self/exe")
        .arg0(argv0)
        .arg(format!("--{DAEMON_FLAG}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| SetupError::io("starting the mount daemon", e))?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        // EOF (an empty line) means the daemon exited, or at least closed its stdout, unready.
        let _ = BufReader::new(stdout).read_line(&mut line);
    }
    if line.trim_end() == READY {
        return Ok(());
    }
    let status = child
        .wait()
        .map_err(|e| SetupError::io("waiting for the mount daemon", e))?;
    match (status.code(), status.signal()) {
        (Some(0), _) => Err(SetupError::Environment(
            "the mount daemon exited before the mount was ready".into(),
        )),
        (Some(code), _) => Err(SetupError::DaemonFailed(code)),
        (None, signal) => Err(SetupError::Environment(format!(
            "the mount daemon was killed by signal {}",
            signal.unwrap_or(0)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_config_maps_options() {
        let mut fuse = FuseOptions {
            allow_root: true,
            read_only: true,
            flags: vec!["suid".into(), "nodev".into(), "dirsync".into()],
            threads: 0,
            ..FuseOptions::default()
        };
        let c = session_config(&fuse);
        assert_eq!(c.acl, SessionACL::RootAndOwner);
        assert_eq!(c.n_threads, Some(1));
        assert!(c.clone_fd);
        for o in [
            MountOption::DefaultPermissions,
            MountOption::RO,
            MountOption::Suid,
            MountOption::NoDev,
            MountOption::DirSync,
        ] {
            assert!(c.mount_options.contains(&o), "{o:?}");
        }
        fuse.allow_other = true;
        fuse.default_permissions = false;
        let c = session_config(&fuse);
        assert_eq!(c.acl, SessionACL::All);
        assert!(!c.mount_options.contains(&MountOption::DefaultPermissions));
    }
}
