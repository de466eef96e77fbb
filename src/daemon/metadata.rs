//! Metadata backups in the daemon and `status`: every `lifeboat metadata backup` (by
//! the daemon's `[metadata_backup]` schedule or by hand) records each target's last
//! attempt and last success in `<state_dir>/metadata-backup.json`; `status` and
//! `/metrics` judge each configured target from it with the RPO rule
//! ([`lifeboat_policies::rpo`], subject "metadata"): OK, AT RISK, BREACHED.
//!
//! A file of its own rather than rows in `state.db`: a hand-run backup must count
//! too, and it must not need the daemon's database lock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use lifeboat_policies::rpo::Subject;
use lifeboat_policies::{Config, RpoInput, RpoState, assess_rpo};
use serde::{Deserialize, Serialize};

const RECORD_FILE: &str = "metadata-backup.json";

/// What the state directory remembers of one target.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TargetRecord {
    pub first_attempt: Option<DateTime<Utc>>,
    pub last_attempt: Option<DateTime<Utc>>,
    /// Start of the last run that stored a point here.
    pub last_success: Option<DateTime<Utc>>,
    pub last_point: Option<String>,
    pub last_duration_secs: Option<f64>,
    /// The last attempt's error; `None` when it succeeded.
    pub last_error: Option<String>,
}

/// Every target's record, by target address.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetadataRecord {
    pub targets: BTreeMap<String, TargetRecord>,
}

pub fn record_path(state_dir: &Path) -> PathBuf {
    state_dir.join(RECORD_FILE)
}

impl MetadataRecord {
    /// The record, or an empty one when none was written yet (or it is unreadable:
    /// `status` then says "never", which is the safe reading).
    pub fn read(state_dir: &Path) -> MetadataRecord {
        std::fs::read(record_path(state_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// One attempt at `target`: started at `started`, took `secs`, stored `point` or
    /// failed with `error`.
    pub fn note(
        &mut self,
        target: &str,
        started: DateTime<Utc>,
        secs: f64,
        outcome: Result<&str, &str>,
    ) {
        let r = self.targets.entry(target.to_string()).or_default();
        r.first_attempt.get_or_insert(started);
        r.last_attempt = Some(started);
        match outcome {
            Ok(point) => {
                r.last_success = Some(started);
                r.last_point = Some(point.to_string());
                r.last_duration_secs = Some(secs);
                r.last_error = None;
            }
            Err(e) => r.last_error = Some(e.to_string()),
        }
    }

    /// Writes the record atomically (temporary file, then rename).
    pub fn write(&self, state_dir: &Path) -> Result<()> {
        let path = record_path(state_dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::create_dir_all(state_dir)
            .and_then(|()| std::fs::write(&tmp, serde_json::to_vec_pretty(self)?))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("recording the metadata backup in {}", path.display()))
    }
}

/// One configured target's metadata-backup state, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MetadataTargetStatus {
    pub target: String,
    pub state: RpoState,
    pub reason: String,
    pub last_success: Option<DateTime<Utc>>,
    pub age_secs: Option<i64>,
    pub rpo_secs: u64,
    pub last_point: Option<String>,
    pub last_error: Option<String>,
    pub next_run: Option<DateTime<Utc>>,
}

/// Each target of `[metadata_backup]` judged at `now`; empty without the table.
pub fn metadata_status(
    config: &Config,
    state_dir: &Path,
    now: DateTime<Utc>,
) -> Vec<MetadataTargetStatus> {
    let Some(m) = &config.metadata_backup else {
        return Vec::new();
    };
    let record = MetadataRecord::read(state_dir);
    let next_run = m.schedule.next_after(now);
    m.targets
        .iter()
        .map(|target| {
            let r = record.targets.get(target).cloned().unwrap_or_default();
            let assessment = assess_rpo(
                &RpoInput {
                    subject: Subject::Metadata,
                    rpo: m.rpo,
                    last_success: r.last_success,
                    last_duration: r.last_duration_secs,
                    first_seen: r.first_attempt,
                    last_attempt_failed: r.last_error.is_some(),
                    next_run,
                },
                now,
            );
            MetadataTargetStatus {
                target: target.clone(),
                state: assessment.state,
                reason: assessment.reason,
                last_success: r.last_success,
                age_secs: assessment.age_secs,
                rpo_secs: m.rpo,
                last_point: r.last_point,
                last_error: r.last_error,
                next_run,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_attempt_keeps_the_last_success_and_a_later_success_clears_the_error() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let mut r = MetadataRecord::default();
        r.note("/m", t("2026-12-01T00:00:00Z"), 1.5, Ok("p1"));
        r.note("/m", t("2026-12-01T12:00:00Z"), 0.2, Err("bucket gone"));
        let m = &r.targets["/m"];
        assert_eq!(m.first_attempt, Some(t("2026-12-01T00:00:00Z")));
        assert_eq!(m.last_success, Some(t("2026-12-01T00:00:00Z")));
        assert_eq!(m.last_point.as_deref(), Some("p1"));
        assert_eq!(m.last_error.as_deref(), Some("bucket gone"));
        r.note("/m", t("2026-12-02T00:00:00Z"), 1.0, Ok("p2"));
        let m = &r.targets["/m"];
        assert_eq!(m.last_success, Some(t("2026-12-02T00:00:00Z")));
        assert_eq!(m.first_attempt, Some(t("2026-12-01T00:00:00Z")));
        assert!(m.last_error.is_none());

        let dir = tempfile::tempdir().unwrap();
        r.write(dir.path()).unwrap();
        assert_eq!(MetadataRecord::read(dir.path()).targets, r.targets);
    }
}
