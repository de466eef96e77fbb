//! What can go wrong talking to an NBD server, and whether trying again can help.
//!
//! The wire codes an error is judged by (`NBD_REP_ERR_*` of a refused option, the
//! errno of a failed command) live here too, so that the rest of the client can
//! name them without the error type reaching into the protocol code.

use std::io;

use super::extents::ALLOCATION_CONTEXT;

/// `NBD_REP_ERR_*` option replies have bit 31 set.
pub(crate) const REP_ERR: u32 = 1 << 31;
pub(crate) const REP_ERR_UNSUP: u32 = REP_ERR + 1;
pub(crate) const REP_ERR_SHUTDOWN: u32 = REP_ERR + 7;

/// Errno values on the wire (the spec fixes them; they are not the host's).
pub(crate) const ESHUTDOWN: u32 = 108;
pub(crate) const ENOSPC: u32 = 28;

/// What went wrong talking to an NBD server.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("invalid NBD address {uri:?}: {reason}")]
    InvalidAddress { uri: String, reason: String },
    #[error("cannot connect to NBD server {target}: {source} (is the server running?)")]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("NBD connection I/O error while {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("NBD connection lost ({reason}); reconnect and retry")]
    ConnectionLost { reason: String },
    #[error("NBD server broke the protocol: {0}")]
    Protocol(String),
    #[error("NBD server refused {option}: {reason}{message}")]
    OptionRefused {
        option: &'static str,
        /// The `NBD_REP_ERR_*` code.
        code: u32,
        reason: String,
        /// The server's own text, prefixed with ": ", or empty.
        message: String,
    },
    #[error("NBD server does not offer meta context {context} — {hint}")]
    MetaContextNotOffered { context: String, hint: String },
    #[error("NBD server does not support {0}")]
    Unsupported(String),
    #[error(
        "NBD {command} of {length} bytes at offset {offset} failed on the server: \
         {errno_name} (errno {errno}){message}"
    )]
    Command {
        command: &'static str,
        offset: u64,
        length: u32,
        errno: u32,
        errno_name: &'static str,
        /// The server's own text, prefixed with ": ", or empty.
        message: String,
    },
    #[error("invalid NBD request: {0}")]
    InvalidRequest(String),
}

impl NbdError {
    /// Whether doing the same thing again (on a new connection) may succeed: the
    /// transport failed, or the server said it is shutting down. Protocol violations,
    /// refused options, bad requests and server I/O errors are not retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            NbdError::Connect { .. } | NbdError::Io { .. } | NbdError::ConnectionLost { .. } => {
                true
            }
            NbdError::Command { errno, .. } => *errno == ESHUTDOWN,
            NbdError::OptionRefused { code, .. } => *code == REP_ERR_SHUTDOWN,
            _ => false,
        }
    }
}

impl NbdError {
    /// The server failed a command for lack of space (ENOSPC): the storage behind
    /// the export is full.
    pub fn is_no_space(&self) -> bool {
        matches!(self, NbdError::Command { errno: ENOSPC, .. })
    }
}

/// Human name of an NBD errno, for messages.
pub(crate) fn errno_name(errno: u32) -> &'static str {
    match errno {
        1 => "EPERM (operation not permitted)",
        5 => "EIO (I/O error)",
        12 => "ENOMEM (out of memory)",
        22 => "EINVAL (invalid argument)",
        ENOSPC => "ENOSPC (no space left)",
        75 => "EOVERFLOW (value too large)",
        95 => "ENOTSUP (not supported)",
        ESHUTDOWN => "ESHUTDOWN (server shutting down)",
        _ => "unknown error",
    }
}

/// Why the server refused an option, from its `NBD_REP_ERR_*` code.
pub(crate) fn refusal_reason(code: u32) -> &'static str {
    match code.wrapping_sub(REP_ERR) {
        1 => "not supported by this server",
        2 => "forbidden by server policy",
        3 => "invalid request",
        4 => "not supported on the server's platform",
        5 => "TLS required, which this client does not speak (use a plain-text export)",
        6 => "export not found (check the export name in the address)",
        7 => "server is shutting down",
        8 => "block size constraints required",
        9 => "request or reply too big",
        _ => "unknown error",
    }
}

/// What to tell the operator when a server does not offer a meta context.
pub(crate) fn context_hint(context: &str) -> String {
    if let Some(bitmap) = context.strip_prefix("qemu:dirty-bitmap:") {
        format!(
            "was qemu-nbd started with -B {bitmap}, and does the image hold a persistent \
             bitmap named {bitmap:?}? (`qemu-img info` lists them)"
        )
    } else if context == ALLOCATION_CONTEXT {
        "the server cannot report allocation; read the whole disk instead".to_string()
    } else {
        "check the context name and that the server exports it".to_string()
    }
}
