//! The shared write path: sealed chunk blobs in, packs uploaded and indexed out.
//!
//! ```text
//! add(id, sealed blob) ─► open pack ─► full at pack_size ─► upload task (≤ `uploads`
//!                                                           at once): PUT, then catalog
//!                                                           "pending"; index flush every
//! finish() ─► last pack, wait for every upload, index flush  INDEX_INTERVAL
//! ```
//! After [`PackWriter::finish`] every chunk added is in an index object, so a manifest
//! naming them may be committed: packs, then index, then manifest is the write order
//! that makes crashes harmless (see [`crate::repo`]). Backup and replication both write
//! through here; blobs are sealed by the caller with this repository's keys
//! ([`crate::format::blob`]), in parallel on its own threads.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::crypto::ChunkId;
use crate::error::StoreResult;
use crate::format::pack::PackBuilder;
use crate::repo::Repository;

/// Write an index object at least this often during a long run, so one killed after
/// hours of uploading has its packs found by other hosts too (this host's catalog has
/// them anyway). By time, not pack count: a short run then writes a single index
/// object, keeping requests per GiB low.
const INDEX_INTERVAL: Duration = Duration::from_secs(300);
/// Room in a pack buffer beyond the largest chunk, for its seal and the header.
const PACK_SLACK: usize = 64 * 1024;

/// What a [`PackWriter`] stored.
#[derive(Debug, Clone, Copy, Default)]
pub struct PackStats {
    pub packs: u64,
    /// Bytes uploaded (compressed, encrypted, packed).
    pub stored_bytes: u64,
}

/// Fills packs with sealed blobs and uploads them, a bounded number at once.
pub struct PackWriter {
    repo: Arc<Repository>,
    pack: PackBuilder,
    pack_size: usize,
    pack_capacity: usize,
    uploads: JoinSet<StoreResult<u64>>,
    upload_slots: Arc<Semaphore>,
    last_index: Arc<Mutex<Instant>>,
    stats: PackStats,
}

impl PackWriter {
    /// A writer with at most `uploads` pack uploads in flight.
    pub fn new(repo: Arc<Repository>, uploads: usize) -> Self {
        let pack_size = repo.config().pack_size as usize;
        // Room for the blob that crosses the size target, so a pack never reallocates.
        let pack_capacity = pack_size + repo.config().chunker.max as usize + PACK_SLACK;
        Self {
            repo,
            pack: PackBuilder::with_capacity(pack_capacity),
            pack_size,
            pack_capacity,
            uploads: JoinSet::new(),
            upload_slots: Arc::new(Semaphore::new(uploads.max(1))),
            last_index: Arc::new(Mutex::new(Instant::now())),
            stats: PackStats::default(),
        }
    }

    /// Adds one blob sealed with this repository's keys. When the pack is full its
    /// upload starts, after waiting for a free upload slot. Reports the first failed
    /// upload so far.
    pub async fn add(&mut self, id: ChunkId, sealed: &[u8], raw_len: u32) -> StoreResult<()> {
        self.pack.add(id, sealed, raw_len);
        if self.pack.len() >= self.pack_size {
            let full = std::mem::replace(
                &mut self.pack,
                PackBuilder::with_capacity(self.pack_capacity),
            );
            self.upload(full).await;
        }
        while let Some(done) = self.uploads.try_join_next() {
            self.stats.stored_bytes += done.expect("pack upload task panicked")?;
        }
        Ok(())
    }

    /// Uploads the last pack, waits for every upload and writes the index object that
    /// lists them: everything added is then indexed and may be named by a manifest.
    pub async fn finish(mut self) -> StoreResult<PackStats> {
        if !self.pack.is_empty() {
            let last = std::mem::take(&mut self.pack);
            self.upload(last).await;
        }
        while let Some(done) = self.uploads.join_next().await {
            self.stats.stored_bytes += done.expect("pack upload task panicked")?;
        }
        self.repo.flush_index().await?;
        Ok(self.stats)
    }

    async fn upload(&mut self, pack: PackBuilder) {
        let slot = self
            .upload_slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let finished = pack.finish(self.repo.keys());
        let size = finished.bytes.len() as u64;
        let (repo, last_index) = (self.repo.clone(), self.last_index.clone());
        self.uploads.spawn(async move {
            let _slot: OwnedSemaphorePermit = slot;
            repo.upload_pack(finished).await?;
            if index_due(&last_index) {
                repo.flush_index().await?;
            }
            Ok(size)
        });
        self.stats.packs += 1;
    }
}

/// Whether the periodic index flush is due; if so, the timer restarts.
fn index_due(last_index: &Mutex<Instant>) -> bool {
    let mut last = last_index.lock().expect("index timer poisoned");
    let due = last.elapsed() >= INDEX_INTERVAL;
    if due {
        *last = Instant::now();
    }
    due
}
