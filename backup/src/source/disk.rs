//! What the pipeline needs of any disk ([`DiskSource`]): its size, which ranges hold
//! data (everything else reads as zeros and is never read), and random reads; and
//! that trait for raw files and block devices, whose type it names.

use std::io::ErrorKind;

use async_trait::async_trait;
use bytes::Bytes;

use super::file::RawSource;
use crate::error::BackupError;

/// A disk to back up.
#[async_trait]
pub trait DiskSource: Send + Sync + std::fmt::Debug {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// Where the disk comes from, for the snapshot's metadata and messages.
    fn describe(&self) -> String;

    /// Sorted, non-overlapping ranges `[start, end)` that may hold non-zero data.
    /// Everything outside them reads as zeros.
    async fn data_ranges(&self) -> Result<Vec<(u64, u64)>, BackupError>;

    /// Reads exactly `len` bytes at `offset` (within the disk).
    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, BackupError>;

    /// The source as a local file, when it is one: the reader then reads it
    /// synchronously into one reused buffer, which is both faster and far lighter on
    /// memory than a fresh buffer per read on whichever blocking thread is free.
    fn as_raw(&self) -> Option<&RawSource> {
        None
    }
}

#[async_trait]
impl DiskSource for RawSource {
    fn size(&self) -> u64 {
        RawSource::size(self)
    }

    fn describe(&self) -> String {
        self.path().display().to_string()
    }

    fn as_raw(&self) -> Option<&RawSource> {
        Some(self)
    }

    async fn data_ranges(&self) -> Result<Vec<(u64, u64)>, BackupError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut ranges = Vec::new();
            let mut pos = 0;
            while let Some((start, end)) = this.next_data(pos)? {
                ranges.push((start, end));
                pos = end;
            }
            Ok(ranges)
        })
        .await
        .expect("SEEK_DATA task panicked")
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, BackupError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            let n = this.read_into(&mut buf, offset)?;
            if n < len {
                return Err(BackupError::Source {
                    path: this.path().display().to_string(),
                    source: std::io::Error::new(
                        ErrorKind::UnexpectedEof,
                        format!(
                            "disk shrank while being read (ended at {} bytes)",
                            offset + n as u64
                        ),
                    ),
                });
            }
            Ok(Bytes::from(buf))
        })
        .await
        .expect("read task panicked")
    }
}
