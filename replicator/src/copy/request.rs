//! What a replication run is asked to do, and what it reports.

use serde::Serialize;

/// One replication run between two open repositories.
#[derive(Debug, Clone)]
pub struct ReplicateRequest {
    /// Only the snapshots of these VMs; all VMs when empty.
    pub vms: Vec<String>,
    /// Never these VMs: those failed over at the destination's site, which run there
    /// from disks newer than anything the source has (see `failover`).
    pub exclude: Vec<String>,
    /// Ranged GETs in flight on the source.
    pub fetches: usize,
    /// Pack uploads in flight on the destination.
    pub uploads: usize,
    /// Average bytes per second sent to the destination; unlimited when `None`.
    pub limit_rate: Option<u64>,
}

impl Default for ReplicateRequest {
    fn default() -> Self {
        Self {
            vms: Vec::new(),
            exclude: Vec::new(),
            fetches: 8,
            uploads: 4,
            limit_rate: None,
        }
    }
}

/// A snapshot this run copied.
#[derive(Debug, Clone, Serialize)]
pub struct CopiedSnapshot {
    pub vm: String,
    pub disk: String,
    /// When the backup was taken (the recovery point).
    pub time: String,
    pub source_snapshot: String,
    /// Its id on the destination.
    pub snapshot: String,
}

/// The newest recovery point the destination holds for one disk, after the run.
#[derive(Debug, Clone, Serialize)]
pub struct NewestPoint {
    pub vm: String,
    pub disk: String,
    pub time: String,
    /// Seconds between that point and the end of the run: the replication lag.
    pub lag_secs: u64,
}

/// What a run did. `bytes_sent` counts pack bytes uploaded to the destination
/// (compressed and encrypted, as they cross the link).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplicateReport {
    pub source: String,
    pub destination: String,
    pub snapshots_copied: u64,
    /// Selected source snapshots the destination already had.
    pub snapshots_present: u64,
    /// Selected source snapshots not copied because they are older than the newest
    /// point the destination holds for their disk (its own retention forgot them).
    pub snapshots_older: u64,
    pub chunks_sent: u64,
    pub bytes_sent: u64,
    /// Chunks the copied snapshots need that the destination already had, and their
    /// plaintext size: what deduplication kept off the link.
    pub chunks_skipped: u64,
    pub bytes_skipped: u64,
    pub duration_secs: f64,
    pub copied: Vec<CopiedSnapshot>,
    pub newest: Vec<NewestPoint>,
}
