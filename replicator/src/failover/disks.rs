//! A failed-over VM's disks: writable raw disks of its own, in
//! `<overlay_dir>/failover-<plan>/<vm>/`. Each is a full copy — of the warm standby
//! point when the secondary keeps one (a local `qemu-img convert`, no repository
//! read), else restored from the replica (every chunk verified on the way). Unlike a
//! drill's throwaway overlays they must not depend on the standby images (which
//! `failover commit` releases) nor on this process (which exits while the VMs run).

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
            let path = vm_dir.join(format!("{}.raw", sanitize(&defined.name)));
            let from = match self.copy(vm, &defined.name, snapshot, &path).await {
                Ok(from) => from,
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
            disks.push(ready(path, "raw", defined, snapshot, from));
        }
        let vm = ReadyVm::on_own_disks(vm, definition, disks, warnings);
        Ok((vm, recorded))
    }

    /// Writes `snapshot` to `target`; says where it came from.
    async fn copy(
        &self,
        vm: &str,
        disk: &str,
        snapshot: &SnapshotSummary,
        target: &Path,
    ) -> Result<&'static str, FailoverError> {
        // Held only while copying: the copy is the VM's own afterwards.
        let held = match self.standby_dir {
            Some(dir) => hold_points(dir, vm, disk)?,
            None => None,
        };
        if let Some(image) = held.as_ref().and_then(|h| h.image_of(&snapshot.id)) {
            let partial = partial_of(target);
            let _ = std::fs::remove_file(&partial);
            qemu_img::convert_to_raw(&image, &partial).await?;
            std::fs::rename(&partial, target)
                .map_err(|e| FailoverError::io("cannot rename the disk", target, e))?;
            return Ok("standby");
        }
        drop(held);
        let request = RestoreRequest {
            snapshot: snapshot.clone(),
            target: target.to_path_buf(),
            overwrite: false,
            concurrency: self.fetches.max(1),
        };
        match restore_snapshot(self.repo.clone(), request, Arc::new(Progress::default())).await {
            Ok(_) => Ok("repository"),
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

fn partial_of(target: &Path) -> PathBuf {
    let mut p = target.as_os_str().to_owned();
    p.push(".lifeboat-partial");
    PathBuf::from(p)
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
