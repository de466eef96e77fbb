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

use crate::error::StoreResult;
use crate::format::gc::{Done, DoneMeta, GcKey, done_key};
use crate::format::index::IndexedPack;
use crate::format::{self};
use crate::repo::{Repository, hostname, now_rfc3339};

use super::SweepReport;
use super::guard::{list_gc_keys, read_plan, record_done};
use super::lease::Lease;
use super::work::WorkSet;

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
    let mut resurrect = Vec::new();
    let mut delete = Vec::new();
    // Deleted before (a sweep that stopped before writing its record): recorded as
    // deleted, whatever an old index object still says about them.
    let mut gone = Vec::new();
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
            gone.push(p.pack);
            continue;
        }
        match verdict {
            Verdict::Indexed => report.kept_indexed += 1,
            Verdict::Needed => resurrect.push(p),
            Verdict::Garbage => delete.push(p),
        }
    }
    report.resurrected += resurrect.len() as u64;
    if dry_run {
        report.deleted_packs += delete.len() as u64;
        return Ok(());
    }
    reindex(repo, resurrect).await?;
    let mut deleted = gone;
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
            Err(crate::BackendError::Locked { key, until }) => {
                report.locked_skipped.push((key, until));
                locked.push(p);
            }
            Err(e) => return Err(e.into()),
        }
    }
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

/// Lists packs in a new index object again (resurrected, or kept by Object Lock).
async fn reindex(repo: &Repository, mut packs: Vec<IndexedPack>) -> StoreResult<()> {
    // A junk orphan has no readable entries: nothing to find in it.
    packs.retain(|p| !p.entries.is_empty());
    if packs.is_empty() {
        return Ok(());
    }
    repo.write_index_object(packs).await.map(drop)
}
