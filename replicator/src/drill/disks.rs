//! A drilled VM's disks: for each disk of its recovery point, a throwaway writable
//! image the VM boots from — a qcow2 overlay on the warm standby point that reads as
//! the snapshot (instant, the standby stays untouched), or, without one, the snapshot
//! restored from the repository into the drill's work directory.
//!
//! Also the VM's definition, from the newest disk snapshot of the point that carries
//! one; without any, defaults, and a warning in the report.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat_hypervisor::ToolError;
use lifeboat_hypervisor::qemu_img;
use lifeboat_restore::{RestoreRequest, restore_snapshot};
use lifeboat_store::format::vm_definition::{DefinedDisk, DiskBus, VmDefinition};
use lifeboat_store::{Progress, Repository, SnapshotSummary};

use super::error::DrillError;
use super::report::BootedDisk;
use super::select::VmPoint;
use crate::standby::{HeldPoints, hold_points};

/// One disk ready to boot.
pub(crate) struct ReadyDisk {
    pub(crate) path: PathBuf,
    pub(crate) format: &'static str,
    pub(crate) bus: DiskBus,
    pub(crate) booted: BootedDisk,
}

/// A VM's disks ready to boot, and the standby points they rest on (held, so no
/// `standby sync` folds them away under the running VM).
pub(crate) struct ReadyVm {
    pub(crate) vm: String,
    pub(crate) definition: VmDefinition,
    pub(crate) disks: Vec<ReadyDisk>,
    pub(crate) warnings: Vec<String>,
    /// Time spent restoring disks that had no standby point.
    pub(crate) restore_time: Duration,
    _held: Vec<HeldPoints>,
}

/// Where a drill's disks come from.
pub(crate) struct DiskSources<'a> {
    pub(crate) repo: &'a Arc<Repository>,
    pub(crate) standby_dir: Option<&'a Path>,
    /// This drill's own directory (created by the caller, removed at clean-up).
    pub(crate) work_dir: &'a Path,
    pub(crate) fetches: usize,
}

impl DiskSources<'_> {
    pub(crate) async fn prepare(&self, vm: &str, point: &VmPoint) -> Result<ReadyVm, DrillError> {
        let mut warnings = Vec::new();
        let definition = definition_of(point, &mut warnings);
        let vm_dir = self.work_dir.join(sanitize(vm));
        std::fs::create_dir_all(&vm_dir).map_err(|source| DrillError::OverlayDir {
            dir: vm_dir.clone(),
            source,
        })?;
        let mut disks = Vec::new();
        let mut held = Vec::new();
        let mut restore_time = Duration::ZERO;
        for defined in &definition.disks {
            let Some(snapshot) = point.get(&defined.name) else {
                warnings.push(format!(
                    "disk {} of the VM definition has no backup; the VM boots without it",
                    defined.name
                ));
                continue;
            };
            let standby = match self.standby_dir {
                Some(dir) => hold_points(dir, vm, &defined.name)?,
                None => None,
            };
            let image = standby.as_ref().and_then(|h| h.image_of(&snapshot.id));
            let disk = match image {
                Some(point_image) => {
                    let overlay = vm_dir.join(format!("{}.qcow2", sanitize(&defined.name)));
                    overlay_on(&overlay, &point_image, snapshot.meta.size, &vm_dir).await?;
                    held.extend(standby);
                    ready(overlay, "qcow2", defined, snapshot, "standby")
                }
                None => {
                    let target = vm_dir.join(format!("{}.raw", sanitize(&defined.name)));
                    let t = Instant::now();
                    self.restore(snapshot, &target).await?;
                    restore_time += t.elapsed();
                    ready(target, "raw", defined, snapshot, "restore")
                }
            };
            disks.push(disk);
        }
        Ok(ReadyVm {
            vm: vm.to_string(),
            definition,
            disks,
            warnings,
            restore_time,
            _held: held,
        })
    }

    async fn restore(&self, snapshot: &SnapshotSummary, target: &Path) -> Result<(), DrillError> {
        let request = RestoreRequest {
            snapshot: snapshot.clone(),
            target: target.to_path_buf(),
            overwrite: true,
            concurrency: self.fetches.max(1),
        };
        restore_snapshot(self.repo.clone(), request, Arc::new(Progress::default()))
            .await
            .map_err(|e| match e.to_string() {
                m if m.contains("No space left") => DrillError::NoSpace {
                    dir: self.work_dir.to_path_buf(),
                    what: format!("the restore of {}/{}", snapshot.meta.vm, snapshot.meta.disk),
                },
                _ => DrillError::Restore(e),
            })?;
        Ok(())
    }
}

fn ready(
    path: PathBuf,
    format: &'static str,
    defined: &DefinedDisk,
    snapshot: &SnapshotSummary,
    from: &str,
) -> ReadyDisk {
    ReadyDisk {
        path,
        format,
        bus: defined.bus,
        booted: BootedDisk {
            disk: defined.name.clone(),
            snapshot: snapshot.id.clone(),
            time: snapshot.meta.time.clone(),
            from: from.to_string(),
        },
    }
}

/// A qcow2 overlay on a standby point (absolute backing path: the overlay lives in
/// another directory).
async fn overlay_on(overlay: &Path, point: &Path, size: u64, dir: &Path) -> Result<(), DrillError> {
    let backing = point
        .canonicalize()
        .map_err(|source| DrillError::OverlayDir {
            dir: point.to_path_buf(),
            source,
        })?;
    qemu_img::create_qcow2(overlay, size, Some(&backing.to_string_lossy()))
        .await
        .map_err(|e| match &e {
            ToolError::Failed { message, .. } if message.contains("No space left") => {
                DrillError::NoSpace {
                    dir: dir.to_path_buf(),
                    what: format!("the overlay {}", overlay.display()),
                }
            }
            _ => DrillError::Tool(e),
        })
}

/// The newest definition among the point's disks, with every disk of the point in
/// it: disks the definition lacks are added after its own, in name order.
fn definition_of(point: &VmPoint, warnings: &mut Vec<String>) -> VmDefinition {
    let newest = point
        .values()
        .filter(|s| s.meta.vm_definition.is_some())
        .max_by(|a, b| a.meta.time.cmp(&b.meta.time));
    let mut definition = match newest.and_then(|s| s.meta.vm_definition.clone()) {
        Some(d) => d,
        None => {
            warnings.push(
                "the backups record no VM definition: booted with 1 CPU, 1 GiB, BIOS, virtio \
                 disks and no NIC (back up with a [[group.vm]] definition, --definition or \
                 from the running VM to record one)"
                    .to_string(),
            );
            VmDefinition::fallback(std::iter::empty())
        }
    };
    for disk in point.keys() {
        if !definition.disks.iter().any(|d| &d.name == disk) {
            definition.disks.push(DefinedDisk {
                name: disk.clone(),
                bus: DiskBus::Virtio,
            });
        }
    }
    definition
}

/// A name as one path component.
pub(crate) fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}
