//! `init`: creates a repository. The options are checked before anything is written,
//! and the marker goes last, so an interrupted `init` can simply be run again.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rand::RngCore;

use crate::backend::{Backend, BackendError};
use crate::crypto::{MasterKey, RepoKeys};
use crate::error::{StoreError, StoreResult};
use crate::format::config::{
    ChunkerParams, DEFAULT_COMPRESSION_LEVEL, DEFAULT_PACK_SIZE, DEFAULT_ZERO_RUN_MIN,
    Immutability, MAX_PACK_SIZE, MIN_PACK_SIZE, ReplicaOf, RepoConfig, validate_fixed_chunk_size,
};
use crate::format::{CONFIG_KEY, KEYS_PREFIX, MARKER_KEY, Marker, format_version};
use crate::repo::{Repository, now_rfc3339, read_marker};

use super::slot::{DEFAULT_KDF, KdfParams};
use super::stored::write_slot;

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
    /// All-zero runs at least this long are stored as zero extents.
    pub zero_run_min: u32,
    /// Make a replica of another repository (FORMAT.md §15): its chunker settings
    /// must then be the source's too (see `lifeboat_replicator`, which fills both in).
    pub replica_of: Option<ReplicaOf>,
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
            zero_run_min: DEFAULT_ZERO_RUN_MIN,
            replica_of: None,
        }
    }
}

/// Creates a new repository at `backend`, protected by `passphrase`.
pub async fn init_repository(
    backend: Arc<dyn Backend>,
    passphrase: &str,
    options: &InitOptions,
    cache_dir: &Path,
) -> StoreResult<Repository> {
    let chunker = check_options(options)?;
    prepare_container(backend.as_ref(), options).await?;
    let master = MasterKey::generate();
    let config = new_config(options, chunker);
    // Order: key slot and config first, the marker last — a repository without its
    // marker is "not initialised", and `init` can be run again (it clears leftover slots).
    let slot_id = write_slot(
        backend.as_ref(),
        &master,
        passphrase.to_string(),
        options.kdf,
    )
    .await?;
    let version = config.version;
    let sealed_config = RepoKeys::derive(&master).seal(
        CONFIG_KEY.as_bytes(),
        &serde_json::to_vec(&config).expect("config serialises"),
    );
    backend.put(CONFIG_KEY, Bytes::from(sealed_config)).await?;
    let marker = serde_json::to_vec(&Marker::new(version)).expect("marker serialises");
    backend.put(MARKER_KEY, Bytes::from(marker)).await?;
    Repository::assemble(backend, master, slot_id, config, cache_dir)
}

/// Refuses options a repository cannot be made with; returns the chunker parameters
/// to record.
fn check_options(options: &InitOptions) -> StoreResult<ChunkerParams> {
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
    Ok(chunker)
}

/// Makes sure the container exists, holds no repository yet, supports Object Lock
/// when asked to, and carries no key slots an interrupted `init` left behind.
async fn prepare_container(backend: &dyn Backend, options: &InitOptions) -> StoreResult<()> {
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
    if read_marker(backend).await?.is_some() {
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
    Ok(())
}

/// The configuration of a new repository, with a fresh random id.
fn new_config(options: &InitOptions, chunker: ChunkerParams) -> RepoConfig {
    let mut repo_id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut repo_id);
    RepoConfig {
        version: format_version(options.replica_of.is_some()),
        id: hex::encode(repo_id),
        created: now_rfc3339(),
        chunker,
        fixed_chunk_size: options.fixed_chunk_size,
        zero_run_min: options.zero_run_min,
        compression_level: options.compression_level,
        pack_size: options.pack_size,
        immutability: options.immutability,
        replica_of: options.replica_of.clone(),
    }
}
