//! NBD (Network Block Device) client, and a launcher for `qemu-nbd`.
//!
//! Lifeboat reads every disk format QEMU understands (qcow2, VHDX, VMDK, VDI, raw) and
//! every running VM's export through one protocol. NBD also carries the two maps a
//! changed-block-tracking backup needs, through `NBD_CMD_BLOCK_STATUS`:
//!
//! * `base:allocation` — which extents hold data ([`STATE_HOLE`], [`STATE_ZERO`]), so
//!   unallocated space is never read;
//! * `qemu:dirty-bitmap:NAME` — which extents changed since QEMU started tracking
//!   them in the persistent bitmap `NAME` ([`STATE_DIRTY`]).
//!
//! The protocol is `doc/proto.md` of the NetworkBlockDevice/nbd project; this client
//! speaks the subset a backup reader needs: fixed-newstyle negotiation,
//! `NBD_OPT_STRUCTURED_REPLY`, `NBD_OPT_SET_META_CONTEXT`, `NBD_OPT_GO` (falling back to
//! `NBD_OPT_EXPORT_NAME`), and the `READ`, `BLOCK_STATUS` and `DISC` commands. No TLS,
//! no writes, no extended headers.
//!
//! One [`NbdClient`] is one connection, shared by reference between tasks: every call
//! takes `&self`, gets its own cookie, and many requests can be in flight at once
//! (module [`client`] explains the reader/writer tasks). Memory stays bounded: a read
//! is at most [`MAX_READ`] bytes, allocated by the caller's request, and every length a
//! server sends is checked before anything is allocated for it.
//!
//! [`QemuNbd`] runs `qemu-nbd` read-only on a private unix socket for an image file.

mod client;
mod connection;
mod protocol;
mod qemu;
mod replies;

use std::fmt;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

pub use client::NbdClient;
pub use qemu::{QemuNbd, detect_format};

/// IANA port for NBD, used when an `nbd://` address names none.
pub const DEFAULT_PORT: u16 = 10809;

/// Largest read [`NbdClient::read`] accepts (servers may advertise less; see
/// [`NbdClient::max_read_len`]). 32 MiB is what the spec says every server handles.
pub const MAX_READ: u32 = 32 << 20;

/// `base:allocation`: the extent is not allocated (a hole).
pub const STATE_HOLE: u32 = 1;
/// `base:allocation`: the extent reads as zeros.
pub const STATE_ZERO: u32 = 2;
/// `qemu:dirty-bitmap:NAME`: the extent changed since the bitmap started tracking.
pub const STATE_DIRTY: u32 = 1;

/// Where an NBD export is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NbdAddress {
    Tcp {
        host: String,
        port: u16,
        export: String,
    },
    Unix {
        socket: PathBuf,
        export: String,
    },
}

/// One extent of a block-status reply, relative to the request's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockExtent {
    pub length: u32,
    pub flags: u32,
}

/// An extent with its absolute offset on the disk (from [`NbdClient::map`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedExtent {
    pub offset: u64,
    pub length: u64,
    pub flags: u32,
}

/// What went wrong talking to an NBD server or running the QEMU tools.
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
    #[error("{tool} failed: {message}")]
    Tool { tool: &'static str, message: String },
    #[error("cannot run {tool}: {source} (is QEMU's qemu-utils package installed?)")]
    Spawn {
        tool: &'static str,
        #[source]
        source: io::Error,
    },
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
            NbdError::Command { errno, .. } => *errno == protocol::ESHUTDOWN,
            NbdError::OptionRefused { code, .. } => *code == protocol::REP_ERR_SHUTDOWN,
            _ => false,
        }
    }
}

/// What to tell the operator when a server does not offer a meta context.
pub(crate) fn context_hint(context: &str) -> String {
    if let Some(bitmap) = context.strip_prefix("qemu:dirty-bitmap:") {
        format!(
            "was qemu-nbd started with -B {bitmap}, and does the image hold a persistent \
             bitmap named {bitmap:?}? (`qemu-img info` lists them)"
        )
    } else if context == "base:allocation" {
        "the server cannot report allocation; read the whole disk instead".to_string()
    } else {
        "check the context name and that the server exports it".to_string()
    }
}

impl NbdAddress {
    /// Parses `nbd://host[:port][/export]` (port 10809 by default, IPv6 hosts in
    /// brackets) or `nbd+unix:///export?socket=PATH`, the URI forms libnbd and QEMU
    /// use. The export and socket are percent-decoded. TLS (`nbds://`) is refused.
    pub fn parse(uri: &str) -> Result<Self, NbdError> {
        let bad = |reason: &str| NbdError::InvalidAddress {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = uri.split_once("://").ok_or_else(|| {
            bad("expected nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH")
        })?;
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.find('/') {
            Some(i) => (&before_query[..i], &before_query[i + 1..]),
            None => (before_query, ""),
        };
        let export = String::from_utf8(percent_decode(path).map_err(|r| bad(&r))?)
            .map_err(|_| bad("the export name is not UTF-8"))?;
        if export.len() > 4096 || export.contains('\0') {
            return Err(bad(
                "the export name is longer than 4096 bytes or holds NUL",
            ));
        }
        match scheme {
            "nbd" => {
                if query.is_some() {
                    return Err(bad(
                        "nbd:// addresses take no query; for a unix socket use nbd+unix:///EXPORT?socket=PATH",
                    ));
                }
                let (host, port) = split_host_port(authority).map_err(|r| bad(&r))?;
                Ok(NbdAddress::Tcp { host, port, export })
            }
            "nbd+unix" => {
                if !authority.is_empty() {
                    return Err(bad(
                        "nbd+unix addresses have no host: use nbd+unix:///EXPORT?socket=PATH",
                    ));
                }
                let mut socket = None;
                for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
                    match pair.split_once('=') {
                        Some(("socket", v)) if !v.is_empty() => {
                            let bytes = percent_decode(v).map_err(|r| bad(&r))?;
                            socket = Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)));
                        }
                        _ => {
                            return Err(bad(&format!(
                                "unsupported query parameter {pair:?} (only socket=PATH)"
                            )));
                        }
                    }
                }
                let socket = socket.ok_or_else(|| bad("missing ?socket=PATH"))?;
                Ok(NbdAddress::Unix { socket, export })
            }
            "nbds" | "nbds+unix" => Err(bad(
                "TLS (nbds) is not supported; use nbd:// or nbd+unix://",
            )),
            _ => Err(bad(&format!(
                "unknown scheme {scheme:?}; expected nbd or nbd+unix"
            ))),
        }
    }

    /// The export name this address selects.
    pub fn export(&self) -> &str {
        match self {
            NbdAddress::Tcp { export, .. } | NbdAddress::Unix { export, .. } => export,
        }
    }
}

fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    if authority.contains('@') {
        return Err("user names are not supported in NBD addresses".into());
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or("unterminated [IPv6] host")?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or("expected :PORT after ]")?),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 => n,
            _ => return Err(format!("invalid port {p:?}")),
        },
    };
    Ok((host.to_string(), port))
}

fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let v = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(v.ok_or_else(|| format!("bad percent escape in {s:?}"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Escapes everything but unreserved characters (and `/` in paths), so that
/// `parse(addr.to_string())` gives back `addr`.
fn percent_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &c in bytes {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) || (keep_slash && c == b'/') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

impl fmt::Display for NbdAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NbdAddress::Tcp { host, port, export } => {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                let export = percent_encode(export.as_bytes(), false);
                write!(f, "nbd://{host}:{port}/{export}")
            }
            NbdAddress::Unix { socket, export } => {
                let export = percent_encode(export.as_bytes(), false);
                let socket = percent_encode(socket.as_os_str().as_bytes(), true);
                write!(f, "nbd+unix:///{export}?socket={socket}")
            }
        }
    }
}
