//! Opening a repository: the passphrase is tried on every key slot until one opens.

use std::path::Path;
use std::sync::Arc;

use crate::backend::{Backend, BackendError};
use crate::crypto::RepoKeys;
use crate::error::{StoreError, StoreResult};
use crate::format::KEYS_PREFIX;
use crate::repo::{Repository, read_marker};

use super::slot::{self, KeySlotError};
use super::stored::{StoredSlot, slot_key};

/// Opens an existing repository with `passphrase`.
pub async fn open_repository(
    backend: Arc<dyn Backend>,
    passphrase: &str,
    cache_dir: &Path,
) -> StoreResult<Repository> {
    let location = backend.location();
    backend.check_reachable().await.map_err(|e| match e {
        BackendError::NotFound { .. } => StoreError::NotARepository {
            location: location.clone(),
        },
        other => other.into(),
    })?;
    if read_marker(backend.as_ref()).await?.is_none() {
        return Err(StoreError::NotARepository { location });
    }
    let mut slots: Vec<String> = backend
        .list(KEYS_PREFIX)
        .await?
        .into_iter()
        .filter_map(|o| o.key.strip_prefix(KEYS_PREFIX).map(str::to_string))
        .collect();
    slots.sort();
    if slots.is_empty() {
        return Err(StoreError::NoKeySlots { location });
    }
    let mut damaged = Vec::new();
    for slot_id in &slots {
        let stored = backend.get(&slot_key(slot_id)).await?;
        let (id, pass) = (slot_id.clone(), passphrase.to_string());
        let opened = tokio::task::spawn_blocking(move || {
            let parsed: StoredSlot =
                serde_json::from_slice(&stored).map_err(|e| KeySlotError::Damaged {
                    slot: id.clone(),
                    detail: e.to_string(),
                })?;
            let slot_bytes = serde_json::to_vec(&parsed.slot).expect("slot serialises");
            slot::open_slot(&id, &slot_bytes, pass.as_bytes())
        })
        .await
        .expect("key derivation task panicked");
        match opened {
            Ok((master, _)) => {
                let keys = RepoKeys::derive(&master);
                let config = Repository::load_config(backend.as_ref(), &keys).await?;
                return Repository::assemble(backend, master, slot_id.clone(), config, cache_dir);
            }
            Err(KeySlotError::WrongPassphrase { .. }) => {}
            Err(e @ KeySlotError::Damaged { .. }) => {
                tracing::warn!("{e}");
                damaged.push(e.to_string());
            }
        }
    }
    if damaged.len() == slots.len() {
        return Err(StoreError::corrupt(KEYS_PREFIX, damaged.join("; ")));
    }
    Err(StoreError::WrongPassphrase {
        location,
        slots: slots.len(),
    })
}
