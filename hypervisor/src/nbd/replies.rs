//! The reader task of a connection: demultiplexes the server's replies into the
//! requests waiting for them (`pending`).
//!
//! A simple reply completes its request at once; a structured reply arrives as
//! chunks, in any order and interleaved with other replies, until one carries
//! `NBD_REPLY_FLAG_DONE`. Every length is checked against the request, or a fixed
//! bound, before a byte of it is buffered: a broken or hostile server cannot make the
//! client allocate more than the reads in flight.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::error::{NbdError, errno_name};
use super::extents::BlockExtent;
use super::pending::{Lost, Op, Pending, Shared};
use super::transmission::{
    self, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, REPLY_TYPE_ERROR_BIT, REPLY_TYPE_ERROR_OFFSET,
    REPLY_TYPE_NONE, REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE, ReplyHeader,
};

/// One block-status chunk: context id plus at most 1 Mi extents (8 MiB). QEMU sends
/// at most 128 Ki extents per chunk; anything far beyond is a broken server.
const MAX_STATUS_PAYLOAD: u32 = 4 + 8 * (1 << 20);
/// An error chunk: errno, message length, a message of ≤ 4096 bytes, an offset.
const MAX_ERROR_PAYLOAD: u32 = 4 + 2 + 4096 + 8;

fn io_err(source: io::Error) -> NbdError {
    NbdError::Io {
        context: "reading a reply",
        source,
    }
}

/// Runs until the connection ends, then fails every request still waiting with the
/// reason, and marks the connection lost for later ones.
pub(super) async fn read_replies<R: AsyncRead + Unpin>(
    mut r: R,
    shared: Arc<Shared>,
    structured: bool,
) {
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
/// `active` holds the structured replies that have started but not finished.
async fn demux<R: AsyncRead + Unpin>(
    r: &mut R,
    shared: &Shared,
    active: &mut HashMap<u64, Pending>,
    structured: bool,
) -> Result<(), NbdError> {
    while let Some(header) = transmission::read_reply_header(r).await? {
        match header {
            ReplyHeader::Simple { error, cookie } => {
                let p = match active.remove(&cookie) {
                    Some(p) => p,
                    None => take_pending(shared, cookie)?,
                };
                simple_reply(r, p, error, structured).await?;
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
                if flags & REPLY_FLAG_DONE != 0
                    && let Some(p) = active.remove(&cookie)
                {
                    p.finish();
                }
            }
        }
    }
    Ok(())
}

/// Completes `p` with a simple reply: an error, or (without structured replies) the
/// data of a read, which follows the header.
async fn simple_reply<R: AsyncRead + Unpin>(
    r: &mut R,
    mut p: Pending,
    error: u32,
    structured: bool,
) -> Result<(), NbdError> {
    if error != 0 {
        let e = command_error(&p, error, String::new());
        p.fail(e);
        return Ok(());
    }
    let command = p.command();
    let length = p.length;
    match &mut p.op {
        Op::Read { buf, spans, .. } if !structured => {
            r.read_exact(buf).await.map_err(io_err)?;
            spans.push((0, length));
        }
        Op::Ack { .. } => {}
        _ => {
            return Err(NbdError::Protocol(format!(
                "simple success reply to a {command} request, which needs a structured reply"
            )));
        }
    }
    p.finish();
    Ok(())
}

/// Consumes one chunk's payload into its request; returns the error an error chunk
/// reports.
async fn read_chunk<R: AsyncRead + Unpin>(
    r: &mut R,
    p: &mut Pending,
    kind: u16,
    length: u32,
) -> Result<Option<NbdError>, NbdError> {
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
        (REPLY_TYPE_NONE, _) if length == 0 => Ok(None),
        (REPLY_TYPE_OFFSET_DATA, Op::Read { buf, spans, .. }) if length > 8 => {
            let offset = r.read_u64().await.map_err(io_err)?;
            let (start, end) = place(offset, u64::from(length - 8))?;
            r.read_exact(&mut buf[start..end]).await.map_err(io_err)?;
            spans.push((start as u32, end as u32));
            Ok(None)
        }
        (REPLY_TYPE_OFFSET_HOLE, Op::Read { spans, .. }) if length == 12 => {
            let offset = r.read_u64().await.map_err(io_err)?;
            let size = r.read_u32().await.map_err(io_err)?;
            // The buffer starts zeroed and overlaps are caught at the end: nothing to write.
            let (start, end) = place(offset, u64::from(size))?;
            spans.push((start as u32, end as u32));
            Ok(None)
        }
        (
            REPLY_TYPE_BLOCK_STATUS,
            Op::Status {
                context_id,
                extents,
                ..
            },
        ) if length >= 12 && (length - 4).is_multiple_of(8) && length <= MAX_STATUS_PAYLOAD => {
            read_status_chunk(r, length, *context_id, extents).await?;
            Ok(None)
        }
        // Error chunks, including unknown ones (bit 15 set): the request fails, the
        // connection goes on.
        (k, _) if k & REPLY_TYPE_ERROR_BIT != 0 && (6..=MAX_ERROR_PAYLOAD).contains(&length) => {
            let (errno, message) = read_error_chunk(r, k, length).await?;
            Ok(Some(command_error(p, errno, message)))
        }
        _ => Err(NbdError::Protocol(format!(
            "unexpected reply chunk (type {kind}, {length} bytes) for a {command} request"
        ))),
    }
}

/// A block-status chunk of `length` bytes (already checked): keeps its extents if
/// they are for `context_id`.
async fn read_status_chunk<R: AsyncRead + Unpin>(
    r: &mut R,
    length: u32,
    context_id: u32,
    extents: &mut Option<Vec<BlockExtent>>,
) -> Result<(), NbdError> {
    let id = r.read_u32().await.map_err(io_err)?;
    let mut raw = vec![0u8; (length - 4) as usize];
    r.read_exact(&mut raw).await.map_err(io_err)?;
    // The server answers for every negotiated context; keep the one asked for.
    if id != context_id {
        return Ok(());
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
    Ok(())
}

/// An error chunk of type `kind` and `length` bytes (already bounded): its errno and
/// message (with the offset, for `NBD_REPLY_TYPE_ERROR_OFFSET`).
async fn read_error_chunk<R: AsyncRead + Unpin>(
    r: &mut R,
    kind: u16,
    length: u32,
) -> Result<(u32, String), NbdError> {
    let mut raw = vec![0u8; length as usize];
    r.read_exact(&mut raw).await.map_err(io_err)?;
    let errno = u32::from_be_bytes(raw[0..4].try_into().unwrap());
    let msg_len = usize::from(u16::from_be_bytes([raw[4], raw[5]]));
    let tail = if kind == REPLY_TYPE_ERROR_OFFSET {
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
    Ok((errno, message))
}

fn command_error(p: &Pending, errno: u32, message: String) -> NbdError {
    let message = message.trim().to_string();
    NbdError::Command {
        command: p.command(),
        offset: p.offset,
        length: p.length,
        errno,
        errno_name: errno_name(errno),
        message: if message.is_empty() {
            message
        } else {
            format!(": {message}")
        },
    }
}
