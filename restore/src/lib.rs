//! Lifeboat's read side: restoring snapshots and verifying the repository.
//!
//! Both fetch pack ranges in parallel and check every chunk (AEAD tag and keyed id)
//! before using it: restore never writes a byte it could not verify, and verify names
//! the snapshot, disk and offset each problem affects.

mod plan;
pub mod restore;
pub mod verify;

use lifeboat_store::StoreError;

pub use restore::{RestoreReport, RestoreRequest, restore_snapshot};
pub use verify::{VerifyOptions, VerifyReport, verify_repository};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "snapshot {snapshot} ({vm}/{disk}) is damaged at disk offset {offset}: {detail}. Nothing unverified was written; run `lifeboat verify --read-data` for the full extent of the damage"
    )]
    Damaged {
        snapshot: String,
        vm: String,
        disk: String,
        offset: u64,
        detail: String,
    },
    #[error("restore target {path}: {detail}")]
    Target { path: String, detail: String },
}

impl RestoreError {
    pub fn is_retryable(&self) -> bool {
        match self {
            RestoreError::Store(e) => e.is_retryable(),
            _ => false,
        }
    }
}
