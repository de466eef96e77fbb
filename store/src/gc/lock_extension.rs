//! Keeps S3 Object Lock on data still in use: packs some snapshot references and the
//! manifests of snapshots that still exist get their retain-until date moved to
//! `now + period` once less than half the period is left.
//!
//! The catalog remembers the dates this host set (`object_locks`), so a lock is
//! extended about once per half period, not on every prune. Without a record the
//! write time plus the period is the estimate — exactly what the lock was at upload.

use std::time::{Duration, SystemTime};

use rusqlite::{OptionalExtension, params};

use crate::backend::ObjectLock;
use crate::catalog::Catalog;
use crate::error::StoreResult;
use crate::format::{self, SNAPSHOTS_PREFIX};
use crate::repo::Repository;

use super::clock::{unix_now, unix_secs};
use super::lease::Lease;
use super::working_set::WorkSet;

pub(super) async fn extend_locks(
    repo: &Repository,
    work: &WorkSet,
    lease: &mut Lease,
) -> StoreResult<u64> {
    let Some(immutability) = repo.config().immutability else {
        return Ok(0);
    };
    let period = immutability.period_secs;
    let mut objects: Vec<(String, Option<u64>)> = work
        .run(|w| w.live_packs())
        .await?
        .into_iter()
        .map(|(pack, mtime)| (format::pack_key(&pack), mtime))
        .collect();
    objects.extend(
        repo.backend()
            .list(SNAPSHOTS_PREFIX)
            .await?
            .into_iter()
            .map(|o| (o.key, o.modified.map(unix_secs))),
    );
    let now = unix_now();
    let mut extended = 0;
    for (key, mtime) in objects {
        let lookup = key.clone();
        let recorded = repo
            .with_catalog(move |c| recorded_until(c, &lookup))
            .await?;
        let estimate = recorded.unwrap_or(0).max(mtime.unwrap_or(0) + period);
        if estimate > now + period / 2 {
            continue;
        }
        lease.keep(repo).await?;
        let until = now + period;
        let lock = ObjectLock {
            mode: immutability.mode,
            retain_until: SystemTime::UNIX_EPOCH + Duration::from_secs(until),
        };
        match repo.backend().extend_retention(&key, lock).await {
            Ok(()) => {
                extended += 1;
                repo.with_catalog(move |c| record_until(c, &key, until))
                    .await?;
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(extended)
}

fn recorded_until(c: &Catalog, key: &str) -> StoreResult<Option<u64>> {
    c.with(|c| {
        c.prepare_cached("SELECT until FROM object_locks WHERE key = ?1")?
            .query_row([key], |r| r.get::<_, i64>(0))
            .optional()
            .map(|u| u.map(|u| u as u64))
    })
}

fn record_until(c: &Catalog, key: &str, until: u64) -> StoreResult<()> {
    c.with(|c| {
        c.execute(
            "INSERT OR REPLACE INTO object_locks (key, until) VALUES (?1, ?2)",
            params![key, until as i64],
        )
        .map(|_| ())
    })
}
