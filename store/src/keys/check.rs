//! Integrity check of every key slot, for `verify`, without knowing their passphrases.
//!
//! A slot's payload is sealed under its own passphrase, which `verify` does not have.
//! But each slot's label is sealed with the repository key and (since slot digests
//! were added) records a BLAKE3 digest of the rest of the slot, so anyone who has
//! unlocked the repository can tell that every other slot is still intact — before an
//! operator finds out the hard way that their passphrase no longer opens anything.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::slot::parse_slot;
use super::stored::{SlotLabel, StoredSlot, label_aad, slot_digest};
use crate::error::StoreResult;
use crate::format::KEYS_PREFIX;
use crate::repo::Repository;

/// A key slot that is damaged, and what is wrong with it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlotProblem {
    pub object: String,
    pub detail: String,
}

impl Repository {
    /// Checks every key slot's structure, label and digest. Storage errors abort;
    /// damage is returned.
    pub async fn check_key_slots(&self) -> StoreResult<Vec<SlotProblem>> {
        let mut problems = Vec::new();
        for obj in self.backend().list(KEYS_PREFIX).await? {
            let Some(id) = obj.key.strip_prefix(KEYS_PREFIX) else {
                continue;
            };
            let stored = match self.backend().get(&obj.key).await {
                Ok(b) => b,
                Err(e) if e.is_not_found() => continue, // removed meanwhile
                Err(e) => return Err(e.into()),
            };
            if let Err(detail) = self.check_slot(id, &stored) {
                problems.push(SlotProblem {
                    object: obj.key.clone(),
                    detail,
                });
            }
        }
        Ok(problems)
    }

    fn check_slot(&self, id: &str, stored: &[u8]) -> Result<(), String> {
        parse_slot(id, stored).map_err(|e| e.to_string())?;
        let parsed: StoredSlot =
            serde_json::from_slice(stored).map_err(|e| format!("not a key slot: {e}"))?;
        let label: SlotLabel = B64
            .decode(&parsed.label)
            .ok()
            .and_then(|sealed| self.keys().open(label_aad(id).as_bytes(), &sealed).ok())
            .and_then(|plain| serde_json::from_slice(&plain).ok())
            .ok_or("its label does not decrypt (altered, truncated, or moved from another name)")?;
        match label.slot_digest {
            Some(want) if want != slot_digest(&parsed.slot) => Err(
                "its contents do not match the digest in its label (altered); the passphrase it holds may no longer open the repository".into(),
            ),
            _ => Ok(()),
        }
    }
}
