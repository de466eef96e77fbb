//! Filling a point's image: fetch the chunks a [`Plan`] names through the shared
//! read path (every chunk verified: AEAD tag and keyed id), write them and the zero
//! runs through a writable `qemu-nbd`, flush, then prove the writes landed.
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
    let nbd = QemuNbd::start_writable(image, "qcow2").await?;
    let client = NbdClient::connect(&nbd.address(), &[]).await?;
    let shared = Arc::new(Shared {
        client,
        filled: Mutex::new((Filled::default(), Vec::new())),
        progress,
    });
    let written = write_plan(repo, snapshot, &shared, plan, fetches).await;
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
    read_back(repo, image, size, samples).await?;
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
    let max = u64::from(shared.client.max_read_len());
    let mut writes = Vec::new();
    let (mut count, mut bytes) = (0u64, 0u64);
    for (offsets, data, _) in &chunks {
        count += 1;
        for &offset in offsets {
            bytes += data.len() as u64;
            let mut at = 0u64;
            while at < data.len() as u64 {
                let end = (at + max).min(data.len() as u64);
                let part = data.slice(at as usize..end as usize);
                writes.push(shared.client.write(offset + at, part));
                at = end;
            }
        }
    }
    futures::future::try_join_all(writes).await?;
    shared.progress.add(bytes);
    let mut f = shared.filled.lock().unwrap_or_else(|e| e.into_inner());
    f.0.bytes_written += bytes;
    f.0.chunks_fetched += count;
    f.0.bytes_fetched += fetched_len;
    f.1.extend(chunks.into_iter().flat_map(|c| c.2));
    Ok(())
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
