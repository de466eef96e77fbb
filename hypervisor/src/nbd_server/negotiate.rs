//! The server side of the fixed-newstyle handshake: greeting, client flags, then
//! options until the client picks the export (`NBD_OPT_GO`, `NBD_OPT_EXPORT_NAME`)
//! or leaves.
//!
//! Unknown options get `NBD_REP_ERR_UNSUP` and the haggling goes on, as the spec
//! asks; only a broken framing (bad magic, an option too large to skip) ends it,
//! because after that the stream cannot be resynchronised.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::nbd::ALLOCATION_CONTEXT;
use crate::nbd::error::{REP_ERR, REP_ERR_UNSUP};
use crate::nbd::handshake::{
    FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT, INFO_BLOCK_SIZE, INFO_EXPORT, MAX_STRING,
    NBDMAGIC, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO, OPT_REPLY_MAGIC, OPT_SET_META_CONTEXT,
    OPT_STRUCTURED_REPLY, REP_ACK, REP_INFO, REP_META_CONTEXT,
};
use crate::nbd::transmission::{FLAG_READ_ONLY, MAX_READ};

const OPT_LIST: u32 = 3;
const OPT_INFO: u32 = 6;
const OPT_LIST_META_CONTEXT: u32 = 9;
/// The id `base:allocation` gets; the only context this server offers.
pub(super) const ALLOCATION_ID: u32 = 1;
const REP_SERVER: u32 = 2;
const REP_ERR_INVALID: u32 = REP_ERR + 3;
const REP_ERR_UNKNOWN: u32 = REP_ERR + 6;
const REP_ERR_TOO_BIG: u32 = REP_ERR + 9;
const FLAG_HAS_FLAGS: u16 = 1;
const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
/// Read-only and the same data on every connection, so clients may open several.
pub(super) const TRANSMISSION_FLAGS: u16 = FLAG_HAS_FLAGS | FLAG_READ_ONLY | FLAG_CAN_MULTI_CONN;
/// The largest option payload accepted: a name (≤ 4096) plus information requests.
const MAX_OPTION: u32 = 8192;
/// Preferred block size: a qcow2 cluster, what an overlay's reads come in.
const PREFERRED_BLOCK: u32 = 64 << 10;

/// The export being negotiated for.
pub(super) struct Export<'a> {
    pub name: &'a str,
    pub size: u64,
}

/// What transmission must honour.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Negotiated {
    /// Replies are structured (`NBD_OPT_STRUCTURED_REPLY`).
    pub structured: bool,
    /// `base:allocation` was selected, with id [`ALLOCATION_ID`].
    pub allocation: bool,
}

/// How the handshake ended without an error.
pub(super) enum Outcome {
    /// The client selected the export: go on to transmission.
    Transmission(Negotiated),
    /// The client aborted or asked for an unknown export with the old option.
    Closed,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Runs the handshake on a fresh connection.
pub(super) async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    export: &Export<'_>,
) -> io::Result<Outcome> {
    let mut greeting = Vec::with_capacity(18);
    greeting.extend_from_slice(&NBDMAGIC.to_be_bytes());
    greeting.extend_from_slice(&IHAVEOPT.to_be_bytes());
    greeting.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&greeting).await?;
    s.flush().await?;
    let client_flags = s.read_u32().await?;
    let known = u32::from(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    if client_flags & !known != 0 || client_flags & u32::from(FLAG_FIXED_NEWSTYLE) == 0 {
        // The spec: a server must drop a client that sets flags it does not know.
        return Err(bad("client flags not fixed-newstyle or unknown"));
    }
    let no_zeroes = client_flags & u32::from(FLAG_NO_ZEROES) != 0;
    let mut state = Negotiated::default();
    loop {
        let magic = s.read_u64().await?;
        if magic != IHAVEOPT {
            return Err(bad("option without IHAVEOPT magic"));
        }
        let option = s.read_u32().await?;
        let len = s.read_u32().await?;
        if len > MAX_OPTION {
            // Skipping gigabytes is not worth it: refuse and hang up.
            reply(s, option, REP_ERR_TOO_BIG, b"option data too large").await?;
            return Err(bad("option data too large"));
        }
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data).await?;
        match option {
            OPT_EXPORT_NAME => return export_name(s, export, &data, no_zeroes, state).await,
            OPT_ABORT => {
                // The client may already have gone; an error here means nothing.
                let _ = reply(s, option, REP_ACK, &[]).await;
                return Ok(Outcome::Closed);
            }
            OPT_LIST => list(s, export, &data).await?,
            OPT_INFO | OPT_GO => {
                if info(s, option, export, &data).await? && option == OPT_GO {
                    return Ok(Outcome::Transmission(state));
                }
            }
            OPT_STRUCTURED_REPLY if data.is_empty() => {
                state.structured = true;
                reply(s, option, REP_ACK, &[]).await?;
            }
            OPT_STRUCTURED_REPLY => reply(s, option, REP_ERR_INVALID, b"takes no data").await?,
            OPT_SET_META_CONTEXT | OPT_LIST_META_CONTEXT => {
                let selected = meta_context(s, option, export, &data, state.structured).await?;
                if option == OPT_SET_META_CONTEXT {
                    state.allocation = selected;
                }
            }
            _ => reply(s, option, REP_ERR_UNSUP, b"option not supported").await?,
        }
    }
}

fn name_matches(export: &Export<'_>, asked: &[u8]) -> bool {
    asked.is_empty() || asked == export.name.as_bytes()
}

/// `NBD_OPT_EXPORT_NAME`: no error reply exists, an unknown name means hanging up.
async fn export_name<S: AsyncWrite + Unpin>(
    s: &mut S,
    export: &Export<'_>,
    asked: &[u8],
    no_zeroes: bool,
    state: Negotiated,
) -> io::Result<Outcome> {
    if !name_matches(export, asked) {
        return Ok(Outcome::Closed);
    }
    let mut b = Vec::with_capacity(134);
    b.extend_from_slice(&export.size.to_be_bytes());
    b.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
    if !no_zeroes {
        b.resize(134, 0);
    }
    s.write_all(&b).await?;
    s.flush().await?;
    Ok(Outcome::Transmission(state))
}

/// Splits a length-prefixed string off the front of `data`.
fn take_string(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    if n > MAX_STRING {
        return None;
    }
    Some((data.get(4..4 + n)?, data.get(4 + n..)?))
}

/// `NBD_OPT_SET_META_CONTEXT` / `NBD_OPT_LIST_META_CONTEXT`: only `base:allocation`
/// exists. Returns whether it was selected (listed, for LIST).
async fn meta_context<S: AsyncWrite + Unpin>(
    s: &mut S,
    option: u32,
    export: &Export<'_>,
    data: &[u8],
    structured: bool,
) -> io::Result<bool> {
    if !structured && option == OPT_SET_META_CONTEXT {
        return reply(
            s,
            option,
            REP_ERR_INVALID,
            b"negotiate structured replies first",
        )
        .await
        .map(|_| false);
    }
    let mut queries = Vec::new();
    let parsed = take_string(data).and_then(|(name, rest)| {
        let count = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        let mut rest = &rest[4..];
        // Each query takes at least 4 bytes, so `count` is bounded by the data.
        for _ in 0..count {
            let (q, r) = take_string(rest)?;
            queries.push(q);
            rest = r;
        }
        rest.is_empty().then_some(name)
    });
    let Some(name) = parsed else {
        return reply(
            s,
            option,
            REP_ERR_INVALID,
            b"malformed meta context request",
        )
        .await
        .map(|_| false);
    };
    if !name_matches(export, name) {
        return reply(s, option, REP_ERR_UNKNOWN, b"no such export")
            .await
            .map(|_| false);
    }
    let wanted = |q: &&[u8]| {
        *q == ALLOCATION_CONTEXT.as_bytes() || (option == OPT_LIST_META_CONTEXT && *q == b"base:")
    };
    let selected =
        queries.iter().any(wanted) || (option == OPT_LIST_META_CONTEXT && queries.is_empty());
    if selected {
        let mut m = ALLOCATION_ID.to_be_bytes().to_vec();
        m.extend_from_slice(ALLOCATION_CONTEXT.as_bytes());
        reply(s, option, REP_META_CONTEXT, &m).await?;
    }
    reply(s, option, REP_ACK, &[]).await?;
    Ok(selected)
}

async fn list<S: AsyncWrite + Unpin>(
    s: &mut S,
    export: &Export<'_>,
    data: &[u8],
) -> io::Result<()> {
    if !data.is_empty() {
        return reply(s, OPT_LIST, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data").await;
    }
    let mut entry = Vec::with_capacity(4 + export.name.len());
    entry.extend_from_slice(&(export.name.len() as u32).to_be_bytes());
    entry.extend_from_slice(export.name.as_bytes());
    reply(s, OPT_LIST, REP_SERVER, &entry).await?;
    reply(s, OPT_LIST, REP_ACK, &[]).await
}

/// `NBD_OPT_INFO` / `NBD_OPT_GO`. Returns whether the export was acknowledged.
async fn info<S: AsyncWrite + Unpin>(
    s: &mut S,
    option: u32,
    export: &Export<'_>,
    data: &[u8],
) -> io::Result<bool> {
    // name length, name, number of requests, requests (u16 each): all must add up.
    let parsed = data
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().unwrap_or_default()) as usize)
        .filter(|&n| n <= MAX_STRING)
        .and_then(|n| Some((data.get(4..4 + n)?, data.get(4 + n..4 + n + 2)?, 6 + n)))
        .filter(|(_, count, used)| {
            let count = usize::from(u16::from_be_bytes([count[0], count[1]]));
            data.len() == used + 2 * count
        });
    let Some((asked, _, _)) = parsed else {
        reply(
            s,
            option,
            REP_ERR_INVALID,
            b"malformed export name or info requests",
        )
        .await?;
        return Ok(false);
    };
    if !name_matches(export, asked) {
        reply(s, option, REP_ERR_UNKNOWN, b"no such export").await?;
        return Ok(false);
    }
    let mut exp = Vec::with_capacity(12);
    exp.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    exp.extend_from_slice(&export.size.to_be_bytes());
    exp.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
    reply(s, option, REP_INFO, &exp).await?;
    // Sent even unasked (the spec allows it): a minimum of 1 constrains no client.
    let mut bs = Vec::with_capacity(14);
    bs.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    for v in [1, PREFERRED_BLOCK, MAX_READ] {
        bs.extend_from_slice(&v.to_be_bytes());
    }
    reply(s, option, REP_INFO, &bs).await?;
    reply(s, option, REP_ACK, &[]).await?;
    Ok(true)
}

async fn reply<S: AsyncWrite + Unpin>(
    s: &mut S,
    option: u32,
    kind: u32,
    data: &[u8],
) -> io::Result<()> {
    let mut b = Vec::with_capacity(20 + data.len());
    b.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    s.write_all(&b).await?;
    s.flush().await
}
