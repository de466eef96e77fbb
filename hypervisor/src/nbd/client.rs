//! The public face of an NBD connection: connect and negotiate, then read, write and
//! query block status from any number of tasks at once.
//!
//! Requests are checked here (range, alignment, size, negotiated context) so that a
//! caller's mistake gets a clear [`NbdError::InvalidRequest`] instead of a server
//! error; the wire work happens in `connection`.

use std::fmt;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpStream, UnixStream};

use super::address::NbdAddress;
use super::connection::{Connection, ReadStream, WriteStream};
use super::error::NbdError;
use super::extents::{BlockExtent, MappedExtent};
use super::handshake::{Negotiated, handshake};
use super::transmission::{
    CMD_FLUSH, CMD_WRITE, CMD_WRITE_ZEROES, FLAG_READ_ONLY, FLAG_SEND_FLUSH,
    FLAG_SEND_WRITE_ZEROES, MAX_READ,
};

/// A server that accepts but never answers must not hang `connect` forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest range one block-status request from [`NbdClient::map`] covers, and one
/// write-zeroes request from [`NbdClient::write_zeroes`].
const MAP_STEP: u64 = 1 << 30;

/// A connection to one NBD export. `Send + Sync`; share it by reference or `Arc` and
/// issue requests from as many tasks as you like: each is matched to its reply by
/// cookie. Memory in use is the sum of the lengths of the reads in flight. Requests
/// have no timeout of their own; wrap them in `tokio::time::timeout` if needed
/// (cancelling one is safe).
pub struct NbdClient {
    conn: Connection,
    target: String,
    size: u64,
    transmission_flags: u16,
    contexts: Vec<(String, u32)>,
    min_block: u32,
    max_read: u32,
}

// The pipeline shares one client between tasks; keep that a compile-time fact.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<NbdClient>();
};

impl fmt::Debug for NbdClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NbdClient")
            .field("target", &self.target)
            .field("size", &self.size)
            .field("contexts", &self.contexts)
            .finish_non_exhaustive()
    }
}

impl NbdClient {
    /// Connects and negotiates: fixed-newstyle handshake, `NBD_OPT_STRUCTURED_REPLY`,
    /// `NBD_OPT_SET_META_CONTEXT` for `meta_contexts` (e.g. `base:allocation`,
    /// `qemu:dirty-bitmap:NAME`), then `NBD_OPT_GO`. Fails with
    /// [`NbdError::MetaContextNotOffered`] if the server does not offer one of them.
    pub async fn connect(
        addr: &NbdAddress,
        meta_contexts: &[String],
    ) -> Result<NbdClient, NbdError> {
        let target = addr.to_string();
        let mut wanted: Vec<String> = Vec::new();
        for c in meta_contexts {
            if !wanted.contains(c) {
                wanted.push(c.clone());
            }
        }
        let connect_err = |source| NbdError::Connect {
            target: target.clone(),
            source,
        };
        let setup = async {
            let (n, r, w): (Negotiated, ReadStream, WriteStream) = match addr {
                NbdAddress::Tcp { host, port, export } => {
                    let mut s = TcpStream::connect((host.as_str(), *port))
                        .await
                        .map_err(connect_err)?;
                    // Small requests, replies read as they come: Nagle only adds latency.
                    let _ = s.set_nodelay(true);
                    let n = handshake(&mut s, export, &wanted).await?;
                    let (r, w) = s.into_split();
                    (n, Box::new(r), Box::new(w))
                }
                NbdAddress::Unix { socket, export } => {
                    let mut s = UnixStream::connect(socket).await.map_err(connect_err)?;
                    let n = handshake(&mut s, export, &wanted).await?;
                    let (r, w) = s.into_split();
                    (n, Box::new(r), Box::new(w))
                }
            };
            Ok::<_, NbdError>((n, r, w))
        };
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "no NBD handshake within 30 s");
        let (n, r, w) = tokio::time::timeout(CONNECT_TIMEOUT, setup)
            .await
            .map_err(|_| connect_err(timed_out()))??;
        tracing::debug!(
            target = %target, size = n.size, flags = n.transmission_flags, structured = n.structured,
            contexts = ?n.contexts, min_block = n.min_block, max_block = n.max_block,
            "NBD connected"
        );
        Ok(NbdClient {
            conn: Connection::spawn(r, w, n.structured),
            target,
            size: n.size,
            transmission_flags: n.transmission_flags,
            contexts: n.contexts,
            min_block: n.min_block,
            max_read: n.max_block.min(MAX_READ),
        })
    }

    /// Size of the export in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Largest `len` [`read`](Self::read) accepts: the server's maximum block size,
    /// capped at [`MAX_READ`] (32 MiB).
    pub fn max_read_len(&self) -> u32 {
        self.max_read
    }

    /// Reads must be aligned to this (1 for qemu-nbd on files, 512 with O_DIRECT).
    pub fn min_block_size(&self) -> u32 {
        self.min_block
    }

    /// Whether the server exports the disk read-only.
    pub fn is_read_only(&self) -> bool {
        self.transmission_flags & FLAG_READ_ONLY != 0
    }

    /// The meta contexts negotiated at connect time.
    pub fn contexts(&self) -> impl Iterator<Item = &str> {
        self.contexts.iter().map(|(name, _)| name.as_str())
    }

    /// Reads exactly `len` bytes at `offset` (`len` ≤ [`max_read_len`](Self::max_read_len);
    /// split larger reads). Holes the server reports read as zeros.
    pub async fn read(&self, offset: u64, len: u32) -> Result<Bytes, NbdError> {
        self.check_range("read", offset, len)?;
        if len > self.max_read {
            return Err(NbdError::InvalidRequest(format!(
                "read of {len} bytes exceeds the server's maximum of {} bytes; split it",
                self.max_read
            )));
        }
        self.check_aligned("read", offset, len)?;
        self.conn.read(offset, len).await
    }

    /// Writes `data` at `offset` (`data.len()` ≤ [`max_read_len`](Self::max_read_len),
    /// the server's maximum block size; split larger writes). Durable only after
    /// [`flush`](Self::flush).
    pub async fn write(&self, offset: u64, data: Bytes) -> Result<(), NbdError> {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.check_writable("write")?;
        self.check_range("write", offset, len)?;
        if len > self.max_read {
            return Err(NbdError::InvalidRequest(format!(
                "write of {len} bytes exceeds the server's maximum of {} bytes; split it",
                self.max_read
            )));
        }
        self.check_aligned("write", offset, len)?;
        self.conn.acked(CMD_WRITE, offset, len, Some(data)).await
    }

    /// Makes `[offset, offset + len)` read as zeros (`NBD_CMD_WRITE_ZEROES`; the
    /// server may leave a hole). Split into requests of at most 1 GiB.
    pub async fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), NbdError> {
        self.check_writable("write zeroes")?;
        if self.transmission_flags & FLAG_SEND_WRITE_ZEROES == 0 {
            return Err(NbdError::Unsupported("NBD_CMD_WRITE_ZEROES".into()));
        }
        let end = offset.checked_add(len).filter(|&e| e <= self.size);
        let Some(end) = end else {
            return Err(NbdError::InvalidRequest(format!(
                "write zeroes of {len} bytes at {offset} goes past the end of the {}-byte export",
                self.size
            )));
        };
        let mut cur = offset;
        while cur < end {
            let n = (end - cur).min(MAP_STEP) as u32;
            self.check_aligned("write zeroes", cur, n)?;
            self.conn.acked(CMD_WRITE_ZEROES, cur, n, None).await?;
            cur += u64::from(n);
        }
        Ok(())
    }

    /// `NBD_CMD_FLUSH`: every write the server has acknowledged is on stable storage
    /// when this returns.
    pub async fn flush(&self) -> Result<(), NbdError> {
        self.check_writable("flush")?;
        if self.transmission_flags & FLAG_SEND_FLUSH == 0 {
            return Err(NbdError::Unsupported("NBD_CMD_FLUSH".into()));
        }
        self.conn.acked(CMD_FLUSH, 0, 0, None).await
    }

    /// One `NBD_CMD_BLOCK_STATUS` for `context` over `[offset, offset + len)`. The
    /// extents are in disk order from `offset`; the server may describe less than the
    /// whole range (see [`map`](Self::map) for a loop that covers it).
    pub async fn block_status(
        &self,
        context: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<BlockExtent>, NbdError> {
        let context_id = self
            .contexts
            .iter()
            .find(|(name, _)| name == context)
            .map(|&(_, id)| id)
            .ok_or_else(|| {
                NbdError::InvalidRequest(format!(
                    "meta context {context} was not negotiated; pass it to NbdClient::connect"
                ))
            })?;
        self.check_range("block status", offset, len)?;
        self.conn.block_status(context_id, offset, len).await
    }

    /// The whole `[offset, end)` for `context`, with absolute offsets, adjacent
    /// extents of equal flags merged. Queries at most 1 GiB per request.
    pub async fn map(
        &self,
        context: &str,
        offset: u64,
        end: u64,
    ) -> Result<Vec<MappedExtent>, NbdError> {
        if offset > end || end > self.size {
            return Err(NbdError::InvalidRequest(format!(
                "map of [{offset}, {end}) is not within the {}-byte export",
                self.size
            )));
        }
        let mut out: Vec<MappedExtent> = Vec::new();
        let mut cur = offset;
        while cur < end {
            let len = (end - cur).min(MAP_STEP) as u32;
            // Each reply holds ≥ 1 extent of non-zero length, so this loop progresses.
            for e in self.block_status(context, cur, len).await? {
                if cur >= end {
                    break;
                }
                let length = u64::from(e.length).min(end - cur);
                match out.last_mut() {
                    Some(last) if last.flags == e.flags => last.length += length,
                    _ => out.push(MappedExtent {
                        offset: cur,
                        length,
                        flags: e.flags,
                    }),
                }
                cur += length;
            }
        }
        Ok(out)
    }

    /// Ends the session with `NBD_CMD_DISC` (the server completes outstanding requests,
    /// then closes) and waits briefly for the close. Dropping the client instead
    /// closes the socket without the courtesy.
    pub async fn disconnect(self) -> Result<(), NbdError> {
        self.conn.close().await
    }

    fn check_writable(&self, what: &str) -> Result<(), NbdError> {
        if self.is_read_only() {
            return Err(NbdError::InvalidRequest(format!(
                "{what} on a read-only export"
            )));
        }
        Ok(())
    }

    fn check_aligned(&self, what: &str, offset: u64, len: u32) -> Result<(), NbdError> {
        let m = u64::from(self.min_block);
        if !offset.is_multiple_of(m)
            || (!u64::from(len).is_multiple_of(m) && offset + u64::from(len) != self.size)
        {
            return Err(NbdError::InvalidRequest(format!(
                "{what} of {len} bytes at {offset} is not aligned to the server's block size {m}"
            )));
        }
        Ok(())
    }

    fn check_range(&self, what: &str, offset: u64, len: u32) -> Result<(), NbdError> {
        match offset.checked_add(u64::from(len)) {
            _ if len == 0 => Err(NbdError::InvalidRequest(format!("{what} of 0 bytes"))),
            Some(end) if end <= self.size => Ok(()),
            _ => Err(NbdError::InvalidRequest(format!(
                "{what} of {len} bytes at {offset} goes past the end of the {}-byte export",
                self.size
            ))),
        }
    }
}
