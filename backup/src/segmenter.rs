//! Splits a disk's byte stream into zero runs and content-defined chunks.
//!
//! The disk is classified in aligned 4 KiB blocks. Runs of all-zero blocks at least
//! `zero_run_min` long become zero extents (never read twice, never stored); the data
//! between them forms *regions*, each cut with FastCDC (2020) from its own start.
//!
//! The output depends only on the disk's content — not on how reads were split, nor on
//! which zero ranges were sparse holes and which were written zeros. That is what lets
//! two hosts, or a full and an incremental backup, produce identical manifests.

use fastcdc::v2020::FastCDC;
use lifeboat_store::format::config::{ChunkerParams, RepoConfig};

use crate::fixed::FixedSegmenter;
use crate::piece::{BLOCK, Piece, is_zero};

/// A region is cut into chunks once it holds this much beyond the maximum chunk size,
/// which bounds the segmenter's memory to about `max + REGION_SLACK`.
const REGION_SLACK: usize = 8 * 1024 * 1024;

pub struct Segmenter<F: FnMut(Piece)> {
    chunker: ChunkerParams,
    zero_run_min: u64,
    /// Bytes of an incomplete block, carried until the block is whole.
    partial: Vec<u8>,
    /// Disk offset of `partial[0]`, or of the next block when `partial` is empty.
    pos: u64,
    /// Data of the current region not yet emitted as chunks.
    region: Vec<u8>,
    region_start: u64,
    /// Pending zero run (not yet known to be long enough to stand alone).
    zero_start: u64,
    zero_len: u64,
    emit: F,
}

impl<F: FnMut(Piece)> Segmenter<F> {
    pub fn new(chunker: ChunkerParams, zero_run_min: u32, emit: F) -> Self {
        Self {
            chunker,
            zero_run_min: u64::from(zero_run_min.max(BLOCK as u32)),
            partial: Vec::with_capacity(BLOCK),
            pos: 0,
            region: Vec::new(),
            region_start: 0,
            zero_start: 0,
            zero_len: 0,
            emit,
        }
    }

    /// Disk offset up to which input has been accepted.
    pub fn position(&self) -> u64 {
        self.pos + self.partial.len() as u64
    }

    /// Feeds the next bytes of the disk.
    pub fn feed(&mut self, mut data: &[u8]) {
        if !self.partial.is_empty() {
            let take = (BLOCK - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < BLOCK {
                return;
            }
            let block = std::mem::take(&mut self.partial);
            self.block(&block);
            self.partial = block;
            self.partial.clear();
        }
        let whole = data.len() / BLOCK * BLOCK;
        for block in data[..whole].chunks_exact(BLOCK) {
            self.block(block);
        }
        self.partial.extend_from_slice(&data[whole..]);
    }

    /// Feeds `len` zero bytes (a sparse hole) without materialising them.
    pub fn feed_zeros(&mut self, mut len: u64) {
        if !self.partial.is_empty() {
            let take = ((BLOCK - self.partial.len()) as u64).min(len);
            self.feed(&vec![0u8; take as usize]);
            len -= take;
        }
        let whole = len / BLOCK as u64 * BLOCK as u64;
        if whole > 0 {
            self.zeros(whole);
        }
        if len > whole {
            self.feed(&vec![0u8; (len - whole) as usize]);
        }
    }

    fn zeros(&mut self, len: u64) {
        if self.zero_len == 0 {
            self.zero_start = self.pos;
        }
        self.zero_len += len;
        self.pos += len;
    }

    fn block(&mut self, block: &[u8]) {
        if is_zero(block) {
            self.zeros(block.len() as u64);
            return;
        }
        self.settle_zero_run();
        self.region.extend_from_slice(block);
        self.pos += block.len() as u64;
        if self.region.len() >= self.chunker.max as usize + REGION_SLACK {
            self.cut_region(false);
        }
    }

    /// Decides what the pending zero run is, now that data follows it (or the disk ends).
    fn settle_zero_run(&mut self) {
        if self.zero_len == 0 {
            return;
        }
        if self.zero_len >= self.zero_run_min {
            self.cut_region(true);
            (self.emit)(Piece::Zero {
                offset: self.zero_start,
                len: self.zero_len,
            });
            self.region_start = self.zero_start + self.zero_len;
        } else {
            self.region
                .resize(self.region.len() + self.zero_len as usize, 0);
        }
        self.zero_len = 0;
    }

    /// Emits the region's chunks; keeps the last one back unless the region is closing,
    /// since more data could move its cut point.
    fn cut_region(&mut self, closing: bool) {
        if self.region.is_empty() {
            return;
        }
        let ChunkerParams { min, avg, max } = self.chunker;
        let mut consumed = 0;
        let chunks: Vec<_> = FastCDC::new(&self.region, min, avg, max).collect();
        let keep_last = usize::from(!closing);
        for c in &chunks[..chunks.len() - keep_last.min(chunks.len())] {
            (self.emit)(Piece::Chunk {
                offset: self.region_start + c.offset as u64,
                data: self.region[c.offset..c.offset + c.length].to_vec(),
            });
            consumed = c.offset + c.length;
        }
        self.region.drain(..consumed);
        self.region_start += consumed as u64;
    }

    /// Flushes everything; the disk ends here.
    pub fn finish(mut self) {
        if !self.partial.is_empty() {
            let tail = std::mem::take(&mut self.partial);
            if is_zero(&tail) {
                self.zeros(tail.len() as u64);
            } else {
                self.settle_zero_run();
                self.region.extend_from_slice(&tail);
                self.pos += tail.len() as u64;
            }
        }
        self.settle_zero_run();
        self.cut_region(true);
    }
}

/// The segmenter a repository's configuration calls for: content-defined, or fixed
/// cells for repositories made with `init --fixed-chunks`.
pub enum DiskSegmenter<F: FnMut(Piece)> {
    ContentDefined(Segmenter<F>),
    Fixed(FixedSegmenter<F>),
}

impl<F: FnMut(Piece)> DiskSegmenter<F> {
    pub fn new(config: &RepoConfig, emit: F) -> Self {
        match config.fixed_chunk_size {
            Some(size) => Self::Fixed(FixedSegmenter::new(size, emit)),
            None => Self::ContentDefined(Segmenter::new(config.chunker, config.zero_run_min, emit)),
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        match self {
            Self::ContentDefined(s) => s.feed(data),
            Self::Fixed(s) => s.feed(data),
        }
    }

    pub fn feed_zeros(&mut self, len: u64) {
        match self {
            Self::ContentDefined(s) => s.feed_zeros(len),
            Self::Fixed(s) => s.feed_zeros(len),
        }
    }

    pub fn finish(self) {
        match self {
            Self::ContentDefined(s) => s.finish(),
            Self::Fixed(s) => s.finish(),
        }
    }
}

/// Helpers shared by the segmenters' and incremental walks' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use lifeboat_store::crypto::ChunkId;
    use lifeboat_store::format::manifest::Extent;

    use crate::piece::Piece;

    /// A piece as a manifest would record it (plain BLAKE3 stands in for the keyed id).
    pub(crate) fn described(piece: Piece) -> (u64, Extent) {
        match piece {
            Piece::Chunk { offset, data } => (
                offset,
                Extent::Chunk {
                    id: ChunkId(*blake3::hash(&data).as_bytes()),
                    len: data.len() as u32,
                },
            ),
            Piece::Zero { offset, len } => (offset, Extent::Zero { len }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    const SMALL: ChunkerParams = ChunkerParams {
        min: 4096,
        avg: 16384,
        max: 65536,
    };

    fn segment(feeds: &[Feed]) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut s = Segmenter::new(SMALL, 16384, |p| out.push(p));
        for f in feeds {
            match f {
                Feed::Data(d) => s.feed(d),
                Feed::Hole(n) => s.feed_zeros(*n),
            }
        }
        s.finish();
        out
    }

    enum Feed {
        Data(Vec<u8>),
        Hole(u64),
    }

    fn disk(rng: &mut StdRng) -> Vec<u8> {
        let mut d = Vec::new();
        for _ in 0..rng.gen_range(1..12) {
            let len = rng.gen_range(1..200_000);
            match rng.gen_range(0..3) {
                0 => d.extend((0..len).map(|_| rng.r#gen::<u8>())),
                1 => d.resize(d.len() + len, 0),
                _ => d.extend(std::iter::repeat_n(b'a', len)),
            }
        }
        d
    }

    fn reassemble(pieces: &[Piece]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            match p {
                Piece::Chunk { offset, data } => {
                    assert_eq!(*offset, out.len() as u64);
                    out.extend_from_slice(data);
                }
                Piece::Zero { offset, len } => {
                    assert_eq!(*offset, out.len() as u64);
                    out.resize(out.len() + *len as usize, 0);
                }
            }
        }
        out
    }

    #[test]
    fn output_depends_only_on_content() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..40 {
            let d = disk(&mut rng);
            let whole = segment(&[Feed::Data(d.clone())]);
            assert_eq!(reassemble(&whole), d);
            // Same content, split at random points, zero stretches given as holes.
            let mut feeds = Vec::new();
            let mut at = 0;
            while at < d.len() {
                let end = (at + rng.gen_range(1..100_000)).min(d.len());
                let piece = &d[at..end];
                if piece.iter().all(|&b| b == 0) && rng.gen_bool(0.5) {
                    feeds.push(Feed::Hole(piece.len() as u64));
                } else {
                    feeds.push(Feed::Data(piece.to_vec()));
                }
                at = end;
            }
            assert_eq!(segment(&feeds), whole);
        }
    }

    #[test]
    fn long_zero_runs_become_extents_short_ones_stay_data() {
        let mut d = vec![1u8; 8192];
        d.resize(8192 + 8192, 0); // short: stays inside the data
        d.resize(d.len() + 20480, 0); // now 28 KiB of zeros: long enough
        d.extend_from_slice(&[2u8; 100]);
        let pieces = segment(&[Feed::Data(d.clone())]);
        assert_eq!(reassemble(&pieces), d);
        assert!(pieces.contains(&Piece::Zero {
            offset: 8192,
            len: 28672
        }));
        let all_zero = segment(&[Feed::Hole(1 << 20)]);
        assert_eq!(
            all_zero,
            vec![Piece::Zero {
                offset: 0,
                len: 1 << 20
            }]
        );
        assert!(segment(&[]).is_empty());
    }

    #[test]
    fn zero_check_matches_naive() {
        let mut b = vec![0u8; 4096 + 17];
        assert!(is_zero(&b));
        for i in [0, 63, 64, 4095, 4100] {
            b[i] = 1;
            assert!(!is_zero(&b));
            b[i] = 0;
        }
    }
}
