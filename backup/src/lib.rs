//! Lifeboat's backup pipeline: read a disk, cut it into chunks, store what the
//! repository lacks, and commit a snapshot manifest.
//!
//! ```text
//! reader thread ──► worker threads ──► collector (async) ──► uploads (async, bounded)
//!  read, skip holes,  keyed id, dedup,    reorder extents,      PUT pack, then
//!  zero runs, FastCDC zstd, seal          fill packs            catalog + index
//! ```
//! Every stage talks through bounded channels, so memory stays flat whatever the disk
//! size: roughly (workers × 2 chunks) + (uploads in flight + 1) packs.

pub mod cbt;
pub mod definition;
pub mod disk_backup;
mod error;
pub mod fixed;
pub mod incremental;
pub mod live;
mod piece;
mod pipeline;
mod reader;
mod request;
pub mod segmenter;
pub mod source;

pub use error::BackupError;
pub use lifeboat_store::Progress;
pub use piece::Piece;
pub use pipeline::run_backup;
pub use request::{BackupReport, BackupRequest, ReadMode};
