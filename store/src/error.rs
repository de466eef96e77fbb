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
    /// `latest` names the newest snapshots of several disks: the selection must be
    /// narrowed to one VM and disk.
    #[error(
        "invalid snapshot selection: `latest` is ambiguous{}: several disks match ({})",
        selection_filters(.vm.as_deref(), .disk.as_deref()),
        .disks.join(", ")
    )]
    AmbiguousLatest {
        vm: Option<String>,
        disk: Option<String>,
        /// `vm/disk` of each disk that matched.
        disks: Vec<String>,
    },
    /// No snapshot id starts with `prefix` (among the snapshots of `vm` and `disk`, when
    /// given).
    #[error("no snapshot {prefix}{}", selection_filters(.vm.as_deref(), .disk.as_deref()))]
    NoSuchSnapshot {
        prefix: String,
        vm: Option<String>,
        disk: Option<String>,
    },
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

/// How a snapshot selection was narrowed, for messages: ` (vm db01, disk any)`, or
/// nothing when it was not.
pub(crate) fn selection_filters(vm: Option<&str>, disk: Option<&str>) -> String {
    match (vm, disk) {
        (None, None) => String::new(),
        _ => format!(
            " (vm {}, disk {})",
            vm.unwrap_or("any"),
            disk.unwrap_or("any")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_selection_messages() {
        let ambiguous = StoreError::AmbiguousLatest {
            vm: None,
            disk: Some("root".into()),
            disks: vec!["db01/root".into(), "db02/root".into()],
        };
        assert_eq!(
            ambiguous.to_string(),
            "invalid snapshot selection: `latest` is ambiguous (vm any, disk root): several \
             disks match (db01/root, db02/root)"
        );
        let missing = StoreError::NoSuchSnapshot {
            prefix: "ab12".into(),
            vm: None,
            disk: None,
        };
        assert_eq!(missing.to_string(), "no snapshot ab12");
    }
}
