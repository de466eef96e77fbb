//! Which recovery point a drill (or failover) boots: for each disk of a VM, one
//! snapshot, chosen from the repository's list by `latest`, a snapshot id or a time.
//!
//! A VM's disks are backed up one after the other, minutes apart, so "the point" of a
//! VM is a set of disk snapshots: for a time T, each disk's newest snapshot taken no
//! later than T; for a snapshot id, that snapshot for its disk and the other disks'
//! newest no later than [`SAME_RUN_WINDOW`] after it (the same nightly run).

use std::collections::BTreeMap;
use std::fmt;

use lifeboat_store::SnapshotSummary;

use super::error::DrillError;

/// Disks of one VM backed up within this long of each other belong to one run.
pub const SAME_RUN_WINDOW: time::Duration = time::Duration::hours(1);

/// The point asked for on the command line (`--point`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointChoice {
    Latest,
    /// A snapshot id or unique prefix (of any of the VM's disks).
    Snapshot(String),
    /// The newest point at or before this time.
    Time(time::OffsetDateTime),
}

impl PointChoice {
    /// `latest`, an RFC 3339 time, or a snapshot id (prefix).
    pub fn parse(text: &str) -> PointChoice {
        if text == "latest" {
            return PointChoice::Latest;
        }
        match time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
            Ok(t) => PointChoice::Time(t),
            Err(_) => PointChoice::Snapshot(text.to_string()),
        }
    }
}

impl fmt::Display for PointChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PointChoice::Latest => f.write_str("latest"),
            PointChoice::Snapshot(id) => write!(f, "snapshot {id}"),
            PointChoice::Time(t) => write!(
                f,
                "at or before {}",
                t.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            ),
        }
    }
}

/// A VM's recovery point: one snapshot per disk, by disk name.
pub type VmPoint = BTreeMap<String, SnapshotSummary>;

/// Chooses `vm`'s point among `snapshots` (any VMs; others are ignored).
pub fn select_point(
    vm: &str,
    snapshots: &[SnapshotSummary],
    choice: &PointChoice,
) -> Result<VmPoint, DrillError> {
    let mine: Vec<&SnapshotSummary> = snapshots.iter().filter(|s| s.meta.vm == vm).collect();
    if mine.is_empty() {
        return Err(DrillError::NoBackups { vm: vm.to_string() });
    }
    let limit = match choice {
        PointChoice::Latest => None,
        PointChoice::Time(t) => Some(*t),
        PointChoice::Snapshot(prefix) => {
            let found: Vec<&&SnapshotSummary> = mine
                .iter()
                .filter(|s| s.id.starts_with(prefix.as_str()))
                .collect();
            match found.as_slice() {
                [one] => Some(parse_time(one)? + SAME_RUN_WINDOW),
                [] => {
                    return Err(DrillError::NoSuchSnapshot {
                        vm: vm.to_string(),
                        snapshot: prefix.clone(),
                    });
                }
                _ => return Err(DrillError::AmbiguousSnapshot(prefix.clone())),
            }
        }
    };
    let mut point = VmPoint::new();
    let mut disks: Vec<&str> = mine.iter().map(|s| s.meta.disk.as_str()).collect();
    disks.sort_unstable();
    disks.dedup();
    for disk in disks {
        let mut candidates = Vec::new();
        for s in mine.iter().filter(|s| s.meta.disk == disk) {
            let t = parse_time(s)?;
            if limit.is_none_or(|l| t <= l) {
                candidates.push((t, *s));
            }
        }
        // A snapshot asked for by id is used for its own disk even when a newer one
        // of that disk falls in the window.
        let pinned = match choice {
            PointChoice::Snapshot(prefix) => candidates
                .iter()
                .find(|(_, s)| s.id.starts_with(prefix.as_str()))
                .copied(),
            _ => None,
        };
        let chosen = pinned.or_else(|| candidates.iter().max_by_key(|(t, s)| (*t, &s.id)).copied());
        match chosen {
            Some((_, s)) => {
                point.insert(disk.to_string(), s.clone());
            }
            None => {
                let oldest = mine
                    .iter()
                    .filter(|s| s.meta.disk == disk)
                    .map(|s| s.meta.time.as_str())
                    .min()
                    .unwrap_or_default();
                return Err(DrillError::PointTooOld {
                    vm: vm.to_string(),
                    disk: disk.to_string(),
                    wanted: choice.to_string(),
                    oldest: oldest.to_string(),
                });
            }
        }
    }
    Ok(point)
}

/// The age of a point: from its oldest disk snapshot (the data the VM would lose).
pub fn point_time(point: &VmPoint) -> Option<time::OffsetDateTime> {
    point.values().filter_map(|s| parse_time(s).ok()).min()
}

fn parse_time(s: &SnapshotSummary) -> Result<time::OffsetDateTime, DrillError> {
    time::OffsetDateTime::parse(&s.meta.time, &time::format_description::well_known::Rfc3339)
        .map_err(|_| DrillError::BadSnapshotTime {
            snapshot: s.id.clone(),
            time: s.meta.time.clone(),
        })
}
