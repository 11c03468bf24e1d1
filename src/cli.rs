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

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::config::{IdMapping, MountConfig, WhiteoutFormat, XattrPermissions};
use crate::error::SetupError;

/// Hidden flag marking the re-executed background daemon (see `mount`); never typed by users.
pub const DAEMON_FLAG: &str = "unionfs-rs-daemon";

const USAGE: &str = "unionfs-rs [OPTIONS] LOWER[:LOWER...] UPPER MERGED\n       \
                     unionfs-rs [OPTIONS] -o lowerdir=L1[:L2...][,upperdir=U][,workdir=W] MERGED";

const AFTER_HELP: &str = "\
`unionfs-rs stats MERGED [--json]` prints the copy-up and lookup metrics of a running mount
(also printed on stderr when the daemon gets SIGUSR1).

The leftmost LOWER is the top layer. A read-only union has no upper: use the -o grammar without
upperdir (it is mounted read-only). Without --workdir / workdir=, the work directory is
UPPER/.unionfs-rs-work, hidden from the merged view. In LOWER lists and -o values a backslash
escapes the next character (\\: is a colon inside a path, \\, a comma).

-o options (comma separated, may repeat; unknown ones are ignored with a warning):
  lowerdir=, upperdir=, workdir=    the layers
  volatile, fsync=0|1               fsync copied-up files or not (volatile = fsync=0)
  timeout=SECONDS                   kernel cache timeout for names and attributes (86400)
  noxattrs=1, noacl                 no extended attributes / no POSIX ACLs
  static_nlink, ino32_t, writeback  as in fuse-overlayfs
  passthrough=on|off                kernel does file I/O itself when it allows (root; on)
  uidmapping=, gidmapping=          [:]CONTAINER:HOST:SIZE[:...] id translation
  squash_to_root, squash_to_uid=N, squash_to_gid=N
  xattr_permissions=0|1|2           ownership kept in override_stat xattrs
  redirect_dir=off                  the only mode (renaming a lower directory gives EXDEV)
  threads=N, whiteout=auto|chardev|oci, debug
  FUSE: allow_other, allow_root, default_permissions, ro, rw, suid, nosuid, dev, nodev, exec,
        noexec, atime, noatime, relatime, sync, async, dirsync, fsname=, subtype=
When run as root (also root in a user namespace, as rootless podman does) allow_other and suid
are on unless allow_root / nosuid are given, as with fuse-overlayfs.

Without -f the command returns once the mount is live and a daemon serves it. Unmount with
`fusermount3 -u MERGED` (or `umount MERGED` as root); the daemon then exits.";

#[derive(Parser, Debug)]
#[command(name = "unionfs-rs", version, about, override_usage = USAGE, after_help = AFTER_HELP)]
struct Args {
    /// Mount options, fuse-overlayfs style (see below)
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<OsString>,
    /// Work directory, on the upper's filesystem
    #[arg(long, value_name = "DIR")]
    workdir: Option<OsString>,
    /// Stay in the foreground; SIGINT/SIGTERM/SIGHUP unmount and exit 0
    #[arg(short, long)]
    foreground: bool,
    /// Log at debug level (implies -f)
    #[arg(short, long)]
    debug: bool,
    /// Threads serving FUSE requests
    #[arg(long, value_name = "N")]
    threads: Option<String>,
    /// How deletions are written into the upper
    #[arg(long, value_name = "auto|chardev|oci")]
    whiteout: Option<String>,
    #[arg(long = DAEMON_FLAG, hide = true)]
    daemon_child: bool,
    /// LOWER[:LOWER...] UPPER MERGED, or only MERGED with -o lowerdir=
    #[arg(value_name = "PATHS")]
    paths: Vec<OsString>,
}

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
    let inv = build(args, rustix::process::geteuid().is_root())?;
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

/// Options gathered from every `-o`, before the layers are known to be complete.
#[derive(Debug, Default)]
struct OptState {
    config: MountConfig,
    lowers: Option<Vec<PathBuf>>,
    upper: Option<PathBuf>,
    workdir: Option<PathBuf>,
    squash_to_root: bool,
    debug: bool,
    /// The last element was `uidmapping=` (true) or `gidmapping=` (false), with its text so far:
    /// fuse-overlayfs's man page separates ranges with commas, which also end an -o element.
    mapping: Option<(bool, String)>,
    unknown: Vec<String>,
    warnings: Vec<String>,
}

/// Turns clap's result into an unvalidated invocation; `is_root` adds fuse-overlayfs's defaults.
fn build(args: Args, is_root: bool) -> Result<Invocation, SetupError> {
    let mut st = OptState::default();
    for opts in &args.options {
        apply_option_string(&mut st, opts.as_bytes())?;
    }
    if let Some(n) = &args.threads {
        st.config.fuse.threads = Opt::new("--threads", n.as_bytes()).threads()?;
    }
    if let Some(w) = &args.whiteout {
        st.config.fs.whiteout = WhiteoutFormat::parse(w).map_err(SetupError::Usage)?;
    }
    if let Some(w) = args.workdir {
        if st.workdir.is_some() {
            return Err(usage(
                "work directory given twice (--workdir and -o workdir=)",
            ));
        }
        st.workdir = Some(PathBuf::from(w));
    }
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

fn usage(msg: impl Into<String>) -> SetupError {
    SetupError::Usage(msg.into())
}

/// Cuts an `-o` string into `key[=value]` elements at commas outside double quotes and not
/// escaped. Quotes are removed; a `:` or `,` inside them comes out escaped so it stays literal
/// when the value is later split or unescaped. Other escapes are kept for the value parsers.
pub fn split_options(s: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let (mut items, mut cur) = (Vec::new(), Vec::new());
    let mut quoted = false;
    let mut bytes = s.iter().copied();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => cur.extend(std::iter::once(b).chain(bytes.next())),
            b'"' => quoted = !quoted,
            b',' | b':' if quoted => cur.extend([b'\\', b]),
            b',' => items.push(std::mem::take(&mut cur)),
            _ => cur.push(b),
        }
    }
    if quoted {
        return Err("unterminated double quote in -o options".into());
    }
    items.push(cur);
    items.retain(|i| !i.is_empty());
    Ok(items)
}

/// Removes one level of backslash escapes; a trailing lone backslash stays.
pub fn unescape(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut bytes = v.iter().copied();
    while let Some(b) = bytes.next() {
        out.push(if b == b'\\' {
            bytes.next().unwrap_or(b)
        } else {
            b
        });
    }
    out
}

/// Splits at unescaped `sep` and unescapes each piece, skipping empty ones (fuse-overlayfs
/// tolerates `a::b` and a trailing colon in lowerdir the same way).
pub fn split_unescaped(v: &[u8], sep: u8) -> Vec<PathBuf> {
    let (mut pieces, mut cur) = (Vec::new(), Vec::new());
    let mut bytes = v.iter().copied();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => cur.push(bytes.next().unwrap_or(b)),
            _ if b == sep => pieces.push(std::mem::take(&mut cur)),
            _ => cur.push(b),
        }
    }
    pieces.push(cur);
    pieces.retain(|p| !p.is_empty());
    pieces
        .into_iter()
        .map(|p| PathBuf::from(OsString::from_vec(p)))
        .collect()
}

/// Applies every element of one `-o` string, in order.
fn apply_option_string(st: &mut OptState, s: &[u8]) -> Result<(), SetupError> {
    for item in split_options(s).map_err(SetupError::Usage)? {
        let (key, raw) = match item.iter().position(|&b| b == b'=') {
            Some(i) => (&item[..i], Some(&item[i + 1..])),
            None => (&item[..], None),
        };
        if continue_mapping(st, &item)? {
            continue;
        }
        let key = String::from_utf8_lossy(key);
        let o = Opt { key: &key, raw };
        let known = apply_layer_option(st, o)?
            || apply_fs_option(st, o)?
            || apply_owner_option(st, o)?
            || apply_fuse_option(st, o)?;
        if !known {
            st.unknown.push(String::from_utf8_lossy(&item).into_owned());
        }
    }
    Ok(())
}

/// Takes `item` as more ranges of the mapping just given (`uidmapping=0:1000:1,1:100000:65536`,
/// the man page's form) when it is nothing but colon-separated numbers.
fn continue_mapping(st: &mut OptState, item: &[u8]) -> Result<bool, SetupError> {
    let ranges = item.contains(&b':') && item.iter().all(|&b| b == b':' || b.is_ascii_digit());
    let Some((uid, text)) = st.mapping.as_mut().filter(|_| ranges) else {
        st.mapping = None;
        return Ok(false);
    };
    text.push(':');
    text.push_str(&String::from_utf8_lossy(item));
    let list = IdMapping::parse_list(text).map_err(SetupError::Usage)?;
    let fs = &mut st.config.fs;
    *(if *uid {
        &mut fs.uid_mappings
    } else {
        &mut fs.gid_mappings
    }) = list;
    Ok(true)
}

/// One `-o` element: its key and its value with escapes still in place.
#[derive(Clone, Copy)]
struct Opt<'a> {
    key: &'a str,
    raw: Option<&'a [u8]>,
}

impl<'a> Opt<'a> {
    fn new(key: &'a str, raw: &'a [u8]) -> Self {
        Opt {
            key,
            raw: Some(raw),
        }
    }

    fn bad(self, why: impl std::fmt::Display) -> SetupError {
        usage(format!("option '{}': {why}", self.key))
    }

    /// The value, unescaped, as UTF-8 text (numbers, words); required.
    fn text(self) -> Result<String, SetupError> {
        let raw = self.raw.ok_or_else(|| self.bad("needs a value"))?;
        String::from_utf8(unescape(raw)).map_err(|_| self.bad("value is not UTF-8"))
    }

    /// An optional `0`/`1`; no value means 1.
    fn flag(self) -> Result<bool, SetupError> {
        match self.raw.map(|_| self.text()).transpose()?.as_deref() {
            None | Some("1") => Ok(true),
            Some("0") => Ok(false),
            Some(v) => Err(self.bad(format!("expected 0 or 1, got '{v}'"))),
        }
    }

    /// `on`/`off` (or `1`/`0`); no value means on.
    fn on_off(self) -> Result<bool, SetupError> {
        match self.raw.map(|_| self.text()).transpose()?.as_deref() {
            None | Some("on" | "1") => Ok(true),
            Some("off" | "0") => Ok(false),
            Some(v) => Err(self.bad(format!("expected on or off, got '{v}'"))),
        }
    }

    fn number<T: std::str::FromStr>(self) -> Result<T, SetupError> {
        let v = self.text()?;
        v.parse()
            .map_err(|_| self.bad(format!("'{v}' is not a valid number")))
    }

    fn threads(self) -> Result<usize, SetupError> {
        match self.number()? {
            n @ 1..=1024 => Ok(n),
            n => Err(self.bad(format!("{n} threads (1 to 1024)"))),
        }
    }

    fn seconds(self) -> Result<Duration, SetupError> {
        let secs: f64 = self.number()?;
        Duration::try_from_secs_f64(secs).map_err(|_| self.bad(format!("{secs} seconds")))
    }

    /// A directory: unescaped bytes, non-empty.
    fn path(self) -> Result<PathBuf, SetupError> {
        match self.raw.map(unescape) {
            Some(v) if !v.is_empty() => Ok(PathBuf::from(OsString::from_vec(v))),
            _ => Err(self.bad("needs a directory")),
        }
    }

    /// A value that ends up inside the kernel's comma-separated mount data.
    fn word(self) -> Result<String, SetupError> {
        let v = self.text()?;
        if v.is_empty() || v.contains(',') || v.chars().any(char::is_whitespace) {
            return Err(self.bad(format!("'{v}' must be one word without commas")));
        }
        Ok(v)
    }
}

fn apply_layer_option(st: &mut OptState, o: Opt) -> Result<bool, SetupError> {
    match o.key {
        "lowerdir" => {
            let lowers = split_unescaped(o.raw.unwrap_or_default(), b':');
            if lowers.is_empty() {
                return Err(o.bad("names no directory"));
            }
            st.lowers = Some(lowers);
        }
        "upperdir" => st.upper = Some(o.path()?),
        "workdir" => st.workdir = Some(o.path()?),
        _ => return Ok(false),
    }
    Ok(true)
}

fn apply_fs_option(st: &mut OptState, o: Opt) -> Result<bool, SetupError> {
    let fs = &mut st.config.fs;
    match o.key {
        "volatile" => fs.sync_copy_up = !o.flag()?,
        "fsync" => fs.sync_copy_up = o.flag()?,
        "timeout" => fs.timeout = o.seconds()?,
        "noxattrs" => fs.xattrs = !o.flag()?,
        "noacl" => fs.posix_acl = !o.flag()?,
        "static_nlink" => fs.static_nlink = o.flag()?,
        "ino32_t" => fs.ino32 = o.flag()?,
        "whiteout" => fs.whiteout = WhiteoutFormat::parse(&o.text()?).map_err(|e| o.bad(e))?,
        "redirect_dir" => {
            let v = o.text()?;
            if v != "off" {
                st.warnings.push(format!(
                    "warning: redirect_dir={v} is not supported, using off \
                     (renaming a lower directory fails with EXDEV)"
                ));
            }
        }
        "context" | "fscontext" | "defcontext" | "rootcontext" => {
            let v = o.text()?;
            st.config.ignored_options.push(format!("{}={v}", o.key));
        }
        "debug" => st.debug = o.flag()?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// Ownership as seen through the mount: id mappings, squashing, override xattrs.
fn apply_owner_option(st: &mut OptState, o: Opt) -> Result<bool, SetupError> {
    let fs = &mut st.config.fs;
    let mut mappings = |o: Opt, uid: bool| {
        let text = o.text()?;
        let list = IdMapping::parse_list(&text).map_err(|e| o.bad(e))?;
        st.mapping = Some((uid, text));
        Ok::<_, SetupError>(list)
    };
    match o.key {
        "squash_to_root" => st.squash_to_root = o.flag()?,
        "squash_to_uid" => fs.squash_uid = Some(o.number()?),
        "squash_to_gid" => fs.squash_gid = Some(o.number()?),
        "uidmapping" => fs.uid_mappings = mappings(o, true)?,
        "gidmapping" => fs.gid_mappings = mappings(o, false)?,
        "xattr_permissions" => {
            fs.xattr_permissions = match o.text()?.as_str() {
                "0" => XattrPermissions::Off,
                "1" => XattrPermissions::Privileged,
                "2" => XattrPermissions::Containers,
                v => return Err(o.bad(format!("expected 0, 1 or 2, got '{v}'"))),
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Mount flags and their opposites; the later one given wins.
const FLAG_PAIRS: &[(&str, &str)] = &[
    ("suid", "nosuid"),
    ("dev", "nodev"),
    ("exec", "noexec"),
    ("atime", "noatime"),
    ("sync", "async"),
    // No opposite; listed so it is recognised and recorded once.
    ("dirsync", "dirsync"),
];

/// Records `name`, dropping its opposite so the session never sees both.
fn set_flag(flags: &mut Vec<String>, name: &str) {
    let pair = FLAG_PAIRS.iter().find(|&&(a, b)| a == name || b == name);
    flags.retain(|f| pair.is_none_or(|&(a, b)| f != a && f != b));
    flags.push(name.to_string());
}

fn apply_fuse_option(st: &mut OptState, o: Opt) -> Result<bool, SetupError> {
    let fuse = &mut st.config.fuse;
    match o.key {
        k if FLAG_PAIRS.iter().any(|&(a, b)| k == a || k == b) => {
            if o.raw.is_some() {
                return Err(o.bad("takes no value"));
            }
            set_flag(&mut fuse.flags, k);
        }
        "allow_other" => (fuse.allow_other, fuse.allow_root) = (o.flag()?, false),
        "allow_root" => (fuse.allow_root, fuse.allow_other) = (o.flag()?, false),
        "default_permissions" => fuse.default_permissions = o.flag()?,
        "ro" => fuse.read_only = o.flag()?,
        "rw" => fuse.read_only = !o.flag()?,
        // The kernel's default for a new mount; nothing to pass.
        "relatime" => {}
        "writeback" => fuse.writeback = o.flag()?,
        "passthrough" => fuse.passthrough = o.on_off()?,
        "threads" => fuse.threads = o.threads()?,
        "fsname" => fuse.fsname = o.word()?,
        "subtype" => fuse.subtype = o.word()?,
        _ => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn build_from(args: &[&str], is_root: bool) -> Result<Invocation, SetupError> {
        let args = Args::try_parse_from(std::iter::once("unionfs-rs").chain(args.iter().copied()))
            .map_err(|e| usage(e.to_string()))?;
        build(args, is_root)
    }

    fn items(s: &str) -> Vec<String> {
        let v = split_options(s.as_bytes()).unwrap();
        v.into_iter()
            .map(|i| String::from_utf8(i).unwrap())
            .collect()
    }

    #[test]
    fn split_tolerates_empty_elements_and_quotes() {
        assert_eq!(items("a=1,,b=2,"), ["a=1", "b=2"]);
        assert_eq!(items(",,"), Vec::<String>::new());
        assert_eq!(items(r#"context="a:b,c",x"#), [r"context=a\:b\,c", "x"]);
        assert_eq!(items(r"lowerdir=a\,b:c"), [r"lowerdir=a\,b:c"]);
        assert!(split_options(br#"context="a,b"#).is_err());
    }

    #[test]
    fn lowers_split_at_unescaped_colons() {
        assert_eq!(split_unescaped(b"a:b::c:", b':'), [p("a"), p("b"), p("c")]);
        assert_eq!(
            split_unescaped(br"a\:b:c\\d\", b':'),
            [p("a:b"), p(r"c\d\")]
        );
        assert!(split_unescaped(b"::", b':').is_empty());
    }

    #[test]
    fn podman_option_strings() {
        let data = "lowerdir=l/S3:l/S2:l/S1,upperdir=C/diff,workdir=C/work,,volatile,\
                    context=\"system_u:object_r:container_file_t:s0:c1,c2\",\
                    uidmapping=:0:1:1001:1001:0:1:1002:1002:64535,gidmapping=:0:1:1001,";
        let inv = build_from(&["-o", data, "merged"], false).unwrap();
        let c = &inv.config;
        assert_eq!(c.layers.lowers, [p("l/S3"), p("l/S2"), p("l/S1")]);
        assert_eq!(c.layers.upper, Some(p("C/diff")));
        assert_eq!(c.layers.workdir, Some(p("C/work")));
        assert_eq!(c.mountpoint, p("merged"));
        assert!(!c.fs.sync_copy_up);
        assert_eq!(c.fs.uid_mappings.len(), 3);
        assert_eq!(c.fs.gid_mappings.len(), 1);
        assert_eq!(
            c.ignored_options,
            ["context=system_u:object_r:container_file_t:s0:c1,c2"]
        );
        assert!(!c.foreground && !c.fuse.read_only);
        assert_eq!(inv.warnings.len(), 1, "{:?}", inv.warnings);
    }

    #[test]
    fn mapping_ranges_may_be_separated_by_commas() {
        let o = "lowerdir=l,uidmapping=0:1000:1,1:100000:65536,gidmapping=0:1000:1,1:2:3,4:5:6";
        let inv = build_from(&["-o", o, "m"], false).unwrap();
        assert_eq!(inv.config.fs.uid_mappings.len(), 2);
        assert_eq!(inv.config.fs.gid_mappings.len(), 3);
        assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
        let stray = build_from(&["-o", "lowerdir=l,1:2:3", "m"], false).unwrap();
        assert_eq!(stray.warnings.len(), 1);
        assert!(build_from(&["-o", "lowerdir=l,uidmapping=0:1:1,0:5:1", "m"], false).is_err());
    }

    #[test]
    fn read_only_union_and_merging() {
        let inv = build_from(
            &["-o", "lowerdir=a:b", "-o", "workdir=w,allow_root", "m"],
            true,
        )
        .unwrap();
        let c = &inv.config;
        assert!(c.fuse.read_only && c.layers.upper.is_none() && c.layers.workdir.is_none());
        assert!(c.fuse.allow_root && !c.fuse.allow_other);
        assert_eq!(c.fuse.flags, ["suid"]);
        assert!(inv.warnings.iter().any(|w| w.contains("workdir")));
    }

    #[test]
    fn positional_grammar() {
        let inv = build_from(&["-f", "--workdir", "w", r"l1:l\:2", "u", "m"], false).unwrap();
        let c = &inv.config;
        assert_eq!(c.layers.lowers, [p("l1"), p("l:2")]);
        assert_eq!(
            (c.layers.upper.clone(), c.layers.workdir.clone()),
            (Some(p("u")), Some(p("w")))
        );
        assert!(c.foreground && !c.fuse.allow_other && c.fuse.flags.is_empty());
        assert!(
            build_from(&["-d", "l", "u", "m"], false)
                .unwrap()
                .config
                .foreground
        );
        for bad in [&["m"][..], &["l", "m"], &["l", "u", "m", "x"], &[]] {
            assert!(build_from(bad, false).is_err(), "{bad:?}");
        }
        assert!(build_from(&["-o", "lowerdir=l", "u", "m"], false).is_err());
        assert!(build_from(&["-o", "workdir=w", "--workdir", "w", "l", "u", "m"], false).is_err());
    }

    #[test]
    fn every_known_option() {
        let o = "fsync=1,volatile,timeout=2.5,noxattrs=1,static_nlink,ino32_t,writeback=1,threads=7,\
                 passthrough=off,whiteout=oci,squash_to_root,squash_to_uid=5,xattr_permissions=2,noacl,redirect_dir=off,\
                 allow_other,default_permissions,suid,nosuid,dev,noexec,exec,noatime,relatime,sync,\
                 dirsync,ro,fsname=f,subtype=s,lowerdir=l";
        let inv = build_from(&["-o", o, "m"], false).unwrap();
        let (fs, fuse) = (&inv.config.fs, &inv.config.fuse);
        assert!(!fs.sync_copy_up && !fs.xattrs && fs.static_nlink && fs.ino32 && !fs.posix_acl);
        assert_eq!(fs.timeout, Duration::from_millis(2500));
        assert_eq!(fs.whiteout, WhiteoutFormat::Oci);
        assert_eq!((fs.squash_uid, fs.squash_gid), (Some(5), Some(0)));
        assert_eq!(fs.xattr_permissions, XattrPermissions::Containers);
        assert!(fuse.writeback && fuse.allow_other && fuse.default_permissions && fuse.read_only);
        assert!(!fuse.passthrough);
        assert_eq!(fuse.threads, 7);
        assert_eq!(
            fuse.flags,
            ["nosuid", "dev", "exec", "noatime", "sync", "dirsync"]
        );
        assert_eq!((fuse.fsname.as_str(), fuse.subtype.as_str()), ("f", "s"));
        assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
    }

    #[test]
    fn unknown_options_warn_once_and_bad_values_fail() {
        let inv = build_from(&["-o", "lowerdir=l,foo,bar=1,redirect_dir=on", "m"], false).unwrap();
        assert_eq!(inv.warnings.len(), 2);
        assert!(inv.warnings[0].contains("foo, bar=1"));
        for bad in [
            "threads=0",
            "timeout=x",
            "timeout=-1",
            "fsync=2",
            "whiteout=x",
            "uidmapping=1:2",
            "xattr_permissions=3",
            "squash_to_uid=-1",
            "upperdir=",
            "lowerdir=::",
            "suid=1",
            "timeout",
            r"subtype=a\,b",
            "fsname=",
        ] {
            let o = format!("lowerdir=l,{bad}");
            assert!(build_from(&["-o", &o, "m"], false).is_err(), "{bad}");
        }
    }

    /// A small xorshift generator: enough to throw many odd strings at the parser without a
    /// dev-dependency.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn arbitrary_option_strings_never_panic() {
        let pieces: &[&[u8]] = &[
            b",",
            b"\"",
            b"\\",
            b":",
            b"=",
            b"lowerdir",
            b"upperdir",
            b"workdir",
            b"uidmapping",
            b"timeout",
            b"threads",
            b"1",
            b"0",
            b"-",
            b"a",
            b"\xff",
            b"\0",
            b"squash_to_uid",
            b"xattr_permissions",
            b"fsync",
            b"context",
            b"9999999999999999999",
            b"1e309",
            b"nan",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let len = next(&mut seed) % 12;
            let mut s = Vec::new();
            for _ in 0..len {
                s.extend_from_slice(pieces[(next(&mut seed) % pieces.len() as u64) as usize]);
            }
            let mut st = OptState::default();
            let _ = apply_option_string(&mut st, &s);
            let _ = split_unescaped(&s, b':');
            let _ = unescape(&s);
            let _ = IdMapping::parse_list(&String::from_utf8_lossy(&s));
            let mut args = vec![OsString::from("unionfs-rs"), OsString::from("-o")];
            args.push(OsString::from_vec(s));
            args.push(OsString::from("m"));
            if let Ok(a) = Args::try_parse_from(args) {
                let _ = build(a, next(&mut seed) % 2 == 0);
            }
        }
    }
}
