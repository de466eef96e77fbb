//! Incremental segmentation driven by changed-block tracking: the exact pieces a full
//! [`Segmenter`] pass over the current image would produce, computed by reading only
//! around the byte ranges CBT reports dirty and reusing the previous snapshot's
//! extents everywhere else. An incremental backup's manifest is therefore identical
//! to the one a full backup of the same image would commit.
//!
//! # What has to be reproduced
//!
//! The segmenter's output is a pure function of the image: the image is classified in
//! aligned 4 KiB blocks (the last may be short); maximal runs of zero blocks at least
//! `zero_run_min` long ("long runs") become Zero pieces; the data between long runs
//! forms *regions*, each cut with FastCDC from its own start, the region's end
//! truncating its last chunk. (The segmenter cuts a huge region in instalments, but
//! every chunk it emits early ends strictly inside the data it holds, at a hash cut or
//! at `max`, so by fact 2 below it is the chunk one pass over the whole region would
//! produce.)
//!
//! Write `limit(u) = min(max, region_end - u)` for a chunk starting at `u`: fastcdc's
//! 2020 cut gives that chunk as `cut(image[u..u + limit(u)])`. Two facts about that
//! function make restarts possible:
//!
//! 1. **Locality.** `cut` examines positions from about `min` up to (not including)
//!    `2 * (limit / 2)`, in order, with a gear hash that starts afresh at each chunk,
//!    and stops at the first position whose hash matches the mask; the byte there
//!    becomes the first byte of the *next* chunk. So a chunk `[u, v)` depends only on
//!    `limit(u)` and on the bytes `[u, v]` if it ended at a hash match (a "hash cut",
//!    exactly when `v - u < limit(u)`), or `[u, v)` otherwise — not on the region's
//!    start nor on any earlier chunk.
//! 2. **Changing the limit.** The limit only decides how far the scan goes and where
//!    the stricter mask stops applying (`min(avg, limit)`); for two limits the masks
//!    agree on every position both examine. So a hash cut at `len` under one limit is
//!    the cut under any other limit that still examines position `len`
//!    (`len < 2 * (limit / 2)`), and a cut whose limit does not change does not change.
//!    In particular a hash cut found in a prefix of a chunk's data is final, which is
//!    how chunks are cut here from data read a grain at a time.
//!
//! # The zero structure
//!
//! A block is *dirty* if a dirty range touches it; every other block is identical to
//! the previous image's. A long run whose blocks and both neighbouring blocks are clean
//! is the same maximal run in both images, so the old Zero extents that no dirty block
//! touches or borders ("quiet" ones) are exactly the new long runs that no dirty block
//! touches or borders. Every other new long run contains or borders a dirty block, and
//! the scanner (`scanner.rs`) finds those by classifying the dirty blocks and walking
//! outward from each group of them across zero blocks: clean blocks of old Zero extents
//! are zero without a read, a clean block bordering an old Zero extent is not zero (old
//! Zero extents are maximal), and any other clean zero stretch next to a dirty block
//! belonged to a short run of the old image, so less than `zero_run_min` of it is read.
//! A clean zero stretch bordering a non-zero dirty block and lying outside old Zero
//! extents is short in both images and needs no look at all. So a write of zeros next
//! to a short zero run that makes it long, a data write that splits or trims a Zero
//! extent (possibly merging two regions), dirty ranges that are not block aligned and
//! the short last block are all seen exactly, for the price of reading dirty blocks and
//! short stretches beside them. The scan is lazy, staying about `max + zero_run_min`
//! ahead of the walk.
//!
//! # The walk and the resynchronisation condition
//!
//! [`incremental_pieces`] walks the disk keeping one invariant: `pos` is a piece
//! boundary of the new segmentation, and every piece before it has been emitted
//! exactly. At `pos` it either reuses the old piece starting there (if one does and
//! passes the condition below), or computes the new piece: a Zero piece if a new long
//! run starts at `pos`, otherwise the chunk `cut(image[pos..pos + limit(pos)])`, with
//! the region end taken from the zero structure. Either way the invariant carries
//! over to the piece's end.
//!
//! **Resynchronisation condition.** The old piece `[u, v)` at `pos = u` is reused iff
//! * it is a Zero extent and `[u, v)` is also a new long run (it is quiet, or the
//!   scanner found a run with the same start and end); or
//! * it is a chunk, no new long run starts at `u`, no dirty byte lies in `[u, v]`
//!   (in `[u, v)` if the old cut was not a hash cut), and either the new limit at `u`
//!   equals the old one, or the old cut was a hash cut at a position the new limit
//!   still examines.
//!
//! **Why it is sufficient.** Since `u` is a new boundary and no long run starts
//! there, a new chunk starts at `u`, and it is `cut(new[u..u + new_limit])`. The old
//! chunk was `cut(old[u..u + old_limit])`; the bytes it depends on (fact 1) are clean,
//! so identical, and by fact 2 the two limits give the same cut. So the new chunk is
//! `[u, v)` with the old bytes — reusing the old extent (same id) is exact — and `v` is
//! again a new boundary. For a Zero extent it is immediate. Note that the condition
//! looks only at the piece itself and the zero structure around it, so it is checked
//! piece by piece: reuse continues until the first old piece that fails it, and
//! computation continues until the walk lands on an old boundary whose piece passes.
//!
//! The condition catches each way an old piece can go stale: bytes changed (the dirty
//! test, including the byte just after a hash cut, so a chunk ending exactly where a
//! write starts is redone); a new Zero piece at its start (a zero write, or a Zero
//! extent that grew or moved); a region end that moved (a new long run within `max`
//! after `u` shrinks the limit, and only chunks whose cut lies beyond the new reach are
//! redone; a vanished or trimmed Zero extent lengthens it, which invalidates only a
//! region's truncated last chunk). Dirty ranges at the disk's start or end, dirty
//! ranges closer together than a chunk (the walk just keeps computing) and unaligned
//! ranges need no special case.
//!
//! # Cost
//!
//! For data written inside a large data region, the walk re-chunks from the old chunk
//! holding the byte before the first dirty byte (on average about half a chunk
//! earlier) across the dirty bytes, and resynchronises at the first new cut that
//! coincides with an old one, usually the first or second after the dirty bytes. It
//! reads in grains of `avg / 4` (4 KiB to 256 KiB), so about the dirty bytes plus one to
//! two average chunks per dirty range. A region end that moves re-chunks only the
//! chunks within `max` before it whose cut it can change, usually just the one it
//! falls in. Data on which FastCDC only makes max-size cuts (long constant stretches)
//! may not resynchronise before its region ends, because there the cut points really
//! do all move. Memory stays bounded by about `max + zero_run_min` of image data.
//!
//! If `prev` could not have come from the segmenter with these parameters (wrong total,
//! misaligned, short or adjacent Zero extents, oversized chunks), the whole image is
//! segmented instead: correctness first.

mod fetch;
pub(crate) mod layout;
pub(crate) mod read_at;
mod scanner;
#[cfg(test)]
mod tests;

use std::io;

use fastcdc::v2020::FastCDC;
use lifeboat_store::format::config::ChunkerParams;
use lifeboat_store::format::manifest::Extent;

use crate::piece::{BLOCK, Piece};
use crate::segmenter::Segmenter;
use fetch::Fetcher;
use layout::Layout;
pub use read_at::ReadAt;
use scanner::Scanner;

/// One step of the new image's description, in disk order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The previous snapshot's extent at this offset is unchanged: reuse it as is.
    Reuse { offset: u64, extent: Extent },
    /// A piece that had to be recomputed (chunk data to hash/store, or a zero run).
    Piece(Piece),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IncrementalStats {
    /// Bytes read from the image.
    pub bytes_read: u64,
    pub pieces_recomputed: u64,
    pub extents_reused: u64,
}

/// Emits, in disk order, steps whose concatenation is exactly what [`Segmenter`] emits
/// for the current image.
///
/// `prev`: the previous snapshot's extents (they cover exactly `size` bytes — caller
/// guarantees the disk size did not change). `dirty`: byte ranges `[start, end)` that
/// may differ from the previous image; everything else must be identical (ranges may
/// over-report; they are sorted, clipped and merged here anyway).
pub fn incremental_pieces(
    prev: &[Extent],
    chunker: ChunkerParams,
    zero_run_min: u32,
    size: u64,
    dirty: &[(u64, u64)],
    image: &dyn ReadAt,
    emit: &mut dyn FnMut(Step),
) -> io::Result<IncrementalStats> {
    // The segmenter never lets a zero run shorter than a block stand alone.
    let zero_min = u64::from(zero_run_min.max(BLOCK as u32));
    let layout = match Layout::new(prev, chunker, zero_min, size, dirty) {
        Ok(layout) => layout,
        Err(why) => {
            tracing::warn!(
                "previous snapshot unusable for an incremental read ({why}); reading the whole disk"
            );
            return segment_everything(chunker, zero_run_min, size, image, emit);
        }
    };
    let mut walk = Walk {
        layout: &layout,
        fetcher: Fetcher::new(image, &layout),
        scanner: Scanner::new(),
        buf: Vec::new(),
        buf_start: 0,
        stats: IncrementalStats::default(),
    };
    walk.run(emit)?;
    Ok(IncrementalStats {
        bytes_read: walk.fetcher.bytes_read,
        ..walk.stats
    })
}

struct Walk<'a> {
    layout: &'a Layout<'a>,
    fetcher: Fetcher<'a>,
    scanner: Scanner,
    /// Image bytes from `buf_start` on, read for the chunk being cut.
    buf: Vec<u8>,
    buf_start: u64,
    stats: IncrementalStats,
}

impl Walk<'_> {
    fn run(&mut self, emit: &mut dyn FnMut(Step)) -> io::Result<()> {
        let mut pos = 0;
        while pos < self.layout.size {
            self.fetcher.forget_below(pos);
            self.scanner.forget_before(pos);
            if let Some(i) = self.layout.piece_at(pos)
                && self.reusable(i)?
            {
                let (offset, end, extent) = self.layout.piece(i);
                emit(Step::Reuse { offset, extent });
                self.stats.extents_reused += 1;
                pos = end;
                continue;
            }
            let piece = self.new_piece(pos)?;
            pos = match &piece {
                Piece::Chunk { offset, data } => offset + data.len() as u64,
                Piece::Zero { offset, len } => offset + len,
            };
            emit(Step::Piece(piece));
            self.stats.pieces_recomputed += 1;
        }
        Ok(())
    }

    /// The resynchronisation condition (module doc) for old piece `i`, whose start is
    /// a boundary of the new segmentation.
    fn reusable(&mut self, i: usize) -> io::Result<bool> {
        let (u, v, extent) = self.layout.piece(i);
        if let Extent::Zero { .. } = extent {
            return Ok(self.new_run_at(u)? == Some(v));
        }
        let len = v - u;
        let max = u64::from(self.layout.chunker.max);
        let old_limit = max.min(self.layout.old_region_end_after(u) - u);
        // Fact 1: anything shorter than the limit is a hash cut, decided by the byte at `v`.
        let hash_cut = len < old_limit;
        let depends_until = if hash_cut { v + 1 } else { v };
        if self.layout.first_dirty_from(u) < depends_until || self.new_run_at(u)?.is_some() {
            return Ok(false);
        }
        // Fact 2: the same limit gives the same cut; another one keeps a hash cut it examines.
        let new_limit = self.new_limit(u)?;
        Ok(new_limit == old_limit || (hash_cut && len < 2 * (new_limit / 2)))
    }

    /// The end of the new long run starting at `at`, if one does.
    fn new_run_at(&mut self, at: u64) -> io::Result<Option<u64>> {
        if let Some(end) = self.layout.quiet_zero_at(at) {
            return Ok(Some(end));
        }
        self.scanner.run_at(self.layout, &mut self.fetcher, at)
    }

    /// `min(max, new region end - at)` for a chunk starting at `at`.
    fn new_limit(&mut self, at: u64) -> io::Result<u64> {
        let max = u64::from(self.layout.chunker.max);
        // A region end at or beyond `at + max` leaves the limit at `max`.
        let reach = (at + max).min(self.layout.size);
        self.scanner.settle(self.layout, &mut self.fetcher, reach)?;
        let region_end = self.layout.quiet_zero_start_after(at).min(
            self.scanner
                .first_start_after(self.layout, at)
                .unwrap_or(u64::MAX),
        );
        Ok(max.min(region_end - at))
    }

    /// The new piece starting at `pos`, a boundary of the new segmentation.
    fn new_piece(&mut self, pos: u64) -> io::Result<Piece> {
        if let Some(end) = self.new_run_at(pos)? {
            return Ok(Piece::Zero {
                offset: pos,
                len: end - pos,
            });
        }
        let limit = self.new_limit(pos)?;
        let len = self.cut(pos, limit)?;
        let rest = self.buf.split_off(len as usize);
        let data = std::mem::replace(&mut self.buf, rest);
        self.buf_start = pos + len;
        Ok(Piece::Chunk { offset: pos, data })
    }

    /// Length of the chunk FastCDC cuts at `pos` when it may be at most `limit` long.
    /// Reads a grain at a time: a hash cut inside the data read so far is final (fact 2).
    fn cut(&mut self, pos: u64, limit: u64) -> io::Result<u64> {
        self.seek(pos);
        let ChunkerParams { min, avg, max } = self.layout.chunker;
        let grain = self.fetcher.grain();
        // Nothing is cut before `min`: start with that, rounded up to whole grains.
        let mut want = limit.min((pos + u64::from(min) + 1).next_multiple_of(grain) - pos);
        loop {
            let have = self.buf_start + self.buf.len() as u64;
            if pos + want > have {
                self.fetcher.copy_to(have, pos + want, &mut self.buf)?;
            }
            let data = &self.buf[..want as usize];
            let len = FastCDC::new(data, min, avg, max)
                .next()
                .map_or(want, |c| c.length as u64);
            if len < want || want == limit {
                return Ok(len);
            }
            want = limit.min(want + grain);
        }
    }

    /// Makes `buf` start at `pos`, keeping what was already read beyond it.
    fn seek(&mut self, pos: u64) {
        let end = self.buf_start + self.buf.len() as u64;
        if (self.buf_start..=end).contains(&pos) {
            self.buf.drain(..(pos - self.buf_start) as usize);
        } else {
            self.buf.clear();
        }
        self.buf_start = pos;
    }
}

/// The fallback: a full segmenter pass over the whole image.
fn segment_everything(
    chunker: ChunkerParams,
    zero_run_min: u32,
    size: u64,
    image: &dyn ReadAt,
    emit: &mut dyn FnMut(Step),
) -> io::Result<IncrementalStats> {
    const READ: u64 = 1 << 20;
    let mut pieces = 0;
    let mut segmenter = Segmenter::new(chunker, zero_run_min, |piece| {
        pieces += 1;
        emit(Step::Piece(piece));
    });
    let mut buf = vec![0u8; READ.min(size) as usize];
    let mut at = 0;
    while at < size {
        let n = READ.min(size - at) as usize;
        image.read_at(&mut buf[..n], at)?;
        segmenter.feed(&buf[..n]);
        at += n as u64;
    }
    segmenter.finish();
    Ok(IncrementalStats {
        bytes_read: size,
        pieces_recomputed: pieces,
        extents_reused: 0,
    })
}
