//! The backup side of garbage collection, with stale catalogs made on purpose: a
//! backup that reused data a prune has since condemned commits only before the plan's
//! deadline, and then the sweep keeps (resurrects) that data; after the deadline the
//! commit is refused and nothing is written — also when the manifest upload itself
//! was what ran past the deadline. Hosts are separate catalogs (cache dirs) on one
//! local repository.

mod support;

use std::sync::Arc;
use std::time::Duration;

use lifeboat_store::{ChunkId, PruneOptions, Repository, StoreError, open_repository, prune};
use support::{TestBackend, host, init, manifest, store_pack};

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

    // Before the deadline: reusing x is allowed, and x's pack is indexed again at
    // once, so the new snapshot restores from any host before any sweep…
    early
        .commit_snapshot(&manifest("vm1", &[(x, 7)]))
        .await
        .unwrap();
    let now = host(dir.path(), "now").await;
    let loc = now.catalog().locate(&x).unwrap();
    assert!(loc.is_some_and(|l| l.indexed), "x is indexed: {loc:?}");
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
    // The refused host forgot y's pack, so its rerun uploads y instead of failing again.
    assert!(late.catalog().locate(&y).unwrap().is_none());

    // The sweep keeps x's pack (an index lists it again) and deletes y's.
    let sweep = prune(&gc, &grace(2), &noop).await.unwrap();
    assert_eq!(sweep.sweep.kept_indexed, 1, "{sweep:?}");
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

/// The scenario of a slow manifest upload racing a prune: x's pack is condemned
/// (commit deadline in 3 s, sweep from 4 s on) and swept at 4.2 s while the upload,
/// which takes 6 s, is still running. The commit starts just before the mark (its
/// check sees no plan; the check after the upload refuses and withdraws it) or just
/// after it (its check sees a plan it may still rely on; the upload is abandoned at
/// the deadline). Either way: refused, and nothing refers to missing data.
async fn slow_manifest_races_the_sweep(commit_before_mark: bool) {
    let dir = tempfile::tempdir().unwrap();
    let a = init(dir.path()).await;
    let (x, first) = back_up_chunk(&a, "vm1", b"chunk x").await;
    a.forget_snapshot(&first).await.unwrap();

    // A backup on a host with a slow link: its catalog still holds x.
    let slow = Arc::new(TestBackend::new(dir.path()).slow_manifests(Duration::from_secs(6)));
    let stale = open_repository(slow, "pw", &dir.path().join("stale"))
        .await
        .unwrap();
    stale.sync_catalog().await.unwrap();
    // Old enough to be condemned.
    tokio::time::sleep(Duration::from_millis(4100)).await;

    let stale = Arc::new(stale);
    let commit = || {
        let stale = stale.clone();
        tokio::spawn(async move { stale.commit_snapshot(&manifest("vm1", &[(x, 7)])).await })
    };
    let early = commit_before_mark.then(commit);
    let gc = host(dir.path(), "gc").await;
    let noop = |_: &str| {};
    let mark = prune(&gc, &grace(4), &noop).await.unwrap();
    assert_eq!(mark.mark.condemned_packs, 1, "{mark:?}");
    let commit = early.unwrap_or_else(commit);
    tokio::time::sleep(Duration::from_millis(4200)).await;
    let sweep = prune(&gc, &grace(4), &noop).await.unwrap();
    // A commit that saw the plan indexed x's pack again before uploading, so the
    // sweep keeps it; one that did not see it left the pack to be deleted.
    let (kept, deleted) = if commit_before_mark { (0, 1) } else { (1, 0) };
    assert_eq!(
        (sweep.sweep.kept_indexed, sweep.sweep.deleted_packs),
        (kept, deleted),
        "{sweep:?}"
    );
    let refused = commit.await.unwrap().unwrap_err();
    assert!(
        matches!(refused, StoreError::GcConflict { .. }),
        "{refused}"
    );
    assert_eq!(
        refused
            .to_string()
            .contains("did not finish before the deadline"),
        !commit_before_mark,
        "{refused}"
    );

    // Nothing refers to the deleted data: the manifest was withdrawn (or abandoned).
    assert!(gc.backend().list("snapshots/").await.unwrap().is_empty());
    let after = prune(&host(dir.path(), "fresh").await, &grace(4), &noop)
        .await
        .unwrap();
    assert_eq!((after.snapshots, after.missing_chunks), (0, 0), "{after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_relying_on_condemned_data_is_abandoned_at_the_deadline() {
    slow_manifest_races_the_sweep(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_landing_after_a_new_plan_was_swept_is_withdrawn() {
    slow_manifest_races_the_sweep(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_condemned_pack_object_lock_keeps_stays_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let a = init(dir.path()).await;
    let (x, first) = back_up_chunk(&a, "vm1", b"chunk x").await;
    a.forget_snapshot(&first).await.unwrap();
    let stale = host(dir.path(), "stale").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // The prune host's store refuses to delete packs, as Object Lock would.
    let locked = Arc::new(TestBackend::new(dir.path()).locked("data/"));
    let gc = open_repository(locked, "pw", &dir.path().join("gc"))
        .await
        .unwrap();
    let noop = |_: &str| {};
    let mark = prune(&gc, &grace(2), &noop).await.unwrap();
    assert_eq!(mark.mark.condemned_packs, 1, "{mark:?}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let sweep = prune(&gc, &grace(2), &noop).await.unwrap();
    assert_eq!(
        (sweep.sweep.deleted_packs, sweep.sweep.locked_skipped.len()),
        (0, 1),
        "{sweep:?}"
    );

    // The sweep is done and the pack was not deleted, so a backup may rely on it…
    stale
        .commit_snapshot(&manifest("vm1", &[(x, 7)]))
        .await
        .unwrap();
    // …and every host can find x in it.
    let fresh = host(dir.path(), "fresh").await;
    let loc = fresh.catalog().locate(&x).unwrap();
    assert!(loc.is_some_and(|l| l.indexed), "x is indexed: {loc:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_upload_of_a_snapshot_reusing_condemned_data_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = init(dir.path()).await;
    let (x, first) = back_up_chunk(&a, "vm1", b"chunk x").await;
    a.forget_snapshot(&first).await.unwrap();
    let failing = Arc::new(TestBackend::new(dir.path()).failing_manifests());
    let stale = open_repository(failing, "pw", &dir.path().join("stale"))
        .await
        .unwrap();
    stale.sync_catalog().await.unwrap();
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let gc = host(dir.path(), "gc").await;
    let mark = prune(&gc, &grace(4), &|_: &str| {}).await.unwrap();
    assert_eq!(mark.mark.condemned_packs, 1, "{mark:?}");

    // The commit borrows x's condemned pack (so its upload has a deadline) and the
    // upload fails: that is a failed backup, not a snapshot.
    let failed = stale
        .commit_snapshot(&manifest("vm1", &[(x, 7)]))
        .await
        .unwrap_err();
    assert!(failed.to_string().contains("injected failure"), "{failed}");
    assert!(stale.catalog().snapshots().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pack_deleted_by_an_interrupted_sweep_is_recorded_as_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let a = init(dir.path()).await;
    let (x, first) = back_up_chunk(&a, "vm1", b"chunk x").await;
    a.forget_snapshot(&first).await.unwrap();
    let stale = host(dir.path(), "stale").await;
    let pack = stale.catalog().locate(&x).unwrap().unwrap().pack;
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // Object Lock keeps the old index objects, which still list the condemned pack.
    let locked_index = || Arc::new(TestBackend::new(dir.path()).locked("index/"));
    let gc = open_repository(locked_index(), "pw", &dir.path().join("gc"))
        .await
        .unwrap();
    let noop = |_: &str| {};
    let mark = prune(&gc, &grace(2), &noop).await.unwrap();
    assert_eq!(mark.mark.condemned_packs, 1, "{mark:?}");
    // A sweep deleted the pack and died before writing its completion record.
    let key = lifeboat_store::format::pack_key(&pack);
    gc.backend().delete(&key).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // The next prune runs on a host whose new catalog read the old index objects.
    let other = open_repository(locked_index(), "pw", &dir.path().join("other"))
        .await
        .unwrap();
    let sweep = prune(&other, &grace(2), &noop).await.unwrap();
    assert_eq!(
        (sweep.sweep.plans_swept, sweep.sweep.kept_indexed),
        (1, 0),
        "{sweep:?}"
    );
    // The record says the pack is gone: nobody may rely on it any more.
    let refused = stale
        .commit_snapshot(&manifest("vm1", &[(x, 7)]))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::GcConflict { .. }),
        "{refused}"
    );
    let fresh = host(dir.path(), "fresh").await;
    assert!(fresh.catalog().locate(&x).unwrap().is_none());
}
