//! Exit codes, so scripts and the daemon can tell failures apart without parsing text:
//! 0 success, 1 error, 2 usage error, 3 `verify` found damage, 75 a transient failure
//! (network, throttling, a 5xx from S3) where running the same command again may
//! succeed — 75 is `EX_TEMPFAIL` from sysexits.h, which schedulers know.

use std::process::ExitCode;

use lifeboat_backup::BackupError;
use lifeboat_backup::disk_backup::DiskBackupError;
use lifeboat_hypervisor::nbd::NbdError;
use lifeboat_replicator::ReplicateError;
use lifeboat_store::{BackendError, StoreError};

pub const TEMPORARY_FAILURE: u8 = 75;

/// The exit code for a command that failed with `err`.
pub fn for_error(err: &anyhow::Error) -> ExitCode {
    ExitCode::from(if is_retryable(err) {
        TEMPORARY_FAILURE
    } else {
        1
    })
}

/// True if any typed error in the chain says a retry can help. Context layers added
/// by the binary are plain strings and are skipped.
pub fn is_retryable(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<BackupError>()
            .is_some_and(BackupError::is_retryable)
            || e.downcast_ref::<DiskBackupError>()
                .is_some_and(DiskBackupError::is_retryable)
            || e.downcast_ref::<StoreError>()
                .is_some_and(StoreError::is_retryable)
            || e.downcast_ref::<BackendError>()
                .is_some_and(BackendError::is_retryable)
            || e.downcast_ref::<NbdError>()
                .is_some_and(NbdError::is_retryable)
            || e.downcast_ref::<ReplicateError>()
                .is_some_and(ReplicateError::is_retryable)
    })
}
