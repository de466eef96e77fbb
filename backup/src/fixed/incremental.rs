//! Incremental backups of fixed-size-chunked disks: the exact pieces a full
//! [`FixedSegmenter`](super::FixedSegmenter) pass over the current image would produce,
//! reading only the cells a dirty range touches.
//!
//! A cell no dirty range touches holds the same bytes as in the previous image, so it
//! is classified the same: an old chunk cell is reused as is, and an old zero cell is
//! still zero. Dirty cells are read and classified afresh. Zero cells, old and new,
//! are merged into maximal runs on the way out, exactly as the full segmenter merges
//! them. So an incremental manifest equals a full backup's by construction; the
//! property test below checks it against the segmenter anyway.
//!
//! The previous snapshot must itself be a fixed-cell segmentation with this cell size
//! (every chunk one aligned cell, zero extents whole cells and never two in a row);
//! [`Plan::new`] says why when it is not, and the caller reads the whole disk.

use std::io;

use lifeboat_store::format::manifest::Extent;

use crate::incremental::layout::normalize;
use crate::incremental::{IncrementalStats, Step};
use crate::piece::{Piece, is_zero};

/// What to read and how to walk the previous snapshot.
#[derive(Debug)]
pub struct Plan<'a> {
    prev: &'a [Extent],
    cell: u64,
    size: u64,
    /// Dirty cells as sorted, disjoint, non-touching runs `[first, end)` of cell indices.
    dirty: Vec<(u64, u64)>,
}

impl<'a> Plan<'a> {
    /// Checks `prev` against the cell grid and maps the dirty byte ranges to cells
    /// (ranges may over-report, overlap and come in any order).
    pub fn new(
        prev: &'a [Extent],
        cell_size: u32,
        size: u64,
        dirty: &[(u64, u64)],
    ) -> Result<Self, String> {
        let cell = u64::from(cell_size);
        let mut at = 0u64;
        let mut last_was_zero = false;
        for extent in prev {
            if !at.is_multiple_of(cell) {
                return Err(format!(
                    "an extent starts at {at}, not on a {cell}-byte cell"
                ));
            }
            let len = extent.len();
            let end = at
                .checked_add(len)
                .filter(|&end| end <= size)
                .ok_or_else(|| format!("extents run past the disk's {size} bytes"))?;
            match extent {
                Extent::Chunk { .. } if len == 0 || len != cell.min(size - at) => {
                    return Err(format!("a {len}-byte chunk at {at} is not one cell"));
                }
                Extent::Zero { .. }
                    if len == 0 || last_was_zero || !(end.is_multiple_of(cell) || end == size) =>
                {
                    return Err(format!("the zero extent at {at} is not a maximal cell run"));
                }
                _ => {}
            }
            last_was_zero = matches!(extent, Extent::Zero { .. });
            at = end;
        }
        if at != size {
            return Err(format!("extents cover {at} bytes of a {size}-byte disk"));
        }
        // Widened to whole cells, then clipped, sorted and merged: runs of cells.
        let widened: Vec<(u64, u64)> = dirty
            .iter()
            .map(|&(start, end)| {
                (
                    start / cell * cell,
                    end.saturating_add(cell - 1) / cell * cell,
                )
            })
            .collect();
        let merged = normalize(&widened, size)
            .into_iter()
            .map(|(start, end)| (start / cell, end.div_ceil(cell)))
            .collect();
        Ok(Self {
            prev,
            cell,
            size,
            dirty: merged,
        })
    }

    /// The byte ranges to read, in disk order, in pieces of at most `max_read` bytes
    /// that end on cell boundaries (so each cell arrives whole in one read).
    pub fn reads(&self, max_read: u64) -> Vec<(u64, u64)> {
        let step = (max_read / self.cell).max(1) * self.cell;
        let mut reads = Vec::new();
        for &(first, end) in &self.dirty {
            let (mut at, stop) = (first * self.cell, (end * self.cell).min(self.size));
            while at < stop {
                let next = at.saturating_add(step).min(stop);
                reads.push((at, next));
                at = next;
            }
        }
        reads
    }

    /// Bytes the dirty cells cover: what [`Plan::walk`] will ask `read_cell` for.
    pub fn bytes_to_read(&self) -> u64 {
        self.reads(u64::MAX).iter().map(|(s, e)| e - s).sum()
    }

    /// Emits the new image's pieces in disk order. `read_cell(offset, len)` must
    /// return the current bytes of each dirty cell; it is called in ascending order.
    pub fn walk(
        &self,
        read_cell: &mut dyn FnMut(u64, usize) -> io::Result<Vec<u8>>,
        emit: &mut dyn FnMut(Step),
    ) -> io::Result<IncrementalStats> {
        let mut out = Merger {
            zero: None,
            emit,
            stats: IncrementalStats::default(),
        };
        let mut next_dirty = 0usize;
        let mut offset = 0u64;
        for extent in self.prev {
            let end = offset + extent.len();
            let (c0, c1) = (offset / self.cell, end.div_ceil(self.cell));
            while next_dirty < self.dirty.len() && self.dirty[next_dirty].1 <= c0 {
                next_dirty += 1;
            }
            let touched = self.dirty.get(next_dirty).is_some_and(|d| d.0 < c1);
            match extent {
                _ if !touched => out.reuse(offset, *extent),
                // A chunk is one cell, so a touched chunk is a dirty cell.
                Extent::Chunk { .. } => {
                    let data = read_cell(offset, extent.len() as usize)?;
                    out.stats.bytes_read += data.len() as u64;
                    out.cell(offset, data);
                }
                Extent::Zero { .. } => {
                    let mut c = c0;
                    while c < c1 {
                        let at = c * self.cell;
                        let run = self.dirty.get(next_dirty).copied();
                        match run {
                            Some((first, last)) if first <= c => {
                                let len = self.cell.min(self.size - at);
                                let data = read_cell(at, len as usize)?;
                                out.stats.bytes_read += len;
                                out.cell(at, data);
                                c += 1;
                                if c >= last {
                                    next_dirty += 1;
                                }
                            }
                            _ => {
                                // Clean cells of an old zero run, up to the next dirty one.
                                let stop = run.map_or(c1, |(first, _)| first.min(c1));
                                let stop_at = (stop * self.cell).min(end);
                                out.zero(at, stop_at - at);
                                c = stop;
                            }
                        }
                    }
                }
            }
            offset = end;
        }
        out.flush_zero();
        Ok(out.stats)
    }
}

/// Merges neighbouring zero cells into one zero piece, as the full segmenter does.
struct Merger<'e> {
    /// Pending zero run: start and length.
    zero: Option<(u64, u64)>,
    emit: &'e mut dyn FnMut(Step),
    stats: IncrementalStats,
}

impl Merger<'_> {
    fn reuse(&mut self, offset: u64, extent: Extent) {
        match extent {
            Extent::Zero { len } => self.zero(offset, len),
            Extent::Chunk { .. } => {
                self.flush_zero();
                (self.emit)(Step::Reuse { offset, extent });
                self.stats.extents_reused += 1;
            }
        }
    }

    fn cell(&mut self, offset: u64, data: Vec<u8>) {
        if is_zero(&data) {
            self.zero(offset, data.len() as u64);
            return;
        }
        self.flush_zero();
        (self.emit)(Step::Piece(Piece::Chunk { offset, data }));
        self.stats.pieces_recomputed += 1;
    }

    fn zero(&mut self, offset: u64, len: u64) {
        match &mut self.zero {
            Some((_, pending)) => *pending += len,
            None => self.zero = Some((offset, len)),
        }
    }

    fn flush_zero(&mut self) {
        if let Some((offset, len)) = self.zero.take() {
            (self.emit)(Step::Piece(Piece::Zero { offset, len }));
            self.stats.pieces_recomputed += 1;
        }
    }
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
