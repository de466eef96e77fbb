//! `key add`, `key list`, `key remove` on an unlocked repository.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;

use crate::error::{StoreError, StoreResult};
use crate::format::KEYS_PREFIX;
use crate::repo::Repository;

use super::slot::KdfParams;
use super::stored::{SlotLabel, StoredSlot, label_aad, slot_key, write_slot};

/// A key slot as shown by `key list`.
#[derive(Debug, Clone, Serialize)]
pub struct KeyListing {
    pub id: String,
    pub created: String,
    pub host: String,
    /// Whether this session was unlocked with it.
    pub current: bool,
}

impl Repository {
    /// Adds a key slot for `passphrase`; returns its id.
    pub async fn add_key(&self, passphrase: &str, kdf: KdfParams) -> StoreResult<String> {
        write_slot(
            self.backend().as_ref(),
            self.master(),
            passphrase.to_string(),
            kdf,
        )
        .await
    }

    pub async fn list_keys(&self) -> StoreResult<Vec<KeyListing>> {
        let mut out = Vec::new();
        for obj in self.backend().list(KEYS_PREFIX).await? {
            let Some(id) = obj.key.strip_prefix(KEYS_PREFIX) else {
                continue;
            };
            let stored: StoredSlot = serde_json::from_slice(&self.backend().get(&obj.key).await?)
                .map_err(|e| StoreError::corrupt(&obj.key, e))?;
            let label = B64
                .decode(&stored.label)
                .ok()
                .and_then(|sealed| self.keys().open(label_aad(id).as_bytes(), &sealed).ok())
                .and_then(|plain| serde_json::from_slice::<SlotLabel>(&plain).ok())
                .ok_or_else(|| StoreError::corrupt(&obj.key, "slot label does not decrypt"))?;
            out.push(KeyListing {
                id: id.to_string(),
                created: label.created,
                host: label.host,
                current: id == self.slot_id(),
            });
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Removes a key slot. Refuses the last slot and the one this session is using,
    /// so no single command can lock everyone out.
    pub async fn remove_key(&self, id: &str) -> StoreResult<()> {
        let keys = self.list_keys().await?;
        let refuse = |detail: String| StoreError::Invalid {
            what: "key removal".into(),
            detail,
        };
        if !keys.iter().any(|k| k.id == id) {
            return Err(StoreError::NotFound(format!(
                "no key slot {id}; see `lifeboat key list`"
            )));
        }
        if keys.len() == 1 {
            return Err(refuse("it is the only key slot; add another first".into()));
        }
        if id == self.slot_id() {
            return Err(refuse(format!(
                "slot {id} is the one this command was unlocked with; unlock with another passphrase to remove it"
            )));
        }
        Ok(self.backend().delete(&slot_key(id)).await?)
    }
}
