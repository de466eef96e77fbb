//! The parallel backup pipeline (see the crate docs for its shape).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lifeboat_store::format::blob::ChunkSealer;
use lifeboat_store::format::manifest::{Extent, Manifest, SnapshotMeta};
use lifeboat_store::repo::{hostname, now_rfc3339};
use lifeboat_store::{ChunkId, PackStats, PackWriter, Repository};
use tokio::sync::mpsc;

use crate::error::BackupError;
use crate::piece::Piece;
use crate::reader::{ReadState, Work, read_full, read_incremental};
use crate::request::{BackupReport, BackupRequest, ReadMode};
use lifeboat_store::Progress;

/// One batch of work after the worker stage.
struct Processed {
    seq: u64,
    extents: Vec<Extent>,
    /// Sealed blobs and plaintext lengths, for chunks the repository does not have yet.
    new_blobs: Vec<(ChunkId, Vec<u8>, u32)>,
}

#[derive(Default)]
struct Counters {
    chunks: u64,
    new_chunks: u64,
    new_bytes: u64,
    zero_bytes: u64,
}

impl Counters {
    fn count(&mut self, extents: &[Extent]) {
        for e in extents {
            match e {
                Extent::Zero { len } => self.zero_bytes += len,
                Extent::Chunk { .. } => self.chunks += 1,
            }
        }
    }
}

pub async fn run_backup(
    repo: Arc<Repository>,
    req: BackupRequest,
    progress: Arc<Progress>,
) -> Result<BackupReport, BackupError> {
    if req.vm.trim().is_empty() || req.disk.trim().is_empty() {
        return Err(BackupError::Invalid(
            "the VM name and the disk name must not be empty".into(),
        ));
    }
    let started = Instant::now();
    let time = now_rfc3339();
    let disk_size = req.source.size();
    progress.set_total(disk_size);
    let state = Arc::new(ReadState {
        stop: AtomicBool::new(false),
        bytes_read: AtomicU64::new(0),
        progress,
    });
    let (extents, counters, stats) = read_and_store(&repo, &req, &state).await?;
    tracing::debug!(
        elapsed = ?started.elapsed(),
        extents = extents.len(),
        packs = stats.packs,
        "read, sealed and uploaded; committing"
    );
    let manifest = Manifest {
        meta: snapshot_meta(&req, disk_size, time),
        extents,
    };
    let snapshot = repo.commit_snapshot(&manifest).await?;
    Ok(BackupReport {
        snapshot,
        disk_size,
        mode: req.mode.name().to_string(),
        mode_reason: req.mode.reason().to_string(),
        bytes_dirty: req.mode.dirty_bytes(),
        bytes_read: state.bytes_read.load(Ordering::Relaxed),
        zero_bytes: counters.zero_bytes,
        chunks: counters.chunks,
        new_chunks: counters.new_chunks,
        new_bytes: counters.new_bytes,
        stored_bytes: stats.stored_bytes,
        packs: stats.packs,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

fn snapshot_meta(req: &BackupRequest, size: u64, time: String) -> SnapshotMeta {
    SnapshotMeta {
        vm: req.vm.clone(),
        disk: req.disk.clone(),
        source: req.source.describe(),
        size,
        time,
        host: hostname(),
        tags: req.tags.clone(),
        parent: req.mode.parent().map(str::to_string),
        cbt_bitmap: req.cbt_bitmap.clone(),
        lifeboat_version: env!("CARGO_PKG_VERSION").to_string(),
        replicated_from: None,
        vm_definition: req.definition.clone(),
    }
}

/// Runs the reader, the workers and the collector until the whole disk is stored and
/// indexed; returns the extents in disk order.
async fn read_and_store(
    repo: &Arc<Repository>,
    req: &BackupRequest,
    state: &Arc<ReadState>,
) -> Result<Collected, BackupError> {
    let workers = req.workers.max(1);
    let (work_tx, work_rx) = crossbeam_channel::bounded::<(u64, Vec<Work>)>(workers * 2);
    let (result_tx, mut result_rx) = mpsc::channel::<Result<Processed, BackupError>>(workers * 2);
    let reader = {
        let (source, config, state) = (req.source.clone(), repo.config().clone(), state.clone());
        let mode = req.mode.clone();
        tokio::spawn(async move {
            match mode {
                ReadMode::Full { .. } => read_full(source, &config, work_tx, state).await,
                ReadMode::Incremental {
                    previous, dirty, ..
                } => read_incremental(source, &config, previous, dirty, work_tx, state).await,
            }
        })
    };
    let seen = Arc::new(Mutex::new(HashSet::new()));
    for _ in 0..workers {
        let (rx, tx, repo, seen) = (
            work_rx.clone(),
            result_tx.clone(),
            repo.clone(),
            seen.clone(),
        );
        std::thread::spawn(move || process_chunks(&repo, rx, tx, &seen));
    }
    drop((work_rx, result_tx));

    let collected = collect(repo, req, &mut result_rx).await;
    if collected.is_err() {
        state.stop.store(true, Ordering::Relaxed);
    }
    drop(result_rx);
    let read_result = reader.await.expect("reader task panicked");
    let collected = collected?;
    read_result?;
    Ok(collected)
}

/// Worker stage: id, dedup decision, compression and encryption of new chunks.
fn process_chunks(
    repo: &Repository,
    rx: crossbeam_channel::Receiver<(u64, Vec<Work>)>,
    tx: mpsc::Sender<Result<Processed, BackupError>>,
    seen: &Mutex<HashSet<ChunkId>>,
) {
    let lookup = match repo.catalog().lookup() {
        Ok(l) => l,
        Err(e) => {
            let _ = tx.blocking_send(Err(e.into()));
            return;
        }
    };
    let keys = repo.keys();
    let mut sealer = ChunkSealer::new(repo.config().compression_level);
    for (seq, batch) in rx {
        let mut processed = Processed {
            seq,
            extents: Vec::with_capacity(batch.len()),
            new_blobs: Vec::new(),
        };
        let mut failed = None;
        for work in batch {
            let extent = match work {
                Work::Reuse(extent) => extent,
                Work::Piece(Piece::Zero { len, .. }) => Extent::Zero { len },
                Work::Piece(Piece::Chunk { data, .. }) => {
                    let id = keys.chunk_id(&data);
                    let len = data.len() as u32;
                    let stored = match lookup.contains(&id) {
                        Ok(stored) => stored,
                        Err(source) => {
                            failed =
                                Some(BackupError::Store(lifeboat_store::StoreError::Catalog {
                                    path: repo.catalog().path().display().to_string(),
                                    source,
                                }));
                            break;
                        }
                    };
                    // Only the first worker to claim an id stores it.
                    if !stored && seen.lock().expect("dedup set poisoned").insert(id) {
                        processed
                            .new_blobs
                            .push((id, sealer.seal(keys, &id, &data), len));
                    }
                    Extent::Chunk { id, len }
                }
            };
            processed.extents.push(extent);
        }
        let result = failed.map_or(Ok(processed), Err);
        if tx.blocking_send(result).is_err() {
            return;
        }
    }
}

type Collected = (Vec<Extent>, Counters, PackStats);

/// Collector stage: puts extents back in disk order and hands new blobs to the
/// repository's pack writer.
async fn collect(
    repo: &Arc<Repository>,
    req: &BackupRequest,
    rx: &mut mpsc::Receiver<Result<Processed, BackupError>>,
) -> Result<Collected, BackupError> {
    let mut writer = PackWriter::new(repo.clone(), req.upload_concurrency);
    let (mut extents, mut counters) = (Vec::new(), Counters::default());
    let mut out_of_order: BTreeMap<u64, Vec<Extent>> = BTreeMap::new();
    let mut next_seq = 0u64;
    while let Some(processed) = rx.recv().await {
        let p = processed?;
        for (id, blob, raw_len) in p.new_blobs {
            counters.new_chunks += 1;
            counters.new_bytes += u64::from(raw_len);
            writer.add(id, &blob, raw_len).await?;
        }
        out_of_order.insert(p.seq, p.extents);
        while let Some(batch) = out_of_order.remove(&next_seq) {
            counters.count(&batch);
            extents.extend(batch);
            next_seq += 1;
        }
    }
    let stats = writer.finish().await?;
    if !out_of_order.is_empty() {
        return Err(BackupError::Invalid(format!(
            "internal error: {} batches of work arrived out of sequence",
            out_of_order.len()
        )));
    }
    Ok((extents, counters, stats))
}
