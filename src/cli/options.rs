//! The vocabulary of `-o`: each `key[=value]` element is applied to an [`OptState`] in order,
//! so a later option overrides an earlier one and several `-o` merge. Unknown keys are
//! collected (one warning later), never an error: container tools pass options meant for other
//! mount programs. A malformed value of a known key is an error.

use std::path::PathBuf;

use super::escape::{split_options, split_unescaped};
use super::value::Opt;
use crate::config::{CopyUpSync, IdMapping, MountConfig, WhiteoutFormat, XattrPermissions};
use crate::error::SetupError;

/// Options gathered from every `-o`, before the layers are known to be complete.
#[derive(Debug, Default)]
pub(super) struct OptState {
    pub(super) config: MountConfig,
    pub(super) lowers: Option<Vec<PathBuf>>,
    pub(super) upper: Option<PathBuf>,
    pub(super) workdir: Option<PathBuf>,
    pub(super) squash_to_root: bool,
    pub(super) debug: bool,
    /// The last element was `uidmapping=` (true) or `gidmapping=` (false), with its text so far:
    /// fuse-overlayfs's man page separates ranges with commas, which also end an -o element.
    mapping: Option<(bool, String)>,
    pub(super) unknown: Vec<String>,
    pub(super) warnings: Vec<String>,
}

/// Applies every element of one `-o` string, in order.
pub(super) fn apply_option_string(st: &mut OptState, s: &[u8]) -> Result<(), SetupError> {
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

/// `fsync=0|1` (and `volatile`) switch syncing off or back on; on, it keeps the chosen way.
fn with_fsync(now: CopyUpSync, on: bool) -> CopyUpSync {
    match (on, now) {
        (false, _) => CopyUpSync::Off,
        (true, CopyUpSync::Off) => CopyUpSync::Background,
        (true, chosen) => chosen,
    }
}

fn apply_fs_option(st: &mut OptState, o: Opt) -> Result<bool, SetupError> {
    let fs = &mut st.config.fs;
    match o.key {
        "volatile" => fs.copy_up_sync = with_fsync(fs.copy_up_sync, !o.flag()?),
        "fsync" => fs.copy_up_sync = with_fsync(fs.copy_up_sync, o.flag()?),
        "copy_up_sync" => {
            fs.copy_up_sync = CopyUpSync::parse(&o.text()?).map_err(|e| o.bad(e))?;
        }
        "timeout" => fs.timeout = o.seconds()?,
        "max_nodes" => fs.max_nodes = o.number()?,
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
pub(super) fn set_flag(flags: &mut Vec<String>, name: &str) {
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
