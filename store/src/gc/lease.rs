//! The GC lease: at most one prune per repository at a time, with no lock that can go
//! stale.
//!
//! Leases are generations: `locks/gc-<n>`. To take the lease, a prune reads the
//! highest generation; if that one is released or expired, it writes generation n+1
//! with `If-None-Match: *`. Two contenders can both see n expired, but only one PUT of
//! n+1 succeeds — S3's conditional write is the whole arbiter, no delete races. The
//! holder renews by rewriting its own generation with a later expiry, and before each
//! destructive step checks that no later generation exists (it would, had it stalled
//! past its expiry and been replaced). A holder that dies simply stops renewing; after
//! `ttl` the next prune takes over. Expiry uses wall clocks: hosts need NTP.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::backend::BackendError;
use crate::error::{StoreError, StoreResult};
use crate::format::gc::{LeaseRecord, lease_generation, lease_key};
use crate::repo::{Repository, hostname};

use super::clock::unix_now;

#[derive(Debug)]
pub struct Lease {
    generation: u64,
    ttl: Duration,
    /// When this holder last wrote its lease (local monotonic clock).
    renewed: Instant,
}

impl Lease {
    /// Takes the lease or says who holds it.
    pub async fn acquire(repo: &Repository, ttl: Duration) -> StoreResult<Self> {
        let generations = list_generations(repo).await?;
        let latest = generations.iter().max().copied();
        if let Some(n) = latest {
            match read(repo, n).await {
                Ok(rec) if !rec.released && rec.expires > unix_now() => {
                    return Err(StoreError::Busy(format!(
                        "another prune (host {}, pid {}) holds the repository's GC lease for \
                         {} more second(s); run prune again later (a dead holder's lease \
                         expires by itself)",
                        rec.host,
                        rec.pid,
                        rec.expires - unix_now()
                    )));
                }
                Ok(_) => {}
                // A lease nobody can read cannot be honoured; generation n+1 replaces it.
                Err(e) => {
                    tracing::warn!("GC lease generation {n} is unreadable ({e}); replacing it")
                }
            }
        }
        let generation = latest.map_or(1, |n| n + 1);
        let key = lease_key(generation);
        let sealed = repo.keys().seal(key.as_bytes(), &record_bytes(ttl, false));
        match repo
            .backend()
            .put_if_absent(&key, Bytes::from(sealed))
            .await
        {
            Ok(()) => {}
            Err(BackendError::AlreadyExists { .. }) => {
                return Err(StoreError::Busy(
                    "another prune took the repository's GC lease at the same moment; run \
                     prune again later"
                        .into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        // Older generations are history now; failing to tidy them costs nothing.
        for old in generations.into_iter().filter(|g| *g < generation) {
            if let Err(e) = repo.backend().delete(&lease_key(old)).await {
                tracing::debug!("could not delete old GC lease generation {old}: {e}");
            }
        }
        Ok(Self {
            generation,
            ttl,
            renewed: Instant::now(),
        })
    }

    /// Renews the lease if a third of its lifetime has passed; fails if it was lost.
    /// Call before every destructive step.
    pub async fn keep(&mut self, repo: &Repository) -> StoreResult<()> {
        if self.renewed.elapsed() < self.ttl / 3 {
            return Ok(());
        }
        if self.renewed.elapsed() >= self.ttl {
            return Err(lost(
                "this prune stalled longer than the lease lifetime".into(),
            ));
        }
        let generations = list_generations(repo).await?;
        if generations.iter().any(|g| *g > self.generation) {
            return Err(lost("another prune took over the lease".into()));
        }
        self.write(repo, false).await?;
        self.renewed = Instant::now();
        Ok(())
    }

    /// Frees the lease at once for the next prune.
    pub async fn release(self, repo: &Repository) -> StoreResult<()> {
        self.write(repo, true).await
    }

    async fn write(&self, repo: &Repository, released: bool) -> StoreResult<()> {
        let key = lease_key(self.generation);
        let sealed = repo
            .keys()
            .seal(key.as_bytes(), &record_bytes(self.ttl, released));
        Ok(repo.backend().put(&key, Bytes::from(sealed)).await?)
    }
}

fn lost(why: String) -> StoreError {
    StoreError::Busy(format!(
        "prune stopped: it lost the repository's GC lease ({why}); nothing is half-done — \
         run prune again"
    ))
}

fn record_bytes(ttl: Duration, released: bool) -> Vec<u8> {
    let record = LeaseRecord {
        host: hostname(),
        pid: std::process::id(),
        expires: unix_now() + ttl.as_secs(),
        released,
    };
    serde_json::to_vec(&record).expect("lease record serialises")
}

async fn list_generations(repo: &Repository) -> StoreResult<Vec<u64>> {
    Ok(repo
        .backend()
        .list("locks/")
        .await?
        .iter()
        .filter_map(|o| lease_generation(&o.key))
        .collect())
}

async fn read(repo: &Repository, generation: u64) -> StoreResult<LeaseRecord> {
    let key = lease_key(generation);
    let plain = repo.get_sealed(&key).await?;
    serde_json::from_slice(&plain).map_err(|e| StoreError::corrupt(&key, e))
}
