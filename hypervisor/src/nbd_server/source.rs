//! What the server serves ([`BlockSource`]) and where it listens ([`ListenAddress`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;

/// A read-only disk the server exports, e.g. a backup point in the repository.
#[async_trait::async_trait]
pub trait BlockSource: Send + Sync + 'static {
    /// Disk size in bytes.
    fn size(&self) -> u64;
    /// Exactly `len` bytes at `offset` (`offset + len <= size()`). An error is
    /// returned to the client as `NBD_EIO` and logged.
    async fn read_at(&self, offset: u64, len: u32) -> Result<Bytes, std::io::Error>;
    /// Known-zero ranges as `(offset, length, zero)` for `NBD_CMD_BLOCK_STATUS`
    /// `base:allocation`: consecutive ranges from `offset`, in order, within
    /// `[offset, offset + len)` (they may cover less). `None` (the default) reports
    /// everything as data.
    fn zero_ranges(&self, _offset: u64, _len: u32) -> Option<Vec<(u64, u64, bool)>> {
        None
    }
}

/// Where [`NbdServer`](super::NbdServer) listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    /// A unix socket path: clients use `nbd+unix:///?socket=PATH`.
    Unix(PathBuf),
    /// A TCP address; port 0 picks a free port (see `NbdServer::local_addr`).
    Tcp(SocketAddr),
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Unix(p) => write!(f, "nbd+unix:///?socket={}", p.display()),
            ListenAddress::Tcp(a) => write!(f, "nbd://{a}"),
        }
    }
}
