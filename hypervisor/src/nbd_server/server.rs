//! Listening and accepting: one task per connection (handshake, then transmission),
//! and a graceful shutdown that stops accepting, tells every connection to stop
//! reading requests, and waits for the reads already in flight.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::error::NbdServerError;
use super::negotiate::{Export, Outcome, negotiate};
use super::session::transmit;
use super::source::{BlockSource, ListenAddress};

/// Clients served at once: each may hold 64 MiB of reads in flight.
const MAX_CONNECTIONS: usize = 64;
/// A client that connects but never finishes the handshake must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Removes the unix socket file when the server goes away.
struct SocketFile(Option<PathBuf>);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A bound, not yet serving, read-only NBD server.
pub struct NbdServer {
    listener: Listener,
    addr: ListenAddress,
    _socket: SocketFile,
}

impl NbdServer {
    /// Listens on a unix socket path (a stale socket file is removed first, and the
    /// file is removed again when the server is dropped) or a TCP address.
    pub async fn bind(addr: &ListenAddress) -> Result<NbdServer, NbdServerError> {
        let bind_err = |source| NbdServerError::Bind {
            addr: addr.to_string(),
            source,
        };
        match addr {
            ListenAddress::Unix(path) => {
                remove_stale(path).await?;
                let l = UnixListener::bind(path).map_err(bind_err)?;
                Ok(NbdServer {
                    listener: Listener::Unix(l),
                    addr: addr.clone(),
                    _socket: SocketFile(Some(path.clone())),
                })
            }
            ListenAddress::Tcp(a) => {
                let l = TcpListener::bind(a).await.map_err(bind_err)?;
                let bound = l.local_addr().map_err(bind_err)?;
                Ok(NbdServer {
                    listener: Listener::Tcp(l),
                    addr: ListenAddress::Tcp(bound),
                    _socket: SocketFile(None),
                })
            }
        }
    }

    /// Where the server listens, with the actual port when port 0 was asked for.
    pub fn local_addr(&self) -> &ListenAddress {
        &self.addr
    }

    /// Serves `source` as export `name` (a client asking for `""` gets it too) to
    /// every client, each connection in its own task with many requests in flight,
    /// until `shutdown` resolves; then stops accepting, lets the reads in flight
    /// finish, closes every connection and returns.
    pub async fn serve(
        self,
        name: String,
        source: Arc<dyn BlockSource>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), NbdServerError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let name: Arc<str> = name.into();
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        let result = loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break Ok(()),
                a = self.accept() => a,
            };
            while conns.try_join_next().is_some() {}
            match accepted {
                Ok(Some(_)) if conns.len() >= MAX_CONNECTIONS => {
                    // Dropping the stream refuses the client; serving goes on.
                    tracing::warn!(addr = %self.addr, "NBD server: {MAX_CONNECTIONS} clients connected, refusing another");
                }
                Ok(Some(stream)) => {
                    let (name, source, stop) =
                        (Arc::clone(&name), Arc::clone(&source), stop_rx.clone());
                    conns.spawn(connection(stream, name, source, stop));
                }
                // Transient (a client reset before accept, out of descriptors): go on.
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(source) => {
                    break Err(NbdServerError::Accept {
                        addr: self.addr.to_string(),
                        source,
                    });
                }
            }
        };
        let _ = stop_tx.send(true);
        while conns.join_next().await.is_some() {}
        tracing::info!(addr = %self.addr, "NBD server stopped");
        result
    }

    /// The next connection; `Ok(None)` for an error worth retrying.
    async fn accept(&self) -> io::Result<Option<Stream>> {
        let accepted = match &self.listener {
            Listener::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().await.map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
        };
        match accepted {
            Ok(s) => Ok(Some(s)),
            Err(e) if is_transient(&e) => {
                tracing::warn!(error = %e, "NBD server: accept failed, retrying");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock)
        // EMFILE / ENFILE / ENOBUFS / ENOMEM: resources may come back.
        || matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12))
}

/// Removes a socket file no server answers on; refuses to touch anything else.
async fn remove_stale(path: &std::path::Path) -> Result<(), NbdServerError> {
    use std::os::unix::fs::FileTypeExt;
    let shown = path.display().to_string();
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(m) if !m.file_type().is_socket() => Err(NbdServerError::NotASocket(shown)),
        Ok(_) => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(NbdServerError::InUse(shown));
            }
            std::fs::remove_file(path).map_err(|source| NbdServerError::Bind {
                addr: shown,
                source,
            })
        }
    }
}

enum Stream {
    Unix(UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn connection(
    stream: Stream,
    name: Arc<str>,
    source: Arc<dyn BlockSource>,
    stop: watch::Receiver<bool>,
) {
    let result = match stream {
        Stream::Unix(s) => {
            let (r, w) = s.into_split();
            one_client(r, w, &name, source, stop).await
        }
        Stream::Tcp(s) => {
            let (r, w) = s.into_split();
            one_client(r, w, &name, source, stop).await
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "NBD server: client connection ended with an error");
    }
}

async fn one_client<R, W>(
    mut r: R,
    mut w: W,
    name: &str,
    source: Arc<dyn BlockSource>,
    stop: watch::Receiver<bool>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let export = Export {
        name,
        size: source.size(),
    };
    let mut rw = tokio::io::join(&mut r, &mut w);
    let mut stopping = stop.clone();
    // A client still haggling at shutdown has nothing in flight: just drop it.
    let outcome = tokio::select! {
        o = tokio::time::timeout(HANDSHAKE_TIMEOUT, negotiate(&mut rw, &export)) => o
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no NBD handshake within 30 s"))??,
        _ = stopping.wait_for(|&s| s) => Outcome::Closed,
    };
    match outcome {
        Outcome::Transmission(mode) => transmit(r, w, source, mode, stop).await,
        Outcome::Closed => Ok(()),
    }
}
