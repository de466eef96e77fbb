//! Where an NBD export is: the `nbd://` and `nbd+unix://` URIs libnbd and QEMU use,
//! parsed and printed back.

use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use super::error::NbdError;

/// IANA port for NBD, used when an `nbd://` address names none.
pub const DEFAULT_PORT: u16 = 10809;

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
