//! What went wrong talking to storage, and whether trying again can help.

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
    #[error(
        "object {key} is locked (S3 Object Lock) until {until}; it cannot be deleted or changed before then"
    )]
    Locked { key: String, until: String },
    #[error("{what}: {detail}")]
    Unsupported { what: String, detail: String },
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
