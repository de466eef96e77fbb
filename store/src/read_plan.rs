//! Planning reads: which byte ranges of which packs hold a set of chunks, and where
//! the caller wants each chunk (for a restore, its disk offsets).
//!
//! Chunks are located in the catalog and grouped into ranged GETs per pack, merged
//! across small gaps: reading a little waste is cheaper than another request. The
//! plan is the first half of the shared read path ([`crate::chunk_reader`] is the
//! second); restore and replication both start here.

use std::collections::BTreeMap;

use crate::catalog::ChunkLocation;
use crate::crypto::ChunkId;
use crate::error::StoreResult;
use crate::format::manifest::{Extent, Manifest};
use crate::repo::Repository;

/// Ranges are merged across gaps up to this size.
const MAX_GAP: u64 = 256 * 1024;
/// Upper bound on one ranged GET (but a single blob can exceed it), which bounds the
/// memory per request in flight.
const MAX_RANGE: u64 = 4 * 1024 * 1024;

/// One chunk to read: where its blob sits in its pack, and every offset the caller
/// wants it at (disk offsets for a restore; one entry per use).
#[derive(Debug, Clone)]
pub struct Need {
    pub id: ChunkId,
    pub blob_offset: u64,
    pub blob_len: u32,
    pub raw_len: u32,
    pub offsets: Vec<u64>,
}

impl Need {
    /// The first offset this chunk is wanted at: where damage to it is reported.
    pub fn first_offset(&self) -> u64 {
        self.offsets.first().copied().unwrap_or(0)
    }
}

/// One ranged read of a pack and the chunks it yields, in pack order.
#[derive(Debug, Clone)]
pub struct FetchRange {
    pub pack: ChunkId,
    pub start: u64,
    pub end: u64,
    pub needs: Vec<Need>,
}

impl FetchRange {
    /// The lowest offset any of its chunks is wanted at.
    pub fn first_offset(&self) -> u64 {
        self.needs
            .iter()
            .flat_map(|n| n.offsets.first())
            .copied()
            .min()
            .unwrap_or(0)
    }
}

/// A chunk the catalog does not know: its data cannot be found.
#[derive(Debug, Clone)]
pub struct Unlocated {
    pub id: ChunkId,
    pub offset: u64,
}

#[derive(Debug, Default)]
pub struct ReadPlan {
    pub ranges: Vec<FetchRange>,
    pub unlocated: Vec<Unlocated>,
}

impl ReadPlan {
    /// Plans the reads of every chunk of `manifest`, each wanted at its disk offsets.
    pub async fn for_manifest(repo: &Repository, manifest: &Manifest) -> StoreResult<Self> {
        let chunks: Vec<(u64, ChunkId)> = manifest
            .extents_with_offsets()
            .filter_map(|(off, e)| match e {
                Extent::Chunk { id, .. } => Some((off, *id)),
                Extent::Zero { .. } => None,
            })
            .collect();
        Self::for_chunks(repo, chunks).await
    }

    /// Plans the reads of `(offset, chunk)` pairs; a chunk named more than once is
    /// read once and listed with all its offsets.
    pub async fn for_chunks(repo: &Repository, chunks: Vec<(u64, ChunkId)>) -> StoreResult<Self> {
        let located: Vec<(u64, ChunkId, Option<ChunkLocation>)> = repo
            .with_catalog(move |c| {
                chunks
                    .into_iter()
                    .map(|(off, id)| Ok((off, id, c.locate(&id)?)))
                    .collect()
            })
            .await?;
        let mut by_pack: BTreeMap<ChunkId, BTreeMap<u64, Need>> = BTreeMap::new();
        let mut unlocated = Vec::new();
        for (offset, id, loc) in located {
            let Some(loc) = loc else {
                unlocated.push(Unlocated { id, offset });
                continue;
            };
            by_pack
                .entry(loc.pack)
                .or_default()
                .entry(loc.offset)
                .or_insert_with(|| Need {
                    id,
                    blob_offset: loc.offset,
                    blob_len: loc.length,
                    raw_len: loc.raw_len,
                    offsets: Vec::new(),
                })
                .offsets
                .push(offset);
        }
        Ok(Self {
            ranges: coalesce(by_pack),
            unlocated,
        })
    }
}

/// Merges the chunks wanted from each pack into as few ranged reads as the gap and
/// size limits allow.
fn coalesce(by_pack: BTreeMap<ChunkId, BTreeMap<u64, Need>>) -> Vec<FetchRange> {
    let mut ranges = Vec::new();
    for (pack, needs) in by_pack {
        let mut current: Option<FetchRange> = None;
        for need in needs.into_values() {
            let end = need.blob_offset + u64::from(need.blob_len);
            match current.as_mut() {
                Some(r) if need.blob_offset <= r.end + MAX_GAP && end - r.start <= MAX_RANGE => {
                    r.end = r.end.max(end);
                    r.needs.push(need);
                }
                _ => {
                    ranges.extend(current.take());
                    current = Some(FetchRange {
                        pack,
                        start: need.blob_offset,
                        end,
                        needs: vec![need],
                    });
                }
            }
        }
        ranges.extend(current);
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(offset: u64, len: u32) -> (u64, Need) {
        let id = ChunkId::random();
        (
            offset,
            Need {
                id,
                blob_offset: offset,
                blob_len: len,
                raw_len: len,
                offsets: vec![0],
            },
        )
    }

    #[test]
    fn nearby_chunks_share_a_read_distant_ones_do_not() {
        let (p, q) = (ChunkId([1; 32]), ChunkId([2; 32]));
        let mut by_pack = BTreeMap::new();
        by_pack.insert(
            p,
            BTreeMap::from([
                need(0, 1000),
                need(1000 + MAX_GAP, 10),
                need(10 * MAX_GAP, 5),
            ]),
        );
        by_pack.insert(
            q,
            BTreeMap::from([
                need(0, (MAX_RANGE / 2) as u32),
                need(MAX_RANGE / 2, (MAX_RANGE / 2) as u32),
                need(MAX_RANGE, 1),
            ]),
        );
        let ranges = coalesce(by_pack);
        let spans: Vec<(ChunkId, u64, u64, usize)> = ranges
            .iter()
            .map(|r| (r.pack, r.start, r.end, r.needs.len()))
            .collect();
        assert_eq!(
            spans,
            vec![
                (p, 0, 1010 + MAX_GAP, 2),
                (p, 10 * MAX_GAP, 10 * MAX_GAP + 5, 1),
                (q, 0, MAX_RANGE, 2),
                (q, MAX_RANGE, MAX_RANGE + 1, 1),
            ]
        );
    }
}
