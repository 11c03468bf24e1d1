//! Errors of the setup path (parsing, validating, mounting): each one names what is wrong and
//! where, so `main` can print it as one line and exit non-zero without mounting anything.
//! Request-path errors are plain `Errno`s (see `sys`).

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum SetupError {
    /// The command line or `-o` option string is malformed.
    Usage(String),
    /// A path given on the command line is unusable; the message says why.
    Path { path: PathBuf, reason: String },
    /// Two given directories conflict (same, nested, wrong filesystem).
    Conflict(String),
    /// A system call failed while setting up.
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The environment lacks something the mount needs (`/dev/fuse`, `fusermount3`).
    Environment(String),
    /// The background daemon failed and already printed why on the stderr it shares with the
    /// launcher, which exits with the daemon's code and prints nothing more.
    DaemonFailed(i32),
}

impl SetupError {
    pub fn path(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        SetupError::Path {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        SetupError::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    /// Exit code: 2 for usage errors (like clap), 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            SetupError::Usage(_) => 2,
            SetupError::DaemonFailed(code) => *code,
            _ => 1,
        }
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Usage(msg) => write!(f, "{msg}"),
            SetupError::Path { path, reason } => write!(f, "{}: {reason}", path.display()),
            SetupError::Conflict(msg) => write!(f, "{msg}"),
            SetupError::Io { context, source } => write!(f, "{context}: {source}"),
            SetupError::Environment(msg) => write!(f, "{msg}"),
            SetupError::DaemonFailed(code) => write!(f, "the mount daemon failed (exit {code})"),
        }
    }
}

impl std::error::Error for SetupError {}
