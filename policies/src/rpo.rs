//! RPO state of one disk: is its newest recovery point young enough, and will it stay so?
//!
//! The rule, in order (`rpo` is the group's recovery point objective, the reference
//! time is the start of the last successful backup — the moment its data was read):
//!
//! 1. **BREACHED** when the last good backup is older than `rpo`; or, for a disk never
//!    backed up, when `rpo` has passed since the daemon first scheduled it.
//! 2. **AT RISK** when not breached but one of:
//!    - the disk has no successful backup yet;
//!    - the latest attempt failed (after the last success);
//!    - no run is scheduled at all;
//!    - the next scheduled run, lasting as long as the last good one, would finish
//!      after the RPO runs out: the schedule cannot keep the promise even if every
//!      run succeeds. So a `rpo` must exceed the schedule interval plus the backup
//!      time: a nightly schedule needs e.g. `rpo = "26h"`, not `"24h"`.
//! 3. **OK** otherwise.
//!
//! Pure: the caller passes `now`, which keeps the rule table-testable.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::duration::format_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RpoState {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "AT RISK")]
    AtRisk,
    #[serde(rename = "BREACHED")]
    Breached,
}

impl RpoState {
    pub fn as_str(self) -> &'static str {
        match self {
            RpoState::Ok => "OK",
            RpoState::AtRisk => "AT RISK",
            RpoState::Breached => "BREACHED",
        }
    }

    /// For metrics: 0 OK, 1 AT RISK, 2 BREACHED (alert on `> 0` or `== 2`).
    pub fn level(self) -> u8 {
        match self {
            RpoState::Ok => 0,
            RpoState::AtRisk => 1,
            RpoState::Breached => 2,
        }
    }
}

/// What the recovery point is, for the reasons' wording: the rule is the same.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Subject {
    /// The disk's last good backup, against the group's `rpo`.
    #[default]
    Backup,
    /// The newest point on a replica, against the replication's `replication_rpo`.
    Replica,
    /// The newest metadata point at one target, against `[metadata_backup] rpo`.
    Metadata,
}

/// The phrases that differ between [`Subject`]s.
struct Words {
    point: &'static str,
    rpo: &'static str,
    never: &'static str,
    thing: &'static str,
    run: &'static str,
    none_yet: &'static str,
    more_often: &'static str,
}

impl Subject {
    fn words(self) -> Words {
        match self {
            Subject::Backup => Words {
                point: "the last good backup",
                rpo: "the RPO",
                never: "never backed up",
                thing: "this disk",
                run: "backup",
                none_yet: "no successful backup yet",
                more_often: "schedule backups more often or raise the RPO",
            },
            Subject::Replica => Words {
                point: "the newest replicated point",
                rpo: "the replication RPO",
                never: "never replicated",
                thing: "this replication",
                run: "replication",
                none_yet: "nothing replicated yet",
                more_often: "back up and replicate more often, or raise replication_rpo",
            },
            Subject::Metadata => Words {
                point: "the newest metadata point",
                rpo: "the metadata RPO",
                never: "no metadata point written",
                thing: "this metadata target",
                run: "metadata backup",
                none_yet: "no metadata point yet",
                more_often: "schedule metadata backups more often or raise its rpo",
            },
        }
    }
}

/// What the rule needs to know about one disk.
#[derive(Debug, Clone, Default)]
pub struct RpoInput {
    pub subject: Subject,
    /// Seconds.
    pub rpo: u64,
    /// Start of the last successful backup.
    pub last_success: Option<DateTime<Utc>>,
    /// Seconds the last successful backup took.
    pub last_duration: Option<f64>,
    /// When the daemon first scheduled this disk.
    pub first_seen: Option<DateTime<Utc>>,
    /// The most recent finished attempt (after `last_success`) failed.
    pub last_attempt_failed: bool,
    pub next_run: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RpoAssessment {
    pub state: RpoState,
    /// Seconds since the last successful backup started, if there is one.
    pub age_secs: Option<i64>,
    /// When the RPO runs out (or ran out) unless a newer backup succeeds.
    pub deadline: Option<DateTime<Utc>>,
    /// Why, in a sentence an operator can act on.
    pub reason: String,
}

pub fn assess_rpo(i: &RpoInput, now: DateTime<Utc>) -> RpoAssessment {
    let w = i.subject.words();
    let rpo = format!("{} of {}", w.rpo, format_duration(i.rpo));
    let Some(reference) = i.last_success.or(i.first_seen) else {
        return RpoAssessment {
            state: RpoState::AtRisk,
            age_secs: None,
            deadline: None,
            reason: format!(
                "{}, and the daemon has not scheduled {} yet",
                w.never, w.thing
            ),
        };
    };
    let deadline = reference + Duration::seconds(i.rpo as i64);
    let age_secs = i.last_success.map(|t| (now - t).num_seconds());
    // Rounded up for the message: a breach is strictly over the RPO, and "30s old,
    // over the RPO of 30s" would read as a contradiction.
    let age_text = i
        .last_success
        .map(|t| format_duration(((now - t).num_milliseconds().max(0) as u64).div_ceil(1000)));
    let verdict = |state, reason: String| RpoAssessment {
        state,
        age_secs,
        deadline: Some(deadline),
        reason,
    };
    if now > deadline {
        let reason = match age_text {
            Some(age) => format!("{} is {age} old, over {rpo}", w.point),
            None => format!(
                "{}, and {rpo} has passed since the daemon first scheduled {}",
                w.never, w.thing
            ),
        };
        return verdict(RpoState::Breached, reason);
    }
    if i.last_success.is_none() {
        return verdict(
            RpoState::AtRisk,
            format!(
                "{} (within {} since the daemon first scheduled it)",
                w.none_yet, w.rpo
            ),
        );
    }
    if i.last_attempt_failed {
        return verdict(
            RpoState::AtRisk,
            format!("the latest {} attempt failed; see last_error", w.run),
        );
    }
    let Some(next) = i.next_run else {
        return verdict(
            RpoState::AtRisk,
            format!(
                "no {} is scheduled any more; the schedule never matches again",
                w.run
            ),
        );
    };
    let took = Duration::milliseconds((i.last_duration.unwrap_or(0.0).max(0.0) * 1000.0) as i64);
    if next + took > deadline {
        return verdict(
            RpoState::AtRisk,
            format!(
                "the next run ({}) would finish after {rpo} runs out at {}; {}",
                next.format("%Y-%m-%dT%H:%M:%SZ"),
                deadline.format("%Y-%m-%dT%H:%M:%SZ"),
                w.more_often
            ),
        );
    }
    verdict(RpoState::Ok, format!("within {rpo}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        format!("2026-05-01T{s}Z").parse().unwrap()
    }

    #[test]
    fn rpo_state_table() {
        let now = t("12:00:00");
        let hour = 3_600;
        let base = RpoInput {
            subject: Subject::Backup,
            rpo: hour,
            last_success: Some(t("11:30:00")),
            last_duration: Some(60.0),
            first_seen: Some(t("08:00:00")),
            last_attempt_failed: false,
            next_run: Some(t("12:15:00")),
        };
        // (what, input, expected state, text the reason contains)
        let cases: Vec<(&str, RpoInput, RpoState, &str)> = vec![
            (
                "fresh, next run in time",
                base.clone(),
                RpoState::Ok,
                "within",
            ),
            (
                "exactly at the deadline is still in time",
                RpoInput {
                    last_success: Some(t("11:00:00")),
                    next_run: Some(t("11:59:00")),
                    ..base.clone()
                },
                RpoState::Ok,
                "within",
            ),
            (
                "one second over",
                RpoInput {
                    last_success: Some(t("10:59:59")),
                    ..base.clone()
                },
                RpoState::Breached,
                "1h1s old, over the RPO of 1h",
            ),
            (
                "latest attempt failed",
                RpoInput {
                    last_attempt_failed: true,
                    ..base.clone()
                },
                RpoState::AtRisk,
                "attempt failed",
            ),
            (
                "failure does not hide a breach",
                RpoInput {
                    last_success: Some(t("09:00:00")),
                    last_attempt_failed: true,
                    ..base.clone()
                },
                RpoState::Breached,
                "3h old",
            ),
            (
                "next run starts in time but finishes too late",
                RpoInput {
                    next_run: Some(t("12:29:30")),
                    ..base.clone()
                },
                RpoState::AtRisk,
                "would finish after the RPO of 1h runs out at 2026-05-01T12:30:00Z",
            ),
            (
                "next run after the deadline",
                RpoInput {
                    next_run: Some(t("13:00:00")),
                    last_duration: None,
                    ..base.clone()
                },
                RpoState::AtRisk,
                "raise the RPO",
            ),
            (
                "no run ahead",
                RpoInput {
                    next_run: None,
                    ..base.clone()
                },
                RpoState::AtRisk,
                "no backup is scheduled",
            ),
            (
                "never backed up, inside the grace period",
                RpoInput {
                    last_success: None,
                    first_seen: Some(t("11:10:00")),
                    ..base.clone()
                },
                RpoState::AtRisk,
                "no successful backup yet",
            ),
            (
                "never backed up, grace period over",
                RpoInput {
                    last_success: None,
                    ..base.clone()
                },
                RpoState::Breached,
                "never backed up",
            ),
            (
                "unknown to the daemon",
                RpoInput {
                    last_success: None,
                    first_seen: None,
                    ..base.clone()
                },
                RpoState::AtRisk,
                "has not scheduled",
            ),
        ];
        for (what, input, state, needle) in cases {
            let a = assess_rpo(&input, now);
            assert_eq!(a.state, state, "{what}: {a:?}");
            assert!(a.reason.contains(needle), "{what}: {:?}", a.reason);
        }
        let a = assess_rpo(&base, now);
        assert_eq!(a.age_secs, Some(1_800));
        assert_eq!(a.deadline, Some(t("12:30:00")));
        assert_eq!(
            serde_json::to_value(RpoState::AtRisk).unwrap(),
            serde_json::json!("AT RISK")
        );
        assert_eq!(RpoState::Breached.level(), 2);
    }

    /// Replication lag follows the same rule; only the words name the replica.
    #[test]
    fn replica_lag_uses_the_same_rule_in_its_own_words() {
        let now = t("12:00:00");
        let base = RpoInput {
            subject: Subject::Replica,
            rpo: 7_200,
            last_success: Some(t("11:00:00")),
            last_duration: Some(30.0),
            first_seen: Some(t("08:00:00")),
            last_attempt_failed: false,
            next_run: Some(t("12:10:00")),
        };
        let cases: Vec<(RpoInput, RpoState, &str)> = vec![
            (
                base.clone(),
                RpoState::Ok,
                "within the replication RPO of 2h",
            ),
            (
                RpoInput {
                    last_attempt_failed: true,
                    ..base.clone()
                },
                RpoState::AtRisk,
                "the latest replication attempt failed",
            ),
            (
                RpoInput {
                    last_success: Some(t("09:59:59")),
                    ..base.clone()
                },
                RpoState::Breached,
                "the newest replicated point is 2h1s old, over the replication RPO of 2h",
            ),
            (
                RpoInput {
                    last_success: None,
                    ..base.clone()
                },
                RpoState::Breached,
                "never replicated, and the replication RPO of 2h has passed",
            ),
            (
                RpoInput {
                    next_run: Some(t("12:59:50")),
                    ..base.clone()
                },
                RpoState::AtRisk,
                "raise replication_rpo",
            ),
        ];
        for (input, state, needle) in cases {
            let a = assess_rpo(&input, now);
            assert_eq!(a.state, state, "{a:?}");
            assert!(a.reason.contains(needle), "{:?}", a.reason);
        }
    }
}
