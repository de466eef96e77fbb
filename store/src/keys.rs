//! Creating and unlocking repositories, and managing their key slots
//! (`init`, opening with a passphrase, `key add|list|remove`).

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendError};
use crate::crypto::{MasterKey, RepoKeys};
use crate::error::{StoreError, StoreResult};
use crate::format::config::{
    ChunkerParams, DEFAULT_COMPRESSION_LEVEL, DEFAULT_PACK_SIZE, DEFAULT_ZERO_RUN_MIN,
    Immutability, RepoConfig, validate_fixed_chunk_size,
};
use crate::format::{CONFIG_KEY, FORMAT_VERSION, KEYS_PREFIX, MARKER_KEY, Marker};
use crate::keyslot::{self, DEFAULT_KDF, KdfParams, KeySlot, KeySlotError};
use crate::repo::{Repository, hostname, now_rfc3339, read_marker};

/// Packs smaller than this make too many requests; larger ones cost memory per upload.
pub const MIN_PACK_SIZE: u32 = 512 * 1024;
pub const MAX_PACK_SIZE: u32 = 256 * 1024 * 1024;

/// Parameters fixed when a repository is created.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Content-defined chunk sizes; ignored when `fixed_chunk_size` is set.
    pub chunker: ChunkerParams,
    /// Cut disks into fixed, aligned chunks of this size instead (see
    /// [`RepoConfig::fixed_chunk_size`]).
    pub fixed_chunk_size: Option<u32>,
    pub compression_level: i32,
    pub pack_size: u32,
    /// Create the bucket / directory if it does not exist.
    pub create_container: bool,
    pub kdf: KdfParams,
    /// Lock every backup object for this long (the bucket must have Object Lock).
    pub immutability: Option<Immutability>,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            chunker: ChunkerParams::default(),
            fixed_chunk_size: None,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            pack_size: DEFAULT_PACK_SIZE,
            create_container: false,
            kdf: DEFAULT_KDF,
            immutability: None,
        }
    }
}

/// A key slot as shown by `key list`.
#[derive(Debug, Clone, Serialize)]
pub struct KeyListing {
    pub id: String,
    pub created: String,
    pub host: String,
    /// Whether this session was unlocked with it.
    pub current: bool,
}

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

async fn write_slot(
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
        keyslot::create_slot(
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

/// Creates a new repository at `backend`, protected by `passphrase`.
pub async fn init_repository(
    backend: Arc<dyn Backend>,
    passphrase: &str,
    options: &InitOptions,
    cache_dir: &Path,
) -> StoreResult<Repository> {
    let chunker = match options.fixed_chunk_size {
        None => options.chunker.validate().map(|()| options.chunker),
        Some(size) => validate_fixed_chunk_size(size).map(|()| ChunkerParams::fixed(size)),
    }
    .map_err(|detail| StoreError::Invalid {
        what: "chunk sizes".into(),
        detail,
    })?;
    if !(1..=22).contains(&options.compression_level) {
        return Err(StoreError::Invalid {
            what: "compression level".into(),
            detail: format!("{} is outside zstd's 1..=22", options.compression_level),
        });
    }
    if !(MIN_PACK_SIZE..=MAX_PACK_SIZE).contains(&options.pack_size) {
        return Err(StoreError::Invalid {
            what: "pack size".into(),
            detail: format!(
                "{} bytes is outside {MIN_PACK_SIZE}..={MAX_PACK_SIZE} (16-32 MiB suits S3)",
                options.pack_size
            ),
        });
    }
    if options.create_container {
        if options.immutability.is_some() {
            backend.create_locked_container().await?;
        } else {
            backend.create_container().await?;
        }
    }
    let location = backend.location();
    backend.check_reachable().await.map_err(|e| match e {
        BackendError::NotFound { .. } => StoreError::NotFound(format!(
            "{location} does not exist; create it or pass --create-bucket"
        )),
        other => other.into(),
    })?;
    if read_marker(backend.as_ref()).await?.is_some() {
        return Err(StoreError::AlreadyInitialized { location });
    }
    if options.immutability.is_some() && !backend.object_lock_enabled().await? {
        return Err(StoreError::Invalid {
            what: "immutability".into(),
            detail: format!(
                "{location} does not have S3 Object Lock enabled, so backups could not be made \
                 immutable; create the bucket with Object Lock (`--create-bucket` does that \
                 for a new bucket) or drop --immutable"
            ),
        });
    }
    // Key slots without a marker are what an interrupted `init` leaves; they wrap a
    // master key nothing was ever written with. Clear them so the new slot is the only one.
    for leftover in backend.list(KEYS_PREFIX).await? {
        tracing::info!("removing {} left by an interrupted init", leftover.key);
        backend.delete(&leftover.key).await?;
    }
    let master = MasterKey::generate();
    let keys = RepoKeys::derive(&master);
    let mut repo_id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut repo_id);
    let config = RepoConfig {
        version: FORMAT_VERSION,
        id: hex::encode(repo_id),
        created: now_rfc3339(),
        chunker,
        fixed_chunk_size: options.fixed_chunk_size,
        zero_run_min: DEFAULT_ZERO_RUN_MIN,
        compression_level: options.compression_level,
        pack_size: options.pack_size,
        immutability: options.immutability,
    };
    // Order: key slot and config first, the marker last — a repository without its
    // marker is "not initialised", and `init` can be run again (it clears leftover slots).
    let slot_id = write_slot(
        backend.as_ref(),
        &master,
        passphrase.to_string(),
        options.kdf,
    )
    .await?;
    let sealed_config = keys.seal(
        CONFIG_KEY.as_bytes(),
        &serde_json::to_vec(&config).expect("config serialises"),
    );
    backend.put(CONFIG_KEY, Bytes::from(sealed_config)).await?;
    let marker = serde_json::to_vec(&Marker::current()).expect("marker serialises");
    backend.put(MARKER_KEY, Bytes::from(marker)).await?;
    Repository::assemble(backend, master, slot_id, config, cache_dir)
}

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
            keyslot::open_slot(&id, &slot_bytes, pass.as_bytes())
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
