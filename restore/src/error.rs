//! What can go wrong restoring a snapshot, and whether trying again can help.

use lifeboat_store::StoreError;

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
