//! unionfs-rs: a userspace union filesystem with kernel overlayfs semantics.
//!
//! A stack of read-only lower directories and one writable upper directory are merged into one
//! FUSE mount. See `fs` for the request flow and lock order, and DESIGN.md for the semantics.

pub mod acl;
pub mod attr;
pub mod cli;
pub mod config;
pub mod copy_up;
pub mod dir;
pub mod dirfds;
pub mod durability;
pub mod error;
pub mod fs;
pub mod handles;
pub mod index;
pub mod inode;
pub mod layers;
pub mod lookup;
pub mod metrics;
pub mod mount;
pub mod ownership;
pub mod parking;
pub mod passthrough;
pub mod readdir;
pub mod reaper;
pub mod rename;
pub mod stats;
pub mod sys;
pub mod union;
pub mod whiteout;
pub mod xattr;
