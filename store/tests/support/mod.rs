//! Helpers shared by the store's integration tests: a repository on a local directory
//! with a cheap KDF (these tests are about storage, not passphrases), "hosts" that are
//! separate catalogs on it, and hand-built packs and manifests.
#![allow(dead_code)] // each test file uses its own subset

use std::path::Path;
use std::sync::Arc;

use lifeboat_store::backend::local::LocalBackend;
use lifeboat_store::format::blob::seal_chunk;
use lifeboat_store::format::manifest::{Extent, Manifest, SnapshotMeta};
use lifeboat_store::format::pack::PackBuilder;
use lifeboat_store::keyslot::KdfParams;
use lifeboat_store::{ChunkId, InitOptions, Repository, init_repository, open_repository};

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
