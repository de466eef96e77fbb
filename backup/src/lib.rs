//! Lifeboat's backup pipeline: read a disk, cut it into chunks, store what the
//! repository lacks, and commit a snapshot manifest.
//!
//! ```text
//! reader thread ──► worker threads ──► collector (async) ──► uploads (async, bounded)
//!  read, skip holes,  keyed id, dedup,    reorder extents,      PUT pack, then
//!  zero runs, FastCDC zstd, seal          fill packs            catalog + index
//! ```
//! Every stage talks through bounded channels, so memory stays flat whatever the disk
//! size: roughly (workers × 2 chunks) + (uploads in flight + 1) packs.

pub mod cbt;
pub mod fixed;
pub mod incremental;
pub mod live;
mod pipeline;
mod reader;
pub mod segmenter;
pub mod source;

pub use lifeboat_store::Progress;
use lifeboat_store::{SnapshotSummary, StoreError};
use serde::Serialize;
use std::sync::Arc;

use lifeboat_store::format::manifest::Extent;
use source::DiskSource;

pub use pipeline::run_backup;

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

/// What to back up, and how hard to push.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    pub vm: String,
    pub disk: String,
    pub source: Arc<dyn DiskSource>,
    pub mode: ReadMode,
    /// The dirty bitmap this backup started, recorded in the manifest for the next one.
    pub cbt_bitmap: Option<String>,
    pub tags: Vec<String>,
    /// Threads hashing, compressing and encrypting (default: all cores).
    pub workers: usize,
    /// Pack uploads in flight at once.
    pub upload_concurrency: usize,
}

/// How much of the disk a backup reads.
#[derive(Debug, Clone)]
pub enum ReadMode {
    /// Read every allocated byte ("scan"): first backups, or no usable change tracking.
    Full { reason: String },
    /// Read only around `dirty` ranges; reuse the previous snapshot's extents elsewhere.
    Incremental {
        parent: String,
        previous: Arc<Vec<Extent>>,
        dirty: Vec<(u64, u64)>,
        reason: String,
    },
}

impl ReadMode {
    pub fn name(&self) -> &'static str {
        match self {
            ReadMode::Full { .. } => "scan",
            ReadMode::Incremental { .. } => "incremental",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            ReadMode::Full { reason } | ReadMode::Incremental { reason, .. } => reason,
        }
    }

    pub fn parent(&self) -> Option<&str> {
        match self {
            ReadMode::Full { .. } => None,
            ReadMode::Incremental { parent, .. } => Some(parent),
        }
    }

    /// Bytes marked dirty by change tracking (`None` for a scan).
    pub fn dirty_bytes(&self) -> Option<u64> {
        match self {
            ReadMode::Full { .. } => None,
            ReadMode::Incremental { dirty, .. } => Some(dirty.iter().map(|(s, e)| e - s).sum()),
        }
    }
}

/// The outcome of one disk's backup, for text and `--json` reports.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub snapshot: SnapshotSummary,
    pub disk_size: u64,
    /// `scan` or `incremental`, and why.
    pub mode: String,
    pub mode_reason: String,
    /// Bytes changed-block tracking marked dirty (incremental backups only).
    pub bytes_dirty: Option<u64>,
    /// Bytes read from the source (holes are not read).
    pub bytes_read: u64,
    /// Bytes stored as zero extents (holes and all-zero runs).
    pub zero_bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    /// Plaintext bytes of chunks the repository did not have.
    pub new_bytes: u64,
    /// Bytes added to the repository (compressed, encrypted, packed).
    pub stored_bytes: u64,
    pub packs: u64,
    pub duration_secs: f64,
}
