//! Ending or settling a failover: `failover abort --discard` (stop the VMs, remove
//! their disks, their standby fences and the state: whatever they wrote on the
//! secondary is gone) and
//! `failover commit` (the failover stays: overlays on standby points get the points'
//! data streamed into them, then the warm standby images of its VMs, stale now that
//! the VMs' own disks are the truth, are released). `failover status` is
//! [`FailoverStates::read`] plus [`DetachedVm::is_running`].

use std::path::Path;
use std::time::Duration;

/// How long `failover commit` lets the streaming of one VM's disks take: a day
/// covers many TiB at the speed of one local disk.
const STREAM_LIMIT: Duration = Duration::from_secs(24 * 3600);

use lifeboat_hypervisor::block_stream::stream_into_overlays;
use lifeboat_hypervisor::launch::DetachedVm;
use lifeboat_hypervisor::qemu_img;

use super::error::FailoverError;
use super::state::{FailedOverVm, FailoverState, FailoverStates, Phase};
use crate::standby::{release_disk, unfence};

/// Stops every VM of the plan's failover (ACPI, `grace` to power off, then quit and
/// kill), removes its disks and its state. Also cleans up a failover that was
/// interrupted while starting (its VMs may not be recorded yet: any QEMU whose
/// command line names the failover's directory is stopped).
pub async fn abort(
    states: &FailoverStates,
    plan: &str,
    standby_dir: Option<&Path>,
    grace: Duration,
) -> Result<FailoverState, FailoverError> {
    let locked = states.lock(plan)?;
    let state = locked.read()?.ok_or_else(|| FailoverError::NotFailedOver {
        plan: plan.to_string(),
        state: locked.path.clone(),
        action: "abort",
    })?;
    let stops = state
        .vms
        .iter()
        .filter_map(|vm| vm.running.as_ref())
        .map(|vm| async move {
            if let Err(e) = vm.stop(grace).await {
                tracing::warn!(vm = %vm.name, "{e}");
            }
        });
    futures::future::join_all(stops).await;
    if state.phase == Phase::Starting {
        for pid in lifeboat_hypervisor::launch::qemu_pids_naming(&state.dir) {
            tracing::warn!(pid, "stopping a VM an interrupted failover left");
            lifeboat_hypervisor::launch::kill_pid(pid);
        }
    }
    let still: Vec<&DetachedVm> = state
        .vms
        .iter()
        .filter_map(|vm| vm.running.as_ref())
        .filter(|vm| vm.is_running())
        .collect();
    if let Some(vm) = still.first() {
        return Err(FailoverError::io(
            "a VM still runs; its disks and the state are kept",
            &vm.qmp,
            std::io::Error::other(format!("{} (pid {})", vm.name, vm.pid)),
        ));
    }
    remove_dir(&state.dir)?;
    if let Some(root) = standby_dir {
        for vm in &state.vms {
            unfence(root, &vm.vm)?;
        }
    }
    locked.remove()?;
    Ok(state)
}

/// Makes every failed-over disk stand alone (an overlay on a standby point gets the
/// point's data streamed into it: live over QMP while its VM runs, with `qemu-img`
/// when it does not), then releases the standby images of the failed-over VMs'
/// disks (under each disk's standby lock) and marks the failover committed. Returns
/// the disks released. Interrupted, it can run again: nothing is released before
/// every disk of the plan stands alone.
pub async fn commit(
    states: &FailoverStates,
    plan: &str,
    standby_dir: Option<&Path>,
) -> Result<Vec<String>, FailoverError> {
    let locked = states.lock(plan)?;
    let mut state = locked.read()?.ok_or_else(|| FailoverError::NotFailedOver {
        plan: plan.to_string(),
        state: locked.path.clone(),
        action: "commit",
    })?;
    if state.phase != Phase::Running {
        return Err(FailoverError::BadState {
            path: locked.path.clone(),
            detail: "the failover did not finish starting; `failover abort --discard` cleans it up"
                .into(),
        });
    }
    for vm in &state.vms {
        detach_from_standby(vm).await?;
    }
    let mut released = Vec::new();
    if let Some(root) = standby_dir {
        for vm in &state.vms {
            for disk in &vm.disks {
                if release_disk(root, &vm.vm, &disk.disk)? {
                    released.push(format!("{}/{}", vm.vm, disk.disk));
                }
            }
        }
    }
    state.committed = true;
    locked.write(&state)?;
    Ok(released)
}

/// Streams (or flattens) `vm`'s overlays so they no longer read the standby images.
async fn detach_from_standby(vm: &FailedOverVm) -> Result<(), FailoverError> {
    // The launcher names the VM's drives disk0, disk1, … in the order of its disks.
    let overlays: Vec<(String, &Path)> = vm
        .disks
        .iter()
        .enumerate()
        .filter(|(_, d)| d.path.extension().is_some_and(|e| e == "qcow2"))
        .map(|(i, d)| (format!("disk{i}"), d.path.as_path()))
        .collect();
    if overlays.is_empty() {
        return Ok(());
    }
    match vm.running.as_ref().filter(|r| r.is_running()) {
        Some(running) => {
            let drives: Vec<String> = overlays.into_iter().map(|(d, _)| d).collect();
            stream_into_overlays(&running.qmp, &drives, STREAM_LIMIT).await?;
        }
        None => {
            for (_, path) in overlays {
                qemu_img::flatten(path).await?;
            }
        }
    }
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<(), FailoverError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FailoverError::io(
            "cannot remove the failover's disks",
            dir,
            e,
        )),
    }
}
