//! Fixed-size chunking, for repositories made with `init --fixed-chunks SIZE`.
//!
//! The disk is cut into aligned *cells* of `SIZE` bytes (the last one may be shorter).
//! A cell that is all zero belongs to a zero extent, and neighbouring zero cells merge
//! into one; every other cell is one chunk. Like the content-defined segmenter, the
//! output depends only on the disk's content, not on how it was read.
//!
//! Why a second chunker: content-defined chunks must be read whole to be hashed again,
//! so a scattered 64 KiB write costs a whole ~1 MiB chunk to read and store. Cells as
//! small as the dirty bitmap's granules (64 KiB by default) make an incremental backup
//! read and store about what changed, and the incremental cut is trivial — a clean cell
//! is the old cell ([`incremental`]). The price is more chunks per disk (16 per MiB at
//! 64 KiB), and deduplication only between data at the same alignment, which is what VM
//! clones and a disk's own history have. The trade-off is measured in bench/RESULTS.md.

pub mod incremental;

use crate::piece::{Piece, is_zero};

pub struct FixedSegmenter<F: FnMut(Piece)> {
    cell_size: usize,
    /// Bytes of the current, incomplete cell.
    cell: Vec<u8>,
    /// Disk offset of `cell[0]` (of the next cell when `cell` is empty).
    pos: u64,
    /// Pending run of zero cells, emitted once data (or the disk's end) follows.
    zero_start: u64,
    zero_len: u64,
    emit: F,
}

impl<F: FnMut(Piece)> FixedSegmenter<F> {
    pub fn new(cell_size: u32, emit: F) -> Self {
        let cell_size = cell_size as usize;
        Self {
            cell_size,
            cell: Vec::with_capacity(cell_size),
            pos: 0,
            zero_start: 0,
            zero_len: 0,
            emit,
        }
    }

    /// Disk offset up to which input has been accepted.
    pub fn position(&self) -> u64 {
        self.pos + self.cell.len() as u64
    }

    /// Feeds the next bytes of the disk.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = (self.cell_size - self.cell.len()).min(data.len());
            self.cell.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.cell.len() == self.cell_size {
                self.close_cell();
            }
        }
    }

    /// Feeds `len` zero bytes (a sparse hole), materialising at most one cell of them.
    pub fn feed_zeros(&mut self, mut len: u64) {
        let size = self.cell_size as u64;
        if !self.cell.is_empty() {
            let take = (size - self.cell.len() as u64).min(len);
            self.cell.resize(self.cell.len() + take as usize, 0);
            len -= take;
            if self.cell.len() == self.cell_size {
                self.close_cell();
            }
        }
        let whole = len / size * size;
        if whole > 0 {
            self.zeros(whole);
        }
        // Either the cell was completed above or `len` is used up: the rest starts a cell.
        self.cell
            .resize(self.cell.len() + (len - whole) as usize, 0);
    }

    /// Flushes everything; the disk ends here.
    pub fn finish(mut self) {
        if !self.cell.is_empty() {
            self.close_cell();
        }
        self.flush_zeros();
    }

    fn close_cell(&mut self) {
        let len = self.cell.len() as u64;
        if is_zero(&self.cell) {
            self.cell.clear();
            self.zeros(len);
            return;
        }
        self.flush_zeros();
        let data = std::mem::replace(&mut self.cell, Vec::with_capacity(self.cell_size));
        (self.emit)(Piece::Chunk {
            offset: self.pos,
            data,
        });
        self.pos += len;
    }

    fn zeros(&mut self, len: u64) {
        if self.zero_len == 0 {
            self.zero_start = self.pos;
        }
        self.zero_len += len;
        self.pos += len;
    }

    fn flush_zeros(&mut self) {
        if self.zero_len > 0 {
            (self.emit)(Piece::Zero {
                offset: self.zero_start,
                len: self.zero_len,
            });
            self.zero_len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CELL: u32 = 4096;

    fn segment(feeds: &[Result<Vec<u8>, u64>]) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut s = FixedSegmenter::new(CELL, |p| out.push(p));
        for feed in feeds {
            match feed {
                Ok(data) => s.feed(data),
                Err(hole) => s.feed_zeros(*hole),
            }
        }
        s.finish();
        out
    }

    #[test]
    fn cells_are_aligned_and_zero_cells_merge() {
        let c = CELL as usize;
        let mut disk = vec![0u8; 2 * c]; // two zero cells
        disk.extend(vec![7u8; c]); // one data cell
        disk.extend(vec![0u8; c / 2]); // half a cell of zeros: stays inside data
        disk.extend(vec![9u8; c / 2]);
        disk.extend(vec![0u8; 3 * c + 100]); // zeros to the (unaligned) end
        let pieces = segment(&[Ok(disk)]);
        let mut half = vec![0u8; c / 2];
        half.extend(vec![9u8; c / 2]);
        assert_eq!(
            pieces,
            vec![
                Piece::Zero {
                    offset: 0,
                    len: 2 * c as u64
                },
                Piece::Chunk {
                    offset: 2 * c as u64,
                    data: vec![7u8; c]
                },
                Piece::Chunk {
                    offset: 3 * c as u64,
                    data: half
                },
                Piece::Zero {
                    offset: 4 * c as u64,
                    len: 3 * c as u64 + 100
                },
            ]
        );
    }

    #[test]
    fn output_depends_only_on_content() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..50 {
            let mut disk = Vec::new();
            for _ in 0..rng.gen_range(0..10) {
                let len = rng.gen_range(1..20_000);
                if rng.gen_bool(0.5) {
                    disk.resize(disk.len() + len, 0);
                } else {
                    disk.extend((0..len).map(|_| rng.r#gen::<u8>()));
                }
            }
            let whole = segment(&[Ok(disk.clone())]);
            let mut feeds = Vec::new();
            let mut at = 0;
            while at < disk.len() {
                let end = (at + rng.gen_range(1..9000)).min(disk.len());
                let part = &disk[at..end];
                if part.iter().all(|&b| b == 0) && rng.gen_bool(0.5) {
                    feeds.push(Err(part.len() as u64));
                } else {
                    feeds.push(Ok(part.to_vec()));
                }
                at = end;
            }
            assert_eq!(segment(&feeds), whole);
            let covered: u64 = whole
                .iter()
                .map(|p| match p {
                    Piece::Chunk { data, .. } => data.len() as u64,
                    Piece::Zero { len, .. } => *len,
                })
                .sum();
            assert_eq!(covered, disk.len() as u64);
        }
    }
}
