//! The merged listing of a directory: every layer's entries, top-down, deduplicated, with
//! whiteouts applied and never shown.
//!
//! A listing is ordered by a hash of each name, and the offset handed to the kernel with an
//! entry (its cookie) is that hash: "continue after this name" means the same thing in any
//! snapshot of the directory, so a reader never sees a name twice nor misses one that stayed,
//! whichever snapshot serves its next call. That matters because nothing is kept per open
//! directory: the kernel is told not to send OPENDIR and RELEASEDIR at all (two requests fewer
//! for every directory a walk enters; see `fs::opendir`), and it then caches listings itself
//! and may continue one reader's listing with another's cookies. `Listings` keeps the latest
//! snapshot of recently read directories, so a big directory read in many calls is merged once. `d_ino` agrees with `st_ino`: entries that exist in one
//! layer only take their inode number from the listing itself; entries several layers share
//! (merged directories, copied-up files) and renamed copies in "impure" directories are resolved
//! like a lookup, through the index. Kernel analog: `fs/overlayfs/readdir.c`.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::index::{Cached, DirNames};
use crate::inode::{Ino, Kind, Node, Placement};
use crate::layers::LayerIdx;
use crate::lookup::Resolved;
use crate::sys::{self, Errno, SysResult};
use crate::union::Freshness;
use crate::union::Union;
use crate::whiteout::{self, EntryRole};

/// Directories whose latest listing is kept, least recently used dropped first.
const LISTINGS_KEPT: usize = 64;

/// One visible name of a merged directory.
#[derive(Debug, Clone)]
pub struct MergedEntry {
    pub name: OsString,
    pub kind: Kind,
    pub ino: Ino,
    /// Set when the name exists in one layer only (no other layer lists it or a whiteout for
    /// it): readdirplus can then answer it with one stat instead of a lookup.
    pub sole: Option<SoleInstance>,
}

/// The one object a name stands for, as the listing saw it.
#[derive(Debug, Clone, Copy)]
pub struct SoleInstance {
    pub layer: LayerIdx,
    pub raw_ino: u64,
}

/// A directory's merged listing, and the index epoch it was read at (see `entry_plus`).
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<MergedEntry>,
    pub epoch: u64,
}

/// A name as first seen while merging, before its inode number is settled.
struct Candidate {
    name: Vec<u8>,
    kind: Kind,
    layer: LayerIdx,
    raw_ino: u64,
    /// Also present (or whited out) in a lower layer: resolve it like a lookup.
    shared: bool,
}

/// What the merge of the layers found.
#[derive(Default)]
struct Merge {
    visible: Vec<Candidate>,
    /// Name -> position in `visible`, or `None` for names deleted by a whiteout.
    seen: HashMap<Vec<u8>, Option<usize>>,
    /// Every name each layer lists, for the index (lookups that follow a readdir).
    names: DirNames,
}

impl Union {
    /// Builds the merged listing of a directory node.
    pub fn merged_listing(&self, dir: &Arc<Node>) -> SysResult<Vec<MergedEntry>> {
        Ok(self.listing(dir)?.entries)
    }

    /// `merged_listing` with the epoch it was read at.
    fn listing(&self, dir: &Arc<Node>) -> SysResult<Listing> {
        let epoch = self.index.epoch();
        let placement = dir.placement();
        let mut merge = Merge::default();
        let mut impure = false;
        for &layer in &placement.dir_layers {
            let fd = match self.dir_for_listing(dir, layer) {
                Ok(fd) => fd,
                Err(Errno::NOENT) | Err(Errno::NOTDIR) => continue,
                Err(e) => return Err(e),
            };
            if self.stack.is_upper(layer) {
                impure = self.is_impure(fd.as_fd());
            }
            self.merge_layer(&mut merge, layer, fd, dir)?;
        }
        let Merge { visible, names, .. } = merge;
        self.index.put_dir_names(dir.ino, names, epoch);
        let mut entries = visible
            .into_iter()
            .map(|c| self.settle(dir, c, impure))
            .collect::<SysResult<Vec<_>>>()?;
        entries.sort_by_cached_key(|e| name_cookie(e.name.as_bytes()));
        Ok(Listing { entries, epoch })
    }

    /// Adds one layer's entries: names not seen above become visible; this layer's whiteouts
    /// then hide the names of the layers below.
    fn merge_layer(
        &self,
        merge: &mut Merge,
        layer: LayerIdx,
        fd: std::os::fd::OwnedFd,
        dir: &Node,
    ) -> SysResult<()> {
        let xattr_whiteouts = whiteout::dir_has_xattr_whiteouts(fd.as_fd())?;
        let dir_fd = fd.try_clone().map_err(|_| Errno::MFILE)?;
        let mut whiteouts = Vec::new();
        for entry in sys::read_dir_entries(fd)? {
            let name = entry.name;
            merge.names.add(whiteout::listed_name(&name), layer);
            let target = match whiteout::role_by_name(&name) {
                EntryRole::OpaqueMarker => continue,
                EntryRole::WhiteoutFor(target) => {
                    whiteouts.push(target);
                    continue;
                }
                EntryRole::Visible => name,
            };
            if let Some(slot) = merge.seen.get(&target) {
                if let Some(i) = slot {
                    merge.visible[*i].shared = true;
                }
                continue;
            }
            if self.is_hidden_root_name(dir, OsStr::from_bytes(&target)) {
                continue;
            }
            let Some(kind) = entry_kind(dir_fd.as_fd(), &target, entry.file_type, xattr_whiteouts)?
            else {
                whiteouts.push(target);
                continue;
            };
            merge.seen.insert(target.clone(), Some(merge.visible.len()));
            merge.visible.push(Candidate {
                name: target,
                kind,
                layer,
                raw_ino: entry.ino,
                shared: false,
            });
        }
        for name in whiteouts {
            match merge.seen.get(&name) {
                Some(Some(i)) => merge.visible[*i].shared = true,
                Some(None) => {}
                None => {
                    merge.seen.insert(name, None);
                }
            }
        }
        Ok(())
    }

    /// Gives a candidate its final inode number.
    fn settle(&self, dir: &Arc<Node>, c: Candidate, impure: bool) -> SysResult<MergedEntry> {
        let name = OsString::from_vec_bytes(c.name);
        let needs_lookup = c.shared || (impure && self.stack.is_upper(c.layer) && !c.kind.is_dir());
        if needs_lookup {
            if let Some(found) = self.resolve_child(dir, &name)? {
                let ino = self.mapper.map(found.identity.0, found.identity.1);
                return Ok(MergedEntry {
                    name,
                    kind: found.kind,
                    ino,
                    sole: None,
                });
            }
        }
        let ino = self.mapper.map(self.stack.get(c.layer).dev, c.raw_ino);
        Ok(MergedEntry {
            name,
            kind: c.kind,
            ino,
            sole: (!needs_lookup).then_some(SoleInstance {
                layer: c.layer,
                raw_ino: c.raw_ino,
            }),
        })
    }

    /// Whether an upper directory holds renamed copied-up objects (set by `dir::rename`).
    fn is_impure(&self, upper_dir: BorrowedFd<'_>) -> bool {
        let key = self.impure_xattr();
        matches!(
            sys::xattr::get_opt(upper_dir, OsStr::new(""), &key),
            Ok(Some(_))
        )
    }

    pub fn impure_xattr(&self) -> OsString {
        OsString::from(format!("{}unionfs.impure", self.stack.format.xattr_prefix))
    }

    /// True when the merged directory shows no entry at all (what rmdir needs).
    pub fn is_empty_dir(&self, dir: &Arc<Node>) -> SysResult<bool> {
        Ok(self.merged_listing(dir)?.is_empty())
    }
}

/// The latest listing of recently read directories.
pub struct Listings {
    kept: parking_lot::Mutex<lru::LruCache<Ino, Arc<Listing>>>,
}

impl Default for Listings {
    fn default() -> Self {
        let cap = NonZeroUsize::new(LISTINGS_KEPT).unwrap_or(NonZeroUsize::MIN);
        Listings {
            kept: parking_lot::Mutex::new(lru::LruCache::new(cap)),
        }
    }
}

impl Listings {
    fn get(&self, dir: Ino) -> Option<Arc<Listing>> {
        self.kept.lock().get(&dir).cloned()
    }

    fn keep(&self, dir: Ino, listing: Arc<Listing>) {
        self.kept.lock().put(dir, listing);
    }
}

/// The offset handed to the kernel with an entry: where to continue after it. `.` is 1, `..`
/// is 2, and a name's cookie is a hash of the name above those (and below 2^63, the kernel's
/// offsets being signed). Two names of one directory sharing a 62-bit hash would share a
/// cookie, and a reply split between them would skip the second: about one chance in 10^7
/// for a directory of a million names.
type Cookie = u64;

const FIRST_NAME_COOKIE: Cookie = 3;

fn name_cookie(name: &[u8]) -> Cookie {
    use std::hash::{Hash, Hasher};
    // Fixed keys: cookies must stay the same for the life of the mount.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    (h.finish() >> 2) + FIRST_NAME_COOKIE
}

/// The entries of a directory from some offset on, each with the cookie that follows it.
/// Lazy: a reply takes only as many as fit in the kernel's buffer, so reading a big directory
/// in many calls clones (and for readdirplus looks up) each entry once, not once per call.
pub struct DirEntries {
    dots: [MergedEntry; 2],
    listing: Arc<Listing>,
    /// Next dot to return (0, 1), or 2 once both are done.
    dot: usize,
    /// Next entry of the listing to return.
    pos: usize,
}

impl DirEntries {
    /// The index epoch the listing was read at.
    pub fn epoch(&self) -> u64 {
        self.listing.epoch
    }
}

impl Iterator for DirEntries {
    type Item = (Cookie, MergedEntry);

    fn next(&mut self) -> Option<Self::Item> {
        if self.dot < 2 {
            self.dot += 1;
            return Some((self.dot as Cookie, self.dots[self.dot - 1].clone()));
        }
        let entry = self.listing.entries.get(self.pos)?.clone();
        self.pos += 1;
        Some((name_cookie(entry.name.as_bytes()), entry))
    }
}

impl Union {
    /// The entries of directory `dir` after `offset`. Offset 0 (a fresh start or `rewinddir`)
    /// takes a new snapshot; other offsets continue in the latest one (taken again if it was
    /// dropped), after the name whose cookie they are.
    pub fn dir_entries(&self, dir: &Arc<Node>, offset: u64) -> SysResult<DirEntries> {
        if !dir.kind.is_dir() {
            return Err(Errno::NOTDIR);
        }
        let listing = match self.listings.get(dir.ino) {
            Some(l) if offset != 0 => l,
            _ => {
                let l = Arc::new(self.listing(dir)?);
                self.listings.keep(dir.ino, l.clone());
                l
            }
        };
        let dot = offset.min(2) as usize;
        let pos = if offset < FIRST_NAME_COOKIE {
            0
        } else {
            listing
                .entries
                .partition_point(|e| name_cookie(e.name.as_bytes()) <= offset)
        };
        let parent_ino = dir.primary_alias().map(|a| a.parent.ino).unwrap_or(dir.ino);
        let dots = [
            MergedEntry {
                name: OsString::from("."),
                kind: Kind::Dir,
                ino: dir.ino,
                sole: None,
            },
            MergedEntry {
                name: OsString::from(".."),
                kind: Kind::Dir,
                ino: parent_ino,
                sole: None,
            },
        ];
        Ok(DirEntries {
            dots,
            listing,
            dot,
            pos,
        })
    }

    /// One entry of a readdirplus reply with its node and attributes: looked up like a name
    /// (one lookup counted), except the dots, which the kernel does not count.
    /// `listed_at` is the epoch of the listing the entry comes from.
    pub fn entry_plus(
        &self,
        dir: &Arc<Node>,
        entry: &MergedEntry,
        listed_at: u64,
    ) -> SysResult<(Arc<Node>, sys::Stat)> {
        if entry.name == "." {
            self.stat_node(dir).map(|st| (dir.clone(), st))
        } else if entry.name == ".." {
            let parent = dir
                .primary_alias()
                .map(|a| a.parent)
                .unwrap_or_else(|| dir.clone());
            self.stat_node(&parent).map(|st| (parent, st))
        } else if let Some(found) = self.resolve_sole(dir, entry, listed_at) {
            self.instantiate(dir, &entry.name, &found, Freshness::JustRead)
        } else {
            self.lookup(dir, &entry.name)
        }
    }

    /// Resolves a name the listing found in one layer only with a single stat, skipping the
    /// walk over the layers and the whiteout and opacity probes a lookup makes: the listing
    /// already showed that no other layer has anything to say about the name. Valid only
    /// while the union's namespace is as it was when the listing was read (no create, delete,
    /// rename or copy-up since: the epoch did not move), and only if the stat finds the very
    /// object listed; otherwise `None`, and the caller looks the name up.
    fn resolve_sole(&self, dir: &Node, entry: &MergedEntry, listed_at: u64) -> Option<Resolved> {
        let sole = entry.sole?;
        if self.index.epoch() != listed_at {
            return None;
        }
        if let Some(Cached::Present(found)) = self.index.get(dir.ino, &entry.name) {
            if found.placement.layer != sole.layer {
                return None; // the index knows better: let the lookup use it
            }
        }
        let fd = self.dir_in(dir, sole.layer).ok()?;
        let stat = sys::stat_at(fd.as_fd(), &entry.name).ok()?;
        if stat.st_ino != sole.raw_ino || Kind::from_mode(stat.st_mode) != entry.kind {
            return None;
        }
        let found = Resolved {
            kind: entry.kind,
            stat,
            placement: Placement {
                layer: sole.layer,
                dir_layers: if entry.kind.is_dir() {
                    vec![sole.layer]
                } else {
                    Vec::new()
                },
            },
            identity: (self.stack.get(sole.layer).dev, sole.raw_ino),
            unsynced: false,
        };
        let cached = Cached::Present(found.clone());
        self.index
            .insert_if_unchanged(dir.ino, &entry.name, cached, listed_at);
        Some(found)
    }
}

/// The kind of a listed entry, or `None` when it is in fact a whiteout.
fn entry_kind(
    dir: BorrowedFd<'_>,
    name: &[u8],
    file_type: rustix::fs::FileType,
    xattr_whiteouts: bool,
) -> SysResult<Option<Kind>> {
    use rustix::fs::FileType;
    let needs_stat = matches!(file_type, FileType::CharacterDevice | FileType::Unknown)
        || (xattr_whiteouts && file_type == FileType::RegularFile);
    if !needs_stat {
        return Ok(Some(kind_of_type(file_type)));
    }
    let Some(st) = sys::stat_at_opt(dir, OsStr::from_bytes(name))? else {
        return Ok(None); // vanished while listing
    };
    if whiteout::is_whiteout_stat(&st)
        || whiteout::is_xattr_whiteout(dir, OsStr::from_bytes(name), &st)?
    {
        return Ok(None);
    }
    Ok(Some(Kind::from_mode(st.st_mode)))
}

fn kind_of_type(t: rustix::fs::FileType) -> Kind {
    use rustix::fs::FileType;
    match t {
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        FileType::Fifo => Kind::Fifo,
        FileType::Socket => Kind::Socket,
        FileType::CharacterDevice => Kind::CharDev,
        FileType::BlockDevice => Kind::BlockDev,
        _ => Kind::File,
    }
}

/// `OsString` from raw bytes without a lossy conversion.
trait FromVecBytes {
    fn from_vec_bytes(v: Vec<u8>) -> OsString;
}

impl FromVecBytes for OsString {
    fn from_vec_bytes(v: Vec<u8>) -> OsString {
        std::os::unix::ffi::OsStringExt::from_vec(v)
    }
}
