//! Reader stage: turns a disk source into the ordered stream of work for the workers.
//!
//! A full read walks the source's data ranges with several reads in flight (so an NBD
//! export or a network block device stays busy) and feeds them, in order, to the
//! segmenter on a thread of its own. Holes between data ranges are fed as zeros without
//! being read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use lifeboat_store::Progress;
use lifeboat_store::format::config::RepoConfig;
use lifeboat_store::format::manifest::Extent;
use tokio::sync::mpsc;

use crate::error::BackupError;
use crate::fixed::incremental::Plan;
use crate::incremental::{ReadAt, Step, incremental_pieces};
use crate::piece::Piece;
use crate::segmenter::DiskSegmenter;
use crate::source::{DiskSource, RawSource};

/// Bytes per read: large enough for sequential throughput, small enough for flat memory.
pub(crate) const READ_SIZE: usize = 4 * 1024 * 1024;
/// Reads in flight ahead of the segmenter.
const READ_AHEAD: usize = 4;

/// One unit of work for the worker stage, in disk order.
#[derive(Debug)]
pub(crate) enum Work {
    /// An extent of the previous snapshot that is known unchanged.
    Reuse(Extent),
    /// A piece that was read (chunk to hash and maybe store) or a zero run.
    Piece(Piece),
}

pub(crate) type WorkSender = crossbeam_channel::Sender<(u64, Vec<Work>)>;

/// Work travels to the workers in batches of up to this many items, or fewer once they
/// hold [`BATCH_BYTES`] of chunk data: with small chunks (64 KiB fixed cells) or long
/// runs of reused extents, one channel hand-off per item cost more than the work itself
/// (scheduler wake-ups dominated the profile in bench/RESULTS.md).
const BATCH_ITEMS: usize = 256;
const BATCH_BYTES: usize = 2 * 1024 * 1024;

/// Shared between the reader stage and `run_backup`.
pub(crate) struct ReadState {
    pub stop: AtomicBool,
    pub bytes_read: AtomicU64,
    pub progress: Arc<Progress>,
}

impl ReadState {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Batches and numbers work items, and stops the pipeline if the workers have gone
/// away. The last batch is sent when the emitter is dropped.
pub(crate) struct Emitter {
    tx: WorkSender,
    seq: u64,
    batch: Vec<Work>,
    batch_bytes: usize,
    state: Arc<ReadState>,
}

impl Emitter {
    pub fn new(tx: WorkSender, state: Arc<ReadState>) -> Self {
        Self {
            tx,
            seq: 0,
            batch: Vec::with_capacity(BATCH_ITEMS),
            batch_bytes: 0,
            state,
        }
    }

    pub fn emit(&mut self, work: Work) {
        if let Work::Piece(Piece::Chunk { data, .. }) = &work {
            self.batch_bytes += data.len();
        }
        self.batch.push(work);
        if self.batch.len() >= BATCH_ITEMS || self.batch_bytes >= BATCH_BYTES {
            self.send();
        }
    }

    fn send(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_ITEMS));
        self.batch_bytes = 0;
        if self.tx.send((self.seq, batch)).is_err() {
            self.state.stop.store(true, Ordering::Relaxed);
        }
        self.seq += 1;
    }
}

impl Drop for Emitter {
    fn drop(&mut self) {
        self.send();
    }
}

/// Reads every data range of `source` and segments the whole disk.
pub(crate) async fn read_full(
    source: Arc<dyn DiskSource>,
    config: &RepoConfig,
    work: WorkSender,
    state: Arc<ReadState>,
) -> Result<(), BackupError> {
    let size = source.size();
    let ranges = source.data_ranges().await?;
    if let Some(raw) = source.as_raw() {
        let (raw, config) = (raw.clone(), config.clone());
        return tokio::task::spawn_blocking(move || read_raw(&raw, &ranges, &config, work, &state))
            .await
            .expect("reader thread panicked");
    }
    let (buf_tx, mut buf_rx) = mpsc::channel::<(u64, Bytes)>(READ_AHEAD);

    let segmenting = {
        let (config, state) = (config.clone(), state.clone());
        tokio::task::spawn_blocking(move || {
            let mut emitter = Emitter::new(work, state.clone());
            let mut segmenter = DiskSegmenter::new(&config, |p| emitter.emit(Work::Piece(p)));
            let mut pos = 0u64;
            while let Some((offset, data)) = buf_rx.blocking_recv() {
                if offset > pos {
                    segmenter.feed_zeros(offset - pos);
                    state.progress.add(offset - pos);
                }
                segmenter.feed(&data);
                state.progress.add(data.len() as u64);
                pos = offset + data.len() as u64;
            }
            if state.stopped() {
                return;
            }
            if size > pos {
                segmenter.feed_zeros(size - pos);
                state.progress.add(size - pos);
            }
            segmenter.finish();
        })
    };

    let reads = ranges.into_iter().flat_map(|(start, end)| {
        (start..end)
            .step_by(READ_SIZE)
            .map(move |off| (off, ((end - off) as usize).min(READ_SIZE)))
    });
    let result = forward_reads(&source, reads, READ_AHEAD, &state, &buf_tx).await;
    drop(buf_tx);
    segmenting.await.expect("segmenter thread panicked");
    result
}

/// The local-file reader: one thread reads into one reused buffer and segments.
fn read_raw(
    source: &RawSource,
    ranges: &[(u64, u64)],
    config: &RepoConfig,
    work: WorkSender,
    state: &Arc<ReadState>,
) -> Result<(), BackupError> {
    let mut emitter = Emitter::new(work, state.clone());
    let mut segmenter = DiskSegmenter::new(config, |p| emitter.emit(Work::Piece(p)));
    let mut buf = vec![0u8; READ_SIZE];
    let mut pos = 0u64;
    for &(start, end) in ranges {
        if start > pos {
            segmenter.feed_zeros(start - pos);
            state.progress.add(start - pos);
        }
        let mut at = start;
        while at < end {
            if state.stopped() {
                return Ok(());
            }
            let want = ((end - at) as usize).min(READ_SIZE);
            let n = source.read_into(&mut buf[..want], at)?;
            if n < want {
                return Err(BackupError::Source {
                    path: source.path().display().to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "disk shrank while being read (ended at {} bytes)",
                            at + n as u64
                        ),
                    ),
                });
            }
            segmenter.feed(&buf[..n]);
            state.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
            state.progress.add(n as u64);
            at += n as u64;
        }
        pos = end;
    }
    let size = source.size();
    if size > pos {
        segmenter.feed_zeros(size - pos);
        state.progress.add(size - pos);
    }
    segmenter.finish();
    Ok(())
}

/// Reads only around `dirty`, reusing the previous snapshot's extents everywhere else
/// (see [`crate::incremental`]); the output equals a full read's.
pub(crate) async fn read_incremental(
    source: Arc<dyn DiskSource>,
    config: &RepoConfig,
    previous: Arc<Vec<Extent>>,
    dirty: Vec<(u64, u64)>,
    work: WorkSender,
    state: Arc<ReadState>,
) -> Result<(), BackupError> {
    if let Some(cell_size) = config.fixed_chunk_size {
        return read_incremental_fixed(source, config, cell_size, previous, dirty, work, state)
            .await;
    }
    let (chunker, zero_run_min) = (config.chunker, config.zero_run_min);
    let reader = BlockingReader {
        source,
        runtime: tokio::runtime::Handle::current(),
        state: state.clone(),
    };
    tokio::task::spawn_blocking(move || {
        let mut emitter = Emitter::new(work, state.clone());
        let size = reader.source.size();
        let mut emit = |step: Step| {
            let work = match step {
                Step::Reuse { extent, .. } => Work::Reuse(extent),
                Step::Piece(piece) => Work::Piece(piece),
            };
            state.progress.add(work_len(&work));
            emitter.emit(work);
        };
        incremental_pieces(
            &previous,
            chunker,
            zero_run_min,
            size,
            &dirty,
            &reader,
            &mut emit,
        )
        .map(|_| ())
        .map_err(|source| BackupError::Source {
            path: reader.source.describe(),
            source,
        })
    })
    .await
    .expect("incremental reader panicked")
}

/// Reads in flight for an incremental read of fixed cells: dirty cells are scattered
/// and small, so latency, not bandwidth, bounds them.
const FIXED_READ_AHEAD: usize = 16;

/// Reads only the dirty cells of a fixed-chunked disk, [`FIXED_READ_AHEAD`] at a time,
/// and reuses every other cell (see [`crate::fixed::incremental`]).
async fn read_incremental_fixed(
    source: Arc<dyn DiskSource>,
    config: &RepoConfig,
    cell_size: u32,
    previous: Arc<Vec<Extent>>,
    dirty: Vec<(u64, u64)>,
    work: WorkSender,
    state: Arc<ReadState>,
) -> Result<(), BackupError> {
    let size = source.size();
    let reads = match Plan::new(&previous, cell_size, size, &dirty) {
        Ok(plan) => plan.reads(READ_SIZE as u64),
        Err(why) => {
            tracing::warn!(
                "previous snapshot unusable for an incremental read ({why}); reading the whole disk"
            );
            return read_full(source, config, work, state).await;
        }
    };
    let (buf_tx, mut buf_rx) = mpsc::channel::<(u64, Bytes)>(FIXED_READ_AHEAD);
    let walking = {
        let (state, describe) = (state.clone(), source.describe());
        tokio::task::spawn_blocking(move || {
            let plan =
                Plan::new(&previous, cell_size, size, &dirty).map_err(BackupError::Invalid)?;
            let mut emitter = Emitter::new(work, state.clone());
            let (mut at, mut buffered) = (0u64, Bytes::new());
            let mut read_cell = |offset: u64, len: usize| -> std::io::Result<Vec<u8>> {
                if buffered.is_empty() {
                    (at, buffered) = buf_rx
                        .blocking_recv()
                        .ok_or_else(|| std::io::Error::other("backup stopped"))?;
                }
                if at != offset || buffered.len() < len {
                    return Err(std::io::Error::other(format!(
                        "internal error: cell {offset}+{len} asked for, read {at}+{} arrived",
                        buffered.len()
                    )));
                }
                at += len as u64;
                Ok(buffered.split_to(len).to_vec())
            };
            plan.walk(&mut read_cell, &mut |step| {
                let work = match step {
                    Step::Reuse { extent, .. } => Work::Reuse(extent),
                    Step::Piece(piece) => Work::Piece(piece),
                };
                state.progress.add(work_len(&work));
                emitter.emit(work);
            })
            .map(|_| ())
            .map_err(|source| BackupError::Source {
                path: describe,
                source,
            })
        })
    };
    let reads = reads
        .into_iter()
        .map(|(start, end)| (start, (end - start) as usize));
    // An early end of the walk shows as a closed channel; its own result says why.
    let result = forward_reads(&source, reads, FIXED_READ_AHEAD, &state, &buf_tx).await;
    drop(buf_tx);
    tracing::debug!("dirty cells read");
    let walked = walking.await.expect("incremental walker panicked");
    tracing::debug!("incremental walk done");
    result.and(walked)
}

/// Reads `(offset, len)` ranges in order with `ahead` reads in flight and hands them
/// to `out`; stops early if the backup stopped or the receiver went away (both say why
/// elsewhere), and on the first read error, which it returns.
async fn forward_reads(
    source: &Arc<dyn DiskSource>,
    reads: impl Iterator<Item = (u64, usize)>,
    ahead: usize,
    state: &ReadState,
    out: &mpsc::Sender<(u64, Bytes)>,
) -> Result<(), BackupError> {
    let mut stream = futures::stream::iter(reads)
        .map(|(offset, len)| {
            let source = source.clone();
            async move { source.read_at(offset, len).await.map(|data| (offset, data)) }
        })
        .buffered(ahead);
    while let Some(read) = stream.next().await {
        if state.stopped() {
            break;
        }
        match read {
            Ok((offset, data)) => {
                state
                    .bytes_read
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if out.send((offset, data)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                state.stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
    Ok(())
}

fn work_len(work: &Work) -> u64 {
    match work {
        Work::Reuse(extent) => extent.len(),
        Work::Piece(Piece::Chunk { data, .. }) => data.len() as u64,
        Work::Piece(Piece::Zero { len, .. }) => *len,
    }
}

/// Synchronous reads for the incremental chunker, which runs on a blocking thread.
struct BlockingReader {
    source: Arc<dyn DiskSource>,
    runtime: tokio::runtime::Handle,
    state: Arc<ReadState>,
}

impl ReadAt for BlockingReader {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if self.state.stopped() {
            return Err(std::io::Error::other("backup stopped"));
        }
        let n = match self.source.as_raw() {
            Some(raw) => raw.read_into(buf, offset).map_err(std::io::Error::other)?,
            None => {
                // This thread is a blocking-pool thread, not a runtime worker, so
                // waiting for the async read here cannot stall the runtime.
                let data = self
                    .runtime
                    .block_on(self.source.read_at(offset, buf.len()))
                    .map_err(std::io::Error::other)?;
                buf.copy_from_slice(&data);
                data.len()
            }
        };
        if n < buf.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "disk shrank while being read (ended at {} bytes)",
                    offset + n as u64
                ),
            ));
        }
        self.state.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(())
    }
}
