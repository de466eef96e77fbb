//! A failed-over VM's disks, in `<overlay_dir>/failover-<plan>/<vm>/`, which must not
//! depend on this process (it exits while the VMs run):
//! - from the warm standby point when the secondary keeps one: a qcow2 overlay
//!   (`<disk>.qcow2`) on the point's image, made in a moment whatever the disk's
//!   size, so the RTO is boot time, not copy time. The standby image stays put
//!   because the VM's standby is fenced (`FAILED-OVER`: no sync, no folding) until
//!   `failover commit` streams the backing data into the overlay (live, over QMP)
//!   and only then releases the standby;
//! - else restored from the replica into a raw disk of its own (`<disk>.raw`, every
//!   chunk verified on the way).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lifeboat_hypervisor::qemu_img;
use lifeboat_restore::{RestoreError, RestoreRequest, restore_snapshot};
use lifeboat_store::format::vm_definition::VmDefinition;
use lifeboat_store::{Progress, Repository, SnapshotSummary};

use super::error::FailoverError;
use super::state::FailedOverDisk;
use crate::drill::VmPoint;
use crate::drill::disks::{ReadyVm, definition_of, ready, sanitize};
use crate::standby::hold_points;

/// Where a failover's disks come from.
pub(crate) struct DiskSources<'a> {
    pub(crate) repo: &'a Arc<Repository>,
    pub(crate) standby_dir: Option<&'a Path>,
    pub(crate) fetches: usize,
}

impl DiskSources<'_> {
    /// Makes every disk of `vm`'s point in `vm_dir`; on an error, removes what it
    /// made.
    pub(crate) async fn make(
        &self,
        vm: &str,
        point: &VmPoint,
        vm_dir: &Path,
    ) -> Result<(ReadyVm, Vec<FailedOverDisk>), FailoverError> {
        let mut warnings = Vec::new();
        let definition: VmDefinition = definition_of(point, &mut warnings);
        std::fs::create_dir_all(vm_dir)
            .map_err(|e| FailoverError::io("cannot create the VM's directory", vm_dir, e))?;
        let mut disks = Vec::new();
        let mut recorded = Vec::new();
        for defined in &definition.disks {
            let Some(snapshot) = point.get(&defined.name) else {
                warnings.push(format!(
                    "disk {} of the VM definition has no backup; the VM runs without it",
                    defined.name
                ));
                continue;
            };
            let base = vm_dir.join(sanitize(&defined.name));
            let (path, format, from) =
                match self.make_disk(vm, &defined.name, snapshot, &base).await {
                    Ok(made) => made,
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(vm_dir);
                        return Err(e);
                    }
                };
            recorded.push(FailedOverDisk {
                disk: defined.name.clone(),
                snapshot: snapshot.id.clone(),
                time: snapshot.meta.time.clone(),
                from: from.to_string(),
                path: path.clone(),
            });
            disks.push(ready(path, format, defined, snapshot, from));
        }
        let vm = ReadyVm::on_own_disks(vm, definition, disks, warnings);
        Ok((vm, recorded))
    }

    /// The standby image of `snapshot`, if the secondary keeps that point.
    pub(crate) fn standby_image(
        &self,
        vm: &str,
        disk: &str,
        snapshot: &SnapshotSummary,
    ) -> Result<Option<PathBuf>, FailoverError> {
        let Some(dir) = self.standby_dir else {
            return Ok(None);
        };
        // Held only while looking: from then on the VM's fence keeps the image.
        let held = hold_points(dir, vm, disk)?;
        Ok(held.and_then(|h| h.image_of(&snapshot.id)))
    }

    /// Makes the disk of `snapshot` at `base` plus the extension of its format;
    /// returns its path, format, and where it came from.
    async fn make_disk(
        &self,
        vm: &str,
        disk: &str,
        snapshot: &SnapshotSummary,
        base: &Path,
    ) -> Result<(PathBuf, &'static str, &'static str), FailoverError> {
        if let Some(image) = self.standby_image(vm, disk, snapshot)? {
            let target = base.with_extension("qcow2");
            let backing = std::path::absolute(&image)
                .map_err(|e| FailoverError::io("cannot resolve", &image, e))?;
            qemu_img::create_overlay(
                &target,
                snapshot.meta.size,
                Some((&backing.display().to_string(), "qcow2")),
            )
            .await?;
            return Ok((target, "qcow2", "standby"));
        }
        let target = base.with_extension("raw");
        self.restore(vm, snapshot, &target).await?;
        Ok((target, "raw", "repository"))
    }

    /// Restores `snapshot` from the replica into `target`.
    async fn restore(
        &self,
        vm: &str,
        snapshot: &SnapshotSummary,
        target: &Path,
    ) -> Result<(), FailoverError> {
        let request = RestoreRequest {
            snapshot: snapshot.clone(),
            target: target.to_path_buf(),
            overwrite: false,
            concurrency: self.fetches.max(1),
        };
        match restore_snapshot(self.repo.clone(), request, Arc::new(Progress::default())).await {
            Ok(_) => Ok(()),
            Err(RestoreError::Damaged { detail, .. }) => Err(FailoverError::PointDamaged {
                vm: vm.to_string(),
                snapshot: snapshot.id.clone(),
                detail,
                advice: String::new(),
            }),
            Err(e) => Err(e.into()),
        }
    }
}

/// Bytes free for this user in the file system holding `dir`.
pub(crate) fn available_bytes(dir: &Path) -> Result<u64, FailoverError> {
    let stat = rustix::fs::statvfs(dir)
        .map_err(|e| FailoverError::io("cannot read free space of", dir, e.into()))?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Refuses before anything is written when the disks of every point would not fit
/// in `dir` at their full size (a production VM that fills a thin disk on a full
/// file system stops with I/O errors).
pub(crate) fn check_room<'a>(
    dir: &Path,
    points: impl Iterator<Item = &'a VmPoint>,
) -> Result<(), FailoverError> {
    let needed: u64 = points.flat_map(|p| p.values()).map(|s| s.meta.size).sum();
    let available = available_bytes(dir)?;
    if needed > available {
        return Err(FailoverError::NoRoom {
            dir: dir.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(())
}
