//! Replication lag of one disk on one replica: the age of the newest recovery point
//! the destination repository holds for it, and its state against the replication's
//! `replication_rpo` — the same rule as the backup RPO ([`crate::rpo`]), with the
//! replication's own runs as the attempts.
//!
//! When does the next point reach the replica? A scheduled replication runs at its
//! next scheduled time; an `after_backup` one right after the group's next backup
//! (so that run lasts the backup plus the replication). The earlier of the two counts.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Group, Replication};
use crate::rpo::{RpoInput, RpoState, Subject, assess_rpo};

/// What the job history says about one disk on one replica.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicaHistory {
    /// When the daemon first scheduled the replication.
    pub first_seen: Option<DateTime<Utc>>,
    /// The newest point of the disk on the destination (its snapshot time), as the
    /// last replication runs reported it.
    pub newest: Option<DateTime<Utc>>,
    /// Seconds the last successful replication run took.
    pub last_duration: Option<f64>,
    /// The newest finished run of the replication was not a success.
    pub last_run_failed: bool,
    pub last_error: Option<(DateTime<Utc>, String)>,
    pub running: bool,
}

/// One disk on one replica, as `status --json` shows it (`disks[].replicas[]`).
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    /// Repository names.
    pub source: String,
    pub destination: String,
    pub replication_rpo_secs: Option<u64>,
    /// `null` when the replication has no `replication_rpo`.
    pub state: Option<RpoState>,
    pub reason: Option<String>,
    /// Age of `newest`; `null` before anything was replicated.
    pub lag_secs: Option<i64>,
    pub newest: Option<DateTime<Utc>>,
    /// When the replication RPO runs out (or ran out) unless a newer point arrives.
    pub deadline: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub running: bool,
}

/// The lag of one disk of group `g` on `r`'s destination at `now`. `backup_secs`: how
/// long the disk's last good backup took (an `after_backup` run waits for it).
pub fn replica_status(
    r: &Replication,
    g: &Group,
    h: ReplicaHistory,
    backup_secs: Option<f64>,
    now: DateTime<Utc>,
) -> ReplicaStatus {
    let scheduled = r.schedule.as_ref().and_then(|s| s.next_after(now));
    let after_backup = r.after_backup.then(|| g.schedule.next_after(now)).flatten();
    let (next_run, extra) = match (scheduled, after_backup) {
        (Some(s), Some(b)) if s <= b => (Some(s), 0.0),
        (_, Some(b)) => (Some(b), backup_secs.unwrap_or(0.0)),
        (s, None) => (s, 0.0),
    };
    let assessment = r.rpo.map(|rpo| {
        assess_rpo(
            &RpoInput {
                subject: Subject::Replica,
                rpo,
                last_success: h.newest,
                last_duration: Some(h.last_duration.unwrap_or(0.0) + extra),
                first_seen: h.first_seen,
                last_attempt_failed: h.last_run_failed,
                next_run,
            },
            now,
        )
    });
    ReplicaStatus {
        source: r.from.clone(),
        destination: r.to.clone(),
        replication_rpo_secs: r.rpo,
        state: assessment.as_ref().map(|a| a.state),
        reason: assessment.as_ref().map(|a| a.reason.clone()),
        lag_secs: h.newest.map(|t| (now - t).num_seconds()),
        newest: h.newest,
        deadline: assessment.and_then(|a| a.deadline),
        last_error_at: h.last_error.as_ref().map(|e| e.0),
        last_error: h.last_error.map(|e| e.1),
        running: h.running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_config;

    fn t(s: &str) -> DateTime<Utc> {
        format!("2026-05-01T{s}Z").parse().unwrap()
    }

    fn config(when: &str) -> crate::Config {
        let text = format!(
            r#"
[[repository]]
name = "a"
url = "/a"
[[repository]]
name = "b"
url = "/b"
[[group]]
name = "prod"
repository = "a"
schedule = "0 * * * *"
timezone = "UTC"
retention = {{ keep_last = 3 }}
[[group.vm]]
name = "web"
[[group.vm.disk]]
name = "root"
image = "/a.qcow2"
[[replication]]
from = "a"
to = "b"
replication_rpo = "2h"
{when}
"#
        );
        parse_config(&text, "t.toml").unwrap()
    }

    #[test]
    fn lag_state_follows_the_next_run_that_brings_a_point() {
        let now = t("12:10:00");
        let h = ReplicaHistory {
            first_seen: Some(t("08:00:00")),
            newest: Some(t("11:30:00")),
            last_duration: Some(60.0),
            ..ReplicaHistory::default()
        };
        // (when it runs, backup time, state, reason part)
        let cases = [
            ("after_backup = true", 300.0, RpoState::Ok, "within"),
            // The next backup starts 13:00 and takes 59 min: its copy lands after 13:30.
            (
                "after_backup = true",
                3_540.0,
                RpoState::AtRisk,
                "would finish after the replication RPO of 2h runs out",
            ),
            // Scheduled at 12:30, before the next backup: the backup time does not count.
            (
                "after_backup = true\nschedule = \"30 12 * * *\"",
                3_540.0,
                RpoState::Ok,
                "within",
            ),
            (
                "schedule = \"0 0 * * *\"",
                0.0,
                RpoState::AtRisk,
                "raise replication_rpo",
            ),
        ];
        for (when, backup, state, needle) in cases {
            let c = config(when);
            let s = replica_status(
                &c.replications[0],
                &c.groups[0],
                h.clone(),
                Some(backup),
                now,
            );
            assert_eq!(s.state, Some(state), "{when} {backup}: {s:?}");
            assert!(s.reason.as_deref().unwrap().contains(needle), "{s:?}");
            assert_eq!(s.lag_secs, Some(2_400));
            assert_eq!(s.deadline, Some(t("13:30:00")));
            assert_eq!((s.source.as_str(), s.destination.as_str()), ("a", "b"));
        }
        let c = config("after_backup = true");
        let failed = ReplicaHistory {
            last_run_failed: true,
            last_error: Some((t("12:05:00"), "secondary unreachable".into())),
            ..h.clone()
        };
        let s = replica_status(&c.replications[0], &c.groups[0], failed, None, now);
        assert_eq!(s.state, Some(RpoState::AtRisk));
        assert_eq!(s.last_error.as_deref(), Some("secondary unreachable"));
        let old = ReplicaHistory {
            newest: Some(t("10:09:59")),
            ..h
        };
        let s = replica_status(&c.replications[0], &c.groups[0], old, None, now);
        assert_eq!(s.state, Some(RpoState::Breached), "{s:?}");
    }
}
