//! Filling a point's image: fetch the chunks a [`Plan`] names through the shared
//! read path (every chunk verified: AEAD tag and keyed id), write the 64 KiB blocks
//! of them that differ from what the image reads already, and the zero runs, through
//! a writable `qemu-nbd`; flush, then prove the writes landed.
//!
//! The proof is cheap on purpose (reading everything back would cost as much as the
//! write): the data written is already verified in memory, so what is left to show
//! is that the image on disk maps it where it belongs. After the writable export is
//! flushed and gone, a fresh read-only `qemu-nbd` opens the image from its on-disk
//! metadata and reads one 4 KiB sample of every chunk written (at a place that
//! varies with the chunk) and of every zeroed run; each must hash to what was
//! written. Its size must be the snapshot's. `qemu-img check` (the caller's) covers
//! the qcow2 metadata as a whole.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use lifeboat_hypervisor::nbd::NbdClient;
use lifeboat_hypervisor::qemu_nbd::QemuNbd;
use lifeboat_store::{
    ChunkId, ChunkReader, Progress, ReadFailure, ReadPlan, Repository, StoreError,
};

use super::diff::Plan;
use super::error::StandbyError;

/// Bytes read back per written chunk or zeroed run.
const SAMPLE: u64 = 4096;
/// Granularity of the comparison with what the image already holds: the qcow2
/// cluster size, so a block written is a whole cluster and needs no copy-on-write.
const BLOCK: u64 = 64 << 10;
/// Sample reads in flight.
const SAMPLE_READS: usize = 64;

/// What filling an image did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Filled {
    pub(crate) bytes_written: u64,
    pub(crate) bytes_zeroed: u64,
    pub(crate) chunks_fetched: u64,
    pub(crate) bytes_fetched: u64,
}

/// Where to read back, and the keyed hash the bytes there must have.
struct Sample {
    offset: u64,
    len: u32,
    hash: ChunkId,
}

/// Everything the writers share.
struct Shared {
    client: NbdClient,
    filled: Mutex<(Filled, Vec<Sample>)>,
    progress: Arc<Progress>,
}

/// What to write where: the point's snapshot (named in errors), its disk size,
/// and the image (which already exists, with that size and its backing file).
pub(crate) struct Target<'a> {
    pub(crate) snapshot: &'a str,
    pub(crate) size: u64,
    pub(crate) image: &'a Path,
}

/// Writes `plan` into the target image and checks the result reads back.
pub(crate) async fn fill(
    repo: &Arc<Repository>,
    target: Target<'_>,
    plan: Plan,
    fetches: usize,
    progress: Arc<Progress>,
) -> Result<Filled, StandbyError> {
    let Target {
        snapshot,
        size,
        image,
    } = target;
    let started = std::time::Instant::now();
    let nbd = QemuNbd::start_writable(image, "qcow2").await?;
    let client = NbdClient::connect(&nbd.address(), &[]).await?;
    let shared = Arc::new(Shared {
        client,
        filled: Mutex::new((Filled::default(), Vec::new())),
        progress,
    });
    let written = write_plan(repo, snapshot, &shared, plan, fetches).await;
    tracing::debug!(
        ms = started.elapsed().as_millis(),
        "standby: chunks fetched and written"
    );
    // Flush even after a failure is pointless: the image is discarded then.
    let result = match written {
        Ok(()) => shared.client.flush().await.map_err(StandbyError::from),
        Err(e) => Err(e),
    };
    let shared = Arc::into_inner(shared).expect("every writer has finished");
    let _ = shared.client.disconnect().await;
    nbd.stop().await?;
    result?;
    let (filled, samples) = shared
        .filled
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    tracing::debug!(ms = started.elapsed().as_millis(), "standby: flushed");
    read_back(repo, image, size, samples).await?;
    tracing::debug!(
        ms = started.elapsed().as_millis(),
        "standby: samples read back"
    );
    Ok(filled)
}

async fn write_plan(
    repo: &Arc<Repository>,
    snapshot: &str,
    shared: &Arc<Shared>,
    plan: Plan,
    fetches: usize,
) -> Result<(), StandbyError> {
    for &(offset, len) in &plan.zeroes {
        shared.client.write_zeroes(offset, len).await?;
        let n = len.min(SAMPLE) as u32;
        let hash = repo.keys().chunk_id(&vec![0u8; n as usize]);
        let mut f = shared.filled.lock().unwrap_or_else(|e| e.into_inner());
        f.0.bytes_zeroed += len;
        f.1.push(Sample {
            offset,
            len: n,
            hash,
        });
    }
    let read_plan = ReadPlan::for_chunks(repo, plan.chunks).await?;
    if let Some(u) = read_plan.unlocated.first() {
        return Err(StandbyError::Damaged {
            snapshot: snapshot.to_string(),
            detail: format!(
                "chunk {} at disk offset {} is in no pack the index knows",
                u.id.short(),
                u.offset
            ),
        });
    }
    let reader = ChunkReader::new(repo.clone(), fetches);
    let keys_repo = repo.clone();
    let opened = reader.read(read_plan.ranges, move |fetched| {
        let mut out = Vec::with_capacity(fetched.range.needs.len());
        for need in &fetched.range.needs {
            let data = Bytes::from(fetched.open(need)?);
            let samples: Vec<Sample> = need
                .offsets
                .iter()
                .map(|&offset| sample_of(&keys_repo, &need.id, offset, &data))
                .collect();
            out.push((need.offsets.clone(), data, samples));
        }
        Ok::<_, ReadFailure<Infallible>>((out, fetched.fetched_len()))
    });
    opened
        .map_err(|e| read_failure(snapshot, e))
        .try_for_each_concurrent(fetches.max(1), |(chunks, fetched_len)| {
            let shared = shared.clone();
            async move { write_range(&shared, chunks, fetched_len).await }
        })
        .await
}

type Opened = Vec<(Vec<u64>, Bytes, Vec<Sample>)>;

/// Writes the chunks of one fetched range, all at once, and books them.
async fn write_range(
    shared: &Shared,
    chunks: Opened,
    fetched_len: u64,
) -> Result<(), StandbyError> {
    let mut writes = Vec::new();
    let mut count = 0u64;
    for (offsets, data, _) in &chunks {
        count += 1;
        for &offset in offsets {
            writes.push(write_changed(&shared.client, offset, data.clone()));
        }
    }
    let bytes: u64 = futures::future::try_join_all(writes)
        .await?
        .into_iter()
        .sum();
    let chunk_bytes: u64 = chunks
        .iter()
        .map(|c| c.1.len() as u64 * c.0.len() as u64)
        .sum();
    shared.progress.add(chunk_bytes);
    let mut f = shared.filled.lock().unwrap_or_else(|e| e.into_inner());
    f.0.bytes_written += bytes;
    f.0.chunks_fetched += count;
    f.0.bytes_fetched += fetched_len;
    f.1.extend(chunks.into_iter().flat_map(|c| c.2));
    Ok(())
}

/// Writes `data` at `offset`, but only the [`BLOCK`]-aligned blocks whose bytes
/// differ from what the image reads there now (the previous point, through the
/// overlay's backing file; zeros in a new base). A chunk that changed is usually
/// changed in a small part: a 1 MiB content-defined chunk around one 64 KiB guest
/// write costs one 64 KiB write, not 1 MiB, and the local read that proves the
/// rest equal is far cheaper than the write and the qcow2 growth it saves.
/// Returns the bytes written.
async fn write_changed(client: &NbdClient, offset: u64, data: Bytes) -> Result<u64, StandbyError> {
    let max = u64::from(client.max_read_len());
    let end = offset + data.len() as u64;
    // What the image reads there now: one request for any chunk up to the
    // server's maximum (32 MiB), so no copy into a joined buffer.
    let mut pieces = Vec::new();
    let mut at = offset;
    while at < end {
        let n = (end - at).min(max) as u32;
        pieces.push(client.read(at, n));
        at += u64::from(n);
    }
    let pieces = futures::future::try_join_all(pieces).await?;
    let old: Bytes = match <[Bytes; 1]>::try_from(pieces) {
        Ok([one]) => one,
        Err(many) => many.concat().into(),
    };
    // Runs of differing blocks, as (start, end) relative to `offset`.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut block_start = offset;
    while block_start < end {
        let block_end = ((block_start / BLOCK + 1) * BLOCK).min(end);
        let (a, b) = (
            (block_start - offset) as usize,
            (block_end - offset) as usize,
        );
        if data[a..b] != old[a..b] {
            match runs.last_mut() {
                Some(run) if run.1 == a => run.1 = b,
                _ => runs.push((a, b)),
            }
        }
        block_start = block_end;
    }
    drop(old);
    let mut written = 0u64;
    let mut writes = Vec::new();
    for (a, b) in runs {
        let mut at = a;
        while at < b {
            let stop = (at + max as usize).min(b);
            writes.push(client.write(offset + at as u64, data.slice(at..stop)));
            written += (stop - at) as u64;
            at = stop;
        }
    }
    futures::future::try_join_all(writes).await?;
    Ok(written)
}

/// A 4 KiB window of a chunk written at `offset`, placed by the chunk's id so that
/// different chunks are checked at different places, and its keyed hash.
fn sample_of(repo: &Repository, id: &ChunkId, offset: u64, data: &[u8]) -> Sample {
    let len = (data.len() as u64).min(SAMPLE);
    let room = data.len() as u64 - len;
    let seed = u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes"));
    let at = if room == 0 { 0 } else { seed % (room + 1) };
    let window = &data[at as usize..(at + len) as usize];
    Sample {
        offset: offset + at,
        len: len as u32,
        hash: repo.keys().chunk_id(window),
    }
}

fn read_failure(snapshot: &str, e: ReadFailure<Infallible>) -> StandbyError {
    match e {
        ReadFailure::Storage(e) => StandbyError::Store(StoreError::Backend(e)),
        ReadFailure::Damaged(d) => StandbyError::Damaged {
            snapshot: snapshot.to_string(),
            detail: format!("at disk offset {}: {}", d.offset, d.detail),
        },
        ReadFailure::Consumer(never) => match never {},
    }
}

/// Opens the image afresh, read-only, and checks its size and every sample.
async fn read_back(
    repo: &Repository,
    image: &Path,
    size: u64,
    samples: Vec<Sample>,
) -> Result<(), StandbyError> {
    let what = image.display().to_string();
    let nbd = QemuNbd::start(image, Some("qcow2"), None).await?;
    let client = NbdClient::connect(&nbd.address(), &[]).await?;
    let checked = async {
        if client.size() != size {
            return Err(StandbyError::Verify {
                what: what.clone(),
                detail: format!("it is {} bytes, not {size}", client.size()),
            });
        }
        futures::stream::iter(samples)
            .map(|s| {
                let (client, what) = (&client, &what);
                async move {
                    let got = client.read(s.offset, s.len).await?;
                    if repo.keys().chunk_id(&got) == s.hash {
                        return Ok(());
                    }
                    Err(StandbyError::Verify {
                        what: what.to_string(),
                        detail: format!("the {} bytes at offset {} differ", s.len, s.offset),
                    })
                }
            })
            .buffer_unordered(SAMPLE_READS)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }
    .await;
    let _ = client.disconnect().await;
    nbd.stop().await?;
    checked
}
