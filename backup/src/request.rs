//! What to back up (the disk source and how much of it to read), and what came of it.

use std::sync::Arc;

use lifeboat_store::SnapshotSummary;
use lifeboat_store::format::manifest::Extent;
use lifeboat_store::format::vm_definition::VmDefinition;
use serde::Serialize;

use crate::source::DiskSource;

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
    /// The VM's definition, recorded in the snapshot (FORMAT.md §16).
    pub definition: Option<VmDefinition>,
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
