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

use super::negotiate::Negotiated;
use super::source::BlockSource;
use super::status::extents;
use crate::nbd::transmission::{
    CMD_BLOCK_STATUS, CMD_DISC, CMD_FLUSH, CMD_READ, CMD_WRITE, CMD_WRITE_ZEROES, MAX_READ,
    REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, REPLY_TYPE_ERROR_BIT, REPLY_TYPE_NONE,
    REPLY_TYPE_OFFSET_DATA, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC,
};

const CMD_TRIM: u16 = 4;
const EPERM: u32 = 1;
const EIO: u32 = 5;
const EINVAL: u32 = 22;
/// Bytes of read data a connection may hold at once (two maximum-size reads).
const IN_FLIGHT_BUDGET: usize = 2 * MAX_READ as usize;
/// The least a read takes from the budget.
const MIN_CHARGE: u32 = 16 << 10;

/// `NBD_REPLY_TYPE_ERROR`.
const REPLY_TYPE_ERROR: u16 = REPLY_TYPE_ERROR_BIT + 1;
/// Command flag: report a single block-status extent.
const CMD_FLAG_REQ_ONE: u16 = 1 << 3;

enum Body {
    Done,
    Error(u32),
    Data(Bytes),
    /// An encoded `NBD_REPLY_TYPE_BLOCK_STATUS` payload.
    Status(Vec<u8>),
}

struct Reply {
    cookie: u64,
    offset: u64,
    body: Body,
    /// Released once the data is on the wire.
    _budget: Option<OwnedSemaphorePermit>,
}

impl Reply {
    fn new(req: &Request, body: Body) -> Reply {
        Reply {
            cookie: req.cookie,
            offset: req.offset,
            body,
            _budget: None,
        }
    }
}

struct Request {
    flags: u16,
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
    mode: Negotiated,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Reply>(64);
    let writer = tokio::spawn(write_replies(w, rx, mode.structured));
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
        if let Err(e) = dispatch(&mut r, req, mode, &source, &budget, &tx, &mut reads).await {
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
    mode: Negotiated,
    source: &Arc<dyn BlockSource>,
    budget: &Arc<Semaphore>,
    tx: &mpsc::Sender<Reply>,
    reads: &mut JoinSet<()>,
) -> io::Result<()> {
    let error = match req.kind {
        CMD_READ => match check_read(&req, source.size()) {
            0 => {
                // Tiny reads are charged more than their size, which also caps the
                // number of read tasks a connection can have waiting (4096).
                let permit = Arc::clone(budget)
                    .acquire_many_owned(req.len.max(MIN_CHARGE))
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
        CMD_BLOCK_STATUS if mode.allocation => match check_status(&req, source.size()) {
            0 => {
                let one = req.flags & CMD_FLAG_REQ_ONE != 0;
                let payload = extents(source.as_ref(), req.offset, req.len, one);
                return send(tx, Reply::new(&req, Body::Status(payload))).await;
            }
            e => e,
        },
        _ => EINVAL,
    };
    let body = if error == 0 {
        Body::Done
    } else {
        Body::Error(error)
    };
    send(tx, Reply::new(&req, body)).await
}

fn check_status(req: &Request, size: u64) -> u32 {
    let end = req.offset.checked_add(u64::from(req.len));
    // No data travels back, so any u32 length is fine.
    if req.len == 0 || end.is_none_or(|e| e > size) {
        EINVAL
    } else {
        0
    }
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
            _budget: Some(permit),
            ..Reply::new(&req, Body::Data(data))
        },
        Ok(data) => {
            tracing::error!(
                offset = req.offset,
                len = req.len,
                got = data.len(),
                "NBD server: block source returned the wrong number of bytes"
            );
            Reply::new(&req, Body::Error(EIO))
        }
        Err(e) => {
            tracing::error!(offset = req.offset, len = req.len, error = %e, "NBD server: reading the block source failed");
            Reply::new(&req, Body::Error(EIO))
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
    structured: bool,
) -> io::Result<()> {
    while let Some(reply) = rx.recv().await {
        let (head, data) = if structured {
            encode_chunk(&reply)
        } else {
            encode_simple(&reply)
        };
        w.write_all(&head).await?;
        if let Some(data) = data {
            w.write_all(data).await?;
        }
        if rx.is_empty() {
            w.flush().await?;
        }
    }
    w.flush().await?;
    w.shutdown().await
}

/// A simple reply: header, then the data of a successful read.
fn encode_simple(reply: &Reply) -> (Vec<u8>, Option<&[u8]>) {
    let (error, data) = match &reply.body {
        Body::Done => (0, None),
        Body::Error(e) => (*e, None),
        Body::Data(d) => (0, Some(&d[..])),
        // Block status is refused unless structured replies were negotiated.
        Body::Status(_) => (EINVAL, None),
    };
    let mut h = Vec::with_capacity(16);
    h.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    h.extend_from_slice(&error.to_be_bytes());
    h.extend_from_slice(&reply.cookie.to_be_bytes());
    (h, data)
}

/// One structured chunk, always the last (`NBD_REPLY_FLAG_DONE`).
fn encode_chunk(reply: &Reply) -> (Vec<u8>, Option<&[u8]>) {
    let (kind, mut payload, data) = match &reply.body {
        Body::Done => (REPLY_TYPE_NONE, Vec::new(), None),
        // Error code, then an empty message.
        Body::Error(e) => (
            REPLY_TYPE_ERROR,
            [&e.to_be_bytes()[..], &[0, 0]].concat(),
            None,
        ),
        Body::Data(d) => (
            REPLY_TYPE_OFFSET_DATA,
            reply.offset.to_be_bytes().to_vec(),
            Some(&d[..]),
        ),
        Body::Status(p) => (REPLY_TYPE_BLOCK_STATUS, p.clone(), None),
    };
    let len = payload.len() + data.map_or(0, <[u8]>::len);
    let mut h = Vec::with_capacity(20 + payload.len());
    h.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    h.extend_from_slice(&REPLY_FLAG_DONE.to_be_bytes());
    h.extend_from_slice(&kind.to_be_bytes());
    h.extend_from_slice(&reply.cookie.to_be_bytes());
    h.extend_from_slice(&(len as u32).to_be_bytes());
    h.append(&mut payload);
    (h, data)
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
        flags: u16::from_be_bytes([b[4], b[5]]),
        kind: u16::from_be_bytes([b[6], b[7]]),
        cookie: be64(8),
        offset: be64(16),
        len: u32::from_be_bytes([b[24], b[25], b[26], b[27]]),
    }))
}
