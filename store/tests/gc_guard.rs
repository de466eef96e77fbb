//! The backup side of garbage collection, with stale catalogs made on purpose: a
//! backup that reused data a prune has since condemned commits only before the plan's
//! deadline, and then the sweep keeps (resurrects) that data; after the deadline the
//! commit is refused and nothing is written — also when the manifest upload itself
//! was what ran past the deadline. Hosts are separate catalogs (cache dirs) on one
//! local repository.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use lifeboat_store::backend::local::LocalBackend;
use lifeboat_store::backend::{BackendResult, ObjectInfo};
use lifeboat_store::{
    Backend, ChunkId, PruneOptions, Repository, StoreError, open_repository, prune,
};
use support::{host, init, manifest, store_pack};

/// Stores one chunk in its own pack, indexed, and commits a snapshot of it.
async fn back_up_chunk(repo: &Repository, vm: &str, data: &[u8]) -> (ChunkId, String) {
    let id = repo.keys().chunk_id(data);
    store_pack(repo, &[data]).await;
    let s = repo
        .commit_snapshot(&manifest(vm, &[(id, data.len() as u32)]))
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
    let a = init(dir.path()).await;
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
    early
        .commit_snapshot(&manifest("vm1", &[(x, 7)]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // …after it, reusing y is refused, and no manifest appears.
    let before = late.backend().list("snapshots/").await.unwrap().len();
    let refused = late
        .commit_snapshot(&manifest("vm2", &[(y, 7)]))
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

/// A store whose manifest uploads take `delay` (a slow or congested link).
#[derive(Debug)]
struct SlowManifests {
    inner: LocalBackend,
    delay: Duration,
}

#[async_trait]
impl Backend for SlowManifests {
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
            tokio::time::sleep(self.delay).await;
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
        self.inner.delete(key).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_landing_after_the_deadline_is_withdrawn() {
    let dir = tempfile::tempdir().unwrap();
    let a = init(dir.path()).await;
    let (x, first) = back_up_chunk(&a, "vm1", b"chunk x").await;
    a.forget_snapshot(&first).await.unwrap();

    // A backup on a host with a slow link: its catalog still holds x.
    let slow = Arc::new(SlowManifests {
        inner: LocalBackend::new(dir.path().join("repo")),
        delay: Duration::from_secs(6),
    });
    let stale = open_repository(slow, "pw", &dir.path().join("stale"))
        .await
        .unwrap();
    stale.sync_catalog().await.unwrap();
    // Old enough to be condemned.
    tokio::time::sleep(Duration::from_millis(4100)).await;

    // A prune condemns x's pack: commit deadline in 3 s, sweep from 4 s on.
    let gc = host(dir.path(), "gc").await;
    let noop = |_: &str| {};
    let mark = prune(&gc, &grace(4), &noop).await.unwrap();
    assert_eq!(mark.mark.condemned_packs, 1, "{mark:?}");

    // The commit passes its check at once, but its manifest lands only after the
    // sweep has listed the snapshots and deleted the pack.
    let commit =
        tokio::spawn(async move { stale.commit_snapshot(&manifest("vm1", &[(x, 7)])).await });
    tokio::time::sleep(Duration::from_millis(4200)).await;
    let sweep = prune(&gc, &grace(4), &noop).await.unwrap();
    assert_eq!(sweep.sweep.deleted_packs, 1, "{sweep:?}");
    let refused = commit.await.unwrap().unwrap_err();
    assert!(
        matches!(refused, StoreError::GcConflict { .. }),
        "{refused}"
    );

    // Nothing refers to the deleted data: the manifest was withdrawn.
    assert!(gc.backend().list("snapshots/").await.unwrap().is_empty());
    let after = prune(&host(dir.path(), "fresh").await, &grace(4), &noop)
        .await
        .unwrap();
    assert_eq!((after.snapshots, after.missing_chunks), (0, 0), "{after:?}");
}
