//! The command line: two grammars, one `MountConfig` (checked later by `MountConfig::validate`).
//!
//! - `unionfs-rs [OPTIONS] LOWER[:LOWER...] UPPER MERGED`, our own;
//! - `unionfs-rs [OPTIONS] -o lowerdir=L1[:L2...][,upperdir=U,workdir=W] MERGED`, fuse-overlayfs's,
//!   which container tools run as `PROG -o DATA MERGED`. Without upperdir it is a read-only union.
//!
//! The `-o` string is parsed by small pure functions: [`split_options`] cuts it at unquoted,
//! unescaped commas (empty elements and a trailing comma are tolerated; double quotes group a
//! value that holds commas, as in `context="a:b,c"`), and each `key[=value]` is applied in order,
//! so a later option overrides an earlier one and several `-o` merge. A backslash escapes the
//! next byte in a LOWER list and in `-o` values (`\:` is a colon inside a path, `\,` a comma,
//! `\\` a backslash), as in the kernel's overlayfs. Paths are bytes throughout, never lossily
//! converted. Unknown options produce one warning line and are skipped, never an error, because
//! container tools pass options meant for other mount programs; a malformed value of a known
//! option is an error. Invariant: no input makes the parser panic (a unit test throws random
//! strings at it).
//!
//! One concept per file: `args` (clap's definition and the help text), `escape` (where an
//! element ends: commas, colons, quotes, backslashes), `options` (what each `-o` key means),
//! `value` (reading one option's value), `invocation` (the positional grammar and what depends
//! on several options). Checking the directories themselves is `MountConfig::validate`'s job.

mod args;
mod escape;
mod invocation;
mod options;
#[cfg(test)]
mod tests;
mod value;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

use crate::config::MountConfig;
use crate::error::SetupError;
use args::Args;

pub use args::DAEMON_FLAG;
pub use escape::{split_options, split_unescaped, unescape};

/// A parsed command line that asks for a mount.
#[derive(Debug)]
pub struct Invocation {
    /// Paths as given; `MountConfig::validate` (called by `mount::run`) checks them.
    pub config: MountConfig,
    /// `-d` / `-o debug`: log at debug level.
    pub debug: bool,
    /// This process is the re-executed background daemon.
    pub daemon_child: bool,
    /// One line each, to print on stderr (once: the daemon child does not repeat them).
    pub warnings: Vec<String>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Mount(Box<Invocation>),
    /// `--help` / `--version`: print this on stdout and exit 0.
    Print(String),
    /// `unionfs-rs stats MERGED [--json]`: print the metrics of a running mount.
    Stats {
        mountpoint: PathBuf,
        json: bool,
    },
}

/// `stats MERGED [--json]`, recognised only in exactly that shape: a mount needs three paths
/// (or one with `-o`), so a lower directory that happens to be named `stats` is never taken
/// for the subcommand.
fn parse_stats(args: &[OsString]) -> Option<Command> {
    let rest = match args {
        [_, cmd, rest @ ..] if cmd == "stats" => rest,
        _ => return None,
    };
    let json = rest.iter().any(|a| a == "--json");
    let paths: Vec<&OsString> = rest.iter().filter(|a| *a != "--json").collect();
    match paths.as_slice() {
        [path] if rest.len() <= 2 => Some(Command::Stats {
            mountpoint: PathBuf::from(path),
            json,
        }),
        _ => None,
    }
}

/// Parses `args` (program name first). The paths are not checked yet: `mount::run` validates
/// them, after the caller has printed the warnings, so a warning is shown even when the mount
/// then fails.
pub fn parse_args<I, T>(args: I) -> Result<Command, SetupError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    if let Some(stats) = parse_stats(&args) {
        return Ok(stats);
    }
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => return clap_outcome(e),
    };
    let inv = invocation::build(args, rustix::process::geteuid().is_root())?;
    Ok(Command::Mount(Box::new(inv)))
}

/// Help and version are not errors; every other clap error becomes one line.
fn clap_outcome(e: clap::Error) -> Result<Command, SetupError> {
    use clap::error::ErrorKind;
    let text = e.to_string();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Ok(Command::Print(text)),
        _ => {
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            Err(SetupError::Usage(format!("{first} (see --help)")))
        }
    }
}

fn usage(msg: impl Into<String>) -> SetupError {
    SetupError::Usage(msg.into())
}
