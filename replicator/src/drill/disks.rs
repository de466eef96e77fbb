//! A drilled VM's disks: for each disk of its recovery point, a throwaway writable
//! qcow2 overlay the VM boots from — on the warm standby point that reads as the
//! snapshot (the standby stays untouched), or, without one, on the snapshot served
//! straight from the repository over NBD by this process (instant recovery: the VM
//! starts at once and fetches what it reads; no full restore first).
//!
//! Also the VM's definition, from the newest disk snapshot of the point that carries
//! one; without any, defaults, and a warning in the report.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lifeboat_hypervisor::ToolError;
use lifeboat_hypervisor::nbd_server::{ListenAddress, NbdServer};
use lifeboat_hypervisor::qemu_img;
use lifeboat_restore::export::{ExportOptions, SnapshotDisk};
use lifeboat_store::format::vm_definition::{DefinedDisk, DiskBus, VmDefinition};
use lifeboat_store::{Repository, SnapshotSummary};
use tokio::sync::oneshot;

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
    /// Snapshots served over NBD to the overlays of disks without a standby point;
    /// they stop when the value is dropped, after the VM.
    _exports: Vec<ServedExport>,
    _held: Vec<HeldPoints>,
}

impl ReadyVm {
    /// A VM on disks of its own (failover): nothing served or held for it.
    pub(crate) fn on_own_disks(
        vm: &str,
        definition: VmDefinition,
        disks: Vec<ReadyDisk>,
        warnings: Vec<String>,
    ) -> ReadyVm {
        ReadyVm {
            vm: vm.to_string(),
            definition,
            disks,
            warnings,
            _exports: Vec::new(),
            _held: Vec::new(),
        }
    }
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
        let mut exports = Vec::new();
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
                    let backing =
                        point_image
                            .canonicalize()
                            .map_err(|source| DrillError::OverlayDir {
                                dir: point_image.clone(),
                                source,
                            })?;
                    let backing = backing.to_string_lossy();
                    create_overlay(&overlay, snapshot.meta.size, (&backing, "qcow2"), &vm_dir)
                        .await?;
                    held.extend(standby);
                    ready(overlay, "qcow2", defined, snapshot, "standby")
                }
                None => {
                    let name = sanitize(&defined.name);
                    let socket = vm_dir.join(format!("{name}.nbd"));
                    exports.push(self.export(snapshot, &socket).await?);
                    let overlay = vm_dir.join(format!("{name}.qcow2"));
                    let uri = format!("nbd+unix:///?socket={}", socket.display());
                    create_overlay(&overlay, snapshot.meta.size, (&uri, "raw"), &vm_dir).await?;
                    ready(overlay, "qcow2", defined, snapshot, "export")
                }
            };
            disks.push(disk);
        }
        Ok(ReadyVm {
            vm: vm.to_string(),
            definition,
            disks,
            warnings,
            _exports: exports,
            _held: held,
        })
    }

    /// Serves `snapshot` on the unix socket `socket` until the returned value drops.
    async fn export(
        &self,
        snapshot: &SnapshotSummary,
        socket: &Path,
    ) -> Result<ServedExport, DrillError> {
        let options = ExportOptions {
            fetches: self.fetches.max(1),
            ..ExportOptions::default()
        };
        let disk = SnapshotDisk::open(self.repo.clone(), snapshot, options).await?;
        let server = NbdServer::bind(&ListenAddress::Unix(socket.to_path_buf())).await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let name = format!("{}/{}", snapshot.meta.vm, snapshot.meta.disk);
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = server.serve(name, Arc::new(disk), shutdown).await {
                tracing::warn!("drill export: {e}");
            }
        });
        Ok(ServedExport {
            stop: Some(stop),
            _task: task,
        })
    }
}

/// A snapshot served over NBD; dropping it stops the server.
struct ServedExport {
    stop: Option<oneshot::Sender<()>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for ServedExport {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) fn ready(
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

/// A qcow2 overlay on `backing` (an absolute path or an NBD URI, and its format).
async fn create_overlay(
    overlay: &Path,
    size: u64,
    backing: (&str, &str),
    dir: &Path,
) -> Result<(), DrillError> {
    qemu_img::create_overlay(overlay, size, Some(backing))
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
pub(crate) fn definition_of(point: &VmPoint, warnings: &mut Vec<String>) -> VmDefinition {
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
