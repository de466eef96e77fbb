//! Packs: many chunk blobs in one object, so storage sees few, large PUTs.
//!
//! ```text
//! pack    = blob* ‖ sealed_header ‖ header_len: u32 ‖ "LBPK"
//! header  = "LBPH" ‖ version: u32 ‖ count: u64 ‖ PackEntry*     (sealed, AAD "lifeboat pack header")
//! PackEntry (48 bytes) = chunk id [32] ‖ offset: u64 ‖ length: u32 ‖ raw_len: u32
//! ```
//! The header makes every pack self-describing: the index can be rebuilt from the packs
//! alone. A pack's id is the plain BLAKE3 hash of its bytes, so anyone holding the
//! bucket can check a pack is intact, while learning nothing about its contents.

use super::wire::{DecodeError, Reader, Writer};
use crate::crypto::{ChunkId, RepoKeys, SEAL_OVERHEAD};

const TRAILER_MAGIC: &[u8; 4] = b"LBPK";
const HEADER_MAGIC: &[u8; 4] = b"LBPH";
const HEADER_VERSION: u32 = 1;
const HEADER_AAD: &[u8] = b"lifeboat pack header";
/// Bytes after the header: its length and the trailer magic.
pub const TRAILER_LEN: usize = 8;
/// Encoded size of one [`PackEntry`].
pub const ENTRY_LEN: usize = 48;
const _: () = assert!(ENTRY_LEN == 32 + 8 + 4 + 4);

/// Where one chunk blob sits inside a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ChunkId,
    /// Byte offset of the sealed blob in the pack.
    pub offset: u64,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the chunk's plaintext.
    pub raw_len: u32,
}

impl PackEntry {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.bytes(&self.id.0)
            .u64(self.offset)
            .u32(self.length)
            .u32(self.raw_len);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: ChunkId(r.array()?),
            offset: r.u64()?,
            length: r.u32()?,
            raw_len: r.u32()?,
        })
    }
}

/// Accumulates sealed blobs until the pack is big enough to upload.
#[derive(Default)]
pub struct PackBuilder {
    data: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// A finished pack, ready to upload.
pub struct FinishedPack {
    pub id: ChunkId,
    pub bytes: Vec<u8>,
    pub entries: Vec<PackEntry>,
}

impl PackBuilder {
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(bytes),
            entries: Vec::new(),
        }
    }

    pub fn add(&mut self, id: ChunkId, sealed_blob: &[u8], raw_len: u32) {
        self.entries.push(PackEntry {
            id,
            offset: self.data.len() as u64,
            length: u32::try_from(sealed_blob.len()).expect("blobs are at most 16 MiB"),
            raw_len,
        });
        self.data.extend_from_slice(sealed_blob);
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn finish(mut self, keys: &RepoKeys) -> FinishedPack {
        let sealed = keys.seal(HEADER_AAD, &encode_header(&self.entries));
        self.data.extend_from_slice(&sealed);
        self.data
            .extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        self.data.extend_from_slice(TRAILER_MAGIC);
        FinishedPack {
            id: ChunkId(*blake3::hash(&self.data).as_bytes()),
            bytes: self.data,
            entries: self.entries,
        }
    }
}

/// The plaintext of a pack header listing `entries` (sealed by [`PackBuilder::finish`]).
pub fn encode_header(entries: &[PackEntry]) -> Vec<u8> {
    let mut w = Writer::with_capacity(16 + entries.len() * ENTRY_LEN);
    w.bytes(HEADER_MAGIC)
        .u32(HEADER_VERSION)
        .u64(entries.len() as u64);
    for e in entries {
        e.encode(&mut w);
    }
    w.into_inner()
}

/// Reads the header length from a pack's last [`TRAILER_LEN`] bytes.
pub fn header_len_from_trailer(trailer: &[u8]) -> Result<usize, DecodeError> {
    let mut r = Reader::new(trailer);
    let len = r.u32()? as usize;
    r.magic(TRAILER_MAGIC, "pack")?;
    if len < SEAL_OVERHEAD {
        return Err(DecodeError::Invalid {
            what: "pack trailer",
            detail: format!("header length {len} is too short"),
        });
    }
    Ok(len)
}

/// Opens and parses a sealed pack header. `pack_len` is the whole pack's size, used to
/// check that every entry lies inside the blob area.
pub fn decode_header(
    keys: &RepoKeys,
    sealed: &[u8],
    pack_len: u64,
) -> Result<Vec<PackEntry>, DecodeError> {
    let plain = keys
        .open(HEADER_AAD, sealed)
        .map_err(|_| DecodeError::Invalid {
            what: "pack header",
            detail: "authentication failed (wrong key, or altered or truncated data)".into(),
        })?;
    let blob_area = pack_len.saturating_sub((sealed.len() + TRAILER_LEN) as u64);
    parse_header(&plain, blob_area)
}

/// Parses an opened pack header. `blob_area` is the length of the pack's blob area;
/// every entry must lie inside it. Separate from [`decode_header`] so the parser can
/// be fuzzed without forging authentication tags.
pub fn parse_header(plain: &[u8], blob_area: u64) -> Result<Vec<PackEntry>, DecodeError> {
    let mut r = Reader::new(plain);
    r.magic(HEADER_MAGIC, "pack header")?;
    r.version("pack header", HEADER_VERSION)?;
    let count = r.count(ENTRY_LEN)?;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let e = PackEntry::decode(&mut r)?;
        if e.offset
            .checked_add(u64::from(e.length))
            .is_none_or(|end| end > blob_area)
        {
            return Err(DecodeError::Invalid {
                what: "pack header",
                detail: format!("entry {:?} extends past the blob area", e.id),
            });
        }
        entries.push(e);
    }
    r.finish()?;
    Ok(entries)
}

/// Parses a whole pack held in memory: header first, then the blobs it lists.
pub fn decode_pack(keys: &RepoKeys, pack: &[u8]) -> Result<Vec<PackEntry>, DecodeError> {
    if pack.len() < TRAILER_LEN {
        return Err(DecodeError::Truncated {
            offset: 0,
            needed: TRAILER_LEN - pack.len(),
        });
    }
    let header_len = header_len_from_trailer(&pack[pack.len() - TRAILER_LEN..])?;
    let header_start =
        pack.len()
            .checked_sub(TRAILER_LEN + header_len)
            .ok_or(DecodeError::Truncated {
                offset: 0,
                needed: header_len,
            })?;
    decode_header(
        keys,
        &pack[header_start..pack.len() - TRAILER_LEN],
        pack.len() as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::format::blob::{open_chunk, seal_chunk};

    #[test]
    fn a_pack_describes_its_own_blobs() {
        let keys = RepoKeys::derive(&MasterKey::generate());
        let mut builder = PackBuilder::default();
        let chunks: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000 * (i as usize + 1)]).collect();
        for c in &chunks {
            let id = keys.chunk_id(c);
            builder.add(id, &seal_chunk(&keys, &id, c, 3), c.len() as u32);
        }
        let pack = builder.finish(&keys);
        assert_eq!(pack.id.0, *blake3::hash(&pack.bytes).as_bytes());
        let entries = decode_pack(&keys, &pack.bytes).unwrap();
        assert_eq!(entries, pack.entries);
        for (e, c) in entries.iter().zip(&chunks) {
            let blob = &pack.bytes[e.offset as usize..][..e.length as usize];
            assert_eq!(&open_chunk(&keys, &e.id, blob).unwrap(), c);
        }
    }

    #[test]
    fn damaged_packs_are_rejected() {
        let keys = RepoKeys::derive(&MasterKey::generate());
        let mut builder = PackBuilder::default();
        let id = keys.chunk_id(b"x");
        builder.add(id, &seal_chunk(&keys, &id, b"x", 3), 1);
        let pack = builder.finish(&keys).bytes;
        assert!(decode_pack(&keys, &pack[..pack.len() - 3]).is_err());
        assert!(decode_pack(&keys, &pack[5..]).is_err());
        let mut flipped = pack.clone();
        let n = flipped.len();
        flipped[n - 20] ^= 0x40;
        assert!(decode_pack(&keys, &flipped).is_err());
        let other = RepoKeys::derive(&MasterKey::generate());
        assert!(decode_pack(&other, &pack).is_err());
    }
}
