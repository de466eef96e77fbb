//! What goes wrong writing or reading a metadata backup, and what to do about it.

use std::path::PathBuf;

use lifeboat_store::BackendError;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error(
        "{what} is not an age X25519 {kind} ({detail}); a recipient starts with `age1`, \
         a recovery key file holds an `AGE-SECRET-KEY-1…` line (`lifeboat recovery-key new`)"
    )]
    BadKey {
        what: String,
        kind: &'static str,
        detail: String,
    },
    #[error("no recipient to encrypt to: set [metadata_backup] recipients or pass --recipient")]
    NoRecipients,
    #[error(
        "metadata point {point} cannot be decrypted with this recovery key: it was encrypted \
         to other recipients (use the recovery key whose public half was in the \
         configuration when it was written)"
    )]
    WrongKey { point: String },
    #[error(
        "metadata point {point} is damaged or was altered ({detail}); its authentication \
         fails, so nothing of it is used{}",
        older.as_ref().map(|o| format!(". The next older point is {o}: pass --point {o}")).unwrap_or_default()
    )]
    Damaged {
        point: String,
        detail: String,
        older: Option<String>,
    },
    #[error(
        "no metadata backups under {location}/metadata/; check the target (`lifeboat metadata list --from …`)"
    )]
    Empty { location: String },
    #[error("no metadata point {point} at {location}; `lifeboat metadata list` shows the points")]
    NoSuchPoint { point: String, location: String },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata target: {0}")]
    Backend(#[from] BackendError),
}

impl MetadataError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MetadataError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
