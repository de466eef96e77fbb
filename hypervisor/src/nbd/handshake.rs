//! NBD wire format of the handshake phase: the fixed-newstyle greeting and the option
//! haggling up to `NBD_OPT_GO`, one function per option.
//!
//! Everything is big-endian. Every length a server sends is checked against a bound
//! before a buffer is allocated for it, because a hostile or broken server must not
//! be able to make the client allocate gigabytes.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::{NbdError, REP_ERR, REP_ERR_UNSUP, context_hint, refusal_reason};
use super::transmission::MAX_READ;

// Magic numbers.
pub(crate) const NBDMAGIC: u64 = 0x4e42_444d_4147_4943; // "NBDMAGIC"
pub(crate) const IHAVEOPT: u64 = 0x4948_4156_454f_5054; // "IHAVEOPT"
const CLISERV_MAGIC: u64 = 0x0000_4202_8186_1253; // oldstyle negotiation
pub(crate) const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

// Handshake flags (server) and client flags share bit positions.
pub(crate) const FLAG_FIXED_NEWSTYLE: u16 = 1;
pub(crate) const FLAG_NO_ZEROES: u16 = 2;

// Options.
pub(crate) const OPT_EXPORT_NAME: u32 = 1;
pub(crate) const OPT_ABORT: u32 = 2;
pub(crate) const OPT_GO: u32 = 7;
pub(crate) const OPT_STRUCTURED_REPLY: u32 = 8;
pub(crate) const OPT_SET_META_CONTEXT: u32 = 10;

// Option reply types (the errors are in `error`).
pub(crate) const REP_ACK: u32 = 1;
pub(crate) const REP_INFO: u32 = 3;
pub(crate) const REP_META_CONTEXT: u32 = 4;

// NBD_REP_INFO types.
pub(crate) const INFO_EXPORT: u16 = 0;
pub(crate) const INFO_BLOCK_SIZE: u16 = 3;

/// Option replies are small (names, sizes, messages ≤ 4096 bytes by the spec).
const MAX_OPTION_REPLY: u32 = 64 << 10;
/// NBD strings are at most 4096 bytes.
pub(crate) const MAX_STRING: usize = 4096;

/// The outcome of a successful handshake.
#[derive(Debug)]
pub(crate) struct Negotiated {
    pub size: u64,
    pub transmission_flags: u16,
    pub structured: bool,
    /// Meta contexts the server selected: (name, id).
    pub contexts: Vec<(String, u32)>,
    pub min_block: u32,
    pub max_block: u32,
}

/// What the server says about the export it selected.
struct ExportInfo {
    size: u64,
    transmission_flags: u16,
    min_block: u32,
    max_block: u32,
}

/// Runs the whole handshake on a fresh connection and selects `export`.
pub(crate) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    export: &str,
    contexts: &[String],
) -> Result<Negotiated, NbdError> {
    let no_zeroes = greet(s).await?;
    let structured = structured_replies(s).await?;
    let selected = if contexts.is_empty() {
        Vec::new()
    } else if structured {
        set_meta_contexts(s, export, contexts).await?
    } else {
        return Err(NbdError::Unsupported(
            "structured replies, which block status (allocation and dirty maps) needs".into(),
        ));
    };
    let info = match go(s, export).await? {
        Some(info) => info,
        // Pre-GO servers: fall back to the older option, which cannot report errors.
        None => export_name(s, export, no_zeroes).await?,
    };
    Ok(Negotiated {
        size: info.size,
        transmission_flags: info.transmission_flags,
        structured,
        contexts: selected,
        min_block: info.min_block,
        max_block: info.max_block,
    })
}

/// Greets the server and leaves cleanly with `NBD_OPT_ABORT`: proves the server is
/// up and speaking NBD without making it log a failed negotiation.
pub(crate) async fn abort_probe<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> Result<(), NbdError> {
    greet(s).await?;
    send_option(s, OPT_ABORT, &[]).await?;
    // The spec lets a server close instead of acknowledging; either is fine.
    let _ = read_option_reply(s, OPT_ABORT).await;
    Ok(())
}

fn hs_io(source: io::Error) -> NbdError {
    NbdError::Io {
        context: "negotiating with the server",
        source,
    }
}

/// Reads the greeting and answers with our client flags. Returns whether the server
/// will omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
async fn greet<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<bool, NbdError> {
    let mut b = [0u8; 18];
    s.read_exact(&mut b[..16]).await.map_err(hs_io)?;
    if u64::from_be_bytes(b[0..8].try_into().unwrap()) != NBDMAGIC {
        return Err(NbdError::Protocol(
            "no NBDMAGIC greeting: is this an NBD server?".into(),
        ));
    }
    match u64::from_be_bytes(b[8..16].try_into().unwrap()) {
        IHAVEOPT => {}
        CLISERV_MAGIC => return Err(NbdError::Unsupported("oldstyle negotiation only".into())),
        m => {
            return Err(NbdError::Protocol(format!(
                "unknown handshake magic {m:#018x}"
            )));
        }
    }
    s.read_exact(&mut b[16..18]).await.map_err(hs_io)?;
    let server_flags = u16::from_be_bytes([b[16], b[17]]);
    if server_flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(NbdError::Unsupported("fixed-newstyle negotiation".into()));
    }
    // Only ever echo flags the server offered: it must drop us on an unknown one.
    let client_flags = u32::from(server_flags & (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
    s.write_all(&client_flags.to_be_bytes())
        .await
        .map_err(hs_io)?;
    Ok(server_flags & FLAG_NO_ZEROES != 0)
}

/// `NBD_OPT_STRUCTURED_REPLY`: needed for block status, and it lets the server send
/// holes without data. An old server may refuse; reads then use simple replies.
async fn structured_replies<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> Result<bool, NbdError> {
    send_option(s, OPT_STRUCTURED_REPLY, &[]).await?;
    let reply = read_option_reply(s, OPT_STRUCTURED_REPLY).await?;
    match reply.kind {
        REP_ACK => Ok(true),
        REP_ERR_UNSUP => Ok(false),
        k if k & REP_ERR != 0 => Err(refused("NBD_OPT_STRUCTURED_REPLY", &reply)),
        k => Err(NbdError::Protocol(format!(
            "unexpected reply {k} to NBD_OPT_STRUCTURED_REPLY"
        ))),
    }
}

/// `NBD_OPT_SET_META_CONTEXT` for `contexts`: the (name, id) of each, or
/// [`NbdError::MetaContextNotOffered`] for the first the server did not select.
async fn set_meta_contexts<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    export: &str,
    contexts: &[String],
) -> Result<Vec<(String, u32)>, NbdError> {
    let mut data = Vec::new();
    data.extend_from_slice(&(export.len() as u32).to_be_bytes());
    data.extend_from_slice(export.as_bytes());
    data.extend_from_slice(&(contexts.len() as u32).to_be_bytes());
    for c in contexts {
        data.extend_from_slice(&(c.len() as u32).to_be_bytes());
        data.extend_from_slice(c.as_bytes());
    }
    send_option(s, OPT_SET_META_CONTEXT, &data).await?;
    let mut selected = Vec::new();
    loop {
        let reply = read_option_reply(s, OPT_SET_META_CONTEXT).await?;
        match reply.kind {
            REP_ACK => break,
            REP_META_CONTEXT if reply.data.len() >= 4 => {
                let id = be_u32(&reply.data, 0);
                let name = String::from_utf8_lossy(&reply.data[4..]).into_owned();
                // One reply per context asked for (no wildcards are sent): more is
                // a server trying to grow this list without end.
                if selected.len() == contexts.len() {
                    return Err(NbdError::Protocol(
                        "more meta contexts than asked for".into(),
                    ));
                }
                selected.push((name, id));
            }
            k if k & REP_ERR != 0 => return Err(refused("NBD_OPT_SET_META_CONTEXT", &reply)),
            k => {
                return Err(NbdError::Protocol(format!(
                    "unexpected reply {k} to NBD_OPT_SET_META_CONTEXT"
                )));
            }
        }
    }
    // A server silently ignores contexts it does not know (QEMU does for a
    // bitmap it does not export), so check that each one came back.
    if let Some(missing) = contexts
        .iter()
        .find(|c| !selected.iter().any(|(n, _)| n == *c))
    {
        return Err(NbdError::MetaContextNotOffered {
            context: missing.clone(),
            hint: context_hint(missing),
        });
    }
    Ok(selected)
}

/// `NBD_OPT_GO`, asking for block size constraints so reads can respect them.
/// `None` when the server does not know the option.
async fn go<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    export: &str,
) -> Result<Option<ExportInfo>, NbdError> {
    let mut data = Vec::new();
    data.extend_from_slice(&(export.len() as u32).to_be_bytes());
    data.extend_from_slice(export.as_bytes());
    data.extend_from_slice(&1u16.to_be_bytes());
    data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    send_option(s, OPT_GO, &data).await?;
    let mut export_info = None;
    let (mut min_block, mut max_block) = (1u32, MAX_READ);
    loop {
        let reply = read_option_reply(s, OPT_GO).await?;
        match reply.kind {
            REP_ACK => break,
            REP_INFO if reply.data.len() >= 2 => match be_u16(&reply.data, 0) {
                INFO_EXPORT if reply.data.len() == 12 => {
                    export_info = Some((be_u64(&reply.data, 2), be_u16(&reply.data, 10)));
                }
                INFO_BLOCK_SIZE if reply.data.len() == 14 => {
                    let (min, max) = (be_u32(&reply.data, 2), be_u32(&reply.data, 10));
                    if !min.is_power_of_two() || min > 64 << 10 || max < min {
                        return Err(NbdError::Protocol(format!(
                            "bad block sizes min {min}, max {max}"
                        )));
                    }
                    (min_block, max_block) = (min, max);
                }
                // Other information (name, description) is optional; ignore it.
                _ => {}
            },
            REP_ERR_UNSUP => return Ok(None),
            k if k & REP_ERR != 0 => return Err(refused("NBD_OPT_GO", &reply)),
            k => {
                return Err(NbdError::Protocol(format!(
                    "unexpected reply {k} to NBD_OPT_GO"
                )));
            }
        }
    }
    let (size, transmission_flags) = export_info
        .ok_or_else(|| NbdError::Protocol("NBD_OPT_GO succeeded without NBD_INFO_EXPORT".into()))?;
    Ok(Some(ExportInfo {
        size,
        transmission_flags,
        min_block,
        max_block,
    }))
}

/// `NBD_OPT_EXPORT_NAME`, for servers older than `NBD_OPT_GO`. It cannot report
/// errors: the server just hangs up.
async fn export_name<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    export: &str,
    no_zeroes: bool,
) -> Result<ExportInfo, NbdError> {
    send_option(s, OPT_EXPORT_NAME, export.as_bytes()).await?;
    let mut b = vec![0u8; if no_zeroes { 10 } else { 134 }];
    s.read_exact(&mut b).await.map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => NbdError::OptionRefused {
            option: "NBD_OPT_EXPORT_NAME",
            code: 0,
            reason: format!(
                "server closed the connection: export {export:?} probably does not exist"
            ),
            message: String::new(),
        },
        _ => hs_io(e),
    })?;
    Ok(ExportInfo {
        size: be_u64(&b, 0),
        transmission_flags: be_u16(&b, 8),
        min_block: 1,
        max_block: MAX_READ,
    })
}

async fn send_option<S: AsyncWrite + Unpin>(
    s: &mut S,
    option: u32,
    data: &[u8],
) -> Result<(), NbdError> {
    let mut msg = Vec::with_capacity(16 + data.len());
    msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
    msg.extend_from_slice(&option.to_be_bytes());
    msg.extend_from_slice(&(data.len() as u32).to_be_bytes());
    msg.extend_from_slice(data);
    s.write_all(&msg).await.map_err(hs_io)?;
    s.flush().await.map_err(hs_io)
}

struct OptReply {
    kind: u32,
    data: Vec<u8>,
}

async fn read_option_reply<S: AsyncRead + Unpin>(
    s: &mut S,
    option: u32,
) -> Result<OptReply, NbdError> {
    let mut h = [0u8; 20];
    s.read_exact(&mut h).await.map_err(hs_io)?;
    let magic = u64::from_be_bytes(h[0..8].try_into().unwrap());
    let echoed = u32::from_be_bytes(h[8..12].try_into().unwrap());
    let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
    let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
    if magic != OPT_REPLY_MAGIC || echoed != option {
        return Err(NbdError::Protocol(format!(
            "bad option reply (magic {magic:#x}, option {echoed}, expected option {option})"
        )));
    }
    if len > MAX_OPTION_REPLY {
        return Err(NbdError::Protocol(format!(
            "option reply of {len} bytes is absurd"
        )));
    }
    let mut data = vec![0u8; len as usize];
    s.read_exact(&mut data).await.map_err(hs_io)?;
    Ok(OptReply { kind, data })
}

/// Turns an `NBD_REP_ERR_*` reply into an error naming the option and the reason.
fn refused(option: &'static str, reply: &OptReply) -> NbdError {
    let text = String::from_utf8_lossy(&reply.data[..reply.data.len().min(MAX_STRING)]);
    NbdError::OptionRefused {
        option,
        code: reply.kind,
        reason: refusal_reason(reply.kind).to_string(),
        message: if text.is_empty() {
            String::new()
        } else {
            format!(": {text}")
        },
    }
}

fn be_u16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(d[at..at + 2].try_into().unwrap())
}
fn be_u32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(d[at..at + 4].try_into().unwrap())
}
fn be_u64(d: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(d[at..at + 8].try_into().unwrap())
}
