//! Extended attributes through the merged view.
//!
//! Reads come from the layer the object lives in; writes copy it up first. The union's own
//! bookkeeping (`*.overlay.*`, `*.unionfs.*`, fuse-overlayfs's) is never listed, read or set
//! through the mount, so nobody can forge an opaque directory or an origin.
//! Kernel analog: `fs/overlayfs/xattrs.c`.

use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::copy_up::CopyUpData;
use crate::inode::Node;
use crate::sys::{self, Errno, SysResult};
use crate::union::{Caller, Union};
use crate::whiteout::is_private_xattr;

impl Union {
    fn check_xattrs_enabled(&self) -> SysResult<()> {
        if self.opts.xattrs {
            Ok(())
        } else {
            Err(Errno::NOTSUP)
        }
    }

    /// `noacl`: ACL attributes are refused like any unsupported xattr.
    fn check_acl_enabled(&self, key: &OsStr) -> SysResult<()> {
        let is_acl = key.as_bytes().starts_with(b"system.posix_acl_");
        if is_acl && !self.opts.posix_acl {
            Err(Errno::NOTSUP)
        } else {
            Ok(())
        }
    }

    pub fn getxattr(&self, node: &Node, key: &OsStr) -> SysResult<Vec<u8>> {
        if let Some(report) = crate::stats::root_xattr(self, node, key) {
            return Ok(report); // the metrics view, served even with xattrs off
        }
        self.check_xattrs_enabled()?;
        self.check_acl_enabled(key)?;
        if self.is_hidden_xattr(key.as_bytes()) {
            return Err(Errno::NODATA);
        }
        let (dir, name) = self.parent_dir_in(node, node.layer())?;
        sys::xattr::get(dir.as_fd(), &name, key)
    }

    /// Lists the names a caller may see: `trusted.*` only for root, as the kernel lists them
    /// only to CAP_SYS_ADMIN (the daemon itself may be root and see them all).
    pub fn listxattr(&self, node: &Node, caller: Caller) -> SysResult<Vec<u8>> {
        self.check_xattrs_enabled()?;
        let (dir, name) = self.parent_dir_in(node, node.layer())?;
        let names: Vec<OsString> = sys::xattr::list(dir.as_fd(), &name)?
            .into_iter()
            .filter(|n| !self.is_hidden_xattr(n.as_bytes()))
            .filter(|n| caller.uid == 0 || !n.as_bytes().starts_with(b"trusted."))
            .collect();
        Ok(sys::xattr::join_names(&names))
    }

    pub fn setxattr(
        &self,
        node: &Arc<Node>,
        key: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> SysResult<()> {
        self.check_xattrs_enabled()?;
        self.check_xattr_write(key)?;
        self.copy_up(node, CopyUpData::Full)?;
        let (dir, name) = self.parent_dir_in(node, self.upper_idx()?)?;
        let flags = sys::xattr::XattrFlags::from_bits_retain(flags as u32);
        sys::xattr::set(dir.as_fd(), &name, key, value, flags)
    }

    pub fn removexattr(&self, node: &Arc<Node>, key: &OsStr) -> SysResult<()> {
        self.check_xattrs_enabled()?;
        self.check_xattr_write(key)?;
        // Removing what is not there must not copy the object up for nothing.
        let (dir, name) = self.parent_dir_in(node, node.layer())?;
        if sys::xattr::get_opt(dir.as_fd(), &name, key)?.is_none() {
            return Err(Errno::NODATA);
        }
        self.copy_up(node, CopyUpData::Full)?;
        let (dir, name) = self.parent_dir_in(node, self.upper_idx()?)?;
        sys::xattr::remove(dir.as_fd(), &name, key)
    }

    /// The union's own bookkeeping, and the ownership store when `xattr_permissions` is on.
    fn is_hidden_xattr(&self, key: &[u8]) -> bool {
        is_private_xattr(key) || self.ownership.is_override_key(key)
    }

    fn check_xattr_write(&self, key: &OsStr) -> SysResult<()> {
        self.check_acl_enabled(key)?;
        if self.read_only() {
            return Err(Errno::ROFS);
        }
        if self.is_hidden_xattr(key.as_bytes()) {
            return Err(Errno::PERM);
        }
        Ok(())
    }
}
