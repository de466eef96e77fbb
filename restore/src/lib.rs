//! Lifeboat's read side: restoring snapshots and verifying the repository.
//!
//! Both fetch pack ranges in parallel and check every chunk (AEAD tag and keyed id)
//! before using it: restore never writes a byte it could not verify, and verify names
//! the snapshot, disk and offset each problem affects.

mod error;
pub mod export;
pub mod restore;
pub mod verify;

pub use error::RestoreError;
pub use restore::{RestoreReport, RestoreRequest, restore_snapshot};
pub use verify::{VerifyOptions, VerifyReport, verify_repository};
