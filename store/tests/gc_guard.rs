//! The backup side of garbage collection, with stale catalogs made on purpose: a
//! backup that reused data a prune has since condemned commits only before the plan's
//! deadline, and then the sweep keeps (resurrects) that data; after the deadline the
//! commit is refused and nothing is written. Hosts are separate catalogs (cache dirs)
//! on one local repository.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lifeboat_store::backend::local::LocalBackend;
use lifeboat_store::format::blob::seal_chunk;
use lifeboat_store::format::manifest::{Extent, Manifest, SnapshotMeta};
use lifeboat_store::format::pack::PackBuilder;
use lifeboat_store::keyslot::KdfParams;
use lifeboat_store::{
    ChunkId, InitOptions, PruneOptions, Repository, StoreError, init_repository, open_repository,
    prune,
};

const FAST_KDF: KdfParams = KdfParams {
    m_cost_kib: 64,
    t_cost: 1,
    p_cost: 1,
};

async fn host(root: &Path, name: &str) -> Repository {
    let backend = Arc::new(LocalBackend::new(root.join("repo")));
    let repo = open_repository(backend, "pw", &root.join(name))
        .await
        .unwrap();
    repo.sync_catalog().await.unwrap();
    repo
}

fn manifest(vm: &str, chunk: ChunkId, len: u32) -> Manifest {
    Manifest {
        meta: SnapshotMeta {
            vm: vm.into(),
            disk: "root".into(),
            source: "test".into(),
            size: u64::from(len),
            time: lifeboat_store::repo::now_rfc3339(),
            host: "test".into(),
            tags: vec![],
            parent: None,
            cbt_bitmap: None,
            lifeboat_version: "test".into(),
        },
        extents: vec![Extent::Chunk { id: chunk, len }],
    }
}

/// Stores one chunk in its own pack, indexed, and commits a snapshot of it.
async fn back_up_chunk(repo: &Repository, vm: &str, data: &[u8]) -> (ChunkId, String) {
    let id = repo.keys().chunk_id(data);
    let mut pack = PackBuilder::with_capacity(data.len() + 1024);
    pack.add(
        id,
        &seal_chunk(repo.keys(), &id, data, 3),
        data.len() as u32,
    );
    repo.upload_pack(pack.finish(repo.keys())).await.unwrap();
    repo.flush_index().await.unwrap();
    let s = repo
        .commit_snapshot(&manifest(vm, id, data.len() as u32))
        .await
        .unwrap();
    (id, s.id)
}

fn grace(secs: u64) -> PruneOptions {
    PruneOptions {
        grace: Duration::from_secs(secs),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_reuse_commits_before_the_deadline_and_is_refused_after() {
    let dir = tempfile::tempdir().unwrap();
    let options = InitOptions {
        create_container: true,
        kdf: FAST_KDF,
        ..Default::default()
    };
    let backend = Arc::new(LocalBackend::new(dir.path().join("repo")));
    let a = init_repository(backend, "pw", &options, &dir.path().join("a"))
        .await
        .unwrap();
    let (x, first) = back_up_chunk(&a, "vm1", b"chunk x").await;
    let (y, second) = back_up_chunk(&a, "vm2", b"chunk y").await;
    a.forget_snapshot(&first).await.unwrap();
    a.forget_snapshot(&second).await.unwrap();

    // Two backups on other hosts start now: their catalogs still hold x and y.
    let early = host(dir.path(), "early").await;
    let late = host(dir.path(), "late").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // A prune on a third host condemns both packs (grace 2 s).
    let gc = host(dir.path(), "gc").await;
    let noop = |_: &str| {};
    let mark = prune(&gc, &grace(2), &noop).await.unwrap();
    assert_eq!(mark.mark.condemned_packs, 2, "{mark:?}");

    // Before the deadline: reusing x is allowed…
    early.commit_snapshot(&manifest("vm1", x, 7)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // …after it, reusing y is refused, and no manifest appears.
    let before = late.backend().list("snapshots/").await.unwrap().len();
    let refused = late
        .commit_snapshot(&manifest("vm2", y, 7))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::GcConflict { .. }),
        "{refused}"
    );
    assert!(refused.is_retryable());
    assert!(
        refused.to_string().contains("Nothing was lost"),
        "{refused}"
    );
    assert_eq!(
        late.backend().list("snapshots/").await.unwrap().len(),
        before
    );

    // The sweep keeps x's pack (resurrected: a snapshot uses it) and deletes y's.
    let sweep = prune(&gc, &grace(2), &noop).await.unwrap();
    assert_eq!(sweep.sweep.resurrected, 1, "{sweep:?}");
    assert_eq!(sweep.sweep.deleted_packs, 1, "{sweep:?}");
    assert_eq!(sweep.missing_chunks, 0, "{sweep:?}");

    // x is still stored and indexed for everyone; y is gone and a rerun of the
    // refused backup (fresh sync) uploads it again and commits.
    let fresh = host(dir.path(), "fresh").await;
    let loc = fresh.catalog().locate(&x).unwrap().expect("x indexed");
    let key = lifeboat_store::format::pack_key(&loc.pack);
    assert!(fresh.backend().size(&key).await.unwrap().is_some());
    assert!(fresh.catalog().locate(&y).unwrap().is_none());
    let rerun = host(dir.path(), "late").await;
    back_up_chunk(&rerun, "vm2", b"chunk y").await;
}
