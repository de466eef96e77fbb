//! Helpers shared by the store's integration tests: a repository on a local directory
//! with a cheap KDF (these tests are about storage, not passphrases), "hosts" that are
//! separate catalogs on it, and hand-built packs and manifests.
#![allow(dead_code)] // each test file uses its own subset

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use lifeboat_store::backend::local::LocalBackend;
use lifeboat_store::backend::{BackendError, BackendResult, ObjectInfo};
use lifeboat_store::format::blob::seal_chunk;
use lifeboat_store::format::manifest::{Extent, Manifest, SnapshotMeta};
use lifeboat_store::format::pack::PackBuilder;
use lifeboat_store::keys::slot::KdfParams;
use lifeboat_store::{Backend, ChunkId, InitOptions, Repository, init_repository, open_repository};

pub const FAST_KDF: KdfParams = KdfParams {
    m_cost_kib: 64,
    t_cost: 1,
    p_cost: 1,
};

/// Creates the repository `root/repo`; the returned handle's catalog is `root/cache`.
pub async fn init(root: &Path) -> Repository {
    let backend = Arc::new(LocalBackend::new(root.join("repo")));
    let options = InitOptions {
        create_container: true,
        kdf: FAST_KDF,
        ..Default::default()
    };
    init_repository(backend, "pw", &options, &root.join("cache"))
        .await
        .unwrap()
}

/// Another host on `root/repo`: its own catalog `root/<name>`, synced now.
pub async fn host(root: &Path, name: &str) -> Repository {
    let backend = Arc::new(LocalBackend::new(root.join("repo")));
    let repo = open_repository(backend, "pw", &root.join(name))
        .await
        .unwrap();
    repo.sync_catalog().await.unwrap();
    repo
}

/// A manifest of `vm`/root made of `chunks` (id, length) in order.
pub fn manifest(vm: &str, chunks: &[(ChunkId, u32)]) -> Manifest {
    Manifest {
        meta: SnapshotMeta {
            vm: vm.into(),
            disk: "root".into(),
            source: "test".into(),
            size: chunks.iter().map(|c| u64::from(c.1)).sum(),
            time: lifeboat_store::repo::now_rfc3339(),
            host: "test".into(),
            tags: vec![],
            parent: None,
            cbt_bitmap: None,
            lifeboat_version: "test".into(),
            replicated_from: None,
            vm_definition: None,
        },
        extents: chunks
            .iter()
            .map(|&(id, len)| Extent::Chunk { id, len })
            .collect(),
    }
}

/// Uploads one pack holding `chunks` and indexes it; returns the pack id.
pub async fn store_pack(repo: &Repository, chunks: &[&[u8]]) -> ChunkId {
    let mut pack = PackBuilder::with_capacity(64 << 10);
    for data in chunks {
        let id = repo.keys().chunk_id(data);
        pack.add(
            id,
            &seal_chunk(repo.keys(), &id, data, 3),
            data.len() as u32,
        );
    }
    let finished = pack.finish(repo.keys());
    let id = finished.id;
    repo.upload_pack(finished).await.unwrap();
    repo.flush_index().await.unwrap();
    id
}

/// `root/repo` as a host with a troubled store sees it: manifest uploads that take a
/// while (a slow link), or packs that cannot be deleted (as under Object Lock).
#[derive(Debug)]
pub struct TestBackend {
    inner: LocalBackend,
    manifest_delay: Duration,
    failing_manifests: bool,
    /// Key prefixes whose objects cannot be deleted, as under Object Lock.
    locked: Vec<&'static str>,
}

impl TestBackend {
    pub fn new(root: &Path) -> Self {
        Self {
            inner: LocalBackend::new(root.join("repo")),
            manifest_delay: Duration::ZERO,
            failing_manifests: false,
            locked: Vec::new(),
        }
    }

    pub fn slow_manifests(self, delay: Duration) -> Self {
        Self {
            manifest_delay: delay,
            ..self
        }
    }

    pub fn failing_manifests(self) -> Self {
        Self {
            failing_manifests: true,
            ..self
        }
    }

    /// Objects under `prefix` (`data/`, `index/`) cannot be deleted.
    pub fn locked(mut self, prefix: &'static str) -> Self {
        self.locked.push(prefix);
        self
    }
}

#[async_trait]
impl Backend for TestBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn check_reachable(&self) -> BackendResult<()> {
        self.inner.check_reachable().await
    }
    async fn create_container(&self) -> BackendResult<()> {
        self.inner.create_container().await
    }
    async fn put(&self, key: &str, data: Bytes) -> BackendResult<()> {
        self.inner.put(key, data).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> BackendResult<()> {
        if key.starts_with("snapshots/") {
            tokio::time::sleep(self.manifest_delay).await;
            if self.failing_manifests {
                return Err(BackendError::Io {
                    what: format!("uploading {key}"),
                    detail: "injected failure".into(),
                    retryable: true,
                });
            }
        }
        self.inner.put_if_absent(key, data).await
    }
    async fn get(&self, key: &str) -> BackendResult<Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> BackendResult<Bytes> {
        self.inner.get_range(key, offset, len).await
    }
    async fn size(&self, key: &str) -> BackendResult<Option<u64>> {
        self.inner.size(key).await
    }
    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> BackendResult<()> {
        if self.locked.iter().any(|p| key.starts_with(p)) {
            return Err(BackendError::Locked {
                key: key.to_string(),
                until: "2099-01-01T00:00:00Z".into(),
            });
        }
        self.inner.delete(key).await
    }
}
