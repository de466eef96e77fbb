//! Keeping the last N points: the chain `base.qcow2 ← overlay ← overlay …`, and
//! folding its oldest point away.
//!
//! Folding point 0 (in `base.qcow2`) into point 1 (the first overlay):
//!
//! 1. mark point 0 `merging` in `points.json` (it stops being a kept point now);
//! 2. `qemu-img commit -d` the first overlay into `base.qcow2`: base becomes point 1,
//!    and the overlay, which still holds every cluster it ever wrote, reads the same
//!    throughout, and so does every overlay above it;
//! 3. `qemu-img rebase -u` the second overlay onto `base.qcow2`: correct without
//!    copying, because base now reads exactly as the overlay it replaces;
//! 4. list point 1 as `base.qcow2` in `points.json` (atomically), then delete the
//!    first overlay.
//!
//! A crash anywhere repeats the fold from step 2 on the next run (`points.json`
//! still names the overlay, which is only deleted after it stops doing so); every
//! step is idempotent. Points 1.. read as their snapshots at every moment.

use std::fs;

use lifeboat_hypervisor::qemu_img;

use super::error::StandbyError;
use super::points::{BASE_FILE, DiskDir, Point, sync_file};

/// Folds the oldest points until at most `keep` (at least 1) are left.
pub(crate) async fn keep_last(
    dir: &DiskDir,
    points: &mut Vec<Point>,
    keep: usize,
) -> Result<(), StandbyError> {
    while points.len() > keep.max(1) {
        fold_oldest(dir, points).await?;
    }
    Ok(())
}

/// Finishes a fold a previous run started and did not complete.
pub(crate) async fn finish_fold(
    dir: &DiskDir,
    points: &mut Vec<Point>,
) -> Result<(), StandbyError> {
    match points.first() {
        Some(p) if p.merging && points.len() >= 2 => fold_oldest(dir, points).await,
        Some(p) if p.merging => Err(StandbyError::BadPoints {
            path: dir.file(super::points::POINTS_FILE),
            detail: "its only point is marked merging; remove the directory and sync again".into(),
        }),
        _ => Ok(()),
    }
}

async fn fold_oldest(dir: &DiskDir, points: &mut Vec<Point>) -> Result<(), StandbyError> {
    if !points[0].merging {
        points[0].merging = true;
        dir.save(points)?;
    }
    let first_overlay = points[1].file.clone();
    tracing::info!(
        folded = %points[0].snapshot, into = %points[1].snapshot,
        "folding the oldest standby point into base.qcow2"
    );
    qemu_img::commit(&dir.file(&first_overlay)).await?;
    sync_file(&dir.file(BASE_FILE))?;
    if let Some(next) = points.get(2) {
        let next = dir.file(&next.file);
        qemu_img::rebase_unsafe(&next, BASE_FILE).await?;
        sync_file(&next)?;
    }
    points.remove(0);
    points[0].file = BASE_FILE.to_string();
    dir.save(points)?;
    let path = dir.file(&first_overlay);
    fs::remove_file(&path).map_err(|e| StandbyError::io("cannot remove", &path, e))?;
    dir.sync_dir()
}
