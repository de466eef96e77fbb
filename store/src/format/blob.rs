//! Chunk blobs: one chunk, compressed if that helps, sealed with its id as associated data.
//!
//! Plaintext of a sealed blob: `codec: u8` then the payload (`0` = raw, `1` = zstd).
//! Opening a blob checks the AEAD tag *and* recomputes the keyed id of the plaintext,
//! so a blob can only ever restore as exactly the chunk its id names.

use crate::crypto::{ChunkId, NONCE_LEN, RepoKeys, TAG_LEN};

/// Upper bound on a chunk's plaintext; fastcdc's largest maximum chunk size.
pub const MAX_CHUNK_LEN: usize = 16 * 1024 * 1024;

const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("blob failed authentication (wrong key, or altered or truncated data)")]
    Auth,
    #[error("blob is empty")]
    Empty,
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
    #[error("decompression failed: {0}")]
    Decompress(String),
    #[error("content does not match its id (expected {expected:?}, got {actual:?})")]
    IdMismatch { expected: ChunkId, actual: ChunkId },
}

/// Seals chunks; holds the zstd context and scratch buffer one worker thread reuses,
/// since building them per chunk costs more than compressing a small chunk.
pub struct ChunkSealer {
    compressor: zstd::bulk::Compressor<'static>,
    scratch: Vec<u8>,
}

impl ChunkSealer {
    pub fn new(zstd_level: i32) -> Self {
        Self {
            compressor: zstd::bulk::Compressor::new(zstd_level)
                .expect("compression levels are validated when the repository is created"),
            scratch: Vec::new(),
        }
    }

    /// Compresses (when that shrinks the data) and seals one chunk.
    pub fn seal(&mut self, keys: &RepoKeys, id: &ChunkId, data: &[u8]) -> Vec<u8> {
        self.scratch.clear();
        self.scratch
            .reserve(zstd::zstd_safe::compress_bound(data.len()));
        let compressed = match self.compressor.compress_to_buffer(data, &mut self.scratch) {
            Ok(n) if n < data.len() => Some(&self.scratch[..n]),
            _ => None,
        };
        let (codec, payload) = match compressed {
            Some(c) => (CODEC_ZSTD, c),
            None => (CODEC_RAW, data),
        };
        let mut out = Vec::with_capacity(NONCE_LEN + 1 + payload.len() + TAG_LEN);
        out.resize(NONCE_LEN, 0);
        out.push(codec);
        out.extend_from_slice(payload);
        keys.seal_in_place(&id.0, &mut out);
        out
    }
}

/// Compresses (when it shrinks the data) and seals one chunk. For one-off use;
/// loops should keep a [`ChunkSealer`].
pub fn seal_chunk(keys: &RepoKeys, id: &ChunkId, data: &[u8], zstd_level: i32) -> Vec<u8> {
    ChunkSealer::new(zstd_level).seal(keys, id, data)
}

/// Moves one chunk blob from a repository to its replica (same chunk-id key, other
/// encryption key): opened and fully verified with `from` (AEAD tag, then the keyed id
/// of the decompressed plaintext), then sealed again with `to`. The compressed payload
/// is carried over as it is, so replication never recompresses.
pub fn reseal_chunk(
    from: &RepoKeys,
    to: &RepoKeys,
    id: &ChunkId,
    sealed: &[u8],
) -> Result<Vec<u8>, BlobError> {
    let plain = from.open(&id.0, sealed).map_err(|_| BlobError::Auth)?;
    check_id(from, id, &plain)?;
    let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
    out.resize(NONCE_LEN, 0);
    out.extend_from_slice(&plain);
    to.seal_in_place(&id.0, &mut out);
    Ok(out)
}

/// Decodes an opened blob (`codec ‖ payload`) and checks it hashes to `id`.
fn check_id(keys: &RepoKeys, id: &ChunkId, plain: &[u8]) -> Result<Vec<u8>, BlobError> {
    let (&codec, payload) = plain.split_first().ok_or(BlobError::Empty)?;
    let data = match codec {
        CODEC_RAW => payload.to_vec(),
        // The capacity bound stops a hostile frame header from allocating gigabytes.
        CODEC_ZSTD => zstd::bulk::decompress(payload, MAX_CHUNK_LEN)
            .map_err(|e| BlobError::Decompress(e.to_string()))?,
        other => return Err(BlobError::UnknownCodec(other)),
    };
    let actual = keys.chunk_id(&data);
    if actual != *id {
        return Err(BlobError::IdMismatch {
            expected: *id,
            actual,
        });
    }
    Ok(data)
}

/// Opens, decompresses and verifies one chunk blob.
pub fn open_chunk(keys: &RepoKeys, id: &ChunkId, sealed: &[u8]) -> Result<Vec<u8>, BlobError> {
    let plain = keys.open(&id.0, sealed).map_err(|_| BlobError::Auth)?;
    check_id(keys, id, &plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    #[test]
    fn compressible_and_random_chunks_round_trip() {
        let keys = RepoKeys::derive(&MasterKey::generate());
        let text = b"lifeboat ".repeat(10_000);
        let random: Vec<u8> = (0..50_000).map(|_| rand::random::<u8>()).collect();
        for data in [&text[..], &random[..], b""] {
            let id = keys.chunk_id(data);
            let sealed = seal_chunk(&keys, &id, data, 3);
            assert_eq!(open_chunk(&keys, &id, &sealed).unwrap(), data);
        }
        let id = keys.chunk_id(&text);
        assert!(seal_chunk(&keys, &id, &text, 3).len() < text.len() / 10);
        let id = keys.chunk_id(&random);
        assert_eq!(
            seal_chunk(&keys, &id, &random, 3).len(),
            random.len() + 1 + 40
        );
    }

    #[test]
    fn a_resealed_blob_opens_only_with_the_replica_keys() {
        let source = RepoKeys::derive(&MasterKey::generate());
        let replica = RepoKeys::derive(&MasterKey::generate()).with_id_key(*source.id_key());
        let data = b"lifeboat ".repeat(1000);
        let id = source.chunk_id(&data);
        let sealed = seal_chunk(&source, &id, &data, 3);
        let moved = reseal_chunk(&source, &replica, &id, &sealed).unwrap();
        assert_eq!(open_chunk(&replica, &id, &moved).unwrap(), data);
        assert_eq!(open_chunk(&source, &id, &moved), Err(BlobError::Auth));
        // Authenticated on the way: a blob that fails its tag is never re-sealed.
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert_eq!(
            reseal_chunk(&source, &replica, &id, &bad),
            Err(BlobError::Auth)
        );
    }

    #[test]
    fn a_blob_under_the_wrong_id_is_refused() {
        let keys = RepoKeys::derive(&MasterKey::generate());
        let a = keys.chunk_id(b"a");
        let b = keys.chunk_id(b"b");
        let sealed = seal_chunk(&keys, &a, b"a", 3);
        assert_eq!(open_chunk(&keys, &b, &sealed), Err(BlobError::Auth));
    }
}
