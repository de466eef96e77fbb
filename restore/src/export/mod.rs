//! Instant recovery: a snapshot's disk served read-only over NBD straight from the
//! repository (`lifeboat export`), so a VM boots at once on a qcow2 overlay backed
//! by the export instead of waiting for a full restore.
//!
//! `disk` reads the snapshot on demand (cache, read-ahead); `cache` is its bounded
//! chunk cache.

mod cache;
mod disk;
mod source;

pub use disk::{ExportOptions, SnapshotDisk};
