//! What `NBD_CMD_BLOCK_STATUS` answers: extents with flags, for the meta contexts
//! QEMU offers.
//!
//! * `base:allocation` — which extents hold data ([`STATE_HOLE`], [`STATE_ZERO`]), so
//!   unallocated space is never read;
//! * `qemu:dirty-bitmap:NAME` — which extents changed since QEMU started tracking
//!   them in the persistent bitmap `NAME` ([`STATE_DIRTY`]).

/// The meta context that maps allocated data, holes and zeros.
pub const ALLOCATION_CONTEXT: &str = "base:allocation";

/// The meta context of QEMU's dirty bitmap `bitmap` (qemu-nbd `-B`, or an export's
/// `bitmaps`).
pub fn dirty_bitmap_context(bitmap: &str) -> String {
    format!("qemu:dirty-bitmap:{bitmap}")
}

/// `base:allocation`: the extent is not allocated (a hole).
pub const STATE_HOLE: u32 = 1;
/// `base:allocation`: the extent reads as zeros.
pub const STATE_ZERO: u32 = 2;
/// `qemu:dirty-bitmap:NAME`: the extent changed since the bitmap started tracking.
pub const STATE_DIRTY: u32 = 1;

/// One extent of a block-status reply, relative to the request's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockExtent {
    pub length: u32,
    pub flags: u32,
}

/// An extent with its absolute offset on the disk (from `NbdClient::map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedExtent {
    pub offset: u64,
    pub length: u64,
    pub flags: u32,
}
