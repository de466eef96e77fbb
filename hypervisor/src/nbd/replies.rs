//! The reader side of a connection: requests waiting for replies, and the task that
//! demultiplexes the server's replies into them.
//!
//! A simple reply completes its request at once; a structured reply arrives as
//! chunks, in any order and interleaved with other replies, until one carries
//! `NBD_REPLY_FLAG_DONE`. Every length is checked against the request, or a fixed
//! bound, before a byte of it is buffered: a broken or hostile server cannot make the
//! client allocate more than the reads in flight.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, BufReader};
use tokio::sync::oneshot;

use super::connection::{Lost, ReadStream, Shared};
use super::protocol::{self, ReplyHeader};
use super::{BlockExtent, NbdError};

/// One block-status chunk: context id plus at most 1 Mi extents (8 MiB). QEMU sends
/// at most 128 Ki extents per chunk; anything far beyond is a broken server.
const MAX_STATUS_PAYLOAD: u32 = 4 + 8 * (1 << 20);
/// An error chunk: errno, message length, a message of ≤ 4096 bytes, an offset.
const MAX_ERROR_PAYLOAD: u32 = 4 + 2 + 4096 + 8;

type ReadHalf = BufReader<ReadStream>;

/// A request waiting for (the rest of) its reply.
pub(super) struct Pending {
    pub(super) offset: u64,
    pub(super) length: u32,
    /// The first error chunk. A structured reply still runs to its final chunk.
    pub(super) error: Option<NbdError>,
    pub(super) op: Op,
}

pub(super) enum Op {
    Read {
        buf: BytesMut,
        /// Ranges of `buf` (relative) the reply has covered, checked at the end.
        spans: Vec<(u32, u32)>,
        tx: oneshot::Sender<Result<Bytes, NbdError>>,
    },
    Status {
        context_id: u32,
        extents: Option<Vec<BlockExtent>>,
        tx: oneshot::Sender<Result<Vec<BlockExtent>, NbdError>>,
    },
}

impl Pending {
    fn command(&self) -> &'static str {
        match self.op {
            Op::Read { .. } => "read",
            Op::Status { .. } => "block status",
        }
    }

    fn fail(self, e: NbdError) {
        // A closed receiver means the caller stopped waiting; nothing to do then.
        match self.op {
            Op::Read { tx, .. } => drop(tx.send(Err(e))),
            Op::Status { tx, .. } => drop(tx.send(Err(e))),
        }
    }

    fn finish(self) {
        let Pending {
            offset,
            length,
            error,
            op,
        } = self;
        match op {
            Op::Read { buf, mut spans, tx } => {
                let result = match error {
                    Some(e) => Err(e),
                    None => {
                        // Chunks may come in any order but must tile the request exactly.
                        spans.sort_unstable();
                        let mut end = 0;
                        let tiled = spans.iter().all(|&(s, e)| {
                            let ok = s == end;
                            end = e;
                            ok
                        }) && end == length;
                        if tiled {
                            Ok(buf.freeze())
                        } else {
                            Err(NbdError::Protocol(format!(
                                "reply to the read of {length} bytes at {offset} does not cover it exactly once"
                            )))
                        }
                    }
                };
                drop(tx.send(result));
            }
            Op::Status { extents, tx, .. } => {
                let result = match error {
                    Some(e) => Err(e),
                    None => extents.filter(|e| !e.is_empty()).ok_or_else(|| {
                        NbdError::Protocol(
                            "block status reply without extents for the context asked".into(),
                        )
                    }),
                };
                drop(tx.send(result));
            }
        }
    }
}

pub(super) async fn read_replies(mut r: ReadHalf, shared: Arc<Shared>, structured: bool) {
    let mut active = HashMap::new();
    let outcome = tokio::select! {
        res = demux(&mut r, &shared, &mut active, structured) => match res {
            Ok(()) => Lost::transport("the server closed the connection".into()),
            Err(NbdError::Protocol(reason)) => {
                tracing::warn!("NBD server broke the protocol, connection dropped: {reason}");
                Lost { reason, broken_protocol: true }
            }
            Err(e) => Lost::transport(e.to_string()),
        },
        () = shared.writer_failed.notified() => Lost::transport("sending a request failed".into()),
    };
    let (lost, drained) = {
        let mut st = shared.lock();
        let lost = st.lost.get_or_insert(outcome).clone();
        (lost, std::mem::take(&mut st.pending))
    };
    for p in drained.into_values().chain(active.into_values()) {
        p.fail(lost.error());
    }
}

/// Takes the request a reply belongs to out of the pending map.
fn take_pending(shared: &Shared, cookie: u64) -> Result<Pending, NbdError> {
    shared
        .lock()
        .pending
        .remove(&cookie)
        .ok_or_else(|| NbdError::Protocol(format!("reply for unknown cookie {cookie:#x}")))
}

/// Reads replies until the server closes the connection or breaks the protocol (an
/// error here ends the connection: after a bad message the stream cannot be trusted).
async fn demux(
    r: &mut ReadHalf,
    shared: &Shared,
    active: &mut HashMap<u64, Pending>,
    structured: bool,
) -> Result<(), NbdError> {
    let io_err = |source| NbdError::Io {
        context: "reading a reply",
        source,
    };
    while let Some(header) = protocol::read_reply_header(r).await? {
        match header {
            ReplyHeader::Simple { error, cookie } => {
                let mut p = match active.remove(&cookie) {
                    Some(p) => p,
                    None => take_pending(shared, cookie)?,
                };
                if error != 0 {
                    let e = command_error(&p, error, String::new());
                    p.fail(e);
                    continue;
                }
                let command = p.command();
                let length = p.length;
                match &mut p.op {
                    // Without structured replies the data follows the header.
                    Op::Read { buf, spans, .. } if !structured => {
                        r.read_exact(buf).await.map_err(io_err)?;
                        spans.push((0, length));
                    }
                    _ => {
                        return Err(NbdError::Protocol(format!(
                            "simple success reply to a {command} request, which needs a structured reply"
                        )));
                    }
                }
                p.finish();
            }
            ReplyHeader::Chunk {
                flags,
                kind,
                cookie,
                length,
            } => {
                if !structured {
                    return Err(NbdError::Protocol(
                        "structured reply chunk without negotiation".into(),
                    ));
                }
                let p = match active.entry(cookie) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(take_pending(shared, cookie)?),
                };
                if let Some(e) = read_chunk(r, p, kind, length).await? {
                    p.error.get_or_insert(e);
                }
                if flags & protocol::REPLY_FLAG_DONE != 0
                    && let Some(p) = active.remove(&cookie)
                {
                    p.finish();
                }
            }
        }
    }
    Ok(())
}

/// Consumes one chunk's payload into its request; returns the error an error chunk
/// reports.
async fn read_chunk(
    r: &mut ReadHalf,
    p: &mut Pending,
    kind: u16,
    length: u32,
) -> Result<Option<NbdError>, NbdError> {
    let io_err = |source| NbdError::Io {
        context: "reading a reply",
        source,
    };
    let (req_offset, req_len, command) = (p.offset, p.length, p.command());
    // Where a chunk lands in the request's buffer; it must lie inside the request.
    let place = |offset: u64, n: u64| -> Result<(usize, usize), NbdError> {
        match offset.checked_sub(req_offset) {
            Some(start) if n > 0 && start + n <= u64::from(req_len) => {
                Ok((start as usize, (start + n) as usize))
            }
            _ => Err(NbdError::Protocol(format!(
                "reply chunk [{offset}, +{n}) lies outside the request [{req_offset}, +{req_len})"
            ))),
        }
    };
    match (kind, &mut p.op) {
        (protocol::REPLY_TYPE_NONE, _) if length == 0 => Ok(None),
        (protocol::REPLY_TYPE_OFFSET_DATA, Op::Read { buf, spans, .. }) if length > 8 => {
            let offset = r.read_u64().await.map_err(io_err)?;
            let (start, end) = place(offset, u64::from(length - 8))?;
            r.read_exact(&mut buf[start..end]).await.map_err(io_err)?;
            spans.push((start as u32, end as u32));
            Ok(None)
        }
        (protocol::REPLY_TYPE_OFFSET_HOLE, Op::Read { spans, .. }) if length == 12 => {
            let offset = r.read_u64().await.map_err(io_err)?;
            let size = r.read_u32().await.map_err(io_err)?;
            // The buffer starts zeroed and overlaps are caught at the end: nothing to write.
            let (start, end) = place(offset, u64::from(size))?;
            spans.push((start as u32, end as u32));
            Ok(None)
        }
        (
            protocol::REPLY_TYPE_BLOCK_STATUS,
            Op::Status {
                context_id,
                extents,
                ..
            },
        ) if length >= 12 && (length - 4).is_multiple_of(8) && length <= MAX_STATUS_PAYLOAD => {
            let id = r.read_u32().await.map_err(io_err)?;
            let mut raw = vec![0u8; (length - 4) as usize];
            r.read_exact(&mut raw).await.map_err(io_err)?;
            // The server answers for every negotiated context; keep the one asked for.
            if id != *context_id {
                return Ok(None);
            }
            if extents.is_some() {
                return Err(NbdError::Protocol(
                    "two block status chunks for one context".into(),
                ));
            }
            let mut v = Vec::with_capacity(raw.len() / 8);
            for d in raw.chunks_exact(8) {
                let length = u32::from_be_bytes(d[0..4].try_into().unwrap());
                let flags = u32::from_be_bytes(d[4..8].try_into().unwrap());
                if length == 0 {
                    return Err(NbdError::Protocol("block status extent of length 0".into()));
                }
                v.push(BlockExtent { length, flags });
            }
            *extents = Some(v);
            Ok(None)
        }
        // Error chunks, including unknown ones (bit 15 set): the request fails, the
        // connection goes on.
        (k, _)
            if k & protocol::REPLY_TYPE_ERROR_BIT != 0
                && (6..=MAX_ERROR_PAYLOAD).contains(&length) =>
        {
            let mut raw = vec![0u8; length as usize];
            r.read_exact(&mut raw).await.map_err(io_err)?;
            let errno = u32::from_be_bytes(raw[0..4].try_into().unwrap());
            let msg_len = usize::from(u16::from_be_bytes([raw[4], raw[5]]));
            let tail = if k == protocol::REPLY_TYPE_ERROR_OFFSET {
                8
            } else {
                0
            };
            if 6 + msg_len + tail > raw.len() {
                return Err(NbdError::Protocol(format!(
                    "error chunk message of {msg_len} bytes overflows the chunk"
                )));
            }
            let mut message = String::from_utf8_lossy(&raw[6..6 + msg_len]).into_owned();
            if tail > 0 {
                let at = u64::from_be_bytes(raw[6 + msg_len..14 + msg_len].try_into().unwrap());
                message = format!("{message} (at offset {at})");
            }
            Ok(Some(command_error(p, errno, message)))
        }
        _ => Err(NbdError::Protocol(format!(
            "unexpected reply chunk (type {kind}, {length} bytes) for a {command} request"
        ))),
    }
}

fn command_error(p: &Pending, errno: u32, message: String) -> NbdError {
    let message = message.trim().to_string();
    NbdError::Command {
        command: p.command(),
        offset: p.offset,
        length: p.length,
        errno,
        errno_name: protocol::errno_name(errno),
        message: if message.is_empty() {
            message
        } else {
            format!(": {message}")
        },
    }
}
