//! What can stop a drill, each saying what is wrong and what to do. A drill that
//! ran and found a VM that does not boot is not an error: that is a FAILED verdict
//! in its report.

use std::path::PathBuf;

use lifeboat_hypervisor::ToolError;
use lifeboat_hypervisor::launch::LaunchError;
use lifeboat_hypervisor::nbd_server::NbdServerError;
use lifeboat_restore::RestoreError;
use lifeboat_store::StoreError;

use crate::standby::StandbyError;

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error(
        "VM {vm} has no backups in this repository; back it up (and replicate it) before \
         drilling a plan that names it, or remove it from the plan"
    )]
    NoBackups { vm: String },
    #[error("VM {vm} has no snapshot {snapshot}; `lifeboat snapshots --vm {vm}` lists them")]
    NoSuchSnapshot { vm: String, snapshot: String },
    #[error("snapshot prefix {0} is ambiguous; give more of the id")]
    AmbiguousSnapshot(String),
    #[error(
        "no recovery point of {vm}/{disk} is {wanted}: the oldest kept is {oldest}; \
         choose a later --point"
    )]
    PointTooOld {
        vm: String,
        disk: String,
        wanted: String,
        oldest: String,
    },
    #[error("snapshot {snapshot} has an unreadable time {time:?}")]
    BadSnapshotTime { snapshot: String, time: String },
    #[error(
        "VM {vm}: its NIC is on production network {network:?}, which the plan's \
         test_network_map does not map; add `\"{network}\" = \"<isolated network>\"` to \
         [plan.test_network_map] (a drill never attaches a VM to production)"
    )]
    UnmappedNetwork { vm: String, network: String },
    #[error(
        "cannot use {} for the drill's overlays: {source}; create it or set the plan's \
         overlay_dir to a writable directory", dir.display()
    )]
    OverlayDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no space left in {} while preparing {what}; free space there or set the plan's \
         overlay_dir to a larger disk (nothing was started; the standby images are untouched)",
        dir.display()
    )]
    NoSpace { dir: PathBuf, what: String },
    #[error(
        "a drill of plan {plan} kept with --keep still runs its VMs from {} (QEMU pids \
         {pids:?}); end it (Ctrl-C in its terminal, or `lifeboat drill cleanup {plan}`) \
         before drilling the plan again", dir.display()
    )]
    StillRunning {
        plan: String,
        dir: PathBuf,
        pids: Vec<u32>,
    },
    #[error("{script} failed ({status}); the drill stopped there")]
    Script { script: String, status: String },
    #[error("cannot run {script}: {source}")]
    ScriptStart {
        script: String,
        #[source]
        source: std::io::Error,
    },
    #[error("drill evidence {}: {source}", path.display())]
    Evidence {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Standby(#[from] StandbyError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("serving a snapshot to the drill over NBD: {0}")]
    Export(#[from] NbdServerError),
}

impl DrillError {
    pub(crate) fn evidence(path: impl Into<PathBuf>, source: std::io::Error) -> DrillError {
        DrillError::Evidence {
            path: path.into(),
            source,
        }
    }
}
