//! What a prune found and did, phase by phase (printed by `prune`, `--json` too).

use serde::Serialize;

#[derive(Debug, Default, Clone, Serialize)]
pub struct SweepReport {
    pub plans_swept: u64,
    /// Plans whose grace period is not over yet.
    pub waiting_plans: u64,
    /// Unix seconds when the earliest waiting plan can be swept.
    pub next_sweep_after: Option<u64>,
    pub deleted_packs: u64,
    pub freed_bytes: u64,
    /// Condemned packs a snapshot committed since the mark turned out to use.
    pub resurrected: u64,
    /// Condemned packs an index lists again.
    pub kept_indexed: u64,
    /// `(key, locked until)` of objects Object Lock kept.
    pub locked_skipped: Vec<(String, String)>,
    pub unreadable_plans: Vec<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct MarkReport {
    pub condemned_packs: u64,
    pub condemned_bytes: u64,
    /// Packs in the bucket that no index lists (left by killed backups).
    pub orphan_packs: u64,
    /// Packs younger than the grace period, untouched.
    pub young_packs: u64,
    pub repacked_packs: u64,
    pub repacked_bytes: u64,
    pub repack_skipped_locked: u64,
    /// Unused packs left for a later prune: Object Lock holds them past the sweep.
    pub locked_packs: u64,
    pub repack_skipped_damaged: u64,
    /// Packs the index lists that are not in the bucket.
    pub missing_packs: u64,
    pub plans: Vec<String>,
    pub index_written: u64,
    pub index_deleted: u64,
    pub locked_skipped: Vec<(String, String)>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: u64,
    pub live_chunks: u64,
    /// Chunks some snapshot references that the repository does not have.
    pub missing_chunks: u64,
    pub sweep: SweepReport,
    pub mark: MarkReport,
    /// Objects whose Object Lock was extended because they are still in use.
    pub locks_extended: u64,
    pub grace_secs: u64,
}
