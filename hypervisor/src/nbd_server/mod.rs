//! A small read-only NBD server, for instant recovery: a VM boots on a qcow2 overlay
//! whose backing file is `nbd+unix:///?socket=PATH`, and every block it has not
//! written yet is fetched on demand from a [`BlockSource`] (Lifeboat's repository).
//!
//! It speaks fixed-newstyle negotiation only (`NBD_OPT_GO`, `NBD_OPT_INFO`,
//! `NBD_OPT_EXPORT_NAME`, `NBD_OPT_LIST`, `NBD_OPT_ABORT`, `NBD_OPT_STRUCTURED_REPLY`,
//! `NBD_OPT_SET_META_CONTEXT` / `NBD_OPT_LIST_META_CONTEXT` for `base:allocation`;
//! every other option is answered `NBD_REP_ERR_UNSUP`), simple or structured replies
//! (one chunk per request), and `READ`, `BLOCK_STATUS`, `FLUSH` (a no-op) and `DISC`.
//! Writes, trims and write-zeroes fail with `NBD_EPERM`. Every length a client sends
//! is checked before anything is allocated for it; each connection keeps at most
//! 64 MiB of reads in flight, and at most 64 clients are served at once.
//!
//! Files: `server` (listening, accepting, shutdown) → `negotiate` (the handshake
//! phase) and `session` (the transmission phase, with `status` for block status) →
//! `source` and `error`, the plain types. This file only declares and re-exports.

mod error;
mod negotiate;
mod server;
mod session;
mod source;
mod status;

pub use error::NbdServerError;
pub use server::NbdServer;
pub use source::{BlockSource, ListenAddress};
