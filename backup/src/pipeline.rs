//! The parallel backup pipeline (see the crate docs for its shape).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lifeboat_store::format::blob::seal_chunk;
use lifeboat_store::format::manifest::{Extent, Manifest, SnapshotMeta};
use lifeboat_store::format::pack::PackBuilder;
use lifeboat_store::repo::{hostname, now_rfc3339};
use lifeboat_store::{ChunkId, Repository};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::segmenter::{Piece, Segmenter};
use crate::source::RawSource;
use crate::{BackupError, BackupReport, BackupRequest, Progress};

/// Bytes per read from the source; large enough for sequential throughput on spinning
/// disks and network block devices, small enough to keep memory flat.
const READ_SIZE: usize = 4 * 1024 * 1024;
/// Write an index object after this many packs, so a backup killed after hours of
/// uploading has its packs found by other hosts too (this host's catalog has them anyway).
const INDEX_EVERY_PACKS: u64 = 64;

/// One chunk after the worker stage.
struct Processed {
    seq: u64,
    extent: Extent,
    /// Sealed blob and plaintext length, for chunks the repository does not have yet.
    new_blob: Option<(ChunkId, Vec<u8>, u32)>,
}

#[derive(Default)]
struct Counters {
    chunks: u64,
    new_chunks: u64,
    new_bytes: u64,
    zero_bytes: u64,
}

pub async fn run_backup(
    repo: Arc<Repository>,
    req: BackupRequest,
    progress: Arc<Progress>,
) -> Result<BackupReport, BackupError> {
    if req.vm.trim().is_empty() || req.disk.trim().is_empty() {
        return Err(BackupError::Invalid(
            "--vm and the disk name must not be empty".into(),
        ));
    }
    let started = Instant::now();
    let time = now_rfc3339();
    let source = RawSource::open(&req.image)?;
    let disk_size = source.size();
    progress.set_total(disk_size);
    let workers = req.workers.max(1);

    let (piece_tx, piece_rx) = crossbeam_channel::bounded::<(u64, Piece)>(workers * 2);
    let (result_tx, mut result_rx) = mpsc::channel::<Result<Processed, BackupError>>(workers * 2);
    let stop = Arc::new(AtomicBool::new(false));
    let bytes_read = Arc::new(AtomicU64::new(0));

    let reader = {
        let (stop, progress, bytes_read) = (stop.clone(), progress.clone(), bytes_read.clone());
        let config = repo.config().clone();
        std::thread::spawn(move || {
            read_disk(&source, &config, piece_tx, &stop, &progress, &bytes_read)
        })
    };
    let seen = Arc::new(Mutex::new(HashSet::new()));
    for _ in 0..workers {
        let (rx, tx, repo, seen) = (
            piece_rx.clone(),
            result_tx.clone(),
            repo.clone(),
            seen.clone(),
        );
        std::thread::spawn(move || process_chunks(&repo, rx, tx, &seen));
    }
    drop((piece_rx, result_tx));

    let collected = collect(&repo, &req, &mut result_rx).await;
    if collected.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    drop(result_rx);
    let read_result = tokio::task::spawn_blocking(move || reader.join())
        .await
        .expect("joining the reader cannot fail")
        .expect("reader thread panicked");
    let (extents, counters, packs, stored_bytes) = collected?;
    read_result?;

    let manifest = Manifest {
        meta: SnapshotMeta {
            vm: req.vm.clone(),
            disk: req.disk.clone(),
            source: req.image.display().to_string(),
            size: disk_size,
            time,
            host: hostname(),
            tags: req.tags.clone(),
            parent: None,
            lifeboat_version: env!("CARGO_PKG_VERSION").to_string(),
        },
        extents,
    };
    let snapshot = repo.commit_snapshot(&manifest).await?;
    Ok(BackupReport {
        snapshot,
        disk_size,
        bytes_read: bytes_read.load(Ordering::Relaxed),
        zero_bytes: counters.zero_bytes,
        chunks: counters.chunks,
        new_chunks: counters.new_chunks,
        new_bytes: counters.new_bytes,
        stored_bytes,
        packs,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

/// Reader stage: walks data ranges, feeds the segmenter, hands pieces to the workers.
fn read_disk(
    source: &RawSource,
    config: &lifeboat_store::format::config::RepoConfig,
    tx: crossbeam_channel::Sender<(u64, Piece)>,
    stop: &AtomicBool,
    progress: &Progress,
    bytes_read: &AtomicU64,
) -> Result<(), BackupError> {
    let mut seq = 0u64;
    let mut segmenter = Segmenter::new(config.chunker, config.zero_run_min, |piece| {
        // A failed send means the collector gave up; `stop` ends the read loop.
        if tx.send((seq, piece)).is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        seq += 1;
    });
    let mut buf = vec![0u8; READ_SIZE];
    let mut pos = 0u64;
    let size = source.size();
    while pos < size && !stop.load(Ordering::Relaxed) {
        let Some((start, end)) = source.next_data(pos)? else {
            segmenter.feed_zeros(size - pos);
            progress.add(size - pos);
            break;
        };
        if start > pos {
            segmenter.feed_zeros(start - pos);
            progress.add(start - pos);
        }
        let mut at = start;
        while at < end && !stop.load(Ordering::Relaxed) {
            let want = ((end - at) as usize).min(READ_SIZE);
            let n = source.read_at(&mut buf[..want], at)?;
            if n == 0 {
                return Err(BackupError::Source {
                    path: source.path().display().to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("disk shrank while being read (ended at {at} of {size} bytes)"),
                    ),
                });
            }
            segmenter.feed(&buf[..n]);
            at += n as u64;
            bytes_read.fetch_add(n as u64, Ordering::Relaxed);
            progress.add(n as u64);
        }
        pos = end;
    }
    if !stop.load(Ordering::Relaxed) {
        segmenter.finish();
    }
    Ok(())
}

/// Worker stage: id, dedup decision, compression and encryption of new chunks.
fn process_chunks(
    repo: &Repository,
    rx: crossbeam_channel::Receiver<(u64, Piece)>,
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
    let level = repo.config().compression_level;
    for (seq, piece) in rx {
        let result = match piece {
            Piece::Zero { len, .. } => Ok(Processed {
                seq,
                extent: Extent::Zero { len },
                new_blob: None,
            }),
            Piece::Chunk { data, .. } => {
                let id = keys.chunk_id(&data);
                let len = data.len() as u32;
                let stored = lookup.contains(&id).map_err(|source| {
                    BackupError::Store(lifeboat_store::StoreError::Catalog {
                        path: repo.catalog().path().display().to_string(),
                        source,
                    })
                });
                stored.map(|stored| {
                    // Only the first worker to claim an id stores it.
                    let is_new = !stored && seen.lock().expect("dedup set poisoned").insert(id);
                    Processed {
                        seq,
                        extent: Extent::Chunk { id, len },
                        new_blob: is_new.then(|| (id, seal_chunk(keys, &id, &data, level), len)),
                    }
                })
            }
        };
        if tx.blocking_send(result).is_err() {
            return;
        }
    }
}

type Collected = (Vec<Extent>, Counters, u64, u64);

/// Collector stage: puts extents back in disk order, fills packs, runs uploads.
async fn collect(
    repo: &Arc<Repository>,
    req: &BackupRequest,
    rx: &mut mpsc::Receiver<Result<Processed, BackupError>>,
) -> Result<Collected, BackupError> {
    let pack_size = repo.config().pack_size as usize;
    let uploads_allowed = Arc::new(Semaphore::new(req.upload_concurrency.max(1)));
    let mut uploads: JoinSet<Result<u64, BackupError>> = JoinSet::new();
    let packs_done = Arc::new(AtomicU64::new(0));
    let mut pack = PackBuilder::with_capacity(pack_size + repo.config().chunker.max as usize);
    let (mut extents, mut counters) = (Vec::new(), Counters::default());
    let mut out_of_order: BTreeMap<u64, Extent> = BTreeMap::new();
    let (mut next_seq, mut packs, mut stored_bytes) = (0u64, 0u64, 0u64);

    let start_upload = |pack: PackBuilder, uploads: &mut JoinSet<_>, permit| {
        let finished = pack.finish(repo.keys());
        let (repo, packs_done) = (repo.clone(), packs_done.clone());
        let size = finished.bytes.len() as u64;
        uploads.spawn(async move {
            let _permit = permit;
            repo.upload_pack(finished).await?;
            if packs_done.fetch_add(1, Ordering::Relaxed) % INDEX_EVERY_PACKS
                == INDEX_EVERY_PACKS - 1
            {
                repo.flush_index().await?;
            }
            Ok(size)
        });
    };

    while let Some(processed) = rx.recv().await {
        let p = processed?;
        if let Some((id, blob, raw_len)) = p.new_blob {
            counters.new_chunks += 1;
            counters.new_bytes += u64::from(raw_len);
            pack.add(id, &blob, raw_len);
            if pack.len() >= pack_size {
                let permit = uploads_allowed
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore is never closed");
                let full = std::mem::replace(&mut pack, PackBuilder::with_capacity(pack_size));
                start_upload(full, &mut uploads, permit);
                packs += 1;
            }
        }
        out_of_order.insert(p.seq, p.extent);
        while let Some(e) = out_of_order.remove(&next_seq) {
            match e {
                Extent::Zero { len } => counters.zero_bytes += len,
                Extent::Chunk { .. } => counters.chunks += 1,
            }
            extents.push(e);
            next_seq += 1;
        }
        while let Some(done) = uploads.try_join_next() {
            stored_bytes += done.expect("upload task panicked")?;
        }
    }
    if !pack.is_empty() {
        let permit = uploads_allowed
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        start_upload(pack, &mut uploads, permit);
        packs += 1;
    }
    while let Some(done) = uploads.join_next().await {
        stored_bytes += done.expect("upload task panicked")?;
    }
    repo.flush_index().await?;
    if !out_of_order.is_empty() {
        return Err(BackupError::Invalid(format!(
            "internal error: {} chunks arrived out of sequence",
            out_of_order.len()
        )));
    }
    Ok((extents, counters, packs, stored_bytes))
}
