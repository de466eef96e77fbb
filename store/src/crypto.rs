//! Keys, chunk ids and authenticated encryption.
//!
//! One random 256-bit master key per repository. Two sub-keys are derived from it with
//! BLAKE3's key derivation, so the id key and the encryption key are independent:
//! - the *id key* makes chunk ids keyed BLAKE3 hashes: the bucket's owner cannot test
//!   whether a repository holds a known piece of data;
//! - the *encryption key* seals every object with XChaCha20-Poly1305 under a fresh
//!   random 192-bit nonce, the object's id bound in as associated data so a valid
//!   object cannot be passed off under another name.

use std::fmt;
use std::str::FromStr;

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object carries beyond its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

const ID_KEY_CONTEXT: &str = "lifeboat 2026-11 chunk id key v1";
const ENCRYPTION_KEY_CONTEXT: &str = "lifeboat 2026-11 object encryption key v1";

/// The repository master key. Never leaves memory unwrapped; `Debug` hides it.
#[derive(Clone)]
pub struct MasterKey([u8; KEY_LEN]);

impl MasterKey {
    pub fn generate() -> Self {
        let mut key = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self(key)
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Authentication failed: wrong key, or the bytes were changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed (wrong key, or the data was altered or truncated)")]
pub struct AuthError;

/// The keys derived from a master key, ready for use.
#[derive(Clone)]
pub struct RepoKeys {
    id_key: [u8; KEY_LEN],
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for RepoKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RepoKeys(<redacted>)")
    }
}

impl RepoKeys {
    pub fn derive(master: &MasterKey) -> Self {
        let id_key = blake3::derive_key(ID_KEY_CONTEXT, master.as_bytes());
        let enc_key = blake3::derive_key(ENCRYPTION_KEY_CONTEXT, master.as_bytes());
        Self {
            id_key,
            cipher: XChaCha20Poly1305::new(&enc_key.into()),
        }
    }

    /// The same keys computing chunk ids with `id_key` instead: a replica's keys
    /// (its own encryption key, its source's id key).
    pub fn with_id_key(mut self, id_key: [u8; KEY_LEN]) -> Self {
        self.id_key = id_key;
        self
    }

    /// The chunk-id key, to record in a new replica's sealed config.
    pub fn id_key(&self) -> &[u8; KEY_LEN] {
        &self.id_key
    }

    /// Keyed BLAKE3 of a chunk's plaintext.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.id_key, data).as_bytes())
    }

    /// Encrypts `plaintext`, binding `aad` (the object's id). Output: nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.cipher, aad, plaintext)
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
        open_with(&self.cipher, aad, sealed)
    }

    /// Seals in place, for hot paths: `buf` must hold [`NONCE_LEN`] bytes of room
    /// followed by the plaintext. Fills in the nonce, encrypts, appends the tag —
    /// the same layout as [`Self::seal`] without copying the data.
    pub fn seal_in_place(&self, aad: &[u8], buf: &mut Vec<u8>) {
        assert!(
            buf.len() >= NONCE_LEN,
            "seal_in_place needs room for the nonce"
        );
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        buf[..NONCE_LEN].copy_from_slice(&nonce);
        let tag = self
            .cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut buf[NONCE_LEN..])
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        buf.extend_from_slice(&tag);
    }
}

/// Seals with an explicit key; used for key slots (key-encryption key from the passphrase).
pub fn seal_with(cipher: &XChaCha20Poly1305, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

pub fn open_with(
    cipher: &XChaCha20Poly1305,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, AuthError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(AuthError);
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| AuthError)
}

/// A chunk's id: keyed BLAKE3 of its plaintext. Also used for pack and snapshot ids.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// First 8 hex digits, for messages.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn random() -> Self {
        let mut id = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        Self(id)
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a 64-digit hex id")]
pub struct ParseIdError(pub String);

impl FromStr for ChunkId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut id = [0u8; 32];
        hex::decode_to_slice(s, &mut id).map_err(|_| ParseIdError(s.to_string()))?;
        Ok(Self(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_aad_binding() {
        let keys = RepoKeys::derive(&MasterKey::generate());
        let sealed = keys.seal(b"index/1", b"secret");
        assert_eq!(sealed.len(), 6 + SEAL_OVERHEAD);
        assert_eq!(keys.open(b"index/1", &sealed).unwrap(), b"secret");
        assert_eq!(keys.open(b"index/2", &sealed), Err(AuthError));
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert_eq!(keys.open(b"index/1", &flipped), Err(AuthError));
        assert_eq!(keys.open(b"index/1", &sealed[..10]), Err(AuthError));
        let other = RepoKeys::derive(&MasterKey::generate());
        assert_eq!(other.open(b"index/1", &sealed), Err(AuthError));
        let mut in_place = vec![0u8; NONCE_LEN];
        in_place.extend_from_slice(b"secret");
        keys.seal_in_place(b"index/1", &mut in_place);
        assert_eq!(keys.open(b"index/1", &in_place).unwrap(), b"secret");
    }

    #[test]
    fn chunk_ids_depend_on_the_key() {
        let a = RepoKeys::derive(&MasterKey::generate());
        let b = RepoKeys::derive(&MasterKey::generate());
        assert_eq!(a.chunk_id(b"x"), a.chunk_id(b"x"));
        assert_ne!(a.chunk_id(b"x"), b.chunk_id(b"x"));
        assert_ne!(a.chunk_id(b"x").0, *blake3::hash(b"x").as_bytes());
        let id = a.chunk_id(b"x");
        assert_eq!(id.to_hex().parse::<ChunkId>().unwrap(), id);
    }
}
