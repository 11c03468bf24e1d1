//! From clap's parsed arguments to an unvalidated [`Invocation`]: which grammar the positional
//! paths follow, and what depends on several options at once (a union without an upper is
//! read-only, squash_to_root, fuse-overlayfs's defaults as root). The warnings are gathered
//! here so the caller prints them once.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::args::Args;
use super::escape::split_unescaped;
use super::options::{OptState, apply_option_string, set_flag};
use super::value::Opt;
use super::{Invocation, usage};
use crate::config::WhiteoutFormat;
use crate::error::SetupError;

/// Turns clap's result into an unvalidated invocation; `is_root` adds fuse-overlayfs's defaults.
pub(super) fn build(args: Args, is_root: bool) -> Result<Invocation, SetupError> {
    let mut st = OptState::default();
    for opts in &args.options {
        apply_option_string(&mut st, opts.as_bytes())?;
    }
    apply_long_options(&mut st, &args)?;
    place_paths(&mut st, args.paths)?;
    finish(&mut st, is_root);
    if !st.unknown.is_empty() {
        let list = st.unknown.join(", ");
        st.warnings
            .insert(0, format!("warning: unknown options ignored: {list}"));
    }
    let debug = args.debug || st.debug;
    st.config.foreground = args.foreground || debug;
    Ok(Invocation {
        config: st.config,
        debug,
        daemon_child: args.daemon_child,
        warnings: st.warnings,
    })
}

/// `--threads`, `--whiteout` and `--workdir`, read after every `-o` so they win over
/// `-o threads=` / `-o whiteout=`; a work directory given both ways is ambiguous.
fn apply_long_options(st: &mut OptState, args: &Args) -> Result<(), SetupError> {
    if let Some(n) = &args.threads {
        st.config.fuse.threads = Opt::new("--threads", n.as_bytes()).threads()?;
    }
    if let Some(w) = &args.whiteout {
        st.config.fs.whiteout = WhiteoutFormat::parse(w).map_err(SetupError::Usage)?;
    }
    if let Some(w) = &args.workdir {
        if st.workdir.is_some() {
            return Err(usage(
                "work directory given twice (--workdir and -o workdir=)",
            ));
        }
        st.workdir = Some(PathBuf::from(w));
    }
    Ok(())
}

const GRAMMARS: &str = "LOWER[:LOWER...] UPPER MERGED, or -o lowerdir=L1[:L2...] MERGED";

/// Assigns the positional paths according to the grammar in use.
fn place_paths(st: &mut OptState, paths: Vec<OsString>) -> Result<(), SetupError> {
    let o_grammar = st.lowers.is_some() || st.upper.is_some();
    let n = paths.len();
    let problem = match (o_grammar, n) {
        (_, 0) => format!("missing MERGED: give {GRAMMARS}"),
        (true, 1) | (false, 3) => String::new(),
        (true, _) => format!("with -o lowerdir= give only MERGED, not {n} paths"),
        (false, 1) => format!("no lower directory: give {GRAMMARS}"),
        (false, _) => format!("expected {GRAMMARS} (a read-only union), got {n} paths"),
    };
    if !problem.is_empty() {
        return Err(usage(problem));
    }
    let mut paths = paths.into_iter();
    if n == 3 {
        let lowers = paths.next().unwrap_or_default();
        st.lowers = Some(split_unescaped(lowers.as_bytes(), b':'));
        st.upper = paths.next().map(PathBuf::from);
    }
    st.config.mountpoint = paths.next().map(PathBuf::from).unwrap_or_default();
    Ok(())
}

/// Resolves what depends on several options, after all of them are read.
fn finish(st: &mut OptState, is_root: bool) {
    let c = &mut st.config;
    c.layers.lowers = st.lowers.take().unwrap_or_default();
    c.layers.upper = st.upper.take();
    c.layers.workdir = st.workdir.take();
    if c.layers.upper.is_none() {
        if let Some(w) = c.layers.workdir.take() {
            let w = w.display();
            st.warnings
                .push(format!("warning: workdir={w} ignored: no upper directory"));
        }
        // Like kernel overlayfs: a union without an upper is a read-only mount.
        c.fuse.read_only = true;
    }
    if st.squash_to_root {
        c.fs.squash_uid.get_or_insert(0);
        c.fs.squash_gid.get_or_insert(0);
    }
    // fuse-overlayfs as root (rootless podman runs it as root in a user namespace) lets every
    // user in and honours setuid bits, as a kernel overlay mount would.
    if is_root {
        c.fuse.allow_other |= !c.fuse.allow_root;
        if !c.fuse.flags.iter().any(|f| f == "nosuid") {
            set_flag(&mut c.fuse.flags, "suid");
        }
    }
    if !c.ignored_options.is_empty() {
        let list = c.ignored_options.join(", ");
        st.warnings.push(format!(
            "warning: options without effect here ignored: {list}"
        ));
    }
}
