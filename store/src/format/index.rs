//! Index objects: which pack holds each chunk.
//!
//! ```text
//! index   = "LBIX" ‖ version: u32 ‖ pack_count: u64 ‖ (pack id [32] ‖ count: u64 ‖ PackEntry*)*
//! ```
//! Sealed with the object key (`index/<id>`) as associated data. Index objects are
//! written after the packs they describe, and are only a cache of the pack headers:
//! `lifeboat repair index` can rebuild them from the packs.

use super::pack::{ENTRY_LEN, PackEntry};
use super::wire::{DecodeError, Reader, Writer};
use crate::crypto::ChunkId;

const MAGIC: &[u8; 4] = b"LBIX";
const VERSION: u32 = 1;

/// The chunks of one pack, as listed in an index object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedPack {
    pub pack: ChunkId,
    pub entries: Vec<PackEntry>,
}

pub fn encode_index(packs: &[IndexedPack]) -> Vec<u8> {
    let entries: usize = packs.iter().map(|p| p.entries.len()).sum();
    let mut w = Writer::with_capacity(16 + packs.len() * 40 + entries * ENTRY_LEN);
    w.bytes(MAGIC).u32(VERSION).u64(packs.len() as u64);
    for p in packs {
        w.bytes(&p.pack.0).u64(p.entries.len() as u64);
        for e in &p.entries {
            e.encode(&mut w);
        }
    }
    w.into_inner()
}

pub fn decode_index(plain: &[u8]) -> Result<Vec<IndexedPack>, DecodeError> {
    let mut r = Reader::new(plain);
    r.magic(MAGIC, "index")?;
    r.version("index", VERSION)?;
    let pack_count = r.count(40)?;
    let mut packs = Vec::with_capacity(pack_count);
    for _ in 0..pack_count {
        let pack = ChunkId(r.array()?);
        let count = r.count(ENTRY_LEN)?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push(PackEntry::decode(&mut r)?);
        }
        packs.push(IndexedPack { pack, entries });
    }
    r.finish()?;
    Ok(packs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trip_and_truncation() {
        let packs = vec![
            IndexedPack {
                pack: ChunkId::random(),
                entries: vec![PackEntry {
                    id: ChunkId::random(),
                    offset: 0,
                    length: 100,
                    raw_len: 300,
                }],
            },
            IndexedPack {
                pack: ChunkId::random(),
                entries: vec![],
            },
        ];
        let bytes = encode_index(&packs);
        assert_eq!(decode_index(&bytes).unwrap(), packs);
        for cut in 0..bytes.len() {
            assert!(decode_index(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_index(&longer).is_err());
    }
}
