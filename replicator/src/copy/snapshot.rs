//! Copying one snapshot: the chunks the destination lacks, re-sealed under its key,
//! then the manifest, last.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;

use futures::StreamExt;
use lifeboat_store::format::blob::reseal_chunk;
use lifeboat_store::format::manifest::{Extent, ReplicatedFrom};
use lifeboat_store::read_plan::FetchRange;
use lifeboat_store::{
    ChunkId, ChunkReader, Damage, FetchedRange, PackWriter, Progress, ReadFailure, ReadPlan,
    Repository, SnapshotSummary,
};

use super::rate::RateLimit;
use super::request::ReplicateRequest;
use crate::error::{ReplicateError, ReplicateResult, Side};

/// The two repositories of one run and how to move data between them.
pub(crate) struct Link<'a> {
    pub src: &'a Arc<Repository>,
    pub dst: &'a Arc<Repository>,
    pub req: &'a ReplicateRequest,
    pub rate: Option<&'a RateLimit>,
    pub progress: &'a Progress,
}

/// What copying one snapshot took.
pub(crate) struct SnapshotCopy {
    pub committed: SnapshotSummary,
    pub chunks_sent: u64,
    pub bytes_sent: u64,
    pub chunks_skipped: u64,
    pub bytes_skipped: u64,
}

/// Copies `source` (a snapshot of `link.src`) to `link.dst`, recording `origin`.
pub(crate) async fn copy_snapshot(
    link: &Link<'_>,
    source: &SnapshotSummary,
    origin: ReplicatedFrom,
) -> ReplicateResult<SnapshotCopy> {
    let mut manifest = link
        .src
        .read_manifest(&source.id)
        .await
        .map_err(ReplicateError::source)?;
    let mut unique: HashMap<ChunkId, (u64, u32)> = HashMap::new();
    for (offset, extent) in manifest.extents_with_offsets() {
        if let Extent::Chunk { id, len } = extent {
            unique.entry(*id).or_insert((offset, *len));
        }
    }
    let present = present_on(link.dst, unique.keys().copied().collect()).await?;
    let (mut chunks_skipped, mut bytes_skipped) = (0, 0);
    let mut missing = Vec::new();
    for (id, (offset, len)) in unique {
        if present.contains(&id) {
            chunks_skipped += 1;
            bytes_skipped += u64::from(len);
        } else {
            missing.push((offset, id));
            link.progress
                .total
                .fetch_add(u64::from(len), std::sync::atomic::Ordering::Relaxed);
        }
    }
    let plan = ReadPlan::for_chunks(link.src, missing)
        .await
        .map_err(ReplicateError::source)?;
    if let Some(lost) = plan.unlocated.first() {
        let detail = format!(
            "chunk {:?} (disk offset {}) is in no index",
            lost.id, lost.offset
        );
        return Err(damaged(source, detail));
    }
    let (chunks_sent, bytes_sent) = send_chunks(link, plan.ranges, source).await?;
    // The manifest is the source's, chunk for chunk; `parent` named a snapshot id of
    // the source, meaningless here.
    manifest.meta.parent = None;
    manifest.meta.replicated_from = Some(origin);
    let committed = link
        .dst
        .commit_snapshot(&manifest)
        .await
        .map_err(ReplicateError::destination)?;
    Ok(SnapshotCopy {
        committed,
        chunks_sent,
        bytes_sent,
        chunks_skipped,
        bytes_skipped,
    })
}

/// Which of `ids` the destination already stores (indexed, or uploaded by an earlier
/// run that was interrupted before its index was written).
async fn present_on(dst: &Repository, ids: Vec<ChunkId>) -> ReplicateResult<HashSet<ChunkId>> {
    dst.with_catalog(move |c| {
        let mut present = HashSet::new();
        for id in ids {
            if c.locate(&id)?.is_some() {
                present.insert(id);
            }
        }
        Ok(present)
    })
    .await
    .map_err(ReplicateError::destination)
}

/// Reads `ranges` from the source, re-seals every chunk and writes it to the
/// destination; returns chunks and pack bytes sent once everything is indexed there.
async fn send_chunks(
    link: &Link<'_>,
    ranges: Vec<FetchRange>,
    source: &SnapshotSummary,
) -> ReplicateResult<(u64, u64)> {
    let (from, to) = (link.src.keys().clone(), link.dst.keys().clone());
    let reader = ChunkReader::new(link.src.clone(), link.req.fetches);
    let mut blobs = std::pin::pin!(reader.read(ranges, move |fetched: FetchedRange| {
        fetched
            .range
            .needs
            .iter()
            .map(|need| {
                let sealed =
                    reseal_chunk(&from, &to, &need.id, fetched.blob(need)?).map_err(|e| {
                        Damage {
                            offset: need.first_offset(),
                            detail: format!("chunk {:?} in {}: {e}", need.id, fetched.key()),
                        }
                    })?;
                Ok((need.id, sealed, need.raw_len))
            })
            .collect::<Result<Vec<_>, ReadFailure<Infallible>>>()
    }));
    let mut writer = PackWriter::new(link.dst.clone(), link.req.uploads);
    let mut chunks = 0;
    while let Some(range) = blobs.next().await {
        let range = range.map_err(|failure| match failure {
            ReadFailure::Storage(e) => ReplicateError::from((Side::Source, e)),
            ReadFailure::Damaged(d) => damaged(source, d.detail),
            ReadFailure::Consumer(never) => match never {},
        })?;
        for (id, sealed, raw_len) in range {
            if let Some(rate) = link.rate {
                rate.take(sealed.len() as u64).await;
            }
            writer
                .add(id, &sealed, raw_len)
                .await
                .map_err(ReplicateError::destination)?;
            chunks += 1;
            link.progress.add(u64::from(raw_len));
        }
    }
    let stats = writer.finish().await.map_err(ReplicateError::destination)?;
    Ok((chunks, stats.stored_bytes))
}

fn damaged(source: &SnapshotSummary, detail: String) -> ReplicateError {
    ReplicateError::SourceDamaged {
        snapshot: source.short_id().to_string(),
        vm: source.meta.vm.clone(),
        disk: source.meta.disk.clone(),
        detail,
    }
}
