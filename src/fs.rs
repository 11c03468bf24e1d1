//! Placeholder: the FUSE glue lands with the core.
use crate::config::MountConfig;
use crate::error::SetupError;

pub struct UnionFs;

impl UnionFs {
    pub fn new(_config: &MountConfig) -> Result<UnionFs, SetupError> {
        Ok(UnionFs)
    }
}

impl fuser::Filesystem for UnionFs {}
