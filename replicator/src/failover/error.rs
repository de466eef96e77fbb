//! What can stop a failover, each saying what is wrong and what to do. Every one of
//! them leaves nothing started: the VMs already up are stopped, the writable disks
//! removed, the standby images and the repository untouched.

use std::path::PathBuf;

use lifeboat_hypervisor::ToolError;
use lifeboat_hypervisor::block_stream::StreamError;
use lifeboat_hypervisor::launch::LaunchError;
use lifeboat_restore::RestoreError;
use lifeboat_store::StoreError;

use crate::drill::DrillError;
use crate::standby::StandbyError;

#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error(
        "plan {plan} is already failed over (since {since}, state in {}): `lifeboat failover \
         status {plan}` shows it; `lifeboat failover abort {plan} --discard` ends it",
        state.display()
    )]
    AlreadyFailedOver {
        plan: String,
        since: String,
        state: PathBuf,
    },
    #[error(
        "plan {plan} is not failed over (no {}); nothing to {action}",
        state.display()
    )]
    NotFailedOver {
        plan: String,
        state: PathBuf,
        action: &'static str,
    },
    #[error(
        "another lifeboat command is working on the failover of plan {plan} ({} is locked); \
         wait for it to finish",
        lock.display()
    )]
    Busy { plan: String, lock: PathBuf },
    #[error(
        "failover state {} cannot be read: {detail}; fix or move the file (the VMs it \
         names may still run: check with `ps`)",
        path.display()
    )]
    BadState { path: PathBuf, detail: String },
    #[error(
        "not enough room in {} for the failover's writable disks: {needed} bytes needed, \
         {available} available; free space there or set the plan's overlay_dir to a larger \
         disk (nothing was started)",
        dir.display()
    )]
    NoRoom {
        dir: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error(
        "recovery point of {vm} ({snapshot}) failed verification: {detail}; nothing was \
         started. {advice}"
    )]
    PointDamaged {
        vm: String,
        snapshot: String,
        detail: String,
        advice: String,
    },
    #[error(
        "VM {vm} did not come up on the secondary ({why}); every VM of the failover was \
         stopped and its writable disks removed. Its console log: {}",
        console.display()
    )]
    Unhealthy {
        vm: String,
        why: String,
        console: PathBuf,
    },
    #[error(
        "planned failover of plan {plan} refused: {reason}. Run `lifeboat failover prepare` \
         on the primary site (it shuts the VMs down and takes their final backup), replicate, \
         then fail over; or, if the primary site is lost, fail over without --planned"
    )]
    NotPrepared { plan: String, reason: String },
    #[error(
        "VM {vm} still runs on the primary after {secs} s of ACPI shutdown; nothing was \
         backed up or started. Shut it down in the guest (or raise --shutdown-timeout) and \
         run prepare again"
    )]
    PrimaryStillRunning { vm: String, secs: u64 },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Point(#[from] DrillError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Standby(#[from] StandbyError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

impl FailoverError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FailoverError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
