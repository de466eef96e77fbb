//! The packs in storage as the repository reads them back: the `data/` listing with
//! sizes, and each pack's sealed header from a ranged GET of its tail (what `repair
//! index`, prune and the commit guard need when no index object can be trusted).

use std::time::SystemTime;

use crate::crypto::ChunkId;
use crate::error::StoreResult;
use crate::format::pack::{PackEntry, TRAILER_LEN, decode_header, header_len_from_trailer};
use crate::format::{self, DATA_PREFIX, DecodeError};
use crate::repo::Repository;

/// Bytes read from a pack's end in the first request: enough for the header of a pack
/// of ~1300 chunks, so nearly every pack needs one request only.
const TAIL_GUESS: u64 = 64 * 1024;

/// A pack in the bucket's `data/` listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredPack {
    pub id: ChunkId,
    pub size: u64,
    /// When it was written, if the store said.
    pub modified: Option<SystemTime>,
}

/// Outcome of reading one pack's header.
pub(crate) enum HeaderRead {
    Ok(Vec<PackEntry>),
    Damaged(String),
    Vanished,
}

impl Repository {
    /// Every pack in the bucket, in any order. Objects under `data/` not named like a
    /// pack are skipped.
    pub async fn list_packs(&self) -> StoreResult<Vec<StoredPack>> {
        Ok(self
            .backend()
            .list(DATA_PREFIX)
            .await?
            .into_iter()
            .filter_map(|o| {
                let id = format::id_from_key(&o.key)?;
                Some(StoredPack {
                    id,
                    size: o.size,
                    modified: o.modified,
                })
            })
            .collect())
    }

    /// Reads and opens one pack's sealed header with (usually) a single ranged GET of
    /// the pack's tail. Storage errors other than "not found" are errors, not damage:
    /// the pack may be fine.
    pub(crate) async fn read_pack_header(
        &self,
        pack: &ChunkId,
        size: u64,
    ) -> StoreResult<HeaderRead> {
        let key = format::pack_key(pack);
        let damaged = |e: DecodeError| Ok(HeaderRead::Damaged(e.to_string()));
        if size < TRAILER_LEN as u64 {
            return Ok(HeaderRead::Damaged(format!(
                "only {size} bytes, shorter than the {TRAILER_LEN}-byte trailer"
            )));
        }
        let tail_len = size.min(TAIL_GUESS);
        let tail = match self
            .backend()
            .get_range(&key, size - tail_len, tail_len)
            .await
        {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(HeaderRead::Vanished),
            Err(e) => return Err(e.into()),
        };
        if (tail.len() as u64) < tail_len {
            return Ok(HeaderRead::Damaged(format!(
                "shorter than listed ({} of {tail_len} tail bytes readable)",
                tail.len()
            )));
        }
        let header_len = match header_len_from_trailer(&tail[tail.len() - TRAILER_LEN..]) {
            Ok(n) => n as u64,
            Err(e) => return damaged(e),
        };
        let needed = header_len + TRAILER_LEN as u64;
        if needed > size {
            return Ok(HeaderRead::Damaged(format!(
                "trailer names a {header_len}-byte header, but the pack has only {size} bytes"
            )));
        }
        let sealed = if needed <= tail_len {
            tail.slice((tail_len - needed) as usize..tail.len() - TRAILER_LEN)
        } else {
            match self
                .backend()
                .get_range(&key, size - needed, header_len)
                .await
            {
                Ok(b) if b.len() as u64 == header_len => b,
                Ok(_) => return Ok(HeaderRead::Damaged("shorter than listed".into())),
                Err(e) if e.is_not_found() => return Ok(HeaderRead::Vanished),
                Err(e) => return Err(e.into()),
            }
        };
        match decode_header(self.keys(), &sealed, size) {
            Ok(entries) => Ok(HeaderRead::Ok(entries)),
            Err(e) => damaged(e),
        }
    }
}
