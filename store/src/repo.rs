//! An open repository: backend + keys + config + catalog, and the operations every
//! command is built from (upload a pack, write an index, commit a manifest, read back).
//!
//! Write order is what makes crashes harmless: packs first, then the index objects
//! that list them, then the manifest. An interruption at any point leaves at worst
//! unreferenced packs or index entries — wasted space, never a snapshot with holes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use futures::StreamExt;

use crate::backend::Backend;
use crate::backend::locking::LockingBackend;
use crate::catalog::Catalog;
use crate::crypto::{ChunkId, MasterKey, RepoKeys};
use crate::error::{StoreError, StoreResult};
use crate::format::config::RepoConfig;
use crate::format::index::{IndexedPack, decode_index, encode_index};
use crate::format::manifest::{Manifest, SnapshotMeta};
use crate::format::pack::FinishedPack;
use crate::format::{self, CONFIG_KEY, INDEX_PREFIX, MARKER_KEY, Marker, SNAPSHOTS_PREFIX};

/// How many objects the catalog sync fetches at once.
const SYNC_CONCURRENCY: usize = 16;
/// Memory the index sync may hold at once, in MiB (a sealed object is counted three
/// times over: the download, the plaintext and the decoded entries).
const SYNC_BUDGET_MIB: usize = 192;

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

/// Objects the catalog sync could not use.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SyncReport {
    /// `(object key, what is wrong)`.
    pub damaged: Vec<(String, String)>,
    /// Snapshots this catalog knew whose manifests are gone: forgotten by another
    /// host, or deleted or lost. `(snapshot id, "vm/disk at time")`.
    pub vanished: Vec<(String, String)>,
}

impl SyncReport {
    /// Records a damaged or vanished object; other errors (network, catalog) abort.
    fn note(&mut self, key: String, result: StoreResult<()>) -> StoreResult<()> {
        match result {
            Ok(()) => Ok(()),
            Err(e @ StoreError::Corrupt { .. }) | Err(e @ StoreError::UnsupportedFormat { .. }) => {
                tracing::warn!("skipping {key}: {e}");
                self.damaged.push((key, e.to_string()));
                Ok(())
            }
            Err(StoreError::Backend(e)) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

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
        Ok(Self {
            backend,
            keys: RepoKeys::derive(&master),
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

    /// Commits a snapshot. Callers must have uploaded and indexed all its chunks first.
    pub async fn commit_snapshot(&self, manifest: &Manifest) -> StoreResult<SnapshotSummary> {
        use crate::gc::guard;
        let checked = guard::before_commit(self, manifest).await?;
        let id = ChunkId::random();
        let key = format::snapshot_key(&id);
        let encoded = manifest.encode();
        let upload = self.put_sealed(&key, &encoded);
        match checked.must_land_by() {
            // Relying on condemned data: an upload still running at the plan's deadline
            // is abandoned (and withdrawn, should it land after all).
            Some(deadline) => {
                let left = deadline.saturating_sub(crate::gc::unix_now());
                match tokio::time::timeout(Duration::from_secs(left), upload).await {
                    Ok(uploaded) => uploaded?,
                    Err(_) => {
                        self.withdraw(&key).await;
                        return Err(StoreError::GcConflict {
                            detail: "the snapshot upload did not finish before the \
                                     deadline of a prune: data it reuses is being \
                                     garbage-collected"
                                .into(),
                        });
                    }
                }
            }
            None => upload.await?,
        }
        let written_at = crate::gc::unix_now();
        match guard::after_commit(self, manifest, checked, written_at).await {
            Ok(()) => {}
            Err(e @ StoreError::GcConflict { .. }) => {
                // A sweep may have missed this manifest: it must not stay.
                self.withdraw(&key).await;
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(
                    "snapshot {key} was written but could not be confirmed against \
                     concurrent prunes ({e}); `lifeboat verify` checks it"
                );
                return Err(e);
            }
        }
        let summary = SnapshotSummary {
            id: id.to_hex(),
            meta: manifest.meta.clone(),
        };
        self.record_snapshot(&summary).await?;
        Ok(summary)
    }

    /// Deletes a manifest whose commit was refused after it was written. Unconfirmed
    /// is refused: withdrawn, it never existed for anyone who did not list it in these
    /// few moments.
    async fn withdraw(&self, key: &str) {
        if let Err(e) = self.backend.delete(key).await {
            tracing::error!(
                "could not withdraw unconfirmed snapshot {key} ({e}); `lifeboat verify` \
                 reports it if its data was collected; forget it then"
            );
        }
    }

    async fn record_snapshot(&self, s: &SnapshotSummary) -> StoreResult<()> {
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

    /// Brings the catalog up to date with the repository's index objects and
    /// manifests. Cheap when nothing changed: two LISTs. Damaged objects are skipped
    /// (and reported), so one bad object does not stop restores of everything else.
    pub async fn sync_catalog(&self) -> StoreResult<SyncReport> {
        // Plans first: they make the catalog forget condemned packs, and an index
        // object that lists a pack again (resurrection) must win over that.
        crate::gc::guard::sync_plans(self).await?;
        let objects: Vec<(String, u64)> = self
            .backend
            .list(INDEX_PREFIX)
            .await?
            .into_iter()
            .filter(|o| format::id_from_key(&o.key).is_some())
            .map(|o| (o.key, o.size))
            .collect();
        let sizes: std::collections::HashMap<String, u64> = objects.iter().cloned().collect();
        let listed: Vec<String> = objects.into_iter().map(|(k, _)| k).collect();
        let known = self.with_catalog(|c| c.index_objects()).await?;
        let listed_set: HashSet<&String> = listed.iter().collect();
        let mut known_set: HashSet<String> = known.iter().cloned().collect();
        if known.iter().any(|k| !listed_set.contains(k)) {
            // Index objects disappeared (prune, repair): start over from what exists.
            self.with_catalog(|c| c.reset_index()).await?;
            known_set.clear();
        }
        let missing = listed.into_iter().filter(|k| !known_set.contains(k));
        let mut report = SyncReport::default();
        // Index objects from a prune hold up to a million entries each (~50 MiB, more
        // once decoded): bound the bytes in flight, not just the number of requests.
        let budget = tokio::sync::Semaphore::new(SYNC_BUDGET_MIB);
        let (budget, sizes) = (&budget, &sizes);
        let results: Vec<(String, StoreResult<()>)> =
            futures::stream::iter(missing.map(|key| async move {
                let mib = sizes.get(&key).map_or(1, |s| s.div_ceil(1 << 20) * 3);
                let permits = mib.clamp(1, SYNC_BUDGET_MIB as u64) as u32;
                let _held = budget.acquire_many(permits).await.expect("never closed");
                let result = async {
                    let packs = self.read_index_object(&key).await?;
                    let name = key.clone();
                    self.with_catalog(move |c| c.add_index_object(&name, &packs))
                        .await
                }
                .await;
                (key, result)
            }))
            .buffer_unordered(SYNC_CONCURRENCY)
            .collect()
            .await;
        for (key, result) in results {
            report.note(key, result)?;
        }
        self.sync_snapshots(&mut report).await?;
        Ok(report)
    }

    async fn sync_snapshots(&self, report: &mut SyncReport) -> StoreResult<()> {
        let listed: HashSet<String> = self
            .backend
            .list(SNAPSHOTS_PREFIX)
            .await?
            .into_iter()
            .filter_map(|o| format::id_from_key(&o.key).map(|id| id.to_hex()))
            .collect();
        let known = self.with_catalog(|c| c.snapshots()).await?;
        for (id, meta) in &known {
            if !listed.contains(id) {
                let what = serde_json::from_str::<SnapshotMeta>(meta)
                    .map(|m| format!("{}/{} at {}", m.vm, m.disk, m.time))
                    .unwrap_or_default();
                report.vanished.push((id.clone(), what));
                let id = id.clone();
                self.with_catalog(move |c| c.remove_snapshot(&id)).await?;
            }
        }
        let known: HashSet<String> = known.into_iter().map(|(id, _)| id).collect();
        let new = listed.iter().filter(|id| !known.contains(*id));
        let results: Vec<(String, StoreResult<()>)> =
            futures::stream::iter(new.map(|id| async move {
                let result = async {
                    let manifest = self.read_manifest(id).await?;
                    self.record_snapshot(&SnapshotSummary {
                        id: id.clone(),
                        meta: manifest.meta,
                    })
                    .await
                }
                .await;
                (format!("{SNAPSHOTS_PREFIX}{id}"), result)
            }))
            .buffer_unordered(SYNC_CONCURRENCY)
            .collect()
            .await;
        for (key, result) in results {
            report.note(key, result)?;
        }
        Ok(())
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
        let filters = match (vm, disk) {
            (None, None) => String::new(),
            _ => format!(
                " (vm {}, disk {})",
                vm.unwrap_or("any"),
                disk.unwrap_or("any")
            ),
        };
        if spec == "latest" {
            let disks: std::collections::BTreeSet<(&str, &str)> = matching
                .iter()
                .map(|s| (s.meta.vm.as_str(), s.meta.disk.as_str()))
                .collect();
            if disks.len() > 1 {
                let names: Vec<String> = disks.iter().map(|(v, d)| format!("{v}/{d}")).collect();
                return Err(StoreError::Invalid {
                    what: "snapshot selection".into(),
                    detail: format!(
                        "`latest` is ambiguous{filters}: several disks match ({}); add --vm and --disk",
                        names.join(", ")
                    ),
                });
            }
            return matching
                .into_iter()
                .max_by(|a, b| a.meta.time.cmp(&b.meta.time))
                .ok_or_else(|| StoreError::NotFound(format!("no snapshots{filters}")));
        }
        match matching.len() {
            0 => Err(StoreError::NotFound(format!(
                "no snapshot {spec}{filters}; list them with `lifeboat snapshots`"
            ))),
            1 => Ok(matching.into_iter().next().expect("one element")),
            n => Err(StoreError::Invalid {
                what: "snapshot id".into(),
                detail: format!("prefix {spec} matches {n} snapshots; give more digits"),
            }),
        }
    }
}
