//! What the segmenters emit: the disk in order as chunks and zero runs, and the
//! zero test both the content-defined and the fixed-cell segmenter use.

/// Granularity of zero detection.
pub const BLOCK: usize = 4096;
/// One piece of the disk, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Chunk { offset: u64, data: Vec<u8> },
    Zero { offset: u64, len: u64 },
}

pub fn is_zero(block: &[u8]) -> bool {
    // OR-folding fixed 64-byte groups vectorises; `iter().all()` does not.
    let mut groups = block.chunks_exact(64);
    let all_groups_zero = groups.all(|g| g.iter().fold(0u8, |acc, &b| acc | b) == 0);
    all_groups_zero && groups.remainder().iter().all(|&b| b == 0)
}
