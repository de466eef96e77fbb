//! The backup side of garbage collection: what every client does so that a concurrent
//! prune on another host never deletes data a new snapshot uses.
//!
//! Two rules, both driven by the prune plans in `gc/`:
//! 1. On catalog sync, a newly seen plan makes the catalog forget the packs it
//!    condemns, so later backups upload fresh copies instead of reusing them.
//! 2. Just before a manifest is written, every pack the snapshot uses is checked
//!    against all plans. Reusing a condemned pack is fine while the plan's commit
//!    deadline has not passed (the sweep, which comes later, will see the manifest and
//!    keep the pack); after that, or once the pack is really deleted, the commit is
//!    refused and the backup must run again. A refused commit loses nothing: the
//!    previous snapshots are untouched and the new data stays reusable.

use std::collections::HashSet;

use rusqlite::params;

use crate::catalog::Catalog;
use crate::crypto::ChunkId;
use crate::error::{StoreError, StoreResult};
use crate::format::gc::{Done, GC_PREFIX, GcKey, Plan, classify_gc_key};
use crate::format::manifest::{Extent, Manifest};
use crate::repo::Repository;

use super::unix_now;

/// Reads plans and completion records the catalog has not seen yet.
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

/// Refuses a commit that would reference data a prune is deleting or has deleted.
pub(crate) async fn check_commit(repo: &Repository, manifest: &Manifest) -> StoreResult<()> {
    // The common case, no prune ever ran: one LIST and done.
    let listed = list_gc_keys(repo).await?;
    if listed.is_empty() && !repo.with_catalog(any_plans).await? {
        return Ok(());
    }
    let ids: Vec<ChunkId> = {
        let mut seen = HashSet::new();
        manifest
            .extents
            .iter()
            .filter_map(|e| match e {
                Extent::Chunk { id, .. } if seen.insert(*id) => Some(*id),
                _ => None,
            })
            .collect()
    };
    // Located before the plans are synced: syncing makes the catalog forget
    // condemned packs, and this check needs to know where the backup found its data.
    let (packs, missing) = repo
        .with_catalog(move |c| {
            let mut packs = HashSet::new();
            let mut missing = 0usize;
            for id in &ids {
                match c.locate(id)? {
                    Some(loc) => {
                        packs.insert(loc.pack);
                    }
                    None => missing += 1,
                }
            }
            Ok((packs, missing))
        })
        .await?;
    if missing > 0 {
        return Err(StoreError::GcConflict {
            detail: format!(
                "{missing} chunk(s) this backup reused are no longer in the catalog (a prune \
                 on this host condemned them while the backup ran)"
            ),
        });
    }
    // The listing above is recent enough: a plan written after it has a deadline at
    // least a grace period away, so this commit is safe against it anyway.
    sync_listed_plans(repo, listed).await?;
    let now = unix_now();
    let conflicts = repo
        .with_catalog(move |c| conflicts(c, &packs, now))
        .await?;
    if let Some(first) = conflicts.first() {
        return Err(StoreError::GcConflict {
            detail: format!(
                "{} pack(s) this backup reused are being garbage-collected (e.g. {} by {})",
                conflicts.len(),
                first.0.short(),
                first.1
            ),
        });
    }
    Ok(())
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

/// Packs among `packs` a commit must not rely on, with the plan condemning each.
fn conflicts(
    c: &Catalog,
    packs: &HashSet<ChunkId>,
    now: u64,
) -> StoreResult<Vec<(ChunkId, String)>> {
    c.with(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT g.plan, g.deleted, p.done, p.sweep_after FROM gc_condemned g
             JOIN gc_plans p ON p.key = g.plan WHERE g.pack = ?1",
        )?;
        let mut out = Vec::new();
        for pack in packs {
            let rows = stmt.query_map([&pack.0[..]], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)? != 0,
                    r.get::<_, i64>(2)? != 0,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            for row in rows {
                let (plan, deleted, done, deadline) = row?;
                let safe = if done {
                    !deleted
                } else {
                    (now as i64) < deadline
                };
                if !safe {
                    out.push((*pack, plan));
                }
            }
        }
        Ok(out)
    })
}

/// Whether this catalog knows of any plan at all (then commits need checking).
fn any_plans(c: &Catalog) -> StoreResult<bool> {
    c.with(|c| c.query_row("SELECT EXISTS (SELECT 1 FROM gc_plans)", [], |r| r.get(0)))
}
