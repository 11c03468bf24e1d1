//! The clap definition of the command line and its help text. Both grammars share one flat
//! argument list: which one is in use is only known once the `-o` options are read (see
//! `invocation`), so clap collects the positional paths without counting them.

use std::ffi::OsString;

use clap::Parser;

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
  volatile, fsync=0|1               make copied-up files durable or not (volatile = fsync=0)
  copy_up_sync=background|inline    durable after the copy-up returns, in the background (crash
                                    safe: an unsynced copy is dropped after a power loss), or
                                    synced before it, as kernel overlayfs does (background)
  timeout=SECONDS                   kernel cache timeout for names and attributes (86400)
  max_nodes=N                       past N inodes held by the kernel, ask it to drop the oldest
                                    names, so the daemon's memory stays bounded (131072; 0: off)
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
pub(super) struct Args {
    /// Mount options, fuse-overlayfs style (see below)
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub(super) options: Vec<OsString>,
    /// Work directory, on the upper's filesystem
    #[arg(long, value_name = "DIR")]
    pub(super) workdir: Option<OsString>,
    /// Stay in the foreground; SIGINT/SIGTERM/SIGHUP unmount and exit 0
    #[arg(short, long)]
    pub(super) foreground: bool,
    /// Log at debug level (implies -f)
    #[arg(short, long)]
    pub(super) debug: bool,
    /// Threads serving FUSE requests
    #[arg(long, value_name = "N")]
    pub(super) threads: Option<String>,
    /// How deletions are written into the upper
    #[arg(long, value_name = "auto|chardev|oci")]
    pub(super) whiteout: Option<String>,
    #[arg(long = DAEMON_FLAG, hide = true)]
    pub(super) daemon_child: bool,
    /// LOWER[:LOWER...] UPPER MERGED, or only MERGED with -o lowerdir=
    #[arg(value_name = "PATHS")]
    pub(super) paths: Vec<OsString>,
}
