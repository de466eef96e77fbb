//! Reads of the current image in aligned grains, cached while they may be needed.

use std::collections::BTreeMap;
use std::io;

use super::layout::{B, Layout};
use super::read_at::ReadAt;
use crate::piece::is_zero;

/// Largest read unit: big enough for few round trips to an NBD export, small enough
/// not to read much past a resynchronisation point.
const MAX_GRAIN: u64 = 256 * 1024;

pub(super) struct Fetcher<'a> {
    image: &'a dyn ReadAt,
    layout: &'a Layout<'a>,
    grain: u64,
    /// Loaded grains by index. The walk only moves forward, so grains below it are
    /// dropped; the scanner runs at most a bounded distance ahead of it.
    grains: BTreeMap<u64, Vec<u8>>,
    pub(super) bytes_read: u64,
}

impl<'a> Fetcher<'a> {
    pub(super) fn new(image: &'a dyn ReadAt, layout: &'a Layout<'a>) -> Self {
        // A quarter of an average chunk: a cut is found after a few grains, and the
        // read overshoots the point where the walk resynchronises by less than one.
        let grain = (u64::from(layout.chunker.avg) / 4 / B * B).clamp(B, MAX_GRAIN);
        Self {
            image,
            layout,
            grain,
            grains: BTreeMap::new(),
            bytes_read: 0,
        }
    }

    pub(super) fn grain(&self) -> u64 {
        self.grain
    }

    fn load(&mut self, index: u64) -> io::Result<&[u8]> {
        use std::collections::btree_map::Entry;
        match self.grains.entry(index) {
            Entry::Occupied(grain) => Ok(grain.into_mut()),
            Entry::Vacant(slot) => {
                let start = index * self.grain;
                let end = (start + self.grain).min(self.layout.size);
                let mut data = vec![0u8; (end - start) as usize];
                // Clean blocks of old Zero extents are zero: leave them unread.
                let mut b = start / B;
                let last = end.div_ceil(B);
                while b < last {
                    if self.layout.is_clean_zero_block(b) {
                        b += 1;
                        continue;
                    }
                    let first = b;
                    while b < last && !self.layout.is_clean_zero_block(b) {
                        b += 1;
                    }
                    let (lo, hi) = (first * B, (b * B).min(end));
                    let slice = &mut data[(lo - start) as usize..(hi - start) as usize];
                    self.image.read_at(slice, lo)?;
                    self.bytes_read += hi - lo;
                }
                Ok(slot.insert(data))
            }
        }
    }

    /// Appends the image bytes `[start, end)` to `out`.
    pub(super) fn copy_to(&mut self, start: u64, end: u64, out: &mut Vec<u8>) -> io::Result<()> {
        let mut at = start;
        while at < end {
            let index = at / self.grain;
            let grain_start = index * self.grain;
            let grain = self.load(index)?;
            let from = (at - grain_start) as usize;
            let to = ((end - grain_start) as usize).min(grain.len());
            out.extend_from_slice(&grain[from..to]);
            at = grain_start + to as u64;
        }
        Ok(())
    }

    /// Whether block `b` of the current image is all zeros.
    pub(super) fn block_is_zero(&mut self, b: u64) -> io::Result<bool> {
        if self.layout.is_clean_zero_block(b) {
            return Ok(true);
        }
        let start = b * B;
        let index = start / self.grain;
        let from = (start - index * self.grain) as usize;
        let grain = self.load(index)?;
        let to = (from + B as usize).min(grain.len());
        Ok(is_zero(&grain[from..to]))
    }

    /// Drops grains that end at or before `pos`.
    pub(super) fn forget_below(&mut self, pos: u64) {
        while let Some(entry) = self.grains.first_entry() {
            if (*entry.key() + 1) * self.grain > pos {
                break;
            }
            entry.remove();
        }
    }

    /// Drops grains lying entirely within `[lo, hi)` (the inside of a long zero run,
    /// which is never chunked), so scanning a huge zeroed range keeps memory flat.
    pub(super) fn forget_within(&mut self, lo: u64, hi: u64) {
        let first = lo.div_ceil(self.grain);
        let end = hi / self.grain;
        if first >= end {
            return;
        }
        let doomed: Vec<u64> = self.grains.range(first..end).map(|(&k, _)| k).collect();
        for k in doomed {
            self.grains.remove(&k);
        }
    }
}
