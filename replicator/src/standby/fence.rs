//! The failover fence on a VM's standby: `<standby_dir>/<vm>/FAILED-OVER`, naming the
//! plan. While it exists the VM runs on the secondary from disks of its own, and the
//! replica's snapshots of it are older than what it has written since: `standby sync`
//! must not bring its standby forward from them (nor recreate what `failover commit`
//! released). `failover` writes it before the first disk is made; `failover abort`
//! (and failback, once the VM is home) removes it.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::StandbyError;
use super::points::path_part;

const FENCE_FILE: &str = "FAILED-OVER";

fn fence_path(root: &Path, vm: &str) -> PathBuf {
    root.join(path_part(vm)).join(FENCE_FILE)
}

/// Fences `vm`'s standby for the failover of `plan`.
pub fn fence(root: &Path, vm: &str, plan: &str) -> Result<(), StandbyError> {
    let path = fence_path(root, vm);
    let dir = path.parent().expect("a fence has a directory");
    fs::create_dir_all(dir).map_err(|source| StandbyError::DirNotWritable {
        dir: dir.to_path_buf(),
        source,
    })?;
    fs::write(&path, format!("{plan}\n")).map_err(|e| StandbyError::io("cannot write", &path, e))
}

/// Removes `vm`'s fence (and its directory, if that leaves it empty).
pub fn unfence(root: &Path, vm: &str) -> Result<(), StandbyError> {
    let path = fence_path(root, vm);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StandbyError::io("cannot remove", &path, e)),
    }
    if let Some(dir) = path.parent() {
        let _ = fs::remove_dir(dir);
    }
    Ok(())
}

/// The plan `vm` is failed over by, if its standby is fenced.
pub fn fenced_by(root: &Path, vm: &str) -> Option<String> {
    fs::read_to_string(fence_path(root, vm))
        .ok()
        .map(|plan| plan.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_names_its_plan_until_removed() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(fenced_by(root.path(), "web01"), None);
        fence(root.path(), "web01", "erp").unwrap();
        assert_eq!(fenced_by(root.path(), "web01").as_deref(), Some("erp"));
        assert_eq!(fenced_by(root.path(), "db01"), None);
        unfence(root.path(), "web01").unwrap();
        assert_eq!(fenced_by(root.path(), "web01"), None);
        assert!(!root.path().join("web01").exists());
        unfence(root.path(), "web01").unwrap();
    }
}
