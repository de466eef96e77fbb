//! A plan's failover as recorded on the secondary: `<state_dir>/failover/<plan>.json`.
//!
//! The file exists exactly while the plan is failed over (or a failover is being
//! started: [`Phase::Starting`]); `failover abort` removes it. It is replaced
//! atomically (temporary file, fsync, rename, fsync of the directory).
//!
//! Locks: `<plan>.lock` beside it, taken (flock, non-blocking) by `failover`,
//! `failover abort` and `failover commit` for their whole run, so two of them never
//! work on one plan at once; `failover status` only reads and takes no lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use lifeboat_hypervisor::launch::DetachedVm;
use serde::{Deserialize, Serialize};

use super::error::FailoverError;

const VERSION: u32 = 1;

/// How the failover came about.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailoverKind {
    /// The primary's VMs were shut down and their final backups replicated first:
    /// nothing was lost (RPO zero).
    Planned,
    /// The primary was lost or unreachable: started from the replica's newest (or a
    /// chosen) point; whatever the primary wrote after it is not here.
    Unplanned,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Disks being made and VMs started; a state left in this phase is an
    /// interrupted failover that `failover abort` cleans up.
    Starting,
    /// Every VM came up healthy and runs on the secondary.
    Running,
}

/// One disk of a failed-over VM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailedOverDisk {
    pub disk: String,
    /// The snapshot it was made from, and that snapshot's time.
    pub snapshot: String,
    pub time: String,
    /// `standby` (a qcow2 overlay on the warm standby point until `failover commit`
    /// streams the point into it) or `repository` (restored into a raw disk).
    pub from: String,
    /// The VM's own writable disk: `.qcow2` on a standby point, else `.raw`.
    pub path: PathBuf,
}

/// One VM of the plan, running on the secondary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailedOverVm {
    pub vm: String,
    pub group: usize,
    pub disks: Vec<FailedOverDisk>,
    /// Achieved RPO: the age of the point (its oldest disk snapshot) when the VM
    /// started; for a planned failover the point is the shut-down VM's final backup.
    pub rpo_secs: u64,
    /// Seconds from the failover's start until this VM was healthy.
    pub healthy_secs: f64,
    /// The running VM (absent while [`Phase::Starting`]).
    pub running: Option<DetachedVm>,
    pub warnings: Vec<String>,
}

/// The recorded failover of one plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailoverState {
    pub version: u32,
    pub plan: String,
    pub kind: FailoverKind,
    pub phase: Phase,
    /// The replica the VMs came from (its location).
    pub repository: String,
    /// `latest`, a snapshot id or a time, as asked.
    pub point: String,
    pub started: String,
    /// Measured RTO: seconds from the command to the last VM healthy.
    pub rto_secs: Option<f64>,
    /// What is known of the primary copies (fencing): shut down by `prepare`, or not
    /// reachable from here. Both must never run on the production network at once.
    pub primary: String,
    /// Where the writable disks and the VMs' sockets and logs are.
    pub dir: PathBuf,
    /// Set by `failover commit`: the standby images of these VMs were released.
    #[serde(default)]
    pub committed: bool,
    pub vms: Vec<FailedOverVm>,
}

impl FailoverState {
    pub(crate) fn new(plan: &str, kind: FailoverKind, dir: PathBuf) -> FailoverState {
        FailoverState {
            version: VERSION,
            plan: plan.to_string(),
            kind,
            phase: Phase::Starting,
            repository: String::new(),
            point: String::new(),
            started: lifeboat_store::repo::now_rfc3339(),
            rto_secs: None,
            primary: String::new(),
            dir,
            committed: false,
            vms: Vec::new(),
        }
    }
}

/// The failover state files of one state directory.
#[derive(Debug, Clone)]
pub struct FailoverStates {
    dir: PathBuf,
}

/// A plan's failover, locked against other failover commands while this lives.
pub(crate) struct LockedPlan {
    pub(crate) path: PathBuf,
    _lock: File,
}

impl FailoverStates {
    /// The states under `<state_dir>/failover/`.
    pub fn new(state_dir: &Path) -> FailoverStates {
        FailoverStates {
            dir: state_dir.join("failover"),
        }
    }

    pub fn path(&self, plan: &str) -> PathBuf {
        self.dir
            .join(format!("{}.json", crate::drill::disks::sanitize(plan)))
    }

    /// The plan's recorded failover, if it has one.
    pub fn read(&self, plan: &str) -> Result<Option<FailoverState>, FailoverError> {
        read_state(&self.path(plan))
    }

    /// Locks the plan's failover; `Busy` when another command holds it.
    pub(crate) fn lock(&self, plan: &str) -> Result<LockedPlan, FailoverError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            FailoverError::io("cannot create the failover state directory", &self.dir, e)
        })?;
        let lock_path = self
            .dir
            .join(format!("{}.lock", crate::drill::disks::sanitize(plan)));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| FailoverError::io("cannot open the lock", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(FailoverError::Busy {
                    plan: plan.to_string(),
                    lock: lock_path,
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(FailoverError::io("cannot lock", lock_path, e));
            }
        }
        Ok(LockedPlan {
            path: self.path(plan),
            _lock: lock,
        })
    }
}

impl LockedPlan {
    pub(crate) fn read(&self) -> Result<Option<FailoverState>, FailoverError> {
        read_state(&self.path)
    }

    /// Replaces the state file atomically.
    pub(crate) fn write(&self, state: &FailoverState) -> Result<(), FailoverError> {
        let err = |e| FailoverError::io("cannot write the failover state", &self.path, e);
        let tmp = self.path.with_extension("json.tmp");
        let mut file = File::create(&tmp).map_err(err)?;
        let json = serde_json::to_vec_pretty(state).expect("the state serialises");
        file.write_all(&json).map_err(err)?;
        file.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        }
        Ok(())
    }

    pub(crate) fn remove(&self) -> Result<(), FailoverError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(FailoverError::io(
                "cannot remove the failover state",
                &self.path,
                e,
            )),
        }
    }
}

fn read_state(path: &Path) -> Result<Option<FailoverState>, FailoverError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FailoverError::io("cannot read the failover state", path, e)),
    };
    let state: FailoverState =
        serde_json::from_slice(&bytes).map_err(|e| FailoverError::BadState {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if state.version != VERSION {
        return Err(FailoverError::BadState {
            path: path.to_path_buf(),
            detail: format!(
                "version {} (this Lifeboat reads version {VERSION})",
                state.version
            ),
        });
    }
    Ok(Some(state))
}
