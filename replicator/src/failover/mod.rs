//! Failover: the plan's VMs run on the secondary for real, after the primary site
//! is lost (unplanned) or shut down on purpose (planned), and that state is recorded
//! until it ends.
//!
//! ```text
//! run      points (newest, chosen, or the final backups of a planned failover)
//!          ─► room check ─► writable raw disks (standby copy | restore) ─► boot groups
//!          on the production network map, health checks ─► detach ─► state file
//! control  status (RPO, RTO, is each VM alive) · abort --discard · commit
//! ```
//! Unlike a drill, the VMs outlive Lifeboat (QEMU detached) and their disks are
//! their own; the state in `<state_dir>/failover/<plan>.json` is how later commands
//! find them.

mod control;
mod disks;
mod error;
mod run;
mod state;

pub use control::{abort, commit};
pub use error::FailoverError;
pub use run::{FINAL_BACKUP_TAG, FailoverRequest, fail_over};
pub use state::{FailedOverDisk, FailedOverVm, FailoverKind, FailoverState, FailoverStates, Phase};
