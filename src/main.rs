//! The `unionfs-rs` command: parse, set up logging, mount, and map errors to exit codes.
//!
//! Invariant: a failure is reported as exactly one line on stderr, `unionfs-rs: <message>`, and a
//! non-zero exit (2 for usage errors), because container tools put our stderr verbatim into
//! their own error message. Warnings are also one line each, printed once: the background
//! daemon, which re-parses the same arguments, keeps quiet about them.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use unionfs_rs::cli::{self, Command};
use unionfs_rs::error::SetupError;
use unionfs_rs::mount;

fn main() -> ExitCode {
    let invocation = match cli::parse_args(std::env::args_os()) {
        Ok(Command::Mount(invocation)) => invocation,
        Ok(Command::Print(text)) => {
            // `--help | head` must not panic on the closed pipe.
            let _ = std::io::stdout().write_all(text.as_bytes());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Stats { mountpoint, json }) => return print_stats(&mountpoint, json),
        Err(e) => return fail(&e),
    };
    init_logging(invocation.debug);
    if !invocation.daemon_child {
        for warning in &invocation.warnings {
            say(warning);
        }
    }
    let result = if invocation.daemon_child {
        mount::run_daemon(invocation.config)
    } else {
        mount::run(invocation.config)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Prints `e` (unless the daemon already did) and returns its exit code.
fn fail(e: &SetupError) -> ExitCode {
    if !matches!(e, SetupError::DaemonFailed(_)) {
        say(&e.to_string());
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1).max(1))
}

/// One `unionfs-rs: ...` line on stderr; a closed stderr is not worth a panic.
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "unionfs-rs: {}", one_line(msg));
}

/// Messages from below (fusermount3's stderr, io errors) may span lines; keep ours to one.
fn one_line(msg: &str) -> String {
    let parts: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    parts.join("; ")
}

/// Logs go to stderr: `-d` means debug for everything (fuser logs each request), else
/// `RUST_LOG`, else warnings of our own only (fuser warns about routine events such as an
/// unmount from outside).
fn init_logging(debug: bool) {
    let filter = if debug {
        EnvFilter::new("debug")
    } else {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,fuser=error"))
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        // A failed log write (stderr a closed pipe or a hung-up terminal) must not panic the
        // thread that logged: that may be the one about to unmount on SIGHUP/SIGTERM.
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// `unionfs-rs stats MERGED`: the running daemon answers through its mount (see `stats`).
fn print_stats(mountpoint: &std::path::Path, json: bool) -> ExitCode {
    match unionfs_rs::stats::read_from_mount(mountpoint, json) {
        Ok(report) => {
            let _ = std::io::stdout().write_all(report.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&SetupError::path(
            mountpoint,
            format!("no unionfs-rs statistics here: {e}"),
        )),
    }
}
