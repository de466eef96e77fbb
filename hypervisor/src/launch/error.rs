//! What goes wrong starting, watching or stopping a VM, and what to do about it.

use std::path::PathBuf;

use crate::qmp::QmpError;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "qemu-system-x86_64 not found in PATH: install QEMU (Debian/Ubuntu: apt-get install qemu-system-x86)"
    )]
    QemuNotInstalled,
    #[error("disk {path} cannot be opened: {reason} (restore the disk there or fix the path)")]
    DiskMissing { path: PathBuf, reason: String },
    #[error("firmware file {path} cannot be opened: {reason} (install ovmf or fix the path)")]
    FirmwareMissing { path: PathBuf, reason: String },
    #[error(
        "run directory {path} is not writable: {source} (create it, or give a directory this user can write)"
    )]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid launch spec: {0}")]
    InvalidSpec(String),
    #[error("cannot start qemu-system-x86_64: {0}")]
    Spawn(#[source] std::io::Error),
    #[error(
        "QEMU exited at start ({status}): {stderr} (its message names the option or file it refused: fix that in the launch spec)"
    )]
    EarlyExit { status: String, stderr: String },
    #[error(
        "QEMU did not open its QMP socket {path} within {secs} s (is the host overloaded?); it was killed"
    )]
    StartTimeout { path: PathBuf, secs: u64 },
    #[error("VM {vm} cannot be left running: {why}")]
    CannotDetach { vm: String, why: String },
    #[error("QMP: {0}")]
    Qmp(#[from] QmpError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}
