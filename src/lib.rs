//! unionfs-rs: a userspace union filesystem with kernel overlayfs semantics.
//!
//! A stack of read-only lower directories and one writable upper directory are merged into one
//! FUSE mount. See `fs` for the request flow and lock order, and DESIGN.md for the semantics.

pub mod cli;
pub mod config;
pub mod error;
pub mod fs;
pub mod mount;
pub mod sys;
