//! Lifeboat's policies: the TOML configuration (repositories, protection groups,
//! schedules, retention, RPO, immutability, daemon settings), schedule arithmetic,
//! retention decisions, RPO states and the protection status built on them.
//!
//! Everything here is pure: no files, no network, no clock (callers pass `now`).
//! That keeps the decisions that destroy data — which snapshots to forget — testable
//! against hand-computed tables, and lets the CLI, the daemon and `status` share them.

pub mod config;
pub mod drill;
pub mod duration;
pub mod lag;
pub mod retention;
pub mod rpo;
pub mod schedule;
pub mod status;

pub use chrono_tz::Tz;
pub use config::{Config, ConfigError, DaemonSettings, parse_config};
pub use drill::{DrillAssessment, DrillState, LastDrill, assess_drill};
pub use duration::{format_duration, parse_duration};
pub use retention::{Decision, Retention, Scope, SnapshotRef, apply_retention, group_by_disk};
pub use rpo::{RpoAssessment, RpoInput, RpoState, assess_rpo};
pub use schedule::{Schedule, parse_timezone};
pub use status::{
    DaemonInfo, DaemonRecord, DiskHistory, DiskStatus, LastSuccess, StatusReport, VmStatus,
    status_report,
};
