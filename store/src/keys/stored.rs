//! A key slot as stored at `keys/<id>`: the passphrase-sealed [`KeySlot`] plus a label
//! sealed with the repository key, so anyone who has unlocked the repository can list
//! every slot and check that it is intact.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::crypto::{MasterKey, RepoKeys};
use crate::error::StoreResult;
use crate::format::KEYS_PREFIX;
use crate::repo::{hostname, now_rfc3339};

use super::slot::{self, KdfParams, KeySlot};

/// Slot metadata sealed with the repository key, so any key holder can list all slots.
#[derive(Serialize, Deserialize)]
pub(crate) struct SlotLabel {
    pub(crate) created: String,
    pub(crate) host: String,
    /// BLAKE3 (hex) of the slot's JSON without the label: lets any key holder check
    /// that a slot is intact without knowing its passphrase (`verify`). Absent in
    /// slots written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) slot_digest: Option<String>,
}

/// The stored slot: the passphrase-sealed part plus the repository-key-sealed label.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredSlot {
    #[serde(flatten)]
    pub(crate) slot: KeySlot,
    pub(crate) label: String,
}

/// What [`SlotLabel::slot_digest`] covers: the slot as its fields serialise, in order.
pub(crate) fn slot_digest(slot: &KeySlot) -> String {
    let bytes = serde_json::to_vec(slot).expect("slot serialises");
    blake3::hash(&bytes).to_hex().to_string()
}

pub(crate) fn slot_key(id: &str) -> String {
    format!("{KEYS_PREFIX}{id}")
}

pub(crate) fn label_aad(id: &str) -> String {
    format!("{KEYS_PREFIX}{id}#label")
}

fn new_slot_id() -> String {
    let mut id = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut id);
    hex::encode(id)
}

/// Wraps `master` under `passphrase` in a new slot and stores it; returns its id.
pub(crate) async fn write_slot(
    backend: &dyn Backend,
    master: &MasterKey,
    passphrase: String,
    kdf: KdfParams,
) -> StoreResult<String> {
    let id = new_slot_id();
    let (created, host) = (now_rfc3339(), hostname());
    let keys = RepoKeys::derive(master);
    let (slot_id, master) = (id.clone(), master.clone());
    let label_fields = (created.clone(), host.clone());
    // argon2 takes a quarter second of CPU: keep it off the async threads.
    let slot = tokio::task::spawn_blocking(move || {
        slot::create_slot(
            &slot_id,
            &master,
            passphrase.as_bytes(),
            kdf,
            &created,
            &host,
        )
    })
    .await
    .expect("key derivation task panicked");
    let label = keys.seal(
        label_aad(&id).as_bytes(),
        &serde_json::to_vec(&SlotLabel {
            created: label_fields.0,
            host: label_fields.1,
            slot_digest: Some(slot_digest(&slot)),
        })
        .expect("label serialises"),
    );
    let stored = StoredSlot {
        slot,
        label: B64.encode(label),
    };
    backend
        .put_if_absent(
            &slot_key(&id),
            Bytes::from(serde_json::to_vec(&stored).expect("slot serialises")),
        )
        .await?;
    Ok(id)
}
