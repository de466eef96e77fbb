//! A disk read through NBD: qemu-nbd serving an image file (qcow2, VHDX, VMDK, …), or
//! an export of a running VM's disk.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use lifeboat_hypervisor::nbd::{
    ALLOCATION_CONTEXT, MappedExtent, NbdClient, NbdError, STATE_DIRTY, STATE_HOLE, STATE_ZERO,
    dirty_bitmap_context,
};

use super::disk::DiskSource;
use crate::error::BackupError;

/// Largest single NBD read we issue; qemu-nbd accepts up to 32 MiB.
const MAX_NBD_READ: usize = 4 * 1024 * 1024;

/// A disk behind an NBD export, read with one shared [`NbdClient`]: its
/// `base:allocation` map says what to read, and a dirty bitmap's map what changed.
#[derive(Debug)]
pub struct NbdSource {
    client: Arc<NbdClient>,
    description: String,
}

/// An NBD failure while reading `what`, as a backup error about that disk.
pub(crate) fn nbd_err(what: &str, e: NbdError) -> BackupError {
    BackupError::Source {
        path: what.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl NbdSource {
    pub fn new(client: NbdClient, description: String) -> Self {
        Self {
            client: Arc::new(client),
            description,
        }
    }

    pub fn client(&self) -> &NbdClient {
        &self.client
    }

    /// Ranges a dirty bitmap marks as written since it was created.
    pub async fn dirty_ranges(&self, bitmap: &str) -> Result<Vec<(u64, u64)>, BackupError> {
        let extents = self
            .client
            .map(&dirty_bitmap_context(bitmap), 0, self.client.size())
            .await
            .map_err(|e| nbd_err(&self.description, e))?;
        Ok(merge(extents.iter().filter(|e| e.flags & STATE_DIRTY != 0)))
    }
}

/// Turns extents into sorted `[start, end)` ranges, joining neighbours.
fn merge<'a>(extents: impl Iterator<Item = &'a MappedExtent>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for e in extents {
        let end = e.offset + e.length;
        match out.last_mut() {
            Some(last) if last.1 == e.offset => last.1 = end,
            _ => out.push((e.offset, end)),
        }
    }
    out
}

#[async_trait]
impl DiskSource for NbdSource {
    fn size(&self) -> u64 {
        self.client.size()
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn data_ranges(&self) -> Result<Vec<(u64, u64)>, BackupError> {
        let extents = self
            .client
            .map(ALLOCATION_CONTEXT, 0, self.client.size())
            .await
            .map_err(|e| nbd_err(&self.description, e))?;
        // Holes and extents known to read as zeros are never read.
        Ok(merge(
            extents
                .iter()
                .filter(|e| e.flags & (STATE_HOLE | STATE_ZERO) == 0),
        ))
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, BackupError> {
        if len <= MAX_NBD_READ {
            return self
                .client
                .read(offset, len as u32)
                .await
                .map_err(|e| nbd_err(&self.description, e));
        }
        let mut buf = BytesMut::with_capacity(len);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(MAX_NBD_READ);
            let part = self
                .client
                .read(offset + done as u64, n as u32)
                .await
                .map_err(|e| nbd_err(&self.description, e))?;
            buf.extend_from_slice(&part);
            done += n;
        }
        Ok(buf.freeze())
    }
}
