//! Sweep: delete the packs of plans whose grace period is over — unless something
//! came to need them after all.
//!
//! For each condemned pack, in this order:
//! 0. it is not in the bucket any more (an earlier sweep deleted it but stopped before
//!    writing its record): recorded as deleted;
//! 1. an index object lists it again (a backup that had its chunks pending indexed
//!    them): keep;
//! 2. a snapshot references one of its chunks and no other copy is indexed: keep and
//!    re-index it (resurrection) — that snapshot was committed before the plan's
//!    commit deadline, so the manifest listing done at the start of this run sees it;
//! 3. otherwise delete it, unless Object Lock still holds it: then it is reported and
//!    indexed again (a backup may still rely on it), and a later prune retries once
//!    the lock has expired.
//!
//! The completion record (`gc/<id>.done`) lists what was really deleted, so backups
//! whose catalog still points there refuse to commit.

use crate::backend::BackendError;
use crate::crypto::ChunkId;
use crate::error::StoreResult;
use crate::format::gc::{Done, DoneMeta, GcKey, done_key};
use crate::format::index::IndexedPack;
use crate::format::{self};
use crate::repo::{Repository, hostname, now_rfc3339};

use super::guard::{list_gc_keys, read_plan, record_done};
use super::lease::Lease;
use super::report::SweepReport;
use super::working_set::WorkSet;

/// Sweeps every plan whose grace period ended before `now` (the time taken before
/// this run listed the manifests).
pub(super) async fn sweep(
    repo: &Repository,
    work: &WorkSet,
    lease: &mut Lease,
    now: u64,
    dry_run: bool,
    report: &mut SweepReport,
) -> StoreResult<()> {
    let keys = list_gc_keys(repo).await?;
    let done: Vec<&String> = keys
        .iter()
        .filter_map(|k| match k {
            GcKey::Done(p) => Some(p),
            GcKey::Plan(_) => None,
        })
        .collect();
    for key in keys.iter().filter_map(|k| match k {
        GcKey::Plan(p) if !done.contains(&p) => Some(p),
        _ => None,
    }) {
        let plan = match read_plan(repo, key).await {
            Ok(plan) => plan,
            Err(e) => {
                // Its packs stay: better wasted space than a guess.
                tracing::warn!("cannot sweep prune plan {key}: {e}");
                report.unreadable_plans.push(key.clone());
                continue;
            }
        };
        if plan.meta.sweep_after > now {
            report.waiting_plans += 1;
            report.next_sweep_after = Some(
                report
                    .next_sweep_after
                    .map_or(plan.meta.sweep_after, |t| t.min(plan.meta.sweep_after)),
            );
            continue;
        }
        sweep_plan(repo, work, lease, key, plan.condemned, dry_run, report).await?;
    }
    Ok(())
}

/// What the sweep makes of one condemned pack (see the module docs for the order).
enum Verdict {
    Indexed,
    Needed,
    Garbage,
}

async fn sweep_plan(
    repo: &Repository,
    work: &WorkSet,
    lease: &mut Lease,
    key: &str,
    condemned: Vec<IndexedPack>,
    dry_run: bool,
    report: &mut SweepReport,
) -> StoreResult<()> {
    let judged = judge(repo, work, condemned, report).await?;
    report.resurrected += judged.resurrect.len() as u64;
    if dry_run {
        report.deleted_packs += judged.delete.len() as u64;
        return Ok(());
    }
    reindex(repo, judged.resurrect).await?;
    let mut deleted = judged.gone;
    let locked = delete_packs(repo, work, lease, judged.delete, &mut deleted, report).await?;
    // A pack that stays must stay findable: a backup whose catalog still has it may
    // rely on it, and the completion record will call it "not deleted", i.e. safe.
    reindex(repo, locked).await?;
    let record = Done {
        meta: DoneMeta {
            swept: now_rfc3339(),
            host: hostname(),
        },
        deleted: deleted.clone(),
    };
    repo.put_sealed(&done_key(key), &record.encode()).await?;
    let plan = key.to_string();
    let gone = deleted.clone();
    repo.with_catalog(move |c| record_done(c, &plan, &gone))
        .await?;
    work.run(move |w| w.remove_packs(&deleted)).await?;
    report.plans_swept += 1;
    Ok(())
}

/// A plan's condemned packs, sorted by what the sweep does with them.
struct Judged {
    resurrect: Vec<IndexedPack>,
    delete: Vec<IndexedPack>,
    /// Deleted before (a sweep that stopped before writing its record): recorded as
    /// deleted, whatever an old index object still says about them.
    gone: Vec<ChunkId>,
}

/// Decides each condemned pack's fate (see the module docs for the order); packs an
/// index lists again are only counted.
async fn judge(
    repo: &Repository,
    work: &WorkSet,
    condemned: Vec<IndexedPack>,
    report: &mut SweepReport,
) -> StoreResult<Judged> {
    let mut judged = Judged {
        resurrect: Vec::new(),
        delete: Vec::new(),
        gone: Vec::new(),
    };
    for p in condemned {
        let (listed, verdict) = work
            .run({
                let p = p.clone();
                move |w| {
                    let listed = w.pack_size(&p.pack)?.is_some();
                    if w.pack_indexed(&p.pack)? {
                        return Ok((listed, Verdict::Indexed));
                    }
                    for e in &p.entries {
                        if w.is_live(&e.id)? && !w.chunk_located(&e.id)? {
                            return Ok((listed, Verdict::Needed));
                        }
                    }
                    Ok((listed, Verdict::Garbage))
                }
            })
            .await?;
        // Asked once more before calling it gone: the listing is a moment old.
        if !listed
            && repo
                .backend()
                .size(&format::pack_key(&p.pack))
                .await?
                .is_none()
        {
            judged.gone.push(p.pack);
            continue;
        }
        match verdict {
            Verdict::Indexed => report.kept_indexed += 1,
            Verdict::Needed => judged.resurrect.push(p),
            Verdict::Garbage => judged.delete.push(p),
        }
    }
    Ok(judged)
}

/// Deletes garbage packs (adding them to `deleted`); returns those Object Lock kept.
async fn delete_packs(
    repo: &Repository,
    work: &WorkSet,
    lease: &mut Lease,
    delete: Vec<IndexedPack>,
    deleted: &mut Vec<ChunkId>,
    report: &mut SweepReport,
) -> StoreResult<Vec<IndexedPack>> {
    let mut locked = Vec::new();
    for p in delete {
        lease.keep(repo).await?;
        let pack = p.pack;
        let object = format::pack_key(&pack);
        let size = work.run(move |w| w.pack_size(&pack)).await?;
        match repo.backend().delete(&object).await {
            Ok(()) => {
                report.deleted_packs += 1;
                report.freed_bytes += size.unwrap_or(0);
                deleted.push(pack);
            }
            Err(BackendError::Locked { key, until }) => {
                report.locked_skipped.push((key, until));
                locked.push(p);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(locked)
}

/// Lists packs in a new index object again (resurrected, or kept by Object Lock).
async fn reindex(repo: &Repository, mut packs: Vec<IndexedPack>) -> StoreResult<()> {
    // A junk orphan has no readable entries: nothing to find in it.
    packs.retain(|p| !p.entries.is_empty());
    if packs.is_empty() {
        return Ok(());
    }
    repo.write_index_object(packs).await.map(drop)
}
