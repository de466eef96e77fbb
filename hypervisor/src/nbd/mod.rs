//! NBD (Network Block Device) client.
//!
//! Lifeboat reads every disk format QEMU understands (qcow2, VHDX, VMDK, VDI, raw) and
//! every running VM's export through one protocol. NBD also carries the two maps a
//! changed-block-tracking backup needs, through `NBD_CMD_BLOCK_STATUS`: which extents
//! hold data ([`ALLOCATION_CONTEXT`]), and which changed since QEMU started tracking
//! them in a persistent bitmap ([`dirty_bitmap_context`]).
//!
//! The protocol is `doc/proto.md` of the NetworkBlockDevice/nbd project; this client
//! speaks the subset a backup reader needs: fixed-newstyle negotiation,
//! `NBD_OPT_STRUCTURED_REPLY`, `NBD_OPT_SET_META_CONTEXT`, `NBD_OPT_GO` (falling back to
//! `NBD_OPT_EXPORT_NAME`), and the `READ`, `BLOCK_STATUS` and `DISC` commands; plus
//! `WRITE`, `WRITE_ZEROES` and `FLUSH` for the warm standby, which fills qcow2
//! overlays through a writable `qemu-nbd`. No TLS, no extended headers.
//!
//! One [`NbdClient`] is one connection, shared by reference between tasks: every call
//! takes `&self`, gets its own cookie, and many requests can be in flight at once
//! (module `connection` explains the reader/writer tasks). Memory stays bounded: a read
//! is at most [`MAX_READ`] bytes, allocated by the caller's request, and every length a
//! server sends is checked before anything is allocated for it.
//!
//! `crate::qemu_nbd` serves an image file to this client through `qemu-nbd`.
//!
//! Files, from the caller down to the socket: `client` (the public handle, request
//! checks) → `connection` (writer task) and `replies` (reader task), which share
//! `pending` (requests in flight, connection state) → `handshake` and `transmission`
//! (the wire format of the two protocol phases). `address`, `extents` and `error` are
//! the plain types they all use. This file only declares and re-exports.

mod address;
mod client;
mod connection;
pub(crate) mod error;
mod extents;
pub(crate) mod handshake;
mod pending;
mod replies;
pub(crate) mod transmission;

pub use address::{DEFAULT_PORT, NbdAddress};
pub use client::NbdClient;
pub use error::NbdError;
pub use extents::{
    ALLOCATION_CONTEXT, BlockExtent, MappedExtent, STATE_DIRTY, STATE_HOLE, STATE_ZERO,
    dirty_bitmap_context,
};
pub use transmission::MAX_READ;
