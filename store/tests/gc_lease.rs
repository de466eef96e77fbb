//! The GC lease: one prune at a time per repository; a released lease is free at
//! once; a holder that died stops blocking others when its lease expires; a holder
//! that stalled past expiry and was replaced notices before doing anything more.

mod support;

use std::time::Duration;

use lifeboat_store::gc::lease::Lease;
use lifeboat_store::{Repository, StoreError};

async fn repo(dir: &std::path::Path) -> Repository {
    support::init(dir).await
}

#[tokio::test]
async fn one_holder_at_a_time_and_expiry_frees_a_dead_holder() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path()).await;

    let first = Lease::acquire(&repo, Duration::from_secs(3600))
        .await
        .unwrap();
    let busy = Lease::acquire(&repo, Duration::from_secs(3600))
        .await
        .unwrap_err();
    assert!(matches!(busy, StoreError::Busy(_)), "{busy}");
    assert!(
        busy.to_string().contains("holds the repository's GC lease"),
        "{busy}"
    );
    first.release(&repo).await.unwrap();

    // Released: the next prune gets it at once.
    let mut dead = Lease::acquire(&repo, Duration::from_secs(2)).await.unwrap();
    // Its holder "dies" (never renews or releases). Once the lease expires, another
    // prune takes over without anyone cleaning up.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let mut successor = Lease::acquire(&repo, Duration::from_secs(3600))
        .await
        .unwrap();
    // The stalled holder wakes up: it must not carry on.
    let lost = dead.keep(&repo).await.unwrap_err();
    assert!(
        lost.to_string().contains("lost the repository's GC lease"),
        "{lost}"
    );
    successor.keep(&repo).await.unwrap();
    successor.release(&repo).await.unwrap();
}
