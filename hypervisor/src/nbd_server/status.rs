//! `NBD_CMD_BLOCK_STATUS` for `base:allocation`: turns what the [`BlockSource`] knows
//! about zero ranges into the extent list of a block-status reply.
//!
//! The source's ranges are trusted only as far as they make sense: they must start
//! at the requested offset, follow each other without gaps and stay inside the
//! request; the first one that does not ends the list (the spec lets a reply cover
//! less than asked). With nothing usable, the whole range is reported as data.

use super::negotiate::ALLOCATION_ID;
use super::source::BlockSource;

/// Extents per reply: bounds the reply whatever the source returns.
const MAX_EXTENTS: usize = 1 << 16;
/// `NBD_STATE_HOLE | NBD_STATE_ZERO`: reads as zeros, nothing allocated.
const STATE_ZERO_HOLE: u32 = 3;

/// The payload of an `NBD_REPLY_TYPE_BLOCK_STATUS` chunk for `[offset, offset + len)`.
pub(super) fn extents(source: &dyn BlockSource, offset: u64, len: u32, only_one: bool) -> Vec<u8> {
    let end = offset + u64::from(len);
    let mut list: Vec<(u32, u32)> = Vec::new();
    let mut at = offset;
    for (start, length, zero) in source.zero_ranges(offset, len).unwrap_or_default() {
        let stop = start.saturating_add(length).min(end);
        if start != at || stop <= start || list.len() == MAX_EXTENTS {
            break;
        }
        let flags = if zero { STATE_ZERO_HOLE } else { 0 };
        // Both bounds lie within one u32-long request, so the difference fits.
        list.push(((stop - start) as u32, flags));
        at = stop;
        if only_one || at == end {
            break;
        }
    }
    if list.is_empty() {
        list.push((len, 0));
    }
    let mut p = Vec::with_capacity(4 + 8 * list.len());
    p.extend_from_slice(&ALLOCATION_ID.to_be_bytes());
    for (l, f) in list {
        p.extend_from_slice(&l.to_be_bytes());
        p.extend_from_slice(&f.to_be_bytes());
    }
    p
}
