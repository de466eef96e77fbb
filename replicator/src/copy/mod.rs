//! Replication: copying snapshots, and every chunk they need that the destination
//! lacks, from one repository to a replica of it.
//!
//! ```text
//! source catalog ─► snapshots not yet on the destination (oldest first), per snapshot:
//!   chunk ids ─► destination catalog: present? skip : ReadPlan on the source
//!   ─► ChunkReader (ranged GETs, verified) ─► re-seal under the destination's key
//!   ─► rate limit ─► destination PackWriter (packs, index) ─► manifest last
//! ```
//! Both ends are store's shared paths; this module only decides what to copy and
//! joins them. A run killed at any point leaves the destination consistent: a snapshot
//! appears only with its manifest, which is written after every chunk it needs is
//! indexed; uploaded packs are in the destination's catalog as pending, so a rerun
//! reuses them and sends again at most the packs that were in flight.

mod rate;
mod request;
mod run;
mod snapshot;

pub use rate::RateLimit;
pub use request::{CopiedSnapshot, NewestPoint, ReplicateReport, ReplicateRequest};
pub use run::replicate;
