//! Retention: which snapshots a rule keeps, and every reason it keeps each one.
//!
//! The semantics follow restic's `forget`, which operators already know:
//!
//! - Snapshots are grouped by (VM, disk) first; rules count within one disk's history,
//!   so a busy VM never pushes a quiet one's snapshots out.
//! - `keep_last N` keeps the N newest snapshots.
//! - `keep_hourly/daily/weekly/monthly/yearly N`: walking from the newest snapshot to
//!   the oldest, the first (= newest) snapshot seen in each period is kept, until N
//!   periods have been used. Periods without snapshots do not count, so a week with
//!   no backups does not use up one of the N weeks.
//! - Periods are calendar periods in the group's time zone (a backup at 23:30 UTC
//!   is the next day's backup in Berlin); weeks are ISO 8601 weeks (Monday first,
//!   week 1 holds the year's first Thursday), labelled with their ISO year.
//! - Hours are real hours: when the clocks go back, 02:00–03:00 happens twice, and
//!   those are two hourly periods (labelled with their UTC offset), not one.
//! - `keep_within D` keeps everything younger than D, measured back from the newest
//!   snapshot or `now`, whichever is earlier. Measuring from the newest snapshot (as
//!   restic does) means that when backups stop, the history stops shrinking instead
//!   of expiring to nothing; capping at `now` means a snapshot stamped in the future
//!   by a wrong clock cannot stretch the window.
//!
//! Unlike restic 0.17, the oldest snapshot is not kept merely because a rule has
//! periods left: the rule is "newest per period", nothing more, so the result is
//! easy to predict by hand.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Offset, Timelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::duration::format_duration;

/// What to keep. All zero and no `keep_within` keeps nothing, which callers must
/// refuse (see [`Retention::keeps_nothing`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Retention {
    pub keep_last: u32,
    pub keep_hourly: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
    /// Seconds.
    pub keep_within: Option<u64>,
}

impl Retention {
    /// True if applying this rule would forget every snapshot.
    pub fn keeps_nothing(&self) -> bool {
        self.keep_last == 0
            && self.keep_hourly == 0
            && self.keep_daily == 0
            && self.keep_weekly == 0
            && self.keep_monthly == 0
            && self.keep_yearly == 0
            && self.keep_within.is_none()
    }

    /// `last 3, daily 7, within 7d`: for logs and dry-run headers.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = [
            ("last", self.keep_last),
            ("hourly", self.keep_hourly),
            ("daily", self.keep_daily),
            ("weekly", self.keep_weekly),
            ("monthly", self.keep_monthly),
            ("yearly", self.keep_yearly),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
        if let Some(w) = self.keep_within {
            parts.push(format!("within {}", format_duration(w)));
        }
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join(", ")
        }
    }
}

/// The little retention needs to know about a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotRef {
    pub id: String,
    pub vm: String,
    pub disk: String,
    pub time: DateTime<Utc>,
}

/// Which snapshots a retention run looks at. With a protection group, only its VMs'
/// snapshots: other groups may share the repository, and their snapshots follow their
/// own group's rule, so a wrong filter here would forget what another rule keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Only this VM's snapshots.
    pub vm: Option<String>,
    /// Only this disk's snapshots.
    pub disk: Option<String>,
    /// Only these VMs' snapshots (a group's).
    pub vms: Option<Vec<String>>,
}

impl Scope {
    pub fn contains(&self, vm: &str, disk: &str) -> bool {
        self.vm.as_deref().is_none_or(|v| v == vm)
            && self.disk.as_deref().is_none_or(|d| d == disk)
            && self
                .vms
                .as_ref()
                .is_none_or(|vms| vms.iter().any(|v| v == vm))
    }
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    #[serde(flatten)]
    pub snapshot: SnapshotRef,
    pub keep: bool,
    /// Every rule that keeps it, e.g. `last 3`, `daily 2026-11-20`, `weekly 2026-W47`,
    /// `monthly 2026-11`, `yearly 2026`, `within 7d`. Empty when forgotten.
    pub reasons: Vec<String>,
}

/// Calendar periods, finest first.
#[derive(Debug, Clone, Copy)]
enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The period `t` falls in, as its label; equal labels are the same period.
    fn label(self, t: &DateTime<Tz>) -> String {
        match self {
            // The offset makes the repeated hour of a DST change two periods.
            Period::Hourly => format!(
                "{}T{:02}:00{}",
                t.format("%Y-%m-%d"),
                t.hour(),
                t.offset().fix()
            ),
            Period::Daily => t.format("%Y-%m-%d").to_string(),
            Period::Weekly => {
                let w = t.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Period::Monthly => format!("{}-{:02}", t.year(), t.month()),
            Period::Yearly => t.year().to_string(),
        }
    }
}

/// Splits snapshots by (VM, disk); each list is oldest first.
pub fn group_by_disk(snapshots: &[SnapshotRef]) -> BTreeMap<(String, String), Vec<SnapshotRef>> {
    let mut groups: BTreeMap<(String, String), Vec<SnapshotRef>> = BTreeMap::new();
    for s in snapshots {
        groups
            .entry((s.vm.clone(), s.disk.clone()))
            .or_default()
            .push(s.clone());
    }
    for list in groups.values_mut() {
        list.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
    }
    groups
}

/// Applies `rule` to each (VM, disk) history separately and returns one decision per
/// snapshot: disks in name order, each disk's snapshots newest first.
///
/// Grouping happens here rather than being left to the caller because applying
/// `keep_last 3` to several disks at once would silently forget most of them.
pub fn apply_retention(
    snapshots: &[SnapshotRef],
    rule: &Retention,
    now: DateTime<Utc>,
    tz: Tz,
) -> Vec<Decision> {
    let mut out = Vec::with_capacity(snapshots.len());
    for (_, mut list) in group_by_disk(snapshots) {
        list.reverse();
        out.extend(apply_to_history(list, rule, now, tz));
    }
    out
}

/// One disk's history, newest first.
fn apply_to_history(
    newest_first: Vec<SnapshotRef>,
    rule: &Retention,
    now: DateTime<Utc>,
    tz: Tz,
) -> Vec<Decision> {
    let mut periods: Vec<(Period, u32, Option<String>)> = [
        (Period::Hourly, rule.keep_hourly),
        (Period::Daily, rule.keep_daily),
        (Period::Weekly, rule.keep_weekly),
        (Period::Monthly, rule.keep_monthly),
        (Period::Yearly, rule.keep_yearly),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(p, n)| (p, n, None))
    .collect();
    let within_since = rule.keep_within.and_then(|secs| {
        let newest = newest_first.first()?.time;
        let reference = newest.min(now);
        let span = chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000));
        // An absurdly long window reaches before any representable time: keep all.
        Some(
            reference
                .checked_sub_signed(span)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        )
    });
    let within_label = rule
        .keep_within
        .map(|w| format!("within {}", format_duration(w)));

    let mut out = Vec::with_capacity(newest_first.len());
    for (index, snapshot) in newest_first.into_iter().enumerate() {
        let mut reasons = Vec::new();
        if (index as u64) < u64::from(rule.keep_last) {
            reasons.push(format!("last {}", rule.keep_last));
        }
        let local = snapshot.time.with_timezone(&tz);
        for (period, left, last_label) in &mut periods {
            if *left == 0 {
                continue;
            }
            let label = period.label(&local);
            // Newest first, so the first snapshot of a new period is its newest one.
            if last_label.as_deref() != Some(label.as_str()) {
                reasons.push(format!("{} {label}", period.name()));
                *left -= 1;
                *last_label = Some(label);
            }
        }
        if let (Some(since), Some(label)) = (within_since, &within_label)
            && snapshot.time >= since
        {
            reasons.push(label.clone());
        }
        out.push(Decision {
            snapshot,
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_filters_by_vm_disk_and_group() {
        let all = Scope::default();
        assert!(all.contains("web", "root"));
        let group = Scope {
            vms: Some(vec!["web".into(), "db".into()]),
            ..Scope::default()
        };
        assert!(group.contains("db", "data"));
        assert!(!group.contains("mail", "root"), "another group's VM");
        let narrow = Scope {
            vm: Some("web".into()),
            disk: Some("root".into()),
            ..group
        };
        assert!(narrow.contains("web", "root"));
        assert!(!narrow.contains("web", "data"));
        assert!(!narrow.contains("db", "root"));
        let outside = Scope {
            vm: Some("mail".into()),
            vms: Some(vec!["web".into()]),
            ..Scope::default()
        };
        assert!(
            !outside.contains("mail", "root"),
            "--vm cannot leave the group"
        );
    }
}
