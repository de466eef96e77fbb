//! Drills (test failovers): boot every VM of a recovery plan on the secondary, from
//! copy-on-write overlays on the warm standby points (or on the snapshots served from the
//! replica), in the plan's isolated test network; watch each come up; keep the
//! evidence; stop and remove everything; sign the report into a hash chain.
//!
//! ```text
//! select (point per VM) ─► disks (overlay on standby | on NBD export) ─► boot (spec, start, watch,
//!   evidence) ─► run (groups in order, scripts, clean-up, RTO) ─► report (JSON,
//!   HTML, signed chain in the state dir + sealed copy in the repository)
//! ```
//! Production is never touched: NICs go to the test network or stay unplugged, the
//! standby points are only read (and held against `standby sync` while in use), and
//! the overlays are the drill's own. What an interrupted drill leaves is
//! [`leftovers`]'s to find and remove (`drill cleanup`).

pub(crate) mod boot;
pub(crate) mod disks;
mod error;
mod leftovers;
pub mod report;
mod run;
mod select;

pub use error::DrillError;
pub use leftovers::{Cleanup, clean_up};
pub use run::{DrillOutcome, DrillRequest, KeptDrill, KeptVm, run_drill};
pub use select::{PointChoice, SAME_RUN_WINDOW, VmPoint, point_time, select_point};
