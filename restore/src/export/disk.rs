//! A snapshot's disk readable at any offset, straight from the repository: the
//! manifest's extents say where each byte is; zero runs cost nothing; chunks are
//! fetched on demand (coalesced ranged GETs through `store`'s `ReadPlan` and
//! `ChunkReader`, every chunk authenticated before use), kept in a bounded cache, and
//! the chunks after each read are fetched ahead in the background, so a sequential
//! reader (a boot, a `block-stream`) rarely waits on the network.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use lifeboat_store::chunk_reader::ReadFailure;
use lifeboat_store::format::manifest::Extent;
use lifeboat_store::{ChunkId, ChunkReader, ReadPlan, Repository, SnapshotSummary};

use super::cache::ChunkCache;
use crate::error::RestoreError;

/// How an export reads.
#[derive(Debug, Clone, Copy)]
pub struct ExportOptions {
    /// Plaintext chunks kept in memory.
    pub cache_bytes: u64,
    /// Bytes after each read fetched ahead in the background.
    pub read_ahead_bytes: u64,
    /// Ranged GETs in flight.
    pub fetches: usize,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            cache_bytes: 256 << 20,
            read_ahead_bytes: 16 << 20,
            fetches: 8,
        }
    }
}

/// A snapshot's disk, read on demand.
#[derive(Clone)]
pub struct SnapshotDisk {
    inner: Arc<Inner>,
}

struct Inner {
    repo: Arc<Repository>,
    reader: ChunkReader,
    size: u64,
    /// Extent start offsets, ascending, and the extents.
    starts: Vec<u64>,
    extents: Vec<Extent>,
    cache: Mutex<ChunkCache>,
    options: ExportOptions,
    snapshot: String,
}

impl SnapshotDisk {
    pub async fn open(
        repo: Arc<Repository>,
        snapshot: &SnapshotSummary,
        options: ExportOptions,
    ) -> Result<SnapshotDisk, RestoreError> {
        let manifest = repo.read_manifest(&snapshot.id).await?;
        let (starts, extents) = manifest
            .extents_with_offsets()
            .map(|(offset, e)| (offset, *e))
            .unzip();
        Ok(SnapshotDisk {
            inner: Arc::new(Inner {
                reader: ChunkReader::new(repo.clone(), options.fetches),
                repo,
                size: manifest.meta.size,
                starts,
                extents,
                cache: Mutex::new(ChunkCache::new(options.cache_bytes)),
                options,
                snapshot: snapshot.id.clone(),
            }),
        })
    }

    pub fn size(&self) -> u64 {
        self.inner.size
    }

    /// `len` bytes at `offset` (within the disk), then a background fetch of what
    /// follows.
    pub async fn read_at(&self, offset: u64, len: u32) -> std::io::Result<Bytes> {
        let end = offset
            .checked_add(u64::from(len))
            .filter(|e| *e <= self.inner.size)
            .ok_or_else(|| std::io::Error::other("read past the end of the disk"))?;
        let first = self.inner.extent_at(offset);
        let needed = self.inner.chunks_in(first, end);
        let have = self.inner.cached_or_fetch(needed).await?;
        let mut out = BytesMut::with_capacity(len as usize);
        let mut at = offset;
        let mut i = first;
        while at < end {
            let (start, extent) = (self.inner.starts[i], self.inner.extents[i]);
            let from = (at - start) as usize;
            let upto = (end.min(start + extent.len()) - start) as usize;
            match extent {
                Extent::Zero { .. } => out.resize(out.len() + (upto - from), 0),
                Extent::Chunk { id, .. } => {
                    let data = have
                        .get(&id)
                        .and_then(|d| d.get(from..upto))
                        .ok_or_else(|| {
                            std::io::Error::other(format!(
                                "snapshot {}: chunk {id:?} is shorter than its extent",
                                self.inner.snapshot
                            ))
                        })?;
                    out.extend_from_slice(data);
                }
            }
            at = start + upto as u64;
            i += 1;
        }
        self.read_ahead(i, end);
        Ok(out.freeze())
    }

    /// Whether `[offset, offset + len)` is a zero run, as the manifest says, as
    /// `(start, length, zero)` pieces.
    pub fn zero_ranges(&self, offset: u64, len: u32) -> Vec<(u64, u64, bool)> {
        let end = (offset + u64::from(len)).min(self.inner.size);
        let mut out = Vec::new();
        let mut i = self.inner.extent_at(offset);
        let mut at = offset;
        while at < end && i < self.inner.extents.len() {
            let stop = end.min(self.inner.starts[i] + self.inner.extents[i].len());
            let zero = matches!(self.inner.extents[i], Extent::Zero { .. });
            out.push((at, stop - at, zero));
            at = stop;
            i += 1;
        }
        out
    }

    fn read_ahead(&self, from_extent: usize, from: u64) {
        let limit = from + self.inner.options.read_ahead_bytes;
        let wanted: Vec<ChunkId> = self
            .inner
            .chunks_in(from_extent, limit.min(self.inner.size))
            .into_iter()
            .filter(|id| {
                !self
                    .inner
                    .cache
                    .lock()
                    .expect("cache poisoned")
                    .contains(id)
            })
            .collect();
        if wanted.is_empty() {
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.cached_or_fetch(wanted).await {
                tracing::debug!("read-ahead of snapshot {}: {e}", inner.snapshot);
            }
        });
    }
}

impl Inner {
    /// The index of the extent holding `offset`.
    fn extent_at(&self, offset: u64) -> usize {
        self.starts
            .partition_point(|s| *s <= offset)
            .saturating_sub(1)
    }

    /// The distinct chunks of the extents from `first` that start before `end`.
    fn chunks_in(&self, first: usize, end: u64) -> Vec<ChunkId> {
        let mut ids: Vec<ChunkId> = Vec::new();
        for (start, extent) in self.starts[first.min(self.starts.len())..]
            .iter()
            .zip(&self.extents[first.min(self.extents.len())..])
        {
            if *start >= end {
                break;
            }
            if let Extent::Chunk { id, .. } = extent
                && !ids.contains(id)
            {
                ids.push(*id);
            }
        }
        ids
    }

    /// The chunks `ids`, from the cache or fetched (and then cached).
    async fn cached_or_fetch(
        &self,
        ids: Vec<ChunkId>,
    ) -> std::io::Result<std::collections::HashMap<ChunkId, Bytes>> {
        let mut have = std::collections::HashMap::new();
        let mut missing = Vec::new();
        {
            let mut cache = self.cache.lock().expect("cache poisoned");
            for id in ids {
                match cache.get(&id) {
                    Some(data) => {
                        have.insert(id, data);
                    }
                    None => missing.push((0, id)),
                }
            }
        }
        if missing.is_empty() {
            return Ok(have);
        }
        let plan = ReadPlan::for_chunks(&self.repo, missing)
            .await
            .map_err(std::io::Error::other)?;
        if let Some(u) = plan.unlocated.first() {
            return Err(std::io::Error::other(format!(
                "snapshot {}: chunk {:?} is in no index (run `lifeboat verify`)",
                self.snapshot, u.id
            )));
        }
        let mut stream = self.reader.read(plan.ranges, |fetched| {
            fetched
                .range
                .needs
                .iter()
                .map(|need| Ok((need.id, Bytes::from(fetched.open(need)?))))
                .collect::<Result<Vec<_>, ReadFailure<()>>>()
        });
        while let Some(result) = stream.next().await {
            let chunks = result.map_err(|e| match e {
                ReadFailure::Storage(e) => std::io::Error::other(e),
                ReadFailure::Damaged(d) => std::io::Error::other(format!(
                    "snapshot {}: damaged data at offset {}: {}",
                    self.snapshot, d.offset, d.detail
                )),
                ReadFailure::Consumer(()) => std::io::Error::other("chunk consumer failed"),
            })?;
            let mut cache = self.cache.lock().expect("cache poisoned");
            for (id, data) in chunks {
                cache.insert(id, data.clone());
                have.insert(id, data);
            }
        }
        Ok(have)
    }
}
