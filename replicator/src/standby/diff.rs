//! What a new point must write on top of the previous one: the two manifests
//! compared by disk offset.
//!
//! A chunk of the new manifest is unchanged when the previous manifest has the same
//! chunk (id and length) at the same offset: equal keyed ids mean equal bytes. Every
//! other chunk is written whole (chunk granularity: the repository holds no finer
//! unit). A zero run of the new manifest is written as zeros only where the
//! previous point held data; where it already read as zeros (a zero run, or beyond
//! the end of a smaller previous disk, which an overlay reads as zeros) nothing is
//! written.

use std::collections::HashMap;

use lifeboat_store::ChunkId;
use lifeboat_store::format::manifest::{Extent, Manifest};

/// What the image under the new point reads as.
pub(crate) enum Below<'a> {
    /// Nothing: a new, empty image (the first point). Zeros need no writing.
    Empty,
    /// The previous point, whose manifest is known.
    Point(&'a Manifest),
    /// A previous point whose manifest is gone from the repository: assume nothing,
    /// write every chunk and every zero run.
    Unknown,
}

/// The writes that turn what is below into the new manifest.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// `(disk offset, chunk)` to write, in disk order.
    pub(crate) chunks: Vec<(u64, ChunkId)>,
    /// `(offset, length)` ranges to zero, in disk order, adjacent ones merged.
    pub(crate) zeroes: Vec<(u64, u64)>,
    /// Bytes of chunk data the plan writes.
    pub(crate) data_bytes: u64,
    /// Bytes the plan zeroes.
    pub(crate) zero_bytes: u64,
}

pub(crate) fn plan(below: Below<'_>, new: &Manifest) -> Plan {
    let old_chunks: HashMap<u64, (ChunkId, u32)> = match &below {
        Below::Point(old) => old
            .extents_with_offsets()
            .filter_map(|(off, e)| match e {
                Extent::Chunk { id, len } => Some((off, (*id, *len))),
                Extent::Zero { .. } => None,
            })
            .collect(),
        _ => HashMap::new(),
    };
    // The previous point's data ranges, in disk order, for the zero-run overlap.
    let old_data: Vec<(u64, u64)> = match &below {
        Below::Point(old) => merged(
            old.extents_with_offsets()
                .filter(|(_, e)| matches!(e, Extent::Chunk { .. }))
                .map(|(off, e)| (off, e.len())),
        ),
        _ => Vec::new(),
    };
    let mut out = Plan::default();
    let mut zeroes = Vec::new();
    for (off, e) in new.extents_with_offsets() {
        match e {
            Extent::Chunk { id, len } => {
                if old_chunks.get(&off) != Some(&(*id, *len)) {
                    out.chunks.push((off, *id));
                    out.data_bytes += u64::from(*len);
                }
            }
            Extent::Zero { len } => match below {
                Below::Empty => {}
                Below::Unknown => zeroes.push((off, *len)),
                Below::Point(_) => overlap(&old_data, off, off + len, &mut zeroes),
            },
        }
    }
    out.zeroes = merged(zeroes.into_iter());
    out.zero_bytes = out.zeroes.iter().map(|z| z.1).sum();
    out
}

/// Pushes the parts of `[start, end)` that `data` (sorted, disjoint) covers.
fn overlap(data: &[(u64, u64)], start: u64, end: u64, out: &mut Vec<(u64, u64)>) {
    // First range that ends after `start`.
    let first = data.partition_point(|&(o, l)| o + l <= start);
    for &(o, l) in &data[first..] {
        if o >= end {
            break;
        }
        let (a, b) = (o.max(start), (o + l).min(end));
        if a < b {
            out.push((a, b - a));
        }
    }
}

/// Sorted `(offset, len)` ranges with adjacent ones joined.
fn merged(ranges: impl Iterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (o, l) in ranges.filter(|r| r.1 > 0) {
        match out.last_mut() {
            Some(last) if last.0 + last.1 == o => last.1 += l,
            _ => out.push((o, l)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_store::format::manifest::SnapshotMeta;

    fn manifest(extents: Vec<Extent>) -> Manifest {
        let size = extents.iter().map(Extent::len).sum();
        Manifest {
            meta: SnapshotMeta {
                vm: "vm".into(),
                disk: "root".into(),
                source: String::new(),
                size,
                time: String::new(),
                host: String::new(),
                tags: Vec::new(),
                parent: None,
                cbt_bitmap: None,
                lifeboat_version: String::new(),
                replicated_from: None,
                vm_definition: None,
            },
            extents,
        }
    }

    fn chunk(n: u8, len: u32) -> Extent {
        Extent::Chunk {
            id: ChunkId([n; 32]),
            len,
        }
    }

    #[test]
    fn only_changed_chunks_and_newly_zeroed_data_are_written() {
        let old = manifest(vec![
            chunk(1, 100),
            chunk(2, 100),
            Extent::Zero { len: 100 },
            chunk(3, 100),
        ]);
        let new = manifest(vec![
            chunk(1, 100), // same chunk, same place: skipped
            chunk(9, 100), // changed
            chunk(2, 100), // moved: written
            Extent::Zero { len: 150 }, // [300, 400) was data: zeroed;
                           // [400, 450) is beyond the old end: nothing
        ]);
        let p = plan(Below::Point(&old), &new);
        assert_eq!(
            p.chunks,
            vec![(100, ChunkId([9; 32])), (200, ChunkId([2; 32]))]
        );
        assert_eq!(p.zeroes, vec![(300, 100)]);
        assert_eq!((p.data_bytes, p.zero_bytes), (200, 100));
    }

    #[test]
    fn a_first_point_writes_data_only_and_an_unknown_one_everything() {
        let new = manifest(vec![chunk(1, 10), Extent::Zero { len: 10 }, chunk(1, 10)]);
        let first = plan(Below::Empty, &new);
        assert_eq!(first.chunks.len(), 2);
        assert!(first.zeroes.is_empty());
        let unknown = plan(Below::Unknown, &new);
        assert_eq!(unknown.zeroes, vec![(10, 10)]);
        assert_eq!(plan(Below::Point(&new), &new), Plan::default());
    }
}
