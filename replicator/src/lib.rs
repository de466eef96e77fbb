//! Lifeboat's recovery half: what happens between a committed backup on the primary
//! site and a VM running on the secondary one.
//!
//! - [`copy`]: replication, repository to repository (snapshots and the chunks they
//!   need; chunk ids equal on both sides, blobs re-sealed under the destination's key).
//! - [`replica`]: the settings a new replica shares with its source.
//! - `standby`: warm standby disks on the secondary cluster, brought forward from
//!   each new recovery point by writing only the extents that changed.
//! - `drill`: test failovers in an isolated network, with signed reports.
//! - [`failover`]: the real thing — the plan's VMs running on the secondary, on
//!   disks of their own, recorded until aborted or failed back.
//!
//! Depends on `store` (both shared paths) and `hypervisor` (qemu-img, qemu-nbd);
//! never on `backup` (tests/layering.rs).

pub mod copy;
pub mod drill;
pub mod error;
pub mod failover;
pub mod replica;
pub mod standby;

pub use copy::{ReplicateReport, ReplicateRequest, replicate};
pub use error::{ReplicateError, Side};
pub use replica::replica_options;
