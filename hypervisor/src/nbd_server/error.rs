//! Errors of the NBD server: only listening can fail for the caller; a client's
//! mistakes end that client's connection and are logged.

use std::io;

use thiserror::Error;

/// Why [`NbdServer`](super::NbdServer) could not listen or serve.
#[derive(Debug, Error)]
pub enum NbdServerError {
    /// Binding the listening socket failed.
    #[error(
        "cannot listen on {addr}: {source}; pick another socket path or port, or check the directory's permissions"
    )]
    Bind {
        addr: String,
        #[source]
        source: io::Error,
    },
    /// Another live server already listens on this unix socket.
    #[error(
        "another NBD server is already listening on {0}; stop it or choose another socket path"
    )]
    InUse(String),
    /// Something that is not a socket sits at the socket path; it is not removed.
    #[error("{0} exists and is not a socket; remove it or choose another socket path")]
    NotASocket(String),
    /// Accepting connections failed for good (not a transient error).
    #[error("accepting NBD connections on {addr} failed: {source}; the server stopped, restart it")]
    Accept {
        addr: String,
        #[source]
        source: io::Error,
    },
}
