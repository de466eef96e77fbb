//! Whether a recovery plan's drills still vouch for it: the rule `status` shows per
//! plan. A plan is only as good as its last passed drill, and only while drills keep
//! coming on schedule.
//!
//! There is no "breached" state: a breach (as for RPO) means data is already at risk
//! of loss, while a stale or failed drill means the plan is unproven — at risk.

use chrono::{DateTime, Duration, Utc};

use crate::duration::format_duration;
use crate::schedule::Schedule;

/// How late a scheduled drill may be before the plan is at risk: a drill that runs
/// for hours or is retried next morning should not flap the status.
pub const DRILL_GRACE: Duration = Duration::days(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrillState {
    /// The last drill passed within the target RTO and is not overdue.
    Ok,
    /// Never drilled, the last drill failed or missed the RTO, or one is overdue.
    AtRisk,
}

/// The last drill of a plan, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastDrill {
    pub at: DateTime<Utc>,
    pub passed: bool,
    /// Seconds from command to last VM healthy, if the drill got that far.
    pub measured_rto: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillAssessment {
    pub state: DrillState,
    /// For people: why, e.g. "last drill failed" or "drill overdue since …".
    pub reason: String,
}

/// Judges a plan's drills at `now`. `schedule` is the plan's `drill_schedule`
/// (without one, a passed drill never goes overdue); `rto_target` in seconds.
pub fn assess_drill(
    schedule: Option<&Schedule>,
    rto_target: u64,
    last: Option<&LastDrill>,
    now: DateTime<Utc>,
) -> DrillAssessment {
    let at_risk = |reason: String| DrillAssessment {
        state: DrillState::AtRisk,
        reason,
    };
    let Some(last) = last else {
        return at_risk("never drilled".into());
    };
    let when = last.at.format("%Y-%m-%d %H:%M UTC");
    if !last.passed {
        return at_risk(format!("last drill ({when}) failed"));
    }
    if let Some(rto) = last.measured_rto
        && rto > rto_target
    {
        return at_risk(format!(
            "last drill ({when}) took {}, over the RTO target of {}",
            format_duration(rto),
            format_duration(rto_target)
        ));
    }
    if let Some(due) = schedule.and_then(|s| s.next_after(last.at))
        && now > due + DRILL_GRACE
    {
        return at_risk(format!(
            "drill overdue: one was due {} (last drill {when})",
            due.format("%Y-%m-%d %H:%M UTC")
        ));
    }
    DrillAssessment {
        state: DrillState::Ok,
        reason: match last.measured_rto {
            Some(rto) => format!(
                "last drill ({when}) passed in {} (target {})",
                format_duration(rto),
                format_duration(rto_target)
            ),
            None => format!("last drill ({when}) passed"),
        },
    }
}
