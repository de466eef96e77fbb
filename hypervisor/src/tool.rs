//! Running QEMU's command-line tools (`qemu-img`, `qemu-nbd`): finding them, and
//! what goes wrong when they run.

use std::io;
use std::path::PathBuf;

/// What went wrong running a QEMU tool. None of these is transient: the same call
/// fails the same way until the image, the process holding it or the installation
/// changes, so none says a retry can help.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot run {tool}: {source} (is QEMU's qemu-utils package installed?)")]
    Spawn {
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    /// The tool could not take the image's lock: another process (a running VM, a
    /// qemu-nbd) has it open.
    #[error("{tool} failed: {message}")]
    ImageLocked { tool: &'static str, message: String },
    #[error("{tool} failed: {message}")]
    Failed { tool: &'static str, message: String },
}

impl ToolError {
    /// Whether the tool is missing (not found in `PATH`), rather than failing.
    pub fn is_not_installed(&self) -> bool {
        matches!(self, ToolError::Spawn { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// The first executable file called `name` in `$PATH`.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
