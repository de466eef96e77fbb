//! What can go wrong bringing a standby directory forward, worded for the operator:
//! what failed, and what to do. Every variant leaves the points already listed in
//! `points.json` as they were.

use std::io;
use std::path::PathBuf;

use lifeboat_hypervisor::ToolError;
use lifeboat_hypervisor::nbd::NbdError;
use lifeboat_store::StoreError;

/// Linux errno for "no space left on device".
const ENOSPC: i32 = 28;

#[derive(Debug, thiserror::Error)]
pub enum StandbyError {
    #[error(
        "the repository has no snapshots of {what}; back it up first, or check the name \
         with `lifeboat snapshots`"
    )]
    NoSnapshots { what: String },
    #[error(
        "standby directory {} is not writable: {source}; create it or pass a --dir this \
         user can write to", dir.display()
    )]
    DirNotWritable {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "no space left in {} while writing {what}; free space there or move the standby \
         directory to a larger disk, then run `standby sync` again (the points already \
         kept are unchanged and usable)", dir.display()
    )]
    NoSpace { dir: PathBuf, what: String },
    #[error(
        "{} is in use: another `standby sync` is updating it, or a drill or failover is \
         booting from its points; wait for that to finish", dir.display()
    )]
    Locked { dir: PathBuf },
    #[error(
        "VM {vm} is failed over (plan {plan}): it runs on this site from disks of its own, \
         newer than anything the replica has, so its standby is not brought forward; \
         `lifeboat failover status {plan}` shows it"
    )]
    FailedOver { vm: String, plan: String },
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a standby points file Lifeboat can read: {detail}", path.display())]
    BadPoints { path: PathBuf, detail: String },
    #[error(
        "the repository cannot give back the data of snapshot {snapshot}: {detail}; run `lifeboat verify --read-data`"
    )]
    Damaged { snapshot: String, detail: String },
    #[error("{what} does not read back what was written: {detail}")]
    Verify { what: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Nbd(#[from] NbdError),
}

impl StandbyError {
    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StandbyError::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// Whether this failure is the standby disk being full, however it surfaced
    /// (a write through qemu-nbd, a qemu-img run, a file operation).
    pub(crate) fn is_no_space(&self) -> bool {
        match self {
            StandbyError::NoSpace { .. } => true,
            StandbyError::Io { source, .. } | StandbyError::DirNotWritable { source, .. } => {
                source.raw_os_error() == Some(ENOSPC)
            }
            StandbyError::Nbd(e) => e.is_no_space(),
            StandbyError::Tool(e) => e.to_string().contains("No space left on device"),
            _ => false,
        }
    }
}
