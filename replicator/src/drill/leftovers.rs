//! What a drill leaves in the plan's `overlay_dir` (`drill-<seq>-<plan>/`: overlays,
//! sockets) when it does not end normally — the process killed, the host rebooted —
//! and what a drill kept with `--keep` still uses. A new drill removes dead leftovers
//! of its plan, but refuses while a kept drill's VMs still run there (removing their
//! overlays would pull the disks from under them). `lifeboat drill cleanup PLAN`
//! ends both: stops any QEMU the directories name, then removes them.

use std::path::{Path, PathBuf};

use lifeboat_hypervisor::launch::{kill_pid, qemu_pids_naming};
use lifeboat_policies::config::Plan;

use super::disks::sanitize;
use super::error::DrillError;

/// The plan's drill directories in its `overlay_dir`, oldest first.
fn drill_dirs(plan: &Plan) -> Vec<PathBuf> {
    let suffix = format!("-{}", sanitize(&plan.name));
    let Ok(entries) = std::fs::read_dir(&plan.overlay_dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("drill-") && name.ends_with(&suffix)
        })
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// Before a new drill of `plan`: removes what dead drills left; refuses while a kept
/// drill's VMs run.
pub(crate) fn remove_dead_leftovers(plan: &Plan) -> Result<(), DrillError> {
    for dir in drill_dirs(plan) {
        let pids = qemu_pids_naming(&within(&dir));
        if !pids.is_empty() {
            return Err(DrillError::StillRunning {
                plan: plan.name.clone(),
                dir,
                pids,
            });
        }
        tracing::info!(dir = %dir.display(), "removing what an interrupted drill left");
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// What `drill cleanup` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Cleanup {
    /// Drill directories removed.
    pub removed: Vec<PathBuf>,
    /// QEMU processes stopped (SIGKILL: a drill VM's writes are thrown away anyway).
    pub stopped: Vec<u32>,
}

/// Stops every VM of `plan`'s drills still running from its `overlay_dir` and removes
/// their directories. Reports and evidence stay.
pub fn clean_up(plan: &Plan) -> Result<Cleanup, DrillError> {
    let mut done = Cleanup::default();
    for dir in drill_dirs(plan) {
        for pid in qemu_pids_naming(&within(&dir)) {
            kill_pid(pid);
            done.stopped.push(pid);
        }
        wait_gone(&dir);
        std::fs::remove_dir_all(&dir).map_err(|source| DrillError::OverlayDir {
            dir: dir.clone(),
            source,
        })?;
        done.removed.push(dir);
    }
    Ok(done)
}

/// Waits (briefly) for killed QEMUs to exit, so their files are closed.
fn wait_gone(dir: &Path) {
    for _ in 0..50 {
        if qemu_pids_naming(&within(dir)).is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `dir/`: names only what is inside `dir`, not `dir2` beside it.
fn within(dir: &Path) -> PathBuf {
    dir.join("")
}
