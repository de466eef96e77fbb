//! NBD wire format of the transmission phase: commands, request encoding and
//! reply-header decoding.
//!
//! Everything is big-endian. A reply header's lengths are checked by the reader
//! (`replies`) against the request before anything is buffered.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::error::NbdError;

/// Largest read `NbdClient::read` accepts (servers may advertise less; see
/// `NbdClient::max_read_len`). 32 MiB is what the spec says every server handles.
pub const MAX_READ: u32 = 32 << 20;

pub(crate) const REQUEST_MAGIC: u32 = 0x2560_9513;
pub(crate) const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub(crate) const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Transmission flag: the export is read-only.
pub(crate) const FLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: the server accepts `NBD_CMD_FLUSH`.
pub(crate) const FLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: the server accepts `NBD_CMD_WRITE_ZEROES`.
pub(crate) const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;

// Commands.
pub(crate) const CMD_READ: u16 = 0;
pub(crate) const CMD_WRITE: u16 = 1;
pub(crate) const CMD_DISC: u16 = 2;
pub(crate) const CMD_FLUSH: u16 = 3;
pub(crate) const CMD_WRITE_ZEROES: u16 = 6;
pub(crate) const CMD_BLOCK_STATUS: u16 = 7;

// Structured reply chunk types and flags.
pub(crate) const REPLY_FLAG_DONE: u16 = 1;
pub(crate) const REPLY_TYPE_NONE: u16 = 0;
pub(crate) const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub(crate) const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub(crate) const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub(crate) const REPLY_TYPE_ERROR_BIT: u16 = 1 << 15;
pub(crate) const REPLY_TYPE_ERROR_OFFSET: u16 = REPLY_TYPE_ERROR_BIT + 2;

/// Encodes one transmission request header (a write's payload follows it on the wire).
pub(crate) fn encode_request(kind: u16, cookie: u64, offset: u64, length: u32) -> [u8; 28] {
    let mut b = [0u8; 28];
    b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    // Bytes 4..6 are command flags: none used (no FUA, no DF, no REQ_ONE).
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..24].copy_from_slice(&offset.to_be_bytes());
    b[24..28].copy_from_slice(&length.to_be_bytes());
    b
}

/// The fixed part of a reply in the transmission phase.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReplyHeader {
    Simple {
        error: u32,
        cookie: u64,
    },
    Chunk {
        flags: u16,
        kind: u16,
        cookie: u64,
        length: u32,
    },
}

/// Reads the next reply header; `None` when the server closed the connection
/// between messages.
pub(crate) async fn read_reply_header<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<ReplyHeader>, NbdError> {
    let io_err = |source| NbdError::Io {
        context: "reading a reply",
        source,
    };
    let mut magic = [0u8; 4];
    match r.read_exact(&mut magic).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(io_err(e)),
    }
    match u32::from_be_bytes(magic) {
        SIMPLE_REPLY_MAGIC => {
            let mut b = [0u8; 12];
            r.read_exact(&mut b).await.map_err(io_err)?;
            Ok(Some(ReplyHeader::Simple {
                error: u32::from_be_bytes(b[0..4].try_into().unwrap()),
                cookie: u64::from_be_bytes(b[4..12].try_into().unwrap()),
            }))
        }
        STRUCTURED_REPLY_MAGIC => {
            let mut b = [0u8; 16];
            r.read_exact(&mut b).await.map_err(io_err)?;
            Ok(Some(ReplyHeader::Chunk {
                flags: u16::from_be_bytes(b[0..2].try_into().unwrap()),
                kind: u16::from_be_bytes(b[2..4].try_into().unwrap()),
                cookie: u64::from_be_bytes(b[4..12].try_into().unwrap()),
                length: u32::from_be_bytes(b[12..16].try_into().unwrap()),
            }))
        }
        other => Err(NbdError::Protocol(format!(
            "unknown reply magic {other:#010x}"
        ))),
    }
}
