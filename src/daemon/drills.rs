//! Drills in the daemon: each plan's `drill_schedule` runs `lifeboat drill PLAN` as a
//! job, and `status` and `/metrics` judge each plan by its newest signed report in
//! `<state_dir>/drills/<repository>/` ([`lifeboat_policies::drill`]: OK, or AT RISK
//! when never drilled, failed, over its RTO or overdue).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use lifeboat_policies::Config;
use lifeboat_policies::drill::{DrillState, LastDrill, assess_drill};
use lifeboat_replicator::drill::report::{DrillReport, DrillVerdict};
use serde::Serialize;

/// The reports directory of plans recovering from repository `repository`.
pub fn reports_dir(state_dir: &Path, repository: &str) -> PathBuf {
    state_dir.join("drills").join(repository)
}

/// One plan's drill state, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PlanDrillStatus {
    pub plan: String,
    /// `OK` or `AT RISK`.
    pub state: &'static str,
    pub reason: String,
    pub last_drill: Option<DateTime<Utc>>,
    pub last_verdict: Option<DrillVerdict>,
    /// Newest passed drill.
    pub last_success: Option<DateTime<Utc>>,
    pub rto_secs: Option<f64>,
    pub rto_target_secs: u64,
    pub next_drill: Option<DateTime<Utc>>,
    pub report: Option<PathBuf>,
}

/// Every plan's drill state at `now`, from the newest reports.
pub fn plan_drills(config: &Config, state_dir: &Path, now: DateTime<Utc>) -> Vec<PlanDrillStatus> {
    config
        .plans
        .iter()
        .map(|plan| {
            let reports = reports_of(&reports_dir(state_dir, &plan.repository), &plan.name);
            let newest = reports.last();
            let time = |r: &DrillReport| r.started.parse::<DateTime<Utc>>().ok();
            let last = newest.and_then(|(_, r)| {
                Some(LastDrill {
                    at: time(r)?,
                    passed: r.verdict == DrillVerdict::Passed,
                    measured_rto: r.rto_secs.map(|s| s.ceil() as u64),
                })
            });
            let assessment =
                assess_drill(plan.drill_schedule.as_ref(), plan.rto, last.as_ref(), now);
            PlanDrillStatus {
                plan: plan.name.clone(),
                state: match assessment.state {
                    DrillState::Ok => "OK",
                    DrillState::AtRisk => "AT RISK",
                },
                reason: assessment.reason,
                last_drill: last.map(|l| l.at),
                last_verdict: newest.map(|(_, r)| r.verdict),
                last_success: reports
                    .iter()
                    .rev()
                    .find(|(_, r)| r.verdict == DrillVerdict::Passed)
                    .and_then(|(_, r)| time(r)),
                rto_secs: newest.and_then(|(_, r)| r.rto_secs),
                rto_target_secs: plan.rto,
                next_drill: plan.drill_schedule.as_ref().and_then(|s| s.next_after(now)),
                report: newest.map(|(p, _)| p.with_extension("html")),
            }
        })
        .collect()
}

/// The plan's reports in `dir`, oldest first; unreadable files are skipped here
/// (`drill history --verify` is where they are reported).
fn reports_of(dir: &Path, plan: &str) -> Vec<(PathBuf, DrillReport)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| {
            let report: DrillReport = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            (report.plan == plan).then_some((p, report))
        })
        .collect()
}
