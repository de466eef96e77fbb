//! The store's error type: what went wrong, in words an operator can act on, and
//! whether a retry can help.

use crate::backend::{BackendError, address::AddressError};
use crate::format::DecodeError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error(
        "no Lifeboat repository at {location}: run `lifeboat -r {location} init` to create one, or check the address"
    )]
    NotARepository { location: String },
    #[error("a repository already exists at {location}; refusing to overwrite it")]
    AlreadyInitialized { location: String },
    #[error(
        "the passphrase does not open any of the {slots} key slot(s) of {location}; check LIFEBOAT_PASSWORD / --password-file"
    )]
    WrongPassphrase { location: String, slots: usize },
    #[error(
        "{location} has no key slots left; the repository cannot be opened (restore keys/ from a backup)"
    )]
    NoKeySlots { location: String },
    #[error("object {key} is damaged: {detail}; run `lifeboat verify` to see what it affects")]
    Corrupt { key: String, detail: String },
    #[error(
        "repository format version {found} is newer than this Lifeboat supports ({supported}); upgrade Lifeboat"
    )]
    UnsupportedFormat { found: u32, supported: u32 },
    #[error(
        "local catalog {path} failed (it is only a cache: delete it and it is rebuilt from the repository)"
    )]
    Catalog {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{0}")]
    NotFound(String),
    #[error(
        "snapshot not committed: {detail}. Nothing was lost — the earlier snapshots are intact; run the backup again and it will upload the affected data afresh"
    )]
    GcConflict { detail: String },
    #[error("{0}")]
    Busy(String),
    #[error("invalid {what}: {detail}")]
    Invalid { what: String, detail: String },
    #[error("local I/O on {path}")]
    LocalIo {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Backend(e) => e.is_retryable(),
            StoreError::GcConflict { .. } | StoreError::Busy(_) => true,
            _ => false,
        }
    }

    pub(crate) fn corrupt(key: &str, detail: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            key: key.to_string(),
            detail: detail.to_string(),
        }
    }

    pub(crate) fn decode(key: &str, err: DecodeError) -> Self {
        match err {
            DecodeError::UnsupportedVersion {
                found, supported, ..
            } => StoreError::UnsupportedFormat { found, supported },
            other => Self::corrupt(key, other),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
