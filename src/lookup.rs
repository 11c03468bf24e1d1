//! Resolving one name of a merged directory across its layers, top-down.
//!
//! The state machine of the kernel's `ovl_lookup_single`, per layer of the parent:
//! - absent: go on;
//! - a whiteout for the name (any dialect) in this layer: stop; deleted unless found above;
//! - a non-directory: it wins if nothing above won; stop;
//! - a directory: add this layer to the merged directory; stop if it is opaque, or if this
//!   layer also holds an OCI whiteout for it (which hides only what lies below).
//!
//! The result says where the object lives and what its identity is (see `inode`).

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::durability::OriginRecord;
use crate::inode::{Kind, Placement};
use crate::layers::{LayerIdx, LayerStack};
use crate::sys::{self, Errno, Stat, SysResult};
use crate::whiteout;

/// A name that exists in the merged view.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub kind: Kind,
    /// Attributes of the topmost instance.
    pub stat: Stat,
    pub placement: Placement,
    /// (device, inode) the inode number derives from.
    pub identity: (u64, u64),
    /// The topmost instance is a copy-up whose data may not be on disk yet (see `durability`):
    /// the union decides whether it stands before using it.
    pub unsynced: bool,
}

/// What one layer says about a name.
enum LayerAnswer {
    Absent,
    /// Deleted here (whiteout): nothing below counts.
    WhitedOut,
    /// Present; `hides_below` when an opaque marker or same-layer OCI whiteout stops the descent;
    /// `origin` is what copy-up recorded (upper non-directories only).
    Present {
        stat: Stat,
        hides_below: bool,
        origin: Option<OriginRecord>,
    },
}

/// Opens the parent directory in one layer (the union answers from its fd cache).
pub type DirOf<'a> = &'a dyn Fn(LayerIdx) -> SysResult<Arc<OwnedFd>>;

/// Resolves `name` in the directory whose merged layers are `parent_layers`; `dir_of` opens
/// that directory in a layer.
///
/// `listed`, when the directory's names are indexed, says which layers list the name at all:
/// the others cannot have it nor whiteouts for it, so they are skipped (and when none is
/// left, so is everything below the last one asked).
pub fn resolve(
    stack: &LayerStack,
    dir_of: DirOf<'_>,
    parent_layers: &[LayerIdx],
    name: &OsStr,
    listed: Option<&[LayerIdx]>,
) -> SysResult<Option<Resolved>> {
    let asked: Vec<LayerIdx> = match listed {
        Some(listed) => parent_layers
            .iter()
            .copied()
            .filter(|l| listed.contains(l))
            .collect(),
        None => parent_layers.to_vec(),
    };
    let mut found: Option<Resolved> = None;
    for (pos, &layer) in asked.iter().enumerate() {
        let is_last = pos + 1 == asked.len();
        let answer = ask_layer(stack, layer, dir_of, name, is_last)?;
        let (stat, hides_below, origin) = match answer {
            LayerAnswer::Absent => continue,
            LayerAnswer::WhitedOut => break,
            LayerAnswer::Present {
                stat,
                hides_below,
                origin,
            } => (stat, hides_below, origin),
        };
        let kind = Kind::from_mode(stat.st_mode);
        let dev = stack.get(layer).dev;
        match &mut found {
            None => {
                found = Some(Resolved {
                    kind,
                    stat,
                    placement: Placement {
                        layer,
                        dir_layers: if kind.is_dir() {
                            vec![layer]
                        } else {
                            Vec::new()
                        },
                    },
                    identity: origin
                        .as_ref()
                        .and_then(|o| o.identity)
                        .unwrap_or((dev, stat.st_ino)),
                    unsynced: origin.is_some_and(|o| o.unsynced_boot.is_some()),
                });
                if !kind.is_dir() {
                    break;
                }
            }
            Some(dir) if kind.is_dir() => {
                // A merged directory takes the identity of its topmost lower instance, so it is
                // the same before and after the directory is copied up.
                if dir.placement.dir_layers.len() == 1 && stack.is_upper(dir.placement.layer) {
                    dir.identity = (dev, stat.st_ino);
                }
                dir.placement.dir_layers.push(layer);
            }
            // A directory above a non-directory: the lower object is simply hidden.
            Some(_) => break,
        }
        if hides_below {
            break;
        }
    }
    Ok(found)
}

/// Looks at one layer: the entry, its whiteouts and (for directories) opacity.
fn ask_layer(
    stack: &LayerStack,
    layer: LayerIdx,
    dir_of: DirOf<'_>,
    name: &OsStr,
    is_last: bool,
) -> SysResult<LayerAnswer> {
    let dir = match dir_of(layer) {
        Ok(fd) => fd,
        // The parent vanished from this layer (only possible if someone edits a layer
        // behind our back): treat as absent rather than failing the whole lookup.
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(LayerAnswer::Absent),
        Err(e) => return Err(e),
    };
    let stat = sys::stat_at_opt(dir.as_fd(), name)?;
    if let Some(st) = &stat {
        if whiteout::is_whiteout_stat(st) || whiteout::is_xattr_whiteout(dir.as_fd(), name, st)? {
            return Ok(LayerAnswer::WhitedOut);
        }
    }
    // A same-layer OCI whiteout matters only for what lies below this layer.
    let oci_whiteout = !is_last && oci_whiteout_exists(dir.as_fd(), name)?;
    match stat {
        None if oci_whiteout => Ok(LayerAnswer::WhitedOut),
        None => Ok(LayerAnswer::Absent),
        Some(st) => {
            let opaque = sys::is_dir_stat(&st) && !is_last && {
                let sub = sys::open_at(
                    dir.as_fd(),
                    name,
                    sys::OFlags::PATH | sys::OFlags::DIRECTORY,
                    sys::Mode::empty(),
                )?;
                whiteout::is_opaque_dir(sub.as_fd())?
            };
            let origin = if stack.is_upper(layer) && !sys::is_dir_stat(&st) {
                read_origin(stack, dir.as_fd(), name)
            } else {
                None
            };
            Ok(LayerAnswer::Present {
                stat: st,
                hides_below: opaque || oci_whiteout,
                origin,
            })
        }
    }
}

fn oci_whiteout_exists(dir: std::os::fd::BorrowedFd<'_>, name: &OsStr) -> SysResult<bool> {
    use std::os::unix::ffi::OsStrExt;
    match whiteout::oci_whiteout_name(name.as_bytes()) {
        Some(wh) => Ok(sys::stat_at_opt(dir, &wh)?.is_some()),
        None => Ok(false),
    }
}

/// Whether any layer in `layers` (typically the lowers below the upper) still has `name`
/// visible, which is when deleting it needs a whiteout.
pub fn lower_has_name(
    stack: &LayerStack,
    dir_of: DirOf<'_>,
    layers: &[LayerIdx],
    name: &OsStr,
) -> SysResult<bool> {
    let lowers: Vec<LayerIdx> = layers
        .iter()
        .copied()
        .filter(|&l| !stack.is_upper(l))
        .collect();
    Ok(resolve(stack, dir_of, &lowers, name, None)?.is_some())
}

/// What copy-up recorded on an upper object, if anything.
pub fn read_origin(
    stack: &LayerStack,
    dir: std::os::fd::BorrowedFd<'_>,
    name: &OsStr,
) -> Option<OriginRecord> {
    let raw = sys::xattr::get_opt(dir, name, &stack.format.origin_xattr()).ok()??;
    OriginRecord::decode(&raw)
}
