//! `lifeboat repair index`: rebuilds the index objects from the packs' own headers
//! (docs/FORMAT.md §11).
//!
//! Index objects are only a cache of the pack headers, so when one is lost or damaged
//! the packs can say again which chunks they hold. The rebuild is safe to interrupt and
//! safe beside a running backup:
//!
//! - it lists `index/` *before* `data/`: every pack an old index object names was
//!   uploaded before that object was written, so it is in the `data/` listing too;
//! - it writes all new index objects first and deletes old ones only afterwards, so a
//!   crash at any point leaves at least one index entry for every readable pack;
//! - it deletes only index objects it listed at the start: one a concurrent backup
//!   writes later is never touched;
//! - index objects of a newer format version are kept (they are not damage), and so are
//!   ones Object Lock still protects;
//! - it holds prune's GC lease, so no sweep deletes packs while it re-indexes them.
//!
//! A pack whose header cannot be read is reported, not indexed from its header. If an
//! old, readable index object lists such a pack, its entries are carried over into the
//! new index: its blobs may well be intact, and restore verifies each chunk anyway.
//!
//! Memory stays bounded: headers are fetched with one ranged GET each, a batch of
//! [`RepairOptions::packs_per_index`] packs is written as soon as it is complete, and
//! carried-over entries are collected only for packs with unreadable headers.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;

use crate::backend::BackendError;
use crate::crypto::ChunkId;
use crate::error::{StoreError, StoreResult};
use crate::format::index::{IndexedPack, encode_index};
use crate::format::{self, INDEX_PREFIX};
use crate::gc::lease::Lease;
use crate::repo::Repository;
use crate::stored_packs::HeaderRead;

/// How long the GC lease lasts between renewals; a repair that dies frees it this late.
const LEASE_TTL: Duration = Duration::from_secs(15 * 60);
/// How many pack headers are fetched at once.
const FETCH_CONCURRENCY: usize = 16;

#[derive(Debug, Clone)]
pub struct RepairOptions {
    /// Scan and report, but write and delete nothing.
    pub dry_run: bool,
    /// Packs listed per new index object (a backup writes one every 64 packs).
    pub packs_per_index: usize,
}

impl Default for RepairOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            packs_per_index: 64,
        }
    }
}

/// A pack whose header could not be used.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedPack {
    pub pack: String,
    pub detail: String,
}

/// What `repair index` found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    pub dry_run: bool,
    pub packs_scanned: u64,
    pub packs_indexed: u64,
    pub packs_damaged: Vec<DamagedPack>,
    /// Packs listed at the start that were gone when their header was read (deleted by
    /// a concurrent prune, say); nothing to index.
    pub packs_vanished: u64,
    pub chunks_indexed: u64,
    /// Entries of damaged packs kept from old, readable index objects.
    pub chunks_carried_over: u64,
    pub index_objects_written: u64,
    pub old_index_objects: u64,
    pub old_index_objects_damaged: u64,
    pub old_index_objects_deleted: u64,
    /// Old index objects left in place, and why (e.g. a newer format version).
    pub old_index_objects_kept: Vec<DamagedPack>,
}

impl Repository {
    /// Rebuilds every index object from the pack headers; see the module docs.
    pub async fn repair_index(&self, options: &RepairOptions) -> StoreResult<RepairReport> {
        if options.dry_run {
            return self.rebuild_index(options, None).await;
        }
        // Holding prune's GC lease keeps a sweep from deleting packs while this
        // re-indexes them (an index entry for a pack deleted meanwhile would dangle).
        let mut lease = Lease::acquire(self, LEASE_TTL).await?;
        let result = self.rebuild_index(options, Some(&mut lease)).await;
        let released = lease.release(self).await;
        let report = result?;
        released?;
        Ok(report)
    }

    async fn rebuild_index(
        &self,
        options: &RepairOptions,
        lease: Option<&mut Lease>,
    ) -> StoreResult<RepairReport> {
        let mut report = RepairReport {
            dry_run: options.dry_run,
            ..Default::default()
        };
        // Order matters: index/ before data/ (see the module docs).
        let old_index: Vec<String> = self
            .backend()
            .list(INDEX_PREFIX)
            .await?
            .into_iter()
            .filter(|o| format::id_from_key(&o.key).is_some())
            .map(|o| o.key)
            .collect();
        report.old_index_objects = old_index.len() as u64;
        let packs: Vec<(ChunkId, u64)> = self
            .list_packs()
            .await?
            .into_iter()
            .map(|p| (p.id, p.size))
            .collect();
        let damaged = self.index_headers(&packs, options, &mut report).await?;
        let keep = self
            .carry_over(&old_index, &damaged, options, &mut report)
            .await?;
        // Only now that every new object exists: delete the old ones.
        self.delete_old_index(&old_index, &keep, lease, &mut report)
            .await?;
        if !options.dry_run {
            // The catalog notices the vanished objects, drops what it learnt from them
            // and reads the new ones; pending entries of a running backup stay.
            self.sync_catalog().await?;
        }
        Ok(report)
    }

    /// Reads every pack's header and writes new index objects from them; returns the
    /// packs whose header is damaged.
    async fn index_headers(
        &self,
        packs: &[(ChunkId, u64)],
        options: &RepairOptions,
        report: &mut RepairReport,
    ) -> StoreResult<HashSet<ChunkId>> {
        let mut batch: Vec<IndexedPack> = Vec::new();
        let mut damaged: HashSet<ChunkId> = HashSet::new();
        let mut reads =
            futures::stream::iter(packs.iter().map(|&(pack, size)| async move {
                (pack, self.read_pack_header(&pack, size).await)
            }))
            .buffer_unordered(FETCH_CONCURRENCY);
        while let Some((pack, read)) = reads.next().await {
            report.packs_scanned += 1;
            match read? {
                HeaderRead::Ok(entries) => {
                    report.packs_indexed += 1;
                    report.chunks_indexed += entries.len() as u64;
                    batch.push(IndexedPack { pack, entries });
                }
                HeaderRead::Damaged(detail) => {
                    tracing::warn!("pack {} is damaged: {detail}", format::pack_key(&pack));
                    damaged.insert(pack);
                    report.packs_damaged.push(DamagedPack {
                        pack: format::pack_key(&pack),
                        detail,
                    });
                }
                HeaderRead::Vanished => report.packs_vanished += 1,
            }
            if batch.len() >= options.packs_per_index.max(1) {
                self.write_rebuilt_index(&mut batch, options, report)
                    .await?;
            }
        }
        drop(reads);
        self.write_rebuilt_index(&mut batch, options, report)
            .await?;
        Ok(damaged)
    }

    /// Reads the old index objects: salvages the entries of `damaged` packs into new
    /// objects, and returns the old objects that must stay (newer format).
    async fn carry_over(
        &self,
        old_index: &[String],
        damaged: &HashSet<ChunkId>,
        options: &RepairOptions,
        report: &mut RepairReport,
    ) -> StoreResult<HashSet<String>> {
        let mut keep: HashSet<String> = HashSet::new();
        let mut carried: Vec<IndexedPack> = Vec::new();
        for key in old_index {
            match self.read_index_object(key).await {
                Ok(listed) => carried.extend(
                    listed
                        .into_iter()
                        .filter(|p| damaged.contains(&p.pack) && !p.entries.is_empty()),
                ),
                Err(e @ StoreError::UnsupportedFormat { .. }) => {
                    keep.insert(key.clone());
                    report.old_index_objects_kept.push(DamagedPack {
                        pack: key.clone(),
                        detail: e.to_string(),
                    });
                }
                Err(StoreError::Corrupt { .. }) => report.old_index_objects_damaged += 1,
                Err(StoreError::Backend(e)) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            if carried.len() >= options.packs_per_index.max(1) {
                report.chunks_carried_over += count_entries(&carried);
                self.write_rebuilt_index(&mut carried, options, report)
                    .await?;
            }
        }
        report.chunks_carried_over += count_entries(&carried);
        self.write_rebuilt_index(&mut carried, options, report)
            .await?;
        Ok(keep)
    }

    /// Deletes the old index objects except `keep` (only with a lease: a dry run
    /// deletes nothing and only counts).
    async fn delete_old_index(
        &self,
        old_index: &[String],
        keep: &HashSet<String>,
        mut lease: Option<&mut Lease>,
        report: &mut RepairReport,
    ) -> StoreResult<()> {
        for key in old_index.iter().filter(|k| !keep.contains(*k)) {
            if let Some(lease) = lease.as_deref_mut() {
                lease.keep(self).await?;
                match self.backend().delete(key).await {
                    Ok(()) => {}
                    // Object Lock: the old object stays until its lock expires; readers
                    // accept the duplicate entries meanwhile.
                    Err(BackendError::Locked { key, until }) => {
                        report.old_index_objects_kept.push(DamagedPack {
                            pack: key,
                            detail: format!("locked until {until} (Object Lock)"),
                        });
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            report.old_index_objects_deleted += 1;
        }
        Ok(())
    }

    /// Writes `batch` as one new index object (unless it is empty or this is a dry run)
    /// and empties it.
    async fn write_rebuilt_index(
        &self,
        batch: &mut Vec<IndexedPack>,
        options: &RepairOptions,
        report: &mut RepairReport,
    ) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if !options.dry_run {
            let key = format::index_key(&ChunkId::random());
            self.put_sealed(&key, &encode_index(batch)).await?;
        }
        report.index_objects_written += 1;
        batch.clear();
        Ok(())
    }
}

fn count_entries(packs: &[IndexedPack]) -> u64 {
    packs.iter().map(|p| p.entries.len() as u64).sum()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::format::DATA_PREFIX;
    use crate::format::blob::seal_chunk;
    use crate::format::pack::{PackBuilder, TRAILER_LEN};
    use crate::keys::slot::KdfParams;
    use crate::keys::{InitOptions, init_repository};

    const CHEAP: KdfParams = KdfParams {
        m_cost_kib: 1024,
        t_cost: 1,
        p_cost: 1,
    };

    /// A repository with `packs` packs of three chunks each, all indexed.
    async fn repo_with_packs(dir: &std::path::Path, packs: u8) -> (Repository, Vec<ChunkId>) {
        let backend = Arc::new(LocalBackend::new(dir.join("repo")));
        let options = InitOptions {
            create_container: true,
            kdf: CHEAP,
            ..Default::default()
        };
        let repo = init_repository(backend, "pw", &options, &dir.join("cache"))
            .await
            .unwrap();
        let mut chunks = Vec::new();
        for p in 0..packs {
            let mut builder = PackBuilder::default();
            for c in 0..3u8 {
                let data = vec![p.wrapping_mul(7).wrapping_add(c); 1000 + usize::from(c)];
                let id = repo.keys().chunk_id(&data);
                builder.add(id, &seal_chunk(repo.keys(), &id, &data, 3), 1000);
                chunks.push(id);
            }
            repo.upload_pack(builder.finish(repo.keys())).await.unwrap();
        }
        repo.flush_index().await.unwrap();
        (repo, chunks)
    }

    #[tokio::test]
    async fn rebuilds_a_lost_index_and_reports_damaged_packs() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, chunks) = repo_with_packs(dir.path(), 5).await;
        let old = repo.backend().list(INDEX_PREFIX).await.unwrap();
        assert_eq!(old.len(), 1);
        // Damage one pack's header (its last bytes before the trailer).
        let packs = repo.backend().list(DATA_PREFIX).await.unwrap();
        let victim = &packs[0].key;
        let mut bytes = repo.backend().get(victim).await.unwrap().to_vec();
        let n = bytes.len();
        bytes[n - TRAILER_LEN - 3] ^= 0x10;
        repo.backend().put(victim, bytes.into()).await.unwrap();

        let dry = repo
            .repair_index(&RepairOptions {
                dry_run: true,
                packs_per_index: 2,
            })
            .await
            .unwrap();
        assert_eq!((dry.packs_scanned, dry.packs_indexed), (5, 4));
        assert_eq!(repo.backend().list(INDEX_PREFIX).await.unwrap(), old);

        let report = repo
            .repair_index(&RepairOptions {
                dry_run: false,
                packs_per_index: 2,
            })
            .await
            .unwrap();
        assert_eq!(report.packs_damaged.len(), 1);
        assert_eq!(&report.packs_damaged[0].pack, victim);
        assert_eq!(report.chunks_indexed, 12);
        // The old index still listed the damaged pack: its entries are carried over.
        assert_eq!(report.chunks_carried_over, 3);
        // 4 good packs at 2 per object, plus one object of carried-over entries.
        assert_eq!(report.index_objects_written, 3);
        assert_eq!(report.old_index_objects_deleted, 1);
        let now = repo.backend().list(INDEX_PREFIX).await.unwrap();
        assert_eq!(now.len(), 3);
        assert!(now.iter().all(|o| !old.contains(o)));
        for id in &chunks {
            assert!(repo.catalog().locate(id).unwrap().is_some(), "{id:?}");
        }

        // Lose every index object: the damaged pack's chunks are gone for good, the
        // others come back.
        for o in now {
            repo.backend().delete(&o.key).await.unwrap();
        }
        let report = repo.repair_index(&RepairOptions::default()).await.unwrap();
        assert_eq!((report.chunks_indexed, report.chunks_carried_over), (12, 0));
        let located = chunks
            .iter()
            .filter(|id| repo.catalog().locate(id).unwrap().is_some())
            .count();
        assert_eq!(located, 12);
    }

    #[tokio::test]
    async fn truncated_and_foreign_packs_are_damaged_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _) = repo_with_packs(dir.path(), 2).await;
        let packs = repo.backend().list(DATA_PREFIX).await.unwrap();
        let bytes = repo.backend().get(&packs[0].key).await.unwrap();
        repo.backend()
            .put(&packs[0].key, bytes.slice(..bytes.len() - 1))
            .await
            .unwrap();
        repo.backend()
            .put(&packs[1].key, bytes.slice(..5))
            .await
            .unwrap();
        let report = repo.repair_index(&RepairOptions::default()).await.unwrap();
        assert_eq!(report.packs_scanned, 2);
        assert_eq!(report.packs_damaged.len(), 2, "{report:?}");
        assert_eq!(report.chunks_carried_over, 6);
    }
}
