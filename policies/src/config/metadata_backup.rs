//! The optional `[metadata_backup]` table: the daemon's cloud-recovery backups of
//! Lifeboat's own configuration, the files it names and the daemon's state, sealed
//! to offline recovery keys and kept at targets away from the protected site.
//!
//! ```toml
//! [metadata_backup]
//! recipients = ["age1…primary", "age1…escrow"]   # `lifeboat recovery-key new`
//! targets = ["s3://dr-meta/lifeboat?endpoint=https://rgw.site-b.example",
//!            "/mnt/offsite/lifeboat-metadata"]
//! schedule = "0 */12 * * *"    # default: every 12 hours
//! timezone = "UTC"             # default
//! keep_within = "7d"           # default: points younger than this stay
//! keep_last = 3                # default: and always the newest three
//! rpo = "26h"                  # default: twice the schedule's interval
//! lock = "governance"          # default; "compliance", or "off"; only applies
//!                              # where the bucket has Object Lock
//! ```
//!
//! Recipients are age X25519 public keys; the policies crate checks their shape
//! only (the binary parses them fully before sealing anything).

use chrono::{DateTime, Utc};
use toml::Spanned;

use super::raw::RawMetadataBackup;
use super::validator::Validator;
use crate::schedule::Schedule;

pub const DEFAULT_METADATA_SCHEDULE: &str = "0 */12 * * *";
pub const DEFAULT_METADATA_KEEP_WITHIN: u64 = 7 * 86_400;
pub const DEFAULT_METADATA_KEEP_LAST: u32 = 3;
/// A primary and an escrow key, and during a rotation the new pair beside the old.
pub const MAX_RECIPIENTS: usize = 8;

/// How points are locked where the target bucket has S3 Object Lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointLock {
    Off,
    Governance,
    Compliance,
}

/// A checked `[metadata_backup]`.
#[derive(Debug, Clone)]
pub struct MetadataBackup {
    pub recipients: Vec<String>,
    /// Repository-style addresses: `s3://bucket/prefix?…` or an absolute directory.
    pub targets: Vec<String>,
    pub schedule: Schedule,
    pub keep_within: u64,
    pub keep_last: u32,
    /// Age of the newest good point past which `status` says BREACHED.
    pub rpo: u64,
    pub lock: PointLock,
}

impl Validator<'_> {
    pub(super) fn metadata_backup(&mut self, raw: &RawMetadataBackup) -> Option<MetadataBackup> {
        let ctx = "[metadata_backup]: ";
        let recipients = self.recipients(raw, ctx);
        let targets = self.metadata_targets(raw, ctx);
        let tz = match &raw.timezone {
            Some(tz) => self.timezone(tz, "metadata_backup.timezone", ctx),
            None => Some(chrono_tz::UTC),
        };
        let schedule = match &raw.schedule {
            Some(s) => self.schedule(s, tz, "metadata_backup.schedule", ctx),
            None => tz.and_then(|tz| Schedule::new(DEFAULT_METADATA_SCHEDULE, tz.name()).ok()),
        };
        let keep_within = self
            .duration(&raw.keep_within, "metadata_backup.keep_within", ctx)
            .unwrap_or(DEFAULT_METADATA_KEEP_WITHIN);
        let keep_last = match &raw.keep_last {
            Some(n) if !(1..=1000).contains(n.get_ref()) => {
                self.problem(
                    n.span().start,
                    "metadata_backup.keep_last",
                    format!(
                        "{ctx}{} is out of range; keep at least the newest point (1 to 1000)",
                        n.get_ref()
                    ),
                );
                DEFAULT_METADATA_KEEP_LAST
            }
            Some(n) => *n.get_ref() as u32,
            None => DEFAULT_METADATA_KEEP_LAST,
        };
        let lock = self.point_lock(&raw.lock, ctx);
        let schedule = schedule?;
        let rpo = match self.duration(&raw.rpo, "metadata_backup.rpo", ctx) {
            Some(r) => r,
            None => 2 * interval(&schedule),
        };
        Some(MetadataBackup {
            recipients: recipients?,
            targets: targets?,
            schedule,
            keep_within,
            keep_last,
            rpo,
            lock: lock?,
        })
    }

    fn recipients(&mut self, raw: &RawMetadataBackup, ctx: &str) -> Option<Vec<String>> {
        let key = "metadata_backup.recipients";
        let list = raw.recipients.get_ref();
        if list.is_empty() || list.len() > MAX_RECIPIENTS {
            self.problem(
                raw.recipients.span().start,
                key,
                format!(
                    "{ctx}give 1 to {MAX_RECIPIENTS} recipients (the public keys \
                     `lifeboat recovery-key new` prints), e.g. a primary and an escrow key"
                ),
            );
            return None;
        }
        let mut ok = true;
        for r in list {
            let text = r.get_ref().trim();
            if !(text.starts_with("age1") && text.len() > 50) {
                self.problem(
                    r.span().start,
                    key,
                    format!(
                        "{ctx}{text:?} is not an age recipient; paste the \"age1…\" line \
                         `lifeboat recovery-key new` printed (never the key file itself)"
                    ),
                );
                ok = false;
            }
        }
        ok.then(|| {
            list.iter()
                .map(|r| r.get_ref().trim().to_string())
                .collect()
        })
    }

    fn metadata_targets(&mut self, raw: &RawMetadataBackup, ctx: &str) -> Option<Vec<String>> {
        let key = "metadata_backup.targets";
        if raw.targets.get_ref().is_empty() {
            self.problem(
                raw.targets.span().start,
                key,
                format!(
                    "{ctx}give at least one target, e.g. \"s3://bucket/lifeboat-metadata\" at \
                     the secondary site, or an absolute directory on off-site storage"
                ),
            );
            return None;
        }
        let mut ok = true;
        for t in raw.targets.get_ref() {
            let text = t.get_ref();
            if !(text.starts_with("s3://") || text.starts_with('/')) {
                self.problem(
                    t.span().start,
                    key,
                    format!("{ctx}{text:?} is neither an s3:// address nor an absolute directory"),
                );
                ok = false;
            }
        }
        ok.then(|| {
            raw.targets
                .get_ref()
                .iter()
                .map(|t| t.get_ref().clone())
                .collect()
        })
    }

    fn point_lock(&mut self, raw: &Option<Spanned<String>>, ctx: &str) -> Option<PointLock> {
        let Some(raw) = raw else {
            return Some(PointLock::Governance);
        };
        match raw.get_ref().as_str() {
            "off" => Some(PointLock::Off),
            "governance" => Some(PointLock::Governance),
            "compliance" => Some(PointLock::Compliance),
            other => {
                self.problem(
                    raw.span().start,
                    "metadata_backup.lock",
                    format!(
                        "{ctx}{other:?} is not a lock mode; write \"governance\", \
                         \"compliance\" or \"off\""
                    ),
                );
                None
            }
        }
    }
}

/// Seconds between two runs of the schedule (its first two in 2026, a fixed instant
/// so parsing stays free of the clock); a day if it never runs twice.
fn interval(schedule: &Schedule) -> u64 {
    let reference = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).expect("2026-01-01");
    schedule
        .next_after(reference)
        .and_then(|a| Some((a, schedule.next_after(a)?)))
        .map_or(86_400, |(a, b)| (b - a).num_seconds().max(1) as u64)
}
