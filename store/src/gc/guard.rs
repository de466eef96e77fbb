//! The backup side of garbage collection: what every client does so that a concurrent
//! prune on another host never deletes data a new snapshot uses.
//!
//! Two rules, both driven by the prune plans in `gc/`:
//! 1. On catalog sync, a newly seen plan makes the catalog forget the packs it
//!    condemns, so later backups upload fresh copies instead of reusing them.
//! 2. Just before a manifest is written, every stored copy of every chunk the
//!    snapshot uses is checked against all plans. A chunk is fine if some copy is in a
//!    pack no plan condemns, or in a condemned pack whose plan's commit deadline has
//!    not passed (the sweep, which comes later, will see the manifest and keep the
//!    pack); otherwise the commit is refused and the backup must run again. Once the
//!    manifest is in the bucket the check runs again with the time the upload ended:
//!    a manifest that landed after its deadline may have been missed by a sweep, so it
//!    is deleted and the commit refused. A refused commit loses nothing: the previous
//!    snapshots are untouched and the new data stays reusable.

use std::collections::{HashMap, HashSet};

use rusqlite::params;

use crate::catalog::Catalog;
use crate::crypto::ChunkId;
use crate::error::{StoreError, StoreResult};
use crate::format::gc::{Done, GC_PREFIX, GcKey, Plan, classify_gc_key};
use crate::format::index::IndexedPack;
use crate::format::manifest::{Extent, Manifest};
use crate::format::{self};
use crate::repo::Repository;
use crate::stored_packs::HeaderRead;

use super::clock::unix_now;

/// Every plan and completion record in the repository.
pub(crate) async fn list_gc_keys(repo: &Repository) -> StoreResult<Vec<GcKey>> {
    Ok(repo
        .backend()
        .list(GC_PREFIX)
        .await?
        .iter()
        .filter_map(|o| classify_gc_key(&o.key))
        .collect())
}

pub(crate) async fn sync_plans(repo: &Repository) -> StoreResult<()> {
    let listed = list_gc_keys(repo).await?;
    sync_listed_plans(repo, listed).await
}

/// [`sync_plans`] with a listing the caller already has.
async fn sync_listed_plans(repo: &Repository, listed: Vec<GcKey>) -> StoreResult<()> {
    let (known_plans, known_done) = repo.with_catalog(known).await?;
    let plans: HashSet<String> = listed
        .iter()
        .filter_map(|k| match k {
            GcKey::Plan(p) => Some(p.clone()),
            GcKey::Done(_) => None,
        })
        .collect();
    for key in &plans {
        if known_plans.contains(key) {
            continue;
        }
        match read_plan(repo, key).await {
            Ok(plan) => {
                let key = key.clone();
                repo.with_catalog(move |c| record_plan(c, &key, &plan))
                    .await?;
            }
            // A plan nobody can read is a plan no sweep can execute: its packs stay.
            Err(e) => tracing::warn!("ignoring unreadable prune plan {key}: {e}"),
        }
    }
    for key in listed.iter().filter_map(|k| match k {
        GcKey::Done(p) if plans.contains(p) && !known_done.contains(p) => Some(p),
        _ => None,
    }) {
        let done_key = crate::format::gc::done_key(key);
        match repo
            .get_sealed(&done_key)
            .await
            .and_then(|plain| Done::decode(&plain).map_err(|e| StoreError::decode(&done_key, e)))
        {
            Ok(done) => {
                let key = key.clone();
                repo.with_catalog(move |c| record_done(c, &key, &done.deleted))
                    .await?;
            }
            Err(e) => tracing::warn!("ignoring unreadable prune record {done_key}: {e}"),
        }
    }
    let gone: Vec<String> = known_plans.difference(&plans).cloned().collect();
    if !gone.is_empty() {
        repo.with_catalog(move |c| drop_plans(c, &gone)).await?;
    }
    Ok(())
}

pub(crate) async fn read_plan(repo: &Repository, key: &str) -> StoreResult<Plan> {
    let plain = repo.get_sealed(key).await?;
    Plan::decode(&plain).map_err(|e| StoreError::decode(key, e))
}

/// The stored copies a snapshot's chunks rely on, as this host's catalog knew them
/// when the commit began (syncing plans makes the catalog forget condemned packs, and
/// the check needs to know where the backup found its data). Compact, because a
/// manifest of a large disk references millions of chunks.
pub(crate) struct Copies {
    /// Distinct packs holding some copy.
    packs: Vec<ChunkId>,
    /// The copies of chunk `i` are `packs[of[start[i]..start[i + 1]]]`.
    start: Vec<u32>,
    of: Vec<u32>,
}

impl Copies {
    /// Where every chunk of `ids` is stored; refuses if some chunk has no copy.
    fn gather(c: &Catalog, ids: &[ChunkId]) -> StoreResult<Self> {
        let mut pack_index: HashMap<ChunkId, u32> = HashMap::new();
        let mut copies = Copies {
            packs: Vec::new(),
            start: vec![0],
            of: Vec::new(),
        };
        let mut missing = 0usize;
        for id in ids {
            // Only indexed copies: another backup's upload on this host that no index
            // lists yet (pending) may never be indexed if that backup is killed. The
            // caller has flushed this backup's own uploads.
            let found: Vec<_> = c.locations(id)?.into_iter().filter(|l| l.indexed).collect();
            if found.is_empty() {
                missing += 1;
            }
            for loc in found {
                let next = copies.packs.len() as u32;
                let at = *pack_index.entry(loc.pack).or_insert(next);
                if at == next {
                    copies.packs.push(loc.pack);
                }
                copies.of.push(at);
            }
            copies.start.push(copies.of.len() as u32);
        }
        if missing > 0 {
            return Err(StoreError::GcConflict {
                detail: format!(
                    "{missing} chunk(s) this backup reused are in no index any more (a prune \
                     condemned them while the backup ran: they are being garbage-collected)"
                ),
            });
        }
        Ok(copies)
    }

    /// Refuses if some chunk has no copy outside `bad` packs (index into `packs`).
    fn refuse_unsafe(&self, bad: &HashMap<u32, String>) -> StoreResult<()> {
        if bad.is_empty() {
            return Ok(());
        }
        let mut lost = 0usize;
        let mut example = None;
        for w in self.start.windows(2) {
            let copies = &self.of[w[0] as usize..w[1] as usize];
            if copies.iter().all(|p| bad.contains_key(p)) {
                lost += 1;
                example.get_or_insert(copies[0]);
            }
        }
        match example {
            None => Ok(()),
            Some(p) => Err(StoreError::GcConflict {
                detail: format!(
                    "{lost} chunk(s) this backup reused are stored only in packs being \
                     garbage-collected (e.g. {} by {})",
                    self.packs[p as usize].short(),
                    bad[&p]
                ),
            }),
        }
    }
}

impl Copies {
    /// Packs to list in an index again so every chunk has a findable copy (for each
    /// chunk whose usable copies are all in condemned packs, one of those packs), and
    /// the earliest commit deadline among them: the manifest must land before it.
    fn borrowed(&self, states: &PackStates) -> (Vec<ChunkId>, Option<u64>) {
        let usable = |p: &u32| !states.unsafe_packs.contains_key(p);
        let mut chosen: HashSet<u32> = HashSet::new();
        for w in self.start.windows(2) {
            let copies = &self.of[w[0] as usize..w[1] as usize];
            let free = |p: &u32| usable(p) && !states.pending.contains_key(p);
            if copies.iter().any(|p| free(p) || chosen.contains(p)) {
                continue;
            }
            if let Some(p) = copies
                .iter()
                .find(|p| usable(p) && states.pending.contains_key(*p))
            {
                chosen.insert(*p);
            }
        }
        let deadline = chosen.iter().map(|p| states.pending[p]).min();
        let packs = chosen.into_iter().map(|p| self.packs[p as usize]).collect();
        (packs, deadline)
    }

    /// Packs among `bad` (index into `packs`).
    fn named(&self, bad: &HashMap<u32, String>) -> Vec<ChunkId> {
        bad.keys().map(|p| self.packs[*p as usize]).collect()
    }
}

/// What [`before_commit`] learnt, for [`after_commit`].
pub(crate) struct CommitGuard {
    /// `None` while no prune plan exists anywhere (the common case: nothing gathered).
    copies: Option<Copies>,
    /// The earliest commit deadline of a plan condemning a pack this snapshot borrows:
    /// the manifest must be in the bucket before it (unix seconds).
    must_land_by: Option<u64>,
    /// Condemned packs already listed in an index again for this commit.
    reindexed: HashSet<ChunkId>,
}

impl CommitGuard {
    pub(crate) fn must_land_by(&self) -> Option<u64> {
        self.must_land_by
    }
}

/// Refuses a commit that would reference data a prune is deleting or has deleted.
/// Runs before the manifest is written.
pub(crate) async fn before_commit(
    repo: &Repository,
    manifest: &Manifest,
) -> StoreResult<CommitGuard> {
    // The common case, no prune ever ran: one LIST and done.
    let listed = list_gc_keys(repo).await?;
    if listed.is_empty() && !repo.with_catalog(any_plans).await? {
        return Ok(CommitGuard {
            copies: None,
            must_land_by: None,
            reindexed: HashSet::new(),
        });
    }
    let copies = gather(repo, manifest).await?;
    let checked = check(repo, copies, listed, unix_now(), &HashSet::new()).await?;
    Ok(CommitGuard {
        copies: Some(checked.copies),
        must_land_by: checked.must_land_by,
        reindexed: checked.reindexed,
    })
}

/// Confirms, once the manifest is in the bucket, that no sweep can have missed it: a
/// sweep acts on a plan only after the plan's commit deadline and lists manifests
/// after that, so a manifest written before the deadline is always seen. A manifest
/// that landed later (a slow upload) is not safe and the caller withdraws it.
pub(crate) async fn after_commit(
    repo: &Repository,
    manifest: &Manifest,
    guard: CommitGuard,
    written_at: u64,
) -> StoreResult<()> {
    let listed = list_gc_keys(repo).await?;
    let copies = match guard.copies {
        Some(copies) => copies,
        None if listed.is_empty() => return Ok(()),
        // A plan appeared during the upload; the catalog has not synced it yet, so it
        // still knows where the backup found its data.
        None => gather(repo, manifest).await?,
    };
    check(repo, copies, listed, written_at, &guard.reindexed)
        .await
        .map(drop)
}

async fn gather(repo: &Repository, manifest: &Manifest) -> StoreResult<Copies> {
    let mut seen = HashSet::new();
    let ids: Vec<ChunkId> = manifest
        .extents
        .iter()
        .filter_map(|e| match e {
            Extent::Chunk { id, .. } if seen.insert(*id) => Some(*id),
            _ => None,
        })
        .collect();
    repo.with_catalog(move |c| Copies::gather(c, &ids)).await
}

struct Checked {
    copies: Copies,
    must_land_by: Option<u64>,
    reindexed: HashSet<ChunkId>,
}

/// Syncs the listed plans and refuses if some chunk is safe in no pack at `now`.
/// Otherwise lists the condemned packs the commit borrows in an index again (except
/// those in `done`) and says by when the manifest must be in the bucket.
async fn check(
    repo: &Repository,
    copies: Copies,
    listed: Vec<GcKey>,
    now: u64,
    done: &HashSet<ChunkId>,
) -> StoreResult<Checked> {
    sync_listed_plans(repo, listed).await?;
    let (copies, borrowed, must_land_by) = repo
        .with_catalog(move |c| {
            let states = pack_states(c, &copies.packs, now)?;
            if let Err(refused) = copies.refuse_unsafe(&states.unsafe_packs) {
                // Forgotten, so the rerun uploads the data afresh instead of being
                // refused again (an index object may still list these packs).
                c.forget_packs(&copies.named(&states.unsafe_packs))?;
                return Err(refused);
            }
            let (borrowed, must_land_by) = copies.borrowed(&states);
            Ok((copies, borrowed, must_land_by))
        })
        .await?;
    let reindexed: HashSet<ChunkId> = borrowed.into_iter().collect();
    reindex(repo, reindexed.difference(done).copied().collect()).await?;
    Ok(Checked {
        copies,
        must_land_by,
        reindexed,
    })
}

fn known(c: &Catalog) -> StoreResult<(HashSet<String>, HashSet<String>)> {
    c.with(|c| {
        let mut plans = HashSet::new();
        let mut done = HashSet::new();
        let mut stmt = c.prepare("SELECT key, done FROM gc_plans")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (key, is_done) = row?;
            if is_done != 0 {
                done.insert(key.clone());
            }
            plans.insert(key);
        }
        Ok((plans, done))
    })
}

/// Records a plan and forgets its condemned packs (pending entries included).
pub(crate) fn record_plan(c: &Catalog, key: &str, plan: &Plan) -> StoreResult<()> {
    c.with(|c| {
        let tx = c.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO gc_plans (key, sweep_after, done) VALUES (?1, ?2, 0)",
            params![key, plan.meta.commit_deadline() as i64],
        )?;
        for p in &plan.condemned {
            tx.execute(
                "INSERT OR IGNORE INTO gc_condemned (pack, plan, deleted) VALUES (?1, ?2, 0)",
                params![&p.pack.0[..], key],
            )?;
            tx.execute("DELETE FROM chunks WHERE pack = ?1", [&p.pack.0[..]])?;
        }
        tx.commit()
    })
}

pub(crate) fn record_done(c: &Catalog, key: &str, deleted: &[ChunkId]) -> StoreResult<()> {
    c.with(|c| {
        let tx = c.transaction()?;
        tx.execute("UPDATE gc_plans SET done = 1 WHERE key = ?1", [key])?;
        for pack in deleted {
            tx.execute(
                "UPDATE gc_condemned SET deleted = 1 WHERE pack = ?1 AND plan = ?2",
                params![&pack.0[..], key],
            )?;
            // Another host may have indexed it meanwhile; it is gone all the same.
            tx.execute("DELETE FROM chunks WHERE pack = ?1", [&pack.0[..]])?;
        }
        tx.commit()
    })
}

fn drop_plans(c: &Catalog, keys: &[String]) -> StoreResult<()> {
    c.with(|c| {
        let tx = c.transaction()?;
        for key in keys {
            tx.execute("DELETE FROM gc_plans WHERE key = ?1", [key])?;
            tx.execute("DELETE FROM gc_condemned WHERE plan = ?1", [key])?;
        }
        tx.commit()
    })
}

/// Lists condemned packs this commit relies on in a new index object, so the snapshot
/// restores from any host at once instead of only after the sweep resurrects them;
/// the sweep then keeps them because an index lists them again. Their entries come
/// from the pack headers (the catalog forgot them when it recorded the plan).
async fn reindex(repo: &Repository, packs: Vec<ChunkId>) -> StoreResult<()> {
    if packs.is_empty() {
        return Ok(());
    }
    let mut listed = Vec::with_capacity(packs.len());
    for pack in packs {
        let key = format::pack_key(&pack);
        let vanished = || StoreError::GcConflict {
            detail: format!("{key}, which this backup reused, was garbage-collected"),
        };
        let size = repo.backend().size(&key).await?.ok_or_else(vanished)?;
        match repo.read_pack_header(&pack, size).await? {
            HeaderRead::Ok(entries) => listed.push(IndexedPack { pack, entries }),
            HeaderRead::Vanished => return Err(vanished()),
            HeaderRead::Damaged(why) => return Err(StoreError::corrupt(&key, why)),
        }
    }
    tracing::debug!(
        packs = listed.len(),
        "indexing condemned packs this snapshot reuses"
    );
    repo.write_index_object(listed).await.map(drop)
}

/// What the plans say about the packs a commit uses, at `now`.
struct PackStates {
    /// Index into `packs` → the plan condemning it: a commit must not rely on these.
    unsafe_packs: HashMap<u32, String>,
    /// Condemned by a plan whose commit deadline is still ahead (index → the earliest
    /// such deadline): usable, and listed in an index again (see [`reindex`]).
    pending: HashMap<u32, u64>,
}

fn pack_states(c: &Catalog, packs: &[ChunkId], now: u64) -> StoreResult<PackStates> {
    c.with(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT g.plan, g.deleted, p.done, p.sweep_after FROM gc_condemned g
             JOIN gc_plans p ON p.key = g.plan WHERE g.pack = ?1",
        )?;
        let mut states = PackStates {
            unsafe_packs: HashMap::new(),
            pending: HashMap::new(),
        };
        for (i, pack) in packs.iter().enumerate() {
            let rows = stmt.query_map([&pack.0[..]], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)? != 0,
                    r.get::<_, i64>(2)? != 0,
                    r.get::<_, i64>(3)?.max(0) as u64,
                ))
            })?;
            for row in rows {
                let (plan, deleted, done, deadline) = row?;
                if done {
                    // Swept: kept packs are indexed again, deleted ones are gone.
                    if deleted {
                        states.unsafe_packs.insert(i as u32, plan);
                    }
                } else if now < deadline {
                    let earliest = states.pending.entry(i as u32).or_insert(deadline);
                    *earliest = (*earliest).min(deadline);
                } else {
                    states.unsafe_packs.insert(i as u32, plan);
                }
            }
        }
        Ok(states)
    })
}

/// Whether this catalog knows of any plan at all (then commits need checking).
fn any_plans(c: &Catalog) -> StoreResult<bool> {
    c.with(|c| c.query_row("SELECT EXISTS (SELECT 1 FROM gc_plans)", [], |r| r.get(0)))
}
