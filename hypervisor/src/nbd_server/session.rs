//! The transmission phase of one connection: a reader loop that decodes requests and
//! starts one task per read, and a writer task that sends replies in the order they
//! complete (the client matches them by cookie).
//!
//! Memory is bounded per connection: a read is at most [`MAX_READ`] bytes and must
//! first take its length from a [`IN_FLIGHT_BUDGET`] byte budget, so a client that
//! pipelines requests without reading replies stalls instead of growing the server.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::source::BlockSource;
use crate::nbd::transmission::{
    CMD_DISC, CMD_FLUSH, CMD_READ, CMD_WRITE, CMD_WRITE_ZEROES, MAX_READ, REQUEST_MAGIC,
    SIMPLE_REPLY_MAGIC,
};

const CMD_TRIM: u16 = 4;
const EPERM: u32 = 1;
const EIO: u32 = 5;
const EINVAL: u32 = 22;
/// Bytes of read data a connection may hold at once (two maximum-size reads).
const IN_FLIGHT_BUDGET: usize = 2 * MAX_READ as usize;

struct Reply {
    error: u32,
    cookie: u64,
    data: Option<Bytes>,
    /// Released once the data is on the wire.
    _budget: Option<OwnedSemaphorePermit>,
}

struct Request {
    kind: u16,
    cookie: u64,
    offset: u64,
    len: u32,
}

/// Serves requests until the client disconnects, breaks the protocol, or
/// `shutdown` turns true; then waits for the reads in flight and returns.
pub(super) async fn transmit<R, W>(
    mut r: R,
    w: W,
    source: Arc<dyn BlockSource>,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Reply>(64);
    let writer = tokio::spawn(write_replies(w, rx));
    let budget = Arc::new(Semaphore::new(IN_FLIGHT_BUDGET));
    let mut reads = JoinSet::new();
    let result = loop {
        let req = tokio::select! {
            req = read_request(&mut r) => req,
            _ = shutdown.wait_for(|&s| s) => break Ok(()),
        };
        let req = match req {
            Ok(Some(req)) => req,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        // Reap finished reads so the set does not grow over a long session.
        while reads.try_join_next().is_some() {}
        if req.kind == CMD_DISC {
            break Ok(());
        }
        if let Err(e) = dispatch(&mut r, req, &source, &budget, &tx, &mut reads).await {
            break Err(e);
        }
    };
    while reads.join_next().await.is_some() {}
    drop(tx);
    let written = writer.await.unwrap_or_else(|e| Err(io::Error::other(e)));
    result.and(written)
}

/// Answers one request, or starts the task that will.
async fn dispatch<R: AsyncRead + Unpin>(
    r: &mut R,
    req: Request,
    source: &Arc<dyn BlockSource>,
    budget: &Arc<Semaphore>,
    tx: &mpsc::Sender<Reply>,
    reads: &mut JoinSet<()>,
) -> io::Result<()> {
    let error = match req.kind {
        CMD_READ => match check_read(&req, source.size()) {
            0 => {
                let permit = Arc::clone(budget)
                    .acquire_many_owned(req.len)
                    .await
                    .map_err(io::Error::other)?;
                reads.spawn(read(req, Arc::clone(source), tx.clone(), permit));
                return Ok(());
            }
            e => e,
        },
        CMD_WRITE => {
            // The payload follows the header; beyond the limit the stream is lost.
            if req.len > MAX_READ {
                return Err(bad("write payload over 32 MiB"));
            }
            let skipped =
                tokio::io::copy(&mut r.take(u64::from(req.len)), &mut tokio::io::sink()).await?;
            if skipped != u64::from(req.len) {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            EPERM
        }
        CMD_TRIM | CMD_WRITE_ZEROES => EPERM,
        // Nothing is ever written, so there is nothing to flush.
        CMD_FLUSH => 0,
        _ => EINVAL,
    };
    send(
        tx,
        Reply {
            error,
            cookie: req.cookie,
            data: None,
            _budget: None,
        },
    )
    .await
}

fn check_read(req: &Request, size: u64) -> u32 {
    let end = req.offset.checked_add(u64::from(req.len));
    if req.len == 0 || req.len > MAX_READ || end.is_none_or(|e| e > size) {
        EINVAL
    } else {
        0
    }
}

async fn read(
    req: Request,
    source: Arc<dyn BlockSource>,
    tx: mpsc::Sender<Reply>,
    permit: OwnedSemaphorePermit,
) {
    let reply = match source.read_at(req.offset, req.len).await {
        Ok(data) if data.len() == req.len as usize => Reply {
            error: 0,
            cookie: req.cookie,
            data: Some(data),
            _budget: Some(permit),
        },
        Ok(data) => {
            tracing::error!(
                offset = req.offset,
                len = req.len,
                got = data.len(),
                "NBD server: block source returned the wrong number of bytes"
            );
            Reply {
                error: EIO,
                cookie: req.cookie,
                data: None,
                _budget: None,
            }
        }
        Err(e) => {
            tracing::error!(offset = req.offset, len = req.len, error = %e, "NBD server: reading the block source failed");
            Reply {
                error: EIO,
                cookie: req.cookie,
                data: None,
                _budget: None,
            }
        }
    };
    // The writer only stops when the client is gone; nobody is left to tell.
    let _ = send(&tx, reply).await;
}

async fn send(tx: &mpsc::Sender<Reply>, reply: Reply) -> io::Result<()> {
    tx.send(reply)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
}

async fn write_replies<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Reply>,
) -> io::Result<()> {
    while let Some(reply) = rx.recv().await {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        h[4..8].copy_from_slice(&reply.error.to_be_bytes());
        h[8..16].copy_from_slice(&reply.cookie.to_be_bytes());
        w.write_all(&h).await?;
        if let Some(data) = &reply.data {
            w.write_all(data).await?;
        }
        if rx.is_empty() {
            w.flush().await?;
        }
    }
    w.flush().await?;
    w.shutdown().await
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// The next request header; `None` when the client closed between requests.
async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Request>> {
    let mut b = [0u8; 28];
    match r.read_exact(&mut b[..4]).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if u32::from_be_bytes([b[0], b[1], b[2], b[3]]) != REQUEST_MAGIC {
        return Err(bad("request without NBD_REQUEST_MAGIC"));
    }
    r.read_exact(&mut b[4..]).await?;
    let be64 = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap_or_default());
    Ok(Some(Request {
        kind: u16::from_be_bytes([b[6], b[7]]),
        cookie: be64(8),
        offset: be64(16),
        len: u32::from_be_bytes([b[24], b[25], b[26], b[27]]),
    }))
}
