//! The one thing the incremental walk needs of the current image: random reads.

use std::io;

/// Random-access reads of the *current* image (the lead implements it over a raw file
/// or an NBD export).
pub trait ReadAt: Sync {
    /// Fills `buf` exactly (the image is at least `offset + buf.len()` long).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}
