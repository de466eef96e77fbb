//! An open repository: backend + keys + config + catalog, and the operations every
//! command is built from (upload a pack, write an index, read back). Committing a
//! manifest is in `commit.rs`, catalog sync in `catalog_sync.rs`: both consult the
//! prune guard, which is built on this module.
//!
//! Write order is what makes crashes harmless: packs first, then the index objects
//! that list them, then the manifest. An interruption at any point leaves at worst
//! unreferenced packs or index entries — wasted space, never a snapshot with holes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::backend::Backend;
use crate::backend::locking::LockingBackend;
use crate::catalog::Catalog;
use crate::crypto::{ChunkId, MasterKey, RepoKeys};
use crate::error::{StoreError, StoreResult, selection_filters};
use crate::format::config::RepoConfig;
use crate::format::index::{IndexedPack, decode_index, encode_index};
use crate::format::manifest::{Manifest, SnapshotMeta};
use crate::format::pack::FinishedPack;
use crate::format::{self, CONFIG_KEY, MARKER_KEY, Marker};

/// A snapshot as listed by `snapshots`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotSummary {
    pub id: String,
    #[serde(flatten)]
    pub meta: SnapshotMeta,
}

impl SnapshotSummary {
    pub fn short_id(&self) -> &str {
        &self.id[..8]
    }
}

/// blake3 `derive_key` context of [`Repository::evidence_key`]; never reused for
/// another key.
const EVIDENCE_KEY_CONTEXT: &str = "lifeboat 2026-12 drill evidence signing key";

#[derive(Debug)]
pub struct Repository {
    backend: Arc<dyn Backend>,
    keys: RepoKeys,
    master: MasterKey,
    /// The key slot the passphrase opened (for `init`, the slot it created).
    slot_id: String,
    config: RepoConfig,
    catalog: Arc<Catalog>,
    /// Serialises index flushes of one process, so two flushes never list the same
    /// pending packs twice.
    index_flush: tokio::sync::Mutex<()>,
}

/// Where catalogs live unless `--cache-dir` / `LIFEBOAT_CACHE_DIR` says otherwise.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("lifeboat");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache/lifeboat"),
        None => PathBuf::from("/var/cache/lifeboat"),
    }
}

/// The current UTC time as RFC 3339 with exactly three fraction digits: snapshot times
/// are compared as strings, so every one must have the same shape to sort correctly
/// (two backups in one second included).
pub fn now_rfc3339() -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(&format)
        .expect("formatting the current time cannot fail")
}

/// This machine's name, recorded in snapshots and key slots.
pub fn hostname() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Reads the marker; distinguishes "nothing here" from "newer format".
pub(crate) async fn read_marker(backend: &dyn Backend) -> StoreResult<Option<Marker>> {
    match backend.get(MARKER_KEY).await {
        Ok(bytes) => {
            let marker: Marker =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt(MARKER_KEY, e))?;
            if marker.format != Marker::FORMAT_NAME {
                return Err(StoreError::corrupt(
                    MARKER_KEY,
                    "not a Lifeboat repository marker",
                ));
            }
            if marker.version > format::FORMAT_VERSION {
                return Err(StoreError::UnsupportedFormat {
                    found: marker.version,
                    supported: format::FORMAT_VERSION,
                });
            }
            Ok(Some(marker))
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Repository {
    /// Assembles an unlocked repository; used by `init` and `open` in [`crate::keys`].
    pub(crate) fn assemble(
        backend: Arc<dyn Backend>,
        master: MasterKey,
        slot_id: String,
        config: RepoConfig,
        cache_dir: &Path,
    ) -> StoreResult<Self> {
        // Named by id *and* location: a byte-for-byte copy of a repository (same id)
        // must not share pending entries that only exist in the original.
        let location = blake3::hash(backend.location().as_bytes()).to_hex();
        let file = format!("{}-{}.sqlite", config.id, &location[..16]);
        let catalog = Catalog::open(&cache_dir.join(file))?;
        // Wrapped after the location is taken so both views name the same place.
        let backend: Arc<dyn Backend> = match config.immutability {
            Some(i) => Arc::new(LockingBackend::new(
                backend,
                i.mode,
                std::time::Duration::from_secs(i.period_secs),
            )),
            None => backend,
        };
        let keys = match &config.replica_of {
            Some(replica) => RepoKeys::derive(&master).with_id_key(replica.chunk_id_key.0),
            None => RepoKeys::derive(&master),
        };
        Ok(Self {
            backend,
            keys,
            master,
            slot_id,
            config,
            catalog: Arc::new(catalog),
            index_flush: tokio::sync::Mutex::new(()),
        })
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn keys(&self) -> &RepoKeys {
        &self.keys
    }

    pub(crate) fn master(&self) -> &MasterKey {
        &self.master
    }

    /// The key that signs drill and failover evidence kept with this repository
    /// (FORMAT.md §17): derived from the master key, so only a holder of a passphrase
    /// can write a report that verifies, and it never leaves this process.
    pub fn evidence_key(&self) -> [u8; 32] {
        blake3::derive_key(EVIDENCE_KEY_CONTEXT, self.master.as_bytes())
    }

    /// The key slot this session was unlocked with.
    pub fn slot_id(&self) -> &str {
        &self.slot_id
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// Runs blocking catalog work off the async threads.
    pub async fn with_catalog<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Catalog) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let catalog = self.catalog.clone();
        tokio::task::spawn_blocking(move || f(&catalog))
            .await
            .expect("catalog task panicked")
    }

    /// Reads and opens a sealed object whose associated data is its key.
    pub async fn get_sealed(&self, key: &str) -> StoreResult<Vec<u8>> {
        let sealed = self.backend.get(key).await?;
        self.keys
            .open(key.as_bytes(), &sealed)
            .map_err(|e| StoreError::corrupt(key, e))
    }

    pub async fn put_sealed(&self, key: &str, plain: &[u8]) -> StoreResult<()> {
        let sealed = self.keys.seal(key.as_bytes(), plain);
        Ok(self.backend.put_if_absent(key, Bytes::from(sealed)).await?)
    }

    pub(crate) async fn load_config(
        backend: &dyn Backend,
        keys: &RepoKeys,
    ) -> StoreResult<RepoConfig> {
        let sealed = backend.get(CONFIG_KEY).await.map_err(|e| match e {
            e if e.is_not_found() => StoreError::corrupt(
                CONFIG_KEY,
                "missing; the repository cannot be used without it (copy `config` back from a replica or backup of the repository)",
            ),
            e => e.into(),
        })?;
        let plain = keys
            .open(CONFIG_KEY.as_bytes(), &sealed)
            .map_err(|e| StoreError::corrupt(CONFIG_KEY, e))?;
        let config = RepoConfig::decode(&plain).map_err(|e| StoreError::decode(CONFIG_KEY, e))?;
        Ok(config)
    }

    /// Uploads a finished pack, then records its chunks in the catalog as pending.
    pub async fn upload_pack(&self, pack: FinishedPack) -> StoreResult<()> {
        let key = format::pack_key(&pack.id);
        self.backend.put(&key, Bytes::from(pack.bytes)).await?;
        let (id, entries) = (pack.id, pack.entries);
        self.with_catalog(move |c| c.add_pending_pack(&id, &entries))
            .await
    }

    /// Writes one index object covering every pending pack; returns its id, or `None`
    /// when nothing was pending.
    pub async fn flush_index(&self) -> StoreResult<Option<ChunkId>> {
        let _serialised = self.index_flush.lock().await;
        let pending = self.with_catalog(|c| c.pending_packs()).await?;
        if pending.is_empty() {
            return Ok(None);
        }
        self.write_index_object(pending).await.map(Some)
    }

    /// Writes a new index object listing `packs` and records it in the catalog;
    /// returns its id.
    pub(crate) async fn write_index_object(&self, packs: Vec<IndexedPack>) -> StoreResult<ChunkId> {
        let id = ChunkId::random();
        let key = format::index_key(&id);
        self.put_sealed(&key, &encode_index(&packs)).await?;
        self.with_catalog(move |c| c.add_index_object(&key, &packs))
            .await?;
        Ok(id)
    }

    /// Records a committed snapshot in the catalog.
    pub(crate) async fn record_snapshot(&self, s: &SnapshotSummary) -> StoreResult<()> {
        let meta = serde_json::to_string(&s.meta).expect("snapshot metadata serialises");
        let (id, vm, disk, time) = (
            s.id.clone(),
            s.meta.vm.clone(),
            s.meta.disk.clone(),
            s.meta.time.clone(),
        );
        self.with_catalog(move |c| c.add_snapshot(&id, &vm, &disk, &time, &meta))
            .await
    }

    pub async fn read_manifest(&self, id: &str) -> StoreResult<Manifest> {
        let parsed: ChunkId = id.parse().map_err(|_| StoreError::Invalid {
            what: "snapshot id".into(),
            detail: format!("{id:?} is not a full snapshot id"),
        })?;
        let key = format::snapshot_key(&parsed);
        let plain = self.get_sealed(&key).await?;
        Manifest::decode(&plain).map_err(|e| StoreError::decode(&key, e))
    }

    pub async fn read_index_object(&self, key: &str) -> StoreResult<Vec<IndexedPack>> {
        let plain = self.get_sealed(key).await?;
        decode_index(&plain).map_err(|e| StoreError::decode(key, e))
    }

    /// Forgets a snapshot: deletes its manifest (`snapshots/<id>`) and its catalog
    /// row. Its packs and index entries stay: other snapshots may share the chunks,
    /// and only a garbage collection (`prune`) can tell which are unreferenced.
    pub async fn forget_snapshot(&self, id: &str) -> StoreResult<()> {
        let parsed: ChunkId = id.parse().map_err(|_| StoreError::Invalid {
            what: "snapshot id".into(),
            detail: format!("{id:?} is not a full snapshot id"),
        })?;
        self.backend.delete(&format::snapshot_key(&parsed)).await?;
        let id = id.to_string();
        self.with_catalog(move |c| c.remove_snapshot(&id)).await
    }

    /// Every snapshot in the catalog (call [`Self::sync_catalog`] first), oldest first.
    pub async fn snapshots(&self) -> StoreResult<Vec<SnapshotSummary>> {
        let rows = self.with_catalog(|c| c.snapshots()).await?;
        rows.into_iter()
            .map(|(id, meta)| {
                let meta = serde_json::from_str(&meta).map_err(|e| StoreError::Invalid {
                    what: "catalog snapshot row".into(),
                    detail: e.to_string(),
                })?;
                Ok(SnapshotSummary { id, meta })
            })
            .collect()
    }

    /// Resolves `latest` or an id prefix, optionally filtered by VM and disk.
    pub async fn find_snapshot(
        &self,
        spec: &str,
        vm: Option<&str>,
        disk: Option<&str>,
    ) -> StoreResult<SnapshotSummary> {
        let all = self.snapshots().await?;
        let matching: Vec<SnapshotSummary> = all
            .into_iter()
            .filter(|s| vm.is_none_or(|v| s.meta.vm == v))
            .filter(|s| disk.is_none_or(|d| s.meta.disk == d))
            .filter(|s| spec == "latest" || s.id.starts_with(spec))
            .collect();
        if spec == "latest" {
            let disks: std::collections::BTreeSet<(&str, &str)> = matching
                .iter()
                .map(|s| (s.meta.vm.as_str(), s.meta.disk.as_str()))
                .collect();
            if disks.len() > 1 {
                return Err(StoreError::AmbiguousLatest {
                    vm: vm.map(str::to_string),
                    disk: disk.map(str::to_string),
                    disks: disks.iter().map(|(v, d)| format!("{v}/{d}")).collect(),
                });
            }
            let filters = selection_filters(vm, disk);
            return matching
                .into_iter()
                .max_by(|a, b| a.meta.time.cmp(&b.meta.time))
                .ok_or_else(|| StoreError::NotFound(format!("no snapshots{filters}")));
        }
        match matching.len() {
            0 => Err(StoreError::NoSuchSnapshot {
                prefix: spec.to_string(),
                vm: vm.map(str::to_string),
                disk: disk.map(str::to_string),
            }),
            1 => Ok(matching.into_iter().next().expect("one element")),
            n => Err(StoreError::Invalid {
                what: "snapshot id".into(),
                detail: format!("prefix {spec} matches {n} snapshots; give more digits"),
            }),
        }
    }
}
