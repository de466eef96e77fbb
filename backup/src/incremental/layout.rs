//! Read-only indexes over the previous snapshot's extents and the dirty ranges.

use lifeboat_store::format::config::ChunkerParams;
use lifeboat_store::format::manifest::Extent;

use crate::piece::BLOCK;

/// [`BLOCK`] as a disk length.
pub(super) const B: u64 = BLOCK as u64;

pub(super) struct Layout<'a> {
    pub(super) size: u64,
    pub(super) chunker: ChunkerParams,
    /// `zero_run_min` as the segmenter applies it (never below one block).
    pub(super) zero_min: u64,
    prev: &'a [Extent],
    /// `offsets[i]` is where `prev[i]` starts; `offsets[prev.len()] == size`.
    offsets: Vec<u64>,
    /// The old Zero extents, in order.
    zeros: Vec<OldZero>,
    /// The old Zero extents no dirty block touches or borders: exactly the new long
    /// zero runs no dirty block touches or borders (see the module doc).
    quiet: Vec<(u64, u64)>,
    /// Dirty byte ranges: sorted, disjoint, not touching, within the disk.
    dirty: Vec<(u64, u64)>,
    /// Dirty blocks as maximal runs `[first, end)` of block indices, never touching.
    groups: Vec<(u64, u64)>,
}

struct OldZero {
    start: u64,
    end: u64,
}

impl<'a> Layout<'a> {
    /// Indexes `prev`, or says why it cannot be a segmentation made with these parameters.
    pub(super) fn new(
        prev: &'a [Extent],
        chunker: ChunkerParams,
        zero_min: u64,
        size: u64,
        dirty: &[(u64, u64)],
    ) -> Result<Self, String> {
        let mut offsets = Vec::with_capacity(prev.len() + 1);
        let mut zeros: Vec<OldZero> = Vec::new();
        let mut at = 0u64;
        for (i, extent) in prev.iter().enumerate() {
            offsets.push(at);
            let len = extent.len();
            let end = at
                .checked_add(len)
                .ok_or_else(|| "extent lengths overflow".to_string())?;
            let plausible = match extent {
                Extent::Chunk { .. } => len > 0 && len <= u64::from(chunker.max),
                // The segmenter's zero runs are whole blocks (the disk's short last block
                // aside), long enough, and maximal: never two in a row.
                Extent::Zero { .. } => {
                    at.is_multiple_of(B)
                        && (end.is_multiple_of(B) || end == size)
                        && len >= zero_min
                        && zeros.last().is_none_or(|z| z.end != at)
                }
            };
            if !plausible {
                return Err(format!(
                    "extent {i} ({extent:?} at {at}) is not a segmenter piece"
                ));
            }
            if let Extent::Zero { .. } = extent {
                zeros.push(OldZero { start: at, end });
            }
            at = end;
        }
        if at != size {
            return Err(format!("extents cover {at} bytes, the disk is {size}"));
        }
        offsets.push(size);

        let dirty = normalize(dirty, size);
        let groups = block_groups(&dirty);
        let touches = |lo: u64, hi: u64| {
            let i = dirty.partition_point(|&(_, e)| e <= lo);
            dirty.get(i).is_some_and(|&(s, _)| s < hi)
        };
        // Touched or bordered: a dirty byte in the extent or in the block on either side.
        let quiet = zeros
            .iter()
            .filter(|z| !touches(z.start.saturating_sub(B), z.end.saturating_add(B)))
            .map(|z| (z.start, z.end))
            .collect();
        Ok(Self {
            size,
            chunker,
            zero_min,
            prev,
            offsets,
            zeros,
            quiet,
            dirty,
            groups,
        })
    }

    pub(super) fn nblocks(&self) -> u64 {
        self.size.div_ceil(B)
    }

    /// The old piece starting exactly at `offset`, if any.
    pub(super) fn piece_at(&self, offset: u64) -> Option<usize> {
        self.offsets[..self.prev.len()].binary_search(&offset).ok()
    }

    /// `(start, end, extent)` of old piece `i`.
    pub(super) fn piece(&self, i: usize) -> (u64, u64, Extent) {
        (self.offsets[i], self.offsets[i + 1], self.prev[i])
    }

    /// The first dirty byte at or after `x` (`u64::MAX` if none).
    pub(super) fn first_dirty_from(&self, x: u64) -> u64 {
        let i = self.dirty.partition_point(|&(_, e)| e <= x);
        self.dirty.get(i).map_or(u64::MAX, |&(s, _)| s.max(x))
    }

    /// Where the old region containing `x` ends: the first old Zero extent starting
    /// after `x`, or the disk's end.
    pub(super) fn old_region_end_after(&self, x: u64) -> u64 {
        let i = self.zeros.partition_point(|z| z.start <= x);
        self.zeros.get(i).map_or(self.size, |z| z.start)
    }

    /// The end of the quiet old Zero extent starting at `x`, if there is one.
    pub(super) fn quiet_zero_at(&self, x: u64) -> Option<u64> {
        let i = self.quiet.partition_point(|&(s, _)| s < x);
        self.quiet.get(i).filter(|&&(s, _)| s == x).map(|&(_, e)| e)
    }

    /// The start of the first quiet old Zero extent starting after `x`, or the disk's end.
    pub(super) fn quiet_zero_start_after(&self, x: u64) -> u64 {
        let i = self.quiet.partition_point(|&(s, _)| s <= x);
        self.quiet.get(i).map_or(self.size, |&(s, _)| s)
    }

    pub(super) fn groups(&self) -> &[(u64, u64)] {
        &self.groups
    }

    pub(super) fn is_dirty_block(&self, b: u64) -> bool {
        let i = self.groups.partition_point(|&(_, e)| e <= b);
        self.groups.get(i).is_some_and(|&(s, _)| s <= b)
    }

    /// The block range `[first, end)` of the old Zero extent containing block `b`.
    pub(super) fn old_zero_blocks(&self, b: u64) -> Option<(u64, u64)> {
        let x = b * B;
        let i = self.zeros.partition_point(|z| z.start <= x);
        let z = self.zeros.get(i.checked_sub(1)?)?;
        (x < z.end).then(|| (z.start / B, z.end.div_ceil(B)))
    }

    /// A clean block inside an old Zero extent: zero now, without reading it.
    pub(super) fn is_clean_zero_block(&self, b: u64) -> bool {
        self.old_zero_blocks(b).is_some() && !self.is_dirty_block(b)
    }

    /// Whether block `b` (not itself in an old Zero extent) borders one. Old Zero
    /// extents are maximal zero runs, so such a block was not zero; if it is clean, it
    /// still is not.
    pub(super) fn borders_old_zero(&self, b: u64) -> bool {
        (b > 0 && self.old_zero_blocks(b - 1).is_some())
            || (b + 1 < self.nblocks() && self.old_zero_blocks(b + 1).is_some())
    }
}

/// Sorts, clips to the disk, drops empty ranges and merges overlapping or touching
/// ones. Merging only ever marks more bytes dirty, which is always safe.
pub(crate) fn normalize(dirty: &[(u64, u64)], size: u64) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = dirty
        .iter()
        .map(|&(s, e)| (s.min(size), e.min(size)))
        .filter(|&(s, e)| s < e)
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

/// The blocks the (normalized) dirty ranges touch, as maximal runs of block indices.
fn block_groups(dirty: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut groups: Vec<(u64, u64)> = Vec::with_capacity(dirty.len());
    for &(s, e) in dirty {
        let (first, end) = (s / B, e.div_ceil(B));
        match groups.last_mut() {
            Some(last) if first <= last.1 => last.1 = last.1.max(end),
            _ => groups.push((first, end)),
        }
    }
    groups
}
