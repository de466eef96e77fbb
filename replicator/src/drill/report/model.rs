//! A drill report: what was booted from which recovery point, what each VM did, how
//! long it took against the plan's RTO target, and the evidence files (console log,
//! screenshot) with their hashes. Serialized as JSON, it is what the chain signs.

use serde::{Deserialize, Serialize};

/// Report format version; bumped when a field changes meaning.
pub const REPORT_VERSION: u32 = 1;

/// Whether a VM came up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VmVerdict {
    /// Every health check passed within the timeout, with no panic on the console.
    Booted,
    /// It did not come up; `reason` says why.
    Failed,
    /// An earlier boot group failed, so this VM was never started.
    NotStarted,
}

/// The whole drill's outcome: passed only when every VM booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DrillVerdict {
    Passed,
    Failed,
}

/// One disk snapshot a VM booted from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootedDisk {
    pub disk: String,
    pub snapshot: String,
    /// When that backup was taken.
    pub time: String,
    /// `standby` (an overlay on a warm standby point) or `export` (an overlay on the
    /// snapshot served from the repository over NBD).
    pub from: String,
}

/// An evidence file next to the report, with its BLAKE3 hash (hex), so an edited or
/// swapped file is detected by `drill history --verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceFile {
    /// Relative to the reports directory.
    pub path: String,
    pub blake3: String,
    pub bytes: u64,
}

/// What happened to one VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmResult {
    pub vm: String,
    /// 1-based boot group.
    pub group: usize,
    pub verdict: VmVerdict,
    /// Why it failed or was not started (empty when it booted).
    pub reason: String,
    pub disks: Vec<BootedDisk>,
    /// Age of the recovery point when the drill started (the oldest disk's).
    pub point_age_secs: Option<u64>,
    /// The health checks asked for, as text (`console /login:/`, `tcp 22`).
    pub checks: Vec<String>,
    /// Seconds from the drill's start to the VM's start, its first console output,
    /// and all health checks passing.
    pub started_secs: Option<f64>,
    pub first_output_secs: Option<f64>,
    pub healthy_secs: Option<f64>,
    /// The last lines of the serial console.
    pub console_tail: String,
    pub console: Option<EvidenceFile>,
    pub screenshot: Option<EvidenceFile>,
    /// Things the operator should know (a definition missing, a NIC left unplugged).
    pub warnings: Vec<String>,
}

/// One drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub version: u32,
    /// Position in the chain, from 1.
    pub seq: u64,
    pub plan: String,
    /// The repository drilled from (its location, never credentials) and its id.
    pub repository: String,
    pub repository_id: String,
    /// The point asked for (`latest`, a snapshot, a time).
    pub point: String,
    pub host: String,
    pub started: String,
    pub finished: String,
    pub verdict: DrillVerdict,
    /// From the command to the last VM healthy; `None` when not all booted.
    pub rto_secs: Option<f64>,
    pub rto_target_secs: Option<u64>,
    /// Lifeboat's own share of the time: preparing overlays and starting VMs, and
    /// stopping them and removing the overlays.
    pub prepare_secs: f64,
    pub cleanup_secs: f64,
    /// `true` when the VMs were left running (`--keep`).
    pub kept_running: bool,
    pub vms: Vec<VmResult>,
    /// BLAKE3 (hex) of the previous report in the chain; `None` for the first.
    pub previous: Option<String>,
    /// Keyed BLAKE3 (hex) of this report with `signature` empty, under a key derived
    /// from the repository's master key.
    pub signature: String,
}

impl DrillReport {
    /// Whether the measured RTO met the plan's target (`None` without a target or a
    /// measurement).
    pub fn rto_met(&self) -> Option<bool> {
        match (self.rto_secs, self.rto_target_secs) {
            (Some(m), Some(t)) => Some(m <= t as f64),
            _ => None,
        }
    }
}
