//! The shared read path: planned pack ranges in, verified chunks out.
//!
//! ```text
//! ReadPlan ranges ─► ranged GETs (`fetches` in flight) ─► consumer on a blocking thread
//!                                                          (≤ one per core), which opens
//!                                                          each chunk it needs, verified
//! ```
//! Restore writes the chunks to a disk; replication re-seals them into another
//! repository. Every chunk a consumer gets through [`FetchedRange::open`] has passed
//! its AEAD tag and its keyed-id check, so nothing unverified is ever used.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::Semaphore;

use crate::backend::BackendError;
use crate::format::{self, blob::open_chunk};
use crate::read_plan::{FetchRange, Need};
use crate::repo::Repository;

/// Data that is missing or fails verification, and the first offset it was wanted at.
#[derive(Debug, Clone)]
pub struct Damage {
    pub offset: u64,
    pub detail: String,
}

/// Why one range could not be read and used.
#[derive(Debug)]
pub enum ReadFailure<E> {
    /// Storage failed (network, throttling): the data may be fine; retrying may help.
    Storage(BackendError),
    /// The data is missing or fails verification.
    Damaged(Damage),
    /// The consumer's own work on the range failed (e.g. writing the restore target).
    Consumer(E),
}

impl<E> From<Damage> for ReadFailure<E> {
    fn from(d: Damage) -> Self {
        ReadFailure::Damaged(d)
    }
}

/// One fetched range of a pack, with the repository whose keys open its chunks.
pub struct FetchedRange {
    pub range: FetchRange,
    key: String,
    bytes: Bytes,
    repo: Arc<Repository>,
}

impl FetchedRange {
    /// The pack's object key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Bytes fetched for this range.
    pub fn fetched_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The sealed blob of one of this range's chunks, as stored.
    pub fn blob(&self, need: &Need) -> Result<&[u8], Damage> {
        let at = (need.blob_offset - self.range.start) as usize;
        self.bytes
            .get(at..at + need.blob_len as usize)
            .ok_or_else(|| Damage {
                offset: need.first_offset(),
                detail: format!("{} is truncated (chunk {:?} missing)", self.key, need.id),
            })
    }

    /// One of this range's chunks, decrypted, decompressed and checked against its id.
    pub fn open(&self, need: &Need) -> Result<Vec<u8>, Damage> {
        open_chunk(self.repo.keys(), &need.id, self.blob(need)?).map_err(|e| Damage {
            offset: need.first_offset(),
            detail: format!("chunk {:?} in {}: {e}", need.id, self.key),
        })
    }
}

/// Reads planned ranges out of one repository.
pub struct ChunkReader {
    repo: Arc<Repository>,
    fetches: usize,
    /// Consumers running at once. Fetches overlap freely; decoding is CPU work, so
    /// more at once than there are cores only holds more plaintext in memory.
    consumers: Arc<Semaphore>,
}

impl ChunkReader {
    /// A reader with `fetches` ranged GETs in flight.
    pub fn new(repo: Arc<Repository>, fetches: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            repo,
            fetches: fetches.max(1),
            consumers: Arc::new(Semaphore::new(cores)),
        }
    }

    /// Fetches every range and hands each to `consume` on a blocking thread; results
    /// arrive in completion order. Dropping the stream stops further fetches.
    pub fn read<T, E, F>(
        &self,
        ranges: Vec<FetchRange>,
        consume: F,
    ) -> impl Stream<Item = Result<T, ReadFailure<E>>> + Send + 'static
    where
        T: Send + 'static,
        E: Send + 'static,
        F: Fn(FetchedRange) -> Result<T, ReadFailure<E>> + Send + Sync + 'static,
    {
        let consume = Arc::new(consume);
        let (repo, consumers) = (self.repo.clone(), self.consumers.clone());
        futures::stream::iter(ranges)
            .map(move |range| {
                let (repo, consumers, consume) = (repo.clone(), consumers.clone(), consume.clone());
                async move {
                    let fetched = fetch(repo, range).await?;
                    let _slot = consumers.acquire_owned().await.expect("never closed");
                    tokio::task::spawn_blocking(move || consume(fetched))
                        .await
                        .expect("chunk consumer panicked")
                }
            })
            .buffer_unordered(self.fetches)
    }
}

/// One ranged GET; a missing pack is damage, not a storage failure.
async fn fetch<E>(
    repo: Arc<Repository>,
    range: FetchRange,
) -> Result<FetchedRange, ReadFailure<E>> {
    let key = format::pack_key(&range.pack);
    let bytes = match repo
        .backend()
        .get_range(&key, range.start, range.end - range.start)
        .await
    {
        Ok(b) => b,
        Err(e) if e.is_not_found() => {
            return Err(ReadFailure::Damaged(Damage {
                offset: range.first_offset(),
                detail: format!("{key} is missing"),
            }));
        }
        Err(e) => return Err(ReadFailure::Storage(e)),
    };
    Ok(FetchedRange {
        range,
        key,
        bytes,
        repo,
    })
}
