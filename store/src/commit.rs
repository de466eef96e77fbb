//! Committing a snapshot: the manifest is written last, and only once the commit guard
//! (`gc::guard`) has checked that no concurrent prune is deleting the data it uses.

use std::time::Duration;

use crate::crypto::ChunkId;
use crate::error::{StoreError, StoreResult};
use crate::format::{self, manifest::Manifest};
use crate::gc::clock::unix_now;
use crate::gc::guard;
use crate::repo::{Repository, SnapshotSummary};

impl Repository {
    /// Commits a snapshot. Callers must have uploaded and indexed all its chunks first.
    pub async fn commit_snapshot(&self, manifest: &Manifest) -> StoreResult<SnapshotSummary> {
        let checked = guard::before_commit(self, manifest).await?;
        let id = ChunkId::random();
        let key = format::snapshot_key(&id);
        let encoded = manifest.encode();
        let upload = self.put_sealed(&key, &encoded);
        match checked.must_land_by() {
            // Relying on condemned data: an upload still running at the plan's deadline
            // is abandoned (and withdrawn, should it land after all).
            Some(deadline) => {
                let left = deadline.saturating_sub(unix_now());
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
        let written_at = unix_now();
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
        if let Err(e) = self.backend().delete(key).await {
            tracing::error!(
                "could not withdraw unconfirmed snapshot {key} ({e}); `lifeboat verify` \
                 reports it if its data was collected; forget it then"
            );
        }
    }
}
