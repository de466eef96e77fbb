//! Storage backends: where repository objects live.
//!
//! A backend is a flat key → bytes store with exactly the operations the repository
//! needs. Keys are `/`-separated relative paths such as `data/ab/ab12…`; a backend maps
//! them onto files (local directory) or object keys under a prefix (S3). Everything above
//! this trait — encryption, packing, the catalog — is backend-agnostic, so a new target
//! only has to implement these few methods.

pub mod address;
pub mod local;
pub mod s3;
mod s3_text;

use async_trait::async_trait;
use bytes::Bytes;

pub use address::{RepoAddress, open_backend};

/// One object as reported by [`Backend::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the repository root, e.g. `index/0a1b…`.
    pub key: String,
    pub size: u64,
}

/// What went wrong talking to storage, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("object {key} does not exist")]
    NotFound { key: String },
    #[error("object {key} already exists")]
    AlreadyExists { key: String },
    #[error(
        "{what}: access denied — check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the AWS profile) and the bucket policy: {detail}"
    )]
    AccessDenied { what: String, detail: String },
    #[error(
        "bucket {bucket} does not exist at {endpoint}; create it first, or run `lifeboat init --create-bucket`"
    )]
    NoSuchBucket { bucket: String, endpoint: String },
    #[error(
        "{what}: storage is unreachable or timed out after retries ({detail}); check the endpoint address and network"
    )]
    Unreachable { what: String, detail: String },
    #[error("{what}: {detail}")]
    Io {
        what: String,
        detail: String,
        retryable: bool,
    },
}

impl BackendError {
    /// Whether repeating the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            BackendError::Unreachable { .. } => true,
            BackendError::Io { retryable, .. } => *retryable,
            _ => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }
}

pub type BackendResult<T> = Result<T, BackendError>;

/// A flat object store. Implementations must make `put` atomic: a reader sees either
/// no object or the whole object, never a partial one — the crash-safety of the whole
/// repository rests on that.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Human-readable location, e.g. `s3://bucket/prefix` (never contains credentials).
    fn location(&self) -> String;

    /// Checks that the repository root is reachable (bucket exists, directory exists).
    async fn check_reachable(&self) -> BackendResult<()>;

    /// Creates the container (bucket or directory) if missing. Used by `init --create-bucket`.
    async fn create_container(&self) -> BackendResult<()>;

    /// Stores `data` under `key`, replacing any object there.
    async fn put(&self, key: &str, data: Bytes) -> BackendResult<()>;

    /// Stores `data` under `key` only if no object exists there yet
    /// (`AlreadyExists` otherwise). Used for objects that must never be overwritten.
    async fn put_if_absent(&self, key: &str, data: Bytes) -> BackendResult<()>;

    /// Reads a whole object.
    async fn get(&self, key: &str) -> BackendResult<Bytes>;

    /// Reads `len` bytes at `offset`. Returns fewer bytes only if the object is shorter.
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> BackendResult<Bytes>;

    /// Size of an object, or `None` when it does not exist.
    async fn size(&self, key: &str) -> BackendResult<Option<u64>>;

    /// All objects whose key starts with `prefix` (e.g. `index/`), in any order.
    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>>;

    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> BackendResult<()>;
}
