//! Key slots: the master key wrapped under a passphrase.
//!
//! A slot (`keys/<16 hex>`) holds argon2id parameters, a salt, and the master key sealed
//! with the key argon2id derives from the passphrase. Several slots may wrap the same
//! master key (one per operator, one for the off-site escrow); removing a slot revokes
//! that passphrase without re-encrypting any data. Who created a slot and when is sealed
//! inside it, so an unlocked bucket shows nothing but random-looking bytes.

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::crypto::{KEY_LEN, MasterKey, open_with, seal_with};

/// argon2id cost for new slots: 64 MiB, 3 passes — about a quarter second per unlock
/// here, which is what makes guessing passphrases from a stolen bucket expensive.
pub const DEFAULT_KDF: KdfParams = KdfParams {
    m_cost_kib: 64 * 1024,
    t_cost: 3,
    p_cost: 1,
};

/// Refuse to run argon2 with parameters a hostile slot could use to exhaust memory.
const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
const MAX_T_COST: u32 = 64;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

/// The stored form of a slot (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySlot {
    pub version: u32,
    pub kdf: String,
    pub params: KdfParams,
    pub salt: String,
    /// Base64 of the sealed [`SlotPayload`].
    pub sealed: String,
}

/// What a slot protects.
#[derive(Serialize, Deserialize)]
struct SlotPayload {
    master_key: String,
    created: String,
    host: String,
}

/// An unlocked slot's description, for `key list`.
#[derive(Debug, Clone, Serialize)]
pub struct SlotInfo {
    pub id: String,
    pub created: String,
    pub host: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeySlotError {
    #[error("key slot {slot} is damaged: {detail}")]
    Damaged { slot: String, detail: String },
    #[error("passphrase does not open key slot {slot}")]
    WrongPassphrase { slot: String },
}

/// Refuses parameters argon2 rejects, and ones a hostile slot could use to exhaust
/// memory or time, before anything is allocated.
fn check_kdf_params(params: &KdfParams) -> Result<Params, String> {
    if params.m_cost_kib > MAX_M_COST_KIB || params.t_cost > MAX_T_COST {
        return Err(format!(
            "argon2 parameters {params:?} exceed the safety limits"
        ));
    }
    Params::new(
        params.m_cost_kib,
        params.t_cost,
        params.p_cost,
        Some(KEY_LEN),
    )
    .map_err(|e| format!("argon2 parameters {params:?}: {e}"))
}

fn derive_kek(passphrase: &[u8], salt: &[u8], params: &KdfParams) -> Result<[u8; KEY_LEN], String> {
    let argon_params = check_kdf_params(params)?;
    let mut kek = [0u8; KEY_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params)
        .hash_password_into(passphrase, salt, &mut kek)
        .map_err(|e| e.to_string())?;
    Ok(kek)
}

/// Wraps `master` under `passphrase` for storage at `keys/<slot_id>`.
pub fn create_slot(
    slot_id: &str,
    master: &MasterKey,
    passphrase: &[u8],
    params: KdfParams,
    created: &str,
    host: &str,
) -> KeySlot {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let kek = derive_kek(passphrase, &salt, &params).expect("default argon2 parameters are valid");
    let payload = SlotPayload {
        master_key: B64.encode(master.as_bytes()),
        created: created.to_string(),
        host: host.to_string(),
    };
    let plain = serde_json::to_vec(&payload).expect("slot payload serialises");
    let sealed = seal_with(
        &XChaCha20Poly1305::new(&kek.into()),
        slot_aad(slot_id).as_bytes(),
        &plain,
    );
    KeySlot {
        version: 1,
        kdf: "argon2id".into(),
        params,
        salt: B64.encode(salt),
        sealed: B64.encode(sealed),
    }
}

fn slot_aad(slot_id: &str) -> String {
    format!("keys/{slot_id}")
}

/// A stored slot whose structure has been checked, ready for key derivation.
#[derive(Debug, Clone)]
pub struct ParsedSlot {
    pub params: KdfParams,
    pub salt: Vec<u8>,
    pub sealed: Vec<u8>,
}

/// Parses and checks a stored slot without running the KDF: JSON shape, version, KDF
/// name, parameter limits, base64 fields. Everything before the expensive, memory-hungry
/// argon2 call happens here, so a hostile slot is refused cheaply (and this is what the
/// fuzzer exercises).
pub fn parse_slot(slot_id: &str, stored: &[u8]) -> Result<ParsedSlot, KeySlotError> {
    let damaged = |detail: String| KeySlotError::Damaged {
        slot: slot_id.to_string(),
        detail,
    };
    let slot: KeySlot = serde_json::from_slice(stored).map_err(|e| damaged(e.to_string()))?;
    if slot.version != 1 || slot.kdf != "argon2id" {
        return Err(damaged(format!(
            "unsupported slot version {} / kdf {}",
            slot.version, slot.kdf
        )));
    }
    check_kdf_params(&slot.params).map_err(damaged)?;
    let salt = B64.decode(&slot.salt).map_err(|e| damaged(e.to_string()))?;
    let sealed = B64
        .decode(&slot.sealed)
        .map_err(|e| damaged(e.to_string()))?;
    Ok(ParsedSlot {
        params: slot.params,
        salt,
        sealed,
    })
}

/// Tries `passphrase` on a stored slot.
pub fn open_slot(
    slot_id: &str,
    stored: &[u8],
    passphrase: &[u8],
) -> Result<(MasterKey, SlotInfo), KeySlotError> {
    let damaged = |detail: String| KeySlotError::Damaged {
        slot: slot_id.to_string(),
        detail,
    };
    let ParsedSlot {
        params,
        salt,
        sealed,
    } = parse_slot(slot_id, stored)?;
    let kek = derive_kek(passphrase, &salt, &params).map_err(damaged)?;
    let plain = open_with(
        &XChaCha20Poly1305::new(&kek.into()),
        slot_aad(slot_id).as_bytes(),
        &sealed,
    )
    .map_err(|_| KeySlotError::WrongPassphrase {
        slot: slot_id.to_string(),
    })?;
    let payload: SlotPayload =
        serde_json::from_slice(&plain).map_err(|e| damaged(e.to_string()))?;
    let key_bytes: [u8; KEY_LEN] = B64
        .decode(&payload.master_key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| damaged("master key has the wrong length".into()))?;
    Ok((
        MasterKey::from_bytes(key_bytes),
        SlotInfo {
            id: slot_id.to_string(),
            created: payload.created,
            host: payload.host,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfParams = KdfParams {
        m_cost_kib: 1024,
        t_cost: 1,
        p_cost: 1,
    };

    #[test]
    fn right_passphrase_opens_wrong_one_does_not() {
        let master = MasterKey::generate();
        let slot = create_slot("00ff", &master, b"correct horse", CHEAP, "now", "node1");
        let stored = serde_json::to_vec(&slot).unwrap();
        let (opened, info) = open_slot("00ff", &stored, b"correct horse").unwrap();
        assert_eq!(opened.as_bytes(), master.as_bytes());
        assert_eq!(info.host, "node1");
        assert!(matches!(
            open_slot("00ff", &stored, b"battery staple"),
            Err(KeySlotError::WrongPassphrase { .. })
        ));
        // A slot copied under another name does not open: its name is bound in.
        assert!(open_slot("11ee", &stored, b"correct horse").is_err());
        let text = String::from_utf8(stored).unwrap();
        assert!(!text.contains("node1"));
    }

    #[test]
    fn hostile_kdf_parameters_are_refused() {
        let master = MasterKey::generate();
        let mut slot = create_slot("00ff", &master, b"pw", CHEAP, "now", "h");
        slot.params.m_cost_kib = u32::MAX;
        let stored = serde_json::to_vec(&slot).unwrap();
        assert!(matches!(
            open_slot("00ff", &stored, b"pw"),
            Err(KeySlotError::Damaged { .. })
        ));
        assert!(matches!(
            open_slot("00ff", b"{not json", b"pw"),
            Err(KeySlotError::Damaged { .. })
        ));
    }
}
