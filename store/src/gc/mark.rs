//! Mark: find packs nothing uses (or barely uses), repack what is worth keeping,
//! record the condemned packs in plan objects, and drop them from the index.
//!
//! Nothing is deleted here. Deletion is the sweep's job, a grace period later, after
//! it has checked once more that no snapshot committed since uses the packs.

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::backend::BackendError;
use crate::crypto::ChunkId;
use crate::error::{StoreError, StoreResult};
use crate::format::gc::{Plan, PlanMeta, plan_key};
use crate::format::index::IndexedPack;
use crate::format::pack::{PackBuilder, PackEntry};
use crate::format::{self, blob::open_chunk};
use crate::repo::{Repository, hostname, now_rfc3339};
use crate::stored_packs::HeaderRead;

use super::guard::record_plan;
use super::lease::Lease;
use super::options::PruneOptions;
use super::report::MarkReport;
use super::working_set::{Orphan, PackUse, WorkSet};

/// Entries per plan or index object (48 bytes each: objects stay under ~50 MiB).
const ENTRIES_PER_OBJECT: usize = 1_000_000;

/// What the classification decided for the indexed packs.
#[derive(Default)]
struct Verdicts {
    condemn: Vec<ChunkId>,
    repack: Vec<ChunkId>,
}

pub(super) async fn mark(
    repo: &Repository,
    work: &WorkSet,
    lease: &mut Lease,
    opts: &PruneOptions,
    now: u64,
    report: &mut MarkReport,
    phase: &(dyn Fn(&str) + Sync),
) -> StoreResult<()> {
    let verdicts = classify(repo, work, opts, now, report).await?;
    phase("collecting the condemned packs' entries");
    let mut condemned: Vec<IndexedPack> = Vec::new();
    for pack in verdicts.condemn {
        let entries = work.run(move |w| w.pack_entries(&pack, false)).await?;
        condemned.push(IndexedPack { pack, entries });
    }
    condemned.extend(old_orphans(repo, work, opts.grace.as_secs(), now, report).await?);
    if !opts.dry_run {
        if !verdicts.repack.is_empty() {
            phase("repacking");
        }
        for pack in verdicts.repack {
            lease.keep(repo).await?;
            if let Some(old) = repack(repo, work, pack, report).await? {
                condemned.push(old);
            }
        }
    } else {
        report.repacked_packs = verdicts.repack.len() as u64;
    }
    report.condemned_packs = condemned.len() as u64;
    if opts.dry_run || condemned.is_empty() {
        return Ok(());
    }
    phase("writing plans");
    write_plans(repo, lease, opts, now, condemned, report).await?;
    phase("rewriting the index");
    rewrite_index(repo, work, lease, report).await
}

/// Sorts the indexed packs into those to condemn (no live chunk, old enough) and
/// those to repack (mostly garbage), counting the ones left alone and why.
async fn classify(
    repo: &Repository,
    work: &WorkSet,
    opts: &PruneOptions,
    now: u64,
    report: &mut MarkReport,
) -> StoreResult<Verdicts> {
    let lock_period = repo.config().immutability.map(|i| i.period_secs);
    let (grace, repack_below) = (opts.grace.as_secs(), opts.repack_below);
    let (verdicts, counts) = work
        .run(move |w| {
            let mut v = Verdicts::default();
            let mut counts = MarkReport::default();
            w.for_each_pack_use(|u: PackUse| {
                let Some(size) = u.size else {
                    counts.missing_packs += 1;
                    return;
                };
                let Some(mtime) = u.mtime.filter(|m| now.saturating_sub(*m) >= grace) else {
                    counts.young_packs += 1;
                    return;
                };
                // Object Lock holds it past the sweep: condemning it now would only
                // make the sweep fail to delete it and index it again.
                let locked_past_sweep = lock_period
                    .is_some_and(|p| mtime.saturating_add(p) > now.saturating_add(grace));
                if u.live_chunks == 0 && locked_past_sweep {
                    counts.locked_packs += 1;
                } else if u.live_chunks == 0 {
                    counts.condemned_bytes += size;
                    v.condemn.push(u.pack);
                } else if (u.live_bytes as f64) < repack_below * size as f64 {
                    // Copying out of a pack that cannot be deleted yet only adds data.
                    if lock_period.is_some_and(|p| mtime.saturating_add(p) > now) {
                        counts.repack_skipped_locked += 1;
                    } else {
                        v.repack.push(u.pack);
                    }
                }
            })?;
            Ok((v, counts))
        })
        .await?;
    report.missing_packs = counts.missing_packs;
    report.young_packs = counts.young_packs;
    report.repack_skipped_locked = counts.repack_skipped_locked;
    report.locked_packs = counts.locked_packs;
    report.condemned_bytes = counts.condemned_bytes;
    Ok(verdicts)
}

/// Packs no index lists that are older than the grace period, with whatever entries
/// their headers give (none if unreadable): condemned like the rest.
async fn old_orphans(
    repo: &Repository,
    work: &WorkSet,
    grace: u64,
    now: u64,
    report: &mut MarkReport,
) -> StoreResult<Vec<IndexedPack>> {
    let mut condemned = Vec::new();
    let orphans = work.run(|w| w.orphans()).await?;
    for o in orphans {
        if o.mtime.is_none_or(|m| now.saturating_sub(m) < grace) {
            report.young_packs += 1;
            continue;
        }
        let entries = match read_header(repo, &o).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!("orphan pack {} has no readable header: {e}", o.pack.short());
                Vec::new()
            }
        };
        report.orphan_packs += 1;
        report.condemned_bytes += o.size;
        condemned.push(IndexedPack {
            pack: o.pack,
            entries,
        });
    }
    Ok(condemned)
}

/// Copies the live chunks of a mostly-dead pack into new packs. Returns the old pack
/// (to condemn), or `None` if it had a damaged chunk and was left alone.
async fn repack(
    repo: &Repository,
    work: &WorkSet,
    pack: ChunkId,
    report: &mut MarkReport,
) -> StoreResult<Option<IndexedPack>> {
    let live = work.run(move |w| w.pack_entries(&pack, true)).await?;
    let all = work.run(move |w| w.pack_entries(&pack, false)).await?;
    let key = format::pack_key(&pack);
    let data = repo.backend().get(&key).await?;
    let keys = repo.keys().clone();
    let pack_size = repo.config().pack_size as usize;
    let built = tokio::task::spawn_blocking(move || {
        let mut builder = PackBuilder::with_capacity(pack_size);
        let mut copied = 0u64;
        for e in &live {
            let range = e.offset as usize..e.offset as usize + e.length as usize;
            let Some(sealed) = data.get(range) else {
                return Err(format!("chunk {} lies outside the pack", e.id.short()));
            };
            // Sealed blobs move as they are; opening one first proves it is intact,
            // so a repack never spreads damage into new packs.
            open_chunk(&keys, &e.id, sealed)
                .map_err(|err| format!("chunk {}: {err}", e.id.short()))?;
            builder.add(e.id, sealed, e.raw_len);
            copied += u64::from(e.length);
        }
        Ok((builder, copied))
    })
    .await
    .expect("repack task panicked");
    let (builder, copied) = match built {
        Ok(b) => b,
        Err(why) => {
            tracing::warn!(
                "not repacking {key}: {why}; `lifeboat verify --read-data` will say more"
            );
            report.repack_skipped_damaged += 1;
            return Ok(None);
        }
    };
    if !builder.is_empty() {
        // Indexed at once, by its own index object: the catalog already knows these
        // chunks (in the old pack), so they would never show up as pending.
        let new = builder.finish(repo.keys());
        repo.backend()
            .put(&format::pack_key(&new.id), Bytes::from(new.bytes))
            .await?;
        repo.write_index_object(vec![IndexedPack {
            pack: new.id,
            entries: new.entries,
        }])
        .await?;
    }
    report.repacked_packs += 1;
    report.repacked_bytes += copied;
    Ok(Some(IndexedPack { pack, entries: all }))
}

async fn write_plans(
    repo: &Repository,
    lease: &mut Lease,
    opts: &PruneOptions,
    now: u64,
    condemned: Vec<IndexedPack>,
    report: &mut MarkReport,
) -> StoreResult<()> {
    let meta = PlanMeta {
        created: now_rfc3339(),
        sweep_after: now + opts.grace.as_secs(),
        grace_secs: opts.grace.as_secs(),
        host: hostname(),
    };
    let mut batch: Vec<IndexedPack> = Vec::new();
    let mut entries = 0usize;
    let mut rest = condemned.into_iter().peekable();
    while let Some(p) = rest.next() {
        entries += p.entries.len().max(1);
        batch.push(p);
        if entries >= ENTRIES_PER_OBJECT || rest.peek().is_none() {
            lease.keep(repo).await?;
            let plan = Plan {
                meta: meta.clone(),
                condemned: std::mem::take(&mut batch),
            };
            let key = plan_key(&ChunkId::random());
            repo.put_sealed(&key, &plan.encode()).await?;
            report.plans.push(key.clone());
            repo.with_catalog(move |c| record_plan(c, &key, &plan))
                .await?;
            entries = 0;
        }
    }
    Ok(())
}

/// Replaces every index object with fresh ones listing only packs still in use (the
/// catalog forgot the condemned ones when their plan was recorded). New objects are
/// written before old ones are deleted, so a crash leaves duplicates, never gaps.
async fn rewrite_index(
    repo: &Repository,
    work: &WorkSet,
    lease: &mut Lease,
    report: &mut MarkReport,
) -> StoreResult<()> {
    let old = repo.with_catalog(|c| c.index_objects()).await?;
    let (tx, mut rx) = mpsc::channel::<Vec<IndexedPack>>(1);
    let producer = work.run(move |w| {
        let mut batch = Vec::new();
        let mut entries = 0usize;
        w.for_each_indexed_pack(|pack, list| {
            entries += list.len();
            batch.push(IndexedPack {
                pack,
                entries: list,
            });
            if entries >= ENTRIES_PER_OBJECT {
                entries = 0;
                send(&tx, std::mem::take(&mut batch))?;
            }
            Ok(())
        })?;
        if !batch.is_empty() {
            send(&tx, batch)?;
        }
        Ok(())
    });
    let consumer = async {
        while let Some(packs) = rx.recv().await {
            lease.keep(repo).await?;
            repo.write_index_object(packs).await?;
            report.index_written += 1;
        }
        Ok::<(), StoreError>(())
    };
    let (produced, consumed) = tokio::join!(producer, consumer);
    consumed?;
    produced?;
    let mut gone = Vec::new();
    for key in old {
        lease.keep(repo).await?;
        match repo.backend().delete(&key).await {
            Ok(()) => gone.push(key),
            Err(BackendError::Locked { key, until }) => {
                report.locked_skipped.push((key, until));
            }
            Err(e) => return Err(e.into()),
        }
    }
    report.index_deleted = gone.len() as u64;
    repo.with_catalog(move |c| c.remove_index_objects(&gone))
        .await
}

fn send(tx: &mpsc::Sender<Vec<IndexedPack>>, batch: Vec<IndexedPack>) -> StoreResult<()> {
    tx.blocking_send(batch).map_err(|_| StoreError::Invalid {
        what: "index rewrite".into(),
        detail: "the uploader stopped".into(),
    })
}

/// An orphan pack's entries, from its header (as `repair index` reads them).
async fn read_header(repo: &Repository, o: &Orphan) -> StoreResult<Vec<PackEntry>> {
    match repo.read_pack_header(&o.pack, o.size).await? {
        HeaderRead::Ok(entries) => Ok(entries),
        HeaderRead::Damaged(why) => Err(StoreError::corrupt(&format::pack_key(&o.pack), why)),
        // Deleted since the listing: condemning it again costs nothing.
        HeaderRead::Vanished => Ok(Vec::new()),
    }
}
