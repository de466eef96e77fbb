//! What can go wrong backing up a disk, and whether trying again can help.

use lifeboat_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    // The cause is printed by the error chain (`{:#}`), not repeated here.
    #[error("cannot read disk {path}")]
    Source {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid backup request: {0}")]
    Invalid(String),
}

impl BackupError {
    /// Whether running the same backup again may succeed (uploaded data is reused).
    pub fn is_retryable(&self) -> bool {
        match self {
            BackupError::Store(e) => e.is_retryable(),
            _ => false,
        }
    }
}
