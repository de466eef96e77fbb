//! A snapshot's disk as the NBD server's block source.

use bytes::Bytes;
use lifeboat_hypervisor::nbd_server::BlockSource;

use super::disk::SnapshotDisk;

#[async_trait::async_trait]
impl BlockSource for SnapshotDisk {
    fn size(&self) -> u64 {
        SnapshotDisk::size(self)
    }

    async fn read_at(&self, offset: u64, len: u32) -> std::io::Result<Bytes> {
        SnapshotDisk::read_at(self, offset, len).await
    }

    fn zero_ranges(&self, offset: u64, len: u32) -> Option<Vec<(u64, u64, bool)>> {
        Some(SnapshotDisk::zero_ranges(self, offset, len))
    }
}
