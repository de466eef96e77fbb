//! Turning a manifest into a fetch plan: which byte ranges of which packs to read, and
//! where each chunk goes on the disk.

use std::collections::BTreeMap;

use lifeboat_store::catalog::ChunkLocation;
use lifeboat_store::format::manifest::{Extent, Manifest};
use lifeboat_store::{ChunkId, Repository, StoreResult};

/// Ranges are merged across gaps up to this size: reading a little waste is cheaper
/// than another request.
const MAX_GAP: u64 = 256 * 1024;
/// Upper bound on one ranged GET (but a single blob can exceed it), which bounds the
/// memory per request in flight.
const MAX_RANGE: u64 = 4 * 1024 * 1024;

/// One chunk to restore: where it sits in its pack, and every disk offset it fills.
#[derive(Debug, Clone)]
pub struct Need {
    pub id: ChunkId,
    pub blob_offset: u64,
    pub blob_len: u32,
    pub disk_offsets: Vec<u64>,
}

/// One ranged read of a pack and the chunks it yields.
#[derive(Debug, Clone)]
pub struct FetchRange {
    pub pack: ChunkId,
    pub start: u64,
    pub end: u64,
    pub needs: Vec<Need>,
}

/// A chunk the catalog does not know: its data cannot be found.
#[derive(Debug, Clone)]
pub struct Unlocated {
    pub id: ChunkId,
    pub disk_offset: u64,
}

pub struct Plan {
    pub ranges: Vec<FetchRange>,
    pub unlocated: Vec<Unlocated>,
}

/// Looks every chunk of `manifest` up in the catalog and groups them into ranges.
pub async fn plan(repo: &Repository, manifest: &Manifest) -> StoreResult<Plan> {
    let chunks: Vec<(u64, ChunkId)> = manifest
        .extents_with_offsets()
        .filter_map(|(off, e)| match e {
            Extent::Chunk { id, .. } => Some((off, *id)),
            Extent::Zero { .. } => None,
        })
        .collect();
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
    for (disk_offset, id, loc) in located {
        let Some(loc) = loc else {
            unlocated.push(Unlocated { id, disk_offset });
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
                disk_offsets: Vec::new(),
            })
            .disk_offsets
            .push(disk_offset);
    }
    Ok(Plan {
        ranges: coalesce(by_pack),
        unlocated,
    })
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
                disk_offsets: vec![0],
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
