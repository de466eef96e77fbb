//! Bringing the local catalog up to date with the repository: prune plans, index
//! objects and manifests written by other hosts (or lost since).

use std::collections::{HashMap, HashSet};

use futures::StreamExt;

use crate::error::{StoreError, StoreResult};
use crate::format::manifest::SnapshotMeta;
use crate::format::{self, INDEX_PREFIX, SNAPSHOTS_PREFIX};
use crate::gc::guard;
use crate::repo::{Repository, SnapshotSummary};

/// How many objects the catalog sync fetches at once.
const SYNC_CONCURRENCY: usize = 16;
/// Memory the index sync may hold at once, in MiB (a sealed object is counted three
/// times over: the download, the plaintext and the decoded entries).
const SYNC_BUDGET_MIB: usize = 192;

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

impl Repository {
    /// Brings the catalog up to date with the repository's index objects and
    /// manifests. Cheap when nothing changed: two LISTs. Damaged objects are skipped
    /// (and reported), so one bad object does not stop restores of everything else.
    pub async fn sync_catalog(&self) -> StoreResult<SyncReport> {
        // Plans first: they make the catalog forget condemned packs, and an index
        // object that lists a pack again (resurrection) must win over that.
        guard::sync_plans(self).await?;
        let objects: Vec<(String, u64)> = self
            .backend()
            .list(INDEX_PREFIX)
            .await?
            .into_iter()
            .filter(|o| format::id_from_key(&o.key).is_some())
            .map(|o| (o.key, o.size))
            .collect();
        let sizes: HashMap<String, u64> = objects.iter().cloned().collect();
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
            .backend()
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
}
