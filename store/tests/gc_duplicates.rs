//! Chunks stored twice. Hosts that back up the same new data at the same time each
//! upload their own copy, so one chunk can sit in two packs. Prune must keep every
//! copy listed in the index while its pack stays, because a backup whose catalog
//! found the chunk in that pack may still commit a snapshot that relies on it.
//!
//! Regression test for a CI failure of `tests/prune_concurrency.rs` ("chunk in no
//! index" after concurrent backups and prunes): the catalog kept one location per
//! chunk, so prune's index rewrite silently dropped the other copy's entry.

mod support;

use std::time::Duration;

use lifeboat_store::{PruneOptions, prune};
use support::{host, init, manifest, store_pack};

#[tokio::test(flavor = "multi_thread")]
async fn a_second_copy_stays_indexed_while_its_pack_stays() {
    let dir = tempfile::tempdir().unwrap();
    let a = init(dir.path()).await;
    let (keep, dup): (&[u8], &[u8]) = (&[7u8; 8192], b"stored twice");
    let (k, x) = (a.keys().chunk_id(keep), a.keys().chunk_id(dup));

    // Host b starts a backup too; it has not seen a's data.
    let b = host(dir.path(), "b").await;
    // Host a stores k and x together; a snapshot keeps k alive, nothing uses x yet.
    let pack_a = store_pack(&a, &[keep, dup]).await;
    a.commit_snapshot(&manifest("vm", &[(k, keep.len() as u32)]))
        .await
        .unwrap();
    // A backup starts on another host: its catalog finds x in host a's pack.
    let stale = host(dir.path(), "stale").await;
    assert_eq!(stale.catalog().locate(&x).unwrap().unwrap().pack, pack_a);
    // The prune host has seen a's pack before host b stores its own copy of x.
    let gc = host(dir.path(), "gc").await;
    let pack_b = store_pack(&b, &[dup]).await;
    gc.sync_catalog().await.unwrap();

    // x is unused: b's pack is condemned, then deleted; a's pack stays for k.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let opts = PruneOptions {
        grace: Duration::from_secs(2),
        repack_below: 0.0,
        ..Default::default()
    };
    let noop = |_: &str| {};
    let mark = prune(&gc, &opts, &noop).await.unwrap();
    assert_eq!(mark.mark.condemned_packs, 1, "{mark:?}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let sweep = prune(&gc, &opts, &noop).await.unwrap();
    assert_eq!(sweep.sweep.deleted_packs, 1, "{sweep:?}");
    let data = gc.backend().list("data/").await.unwrap();
    assert!(data.iter().all(|o| !o.key.ends_with(&pack_b.to_hex())));

    // The backup that started earlier commits its snapshot of x (found in a's pack,
    // which nobody condemned). Everyone else must still be able to find x there.
    stale
        .commit_snapshot(&manifest("vm", &[(x, dup.len() as u32)]))
        .await
        .unwrap();
    let fresh = host(dir.path(), "fresh").await;
    let loc = fresh.catalog().locate(&x).unwrap();
    assert_eq!(
        loc.map(|l| (l.pack, l.indexed)),
        Some((pack_a, true)),
        "x is indexed in the pack that still holds it"
    );
    let after = prune(&gc, &opts, &noop).await.unwrap();
    assert_eq!(after.missing_chunks, 0, "{after:?}");
}
