//! One replication run: check that the two repositories belong together, pick the
//! source snapshots the destination lacks, copy them oldest first, report the lag.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use lifeboat_store::format::manifest::ReplicatedFrom;
use lifeboat_store::{Progress, Repository, SnapshotSummary};

use super::rate::RateLimit;
use super::request::{CopiedSnapshot, NewestPoint, ReplicateReport, ReplicateRequest};
use super::snapshot::{Link, copy_snapshot};
use crate::error::{ReplicateError, ReplicateResult};

/// Copies every selected snapshot of `src` that `dst` does not hold yet. Both must be
/// open with their catalogs synced. Stops at the first error: what was committed
/// before it stays, and a rerun carries on from there.
pub async fn replicate(
    src: Arc<Repository>,
    dst: Arc<Repository>,
    req: &ReplicateRequest,
    progress: Arc<Progress>,
) -> ReplicateResult<ReplicateReport> {
    let started = Instant::now();
    let run_started = lifeboat_store::repo::now_rfc3339();
    check_pair(&src, &dst)?;
    let selected = |s: &SnapshotSummary| {
        (req.vms.is_empty() || req.vms.contains(&s.meta.vm)) && !req.exclude.contains(&s.meta.vm)
    };
    let held = Held::of(&dst).await?;
    let mut todo: Vec<SnapshotSummary> = src
        .snapshots()
        .await
        .map_err(ReplicateError::source)?
        .into_iter()
        .filter(selected)
        .collect();
    let all = todo.len() as u64;
    todo.retain(|s| !held.has(&origin(&src, s)));
    let unheld = todo.len() as u64;
    todo.retain(|s| held.is_newer(s));
    todo.sort_by(|a, b| a.meta.time.cmp(&b.meta.time));
    let mut report = ReplicateReport {
        source: src.location(),
        destination: dst.location(),
        snapshots_present: all - unheld,
        snapshots_older: unheld - todo.len() as u64,
        ..ReplicateReport::default()
    };
    let rate = req.limit_rate.map(RateLimit::new);
    let link = Link {
        src: &src,
        dst: &dst,
        req,
        rate: rate.as_ref(),
        progress: &progress,
    };
    for snapshot in &todo {
        let mut from = origin(&src, snapshot);
        from.copied = run_started.clone();
        let copy = copy_snapshot(&link, snapshot, from).await?;
        report.snapshots_copied += 1;
        report.chunks_sent += copy.chunks_sent;
        report.bytes_sent += copy.bytes_sent;
        report.chunks_skipped += copy.chunks_skipped;
        report.bytes_skipped += copy.bytes_skipped;
        report.copied.push(CopiedSnapshot {
            vm: snapshot.meta.vm.clone(),
            disk: snapshot.meta.disk.clone(),
            time: snapshot.meta.time.clone(),
            source_snapshot: snapshot.id.clone(),
            snapshot: copy.committed.id,
        });
    }
    report.newest = newest_points(&dst, selected).await?;
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Refuses to copy between repositories that are the same, or whose chunk ids would
/// not match (the destination must be a replica of the source, of the source's own
/// source, or — when coming home after a failover — its source).
fn check_pair(src: &Repository, dst: &Repository) -> ReplicateResult<()> {
    if src.location() == dst.location() || src.config().id == dst.config().id {
        return Err(ReplicateError::SameRepository {
            location: dst.location(),
        });
    }
    if src.keys().id_key() == dst.keys().id_key() {
        return Ok(());
    }
    Err(match &dst.config().replica_of {
        None => ReplicateError::NotAReplica {
            destination: dst.location(),
        },
        Some(r) => ReplicateError::ReplicaOfAnother {
            destination: dst.location(),
            replica_of: r.repository.clone(),
            made_from: r.location.clone(),
            source_location: src.location(),
        },
    })
}

/// Where a snapshot of `repo` was first committed: its own record if it is a copy,
/// else `repo` itself. Comparing origins (not immediate sources) lets a replica be fed
/// from another replica, or switch sources, without copying anything twice.
fn origin(repo: &Repository, s: &SnapshotSummary) -> ReplicatedFrom {
    s.meta
        .replicated_from
        .clone()
        .unwrap_or_else(|| ReplicatedFrom {
            repository: repo.config().id.clone(),
            snapshot: s.id.clone(),
            copied: String::new(),
        })
}

/// What the destination holds: snapshot origins, and per disk the newest point.
struct Held {
    origins: HashSet<(String, String)>,
    newest: HashMap<(String, String), String>,
}

impl Held {
    async fn of(dst: &Repository) -> ReplicateResult<Self> {
        let mut held = Held {
            origins: HashSet::new(),
            newest: HashMap::new(),
        };
        for s in dst.snapshots().await.map_err(ReplicateError::destination)? {
            let o = origin(dst, &s);
            held.origins.insert((o.repository, o.snapshot));
            let newest = held.newest.entry((s.meta.vm, s.meta.disk)).or_default();
            if s.meta.time > *newest {
                *newest = s.meta.time;
            }
        }
        Ok(held)
    }

    fn has(&self, o: &ReplicatedFrom) -> bool {
        self.origins
            .contains(&(o.repository.clone(), o.snapshot.clone()))
    }

    /// Only points newer than the destination's newest of that disk are copied: an
    /// older one missing there was forgotten by the destination's own retention, and
    /// replication must not undo that.
    fn is_newer(&self, s: &SnapshotSummary) -> bool {
        self.newest
            .get(&(s.meta.vm.clone(), s.meta.disk.clone()))
            .is_none_or(|newest| s.meta.time > *newest)
    }
}

/// The newest point per selected disk on the destination and its age now.
async fn newest_points(
    dst: &Repository,
    selected: impl Fn(&SnapshotSummary) -> bool,
) -> ReplicateResult<Vec<NewestPoint>> {
    let mut newest: BTreeMap<(String, String), String> = BTreeMap::new();
    for s in dst.snapshots().await.map_err(ReplicateError::destination)? {
        if !selected(&s) {
            continue;
        }
        let time = newest.entry((s.meta.vm, s.meta.disk)).or_default();
        if s.meta.time > *time {
            *time = s.meta.time;
        }
    }
    let now = time::OffsetDateTime::now_utc();
    Ok(newest
        .into_iter()
        .map(|((vm, disk), time)| {
            let lag_secs =
                time::OffsetDateTime::parse(&time, &time::format_description::well_known::Rfc3339)
                    .map_or(0, |t| (now - t).whole_seconds().max(0) as u64);
            NewestPoint {
                vm,
                disk,
                time,
                lag_secs,
            }
        })
        .collect())
}
