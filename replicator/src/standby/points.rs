//! One disk's standby directory on storage: `points.json` (the kept points, oldest
//! first), the lock that keeps two syncs apart, and the clean-up of what a crashed
//! run left behind.
//!
//! `points.json` is the truth: a point exists once it is listed, and only then. It
//! is replaced atomically (temporary file, fsync, rename, fsync of the directory), so
//! a crash leaves either the old list or the new one. An image file not listed (a
//! `.partial`, an overlay renamed into place just before a crash, an overlay folded
//! away) is removed by the next run.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::StandbyError;

pub(crate) const POINTS_FILE: &str = "points.json";
pub(crate) const BASE_FILE: &str = "base.qcow2";
const LOCK_FILE: &str = ".lock";
const VERSION: u32 = 1;

/// One kept recovery point: a snapshot and the image file that reads as it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Point {
    /// Full snapshot id in the repository.
    pub snapshot: String,
    /// When the backup was taken (RFC 3339, from the snapshot).
    pub time: String,
    /// Image file in the disk's directory: `base.qcow2` or `<time>-<id8>.qcow2`.
    pub file: String,
    /// Disk size in bytes.
    pub size: u64,
    /// Set on the oldest point while it is folded away: it no longer reads as its
    /// snapshot, and the next run finishes the fold.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub merging: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct PointsFile {
    version: u32,
    vm: String,
    disk: String,
    points: Vec<Point>,
}

/// A disk's directory, locked for this process while the value lives.
pub(crate) struct DiskDir {
    pub(crate) path: PathBuf,
    vm: String,
    disk: String,
    _lock: File,
}

impl DiskDir {
    /// Creates (if needed) and locks `root/<vm>/<disk>`.
    pub(crate) fn open(root: &Path, vm: &str, disk: &str) -> Result<DiskDir, StandbyError> {
        let path = root.join(path_part(vm)).join(path_part(disk));
        fs::create_dir_all(&path).map_err(|source| StandbyError::DirNotWritable {
            dir: path.clone(),
            source,
        })?;
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StandbyError::DirNotWritable {
                dir: path.clone(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StandbyError::Locked { dir: path }),
            Err(TryLockError::Error(e)) => {
                return Err(StandbyError::io("cannot lock", lock_path, e));
            }
        }
        Ok(DiskDir {
            path,
            vm: vm.to_string(),
            disk: disk.to_string(),
            _lock: lock,
        })
    }

    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The kept points, oldest first (none for a new directory).
    pub(crate) fn load(&self) -> Result<Vec<Point>, StandbyError> {
        let path = self.file(POINTS_FILE);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StandbyError::io("cannot read", path, e)),
        };
        let bad = |detail: String| StandbyError::BadPoints {
            path: path.clone(),
            detail,
        };
        let parsed: PointsFile = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        if parsed.version != VERSION {
            return Err(bad(format!(
                "version {} (this Lifeboat reads {VERSION})",
                parsed.version
            )));
        }
        if parsed.vm != self.vm || parsed.disk != self.disk {
            return Err(bad(format!("it belongs to {}/{}", parsed.vm, parsed.disk)));
        }
        Ok(parsed.points)
    }

    /// Replaces `points.json` atomically and durably.
    pub(crate) fn save(&self, points: &[Point]) -> Result<(), StandbyError> {
        let file = PointsFile {
            version: VERSION,
            vm: self.vm.clone(),
            disk: self.disk.clone(),
            points: points.to_vec(),
        };
        let text = serde_json::to_vec_pretty(&file).expect("points serialise");
        let tmp = self.file(".points.json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&text)?;
            f.write_all(b"\n")?;
            f.sync_all()
        };
        write().map_err(|e| StandbyError::io("cannot write", &tmp, e))?;
        self.rename_durably(&tmp, &self.file(POINTS_FILE))
    }

    /// `rename(from, to)`, then fsync of the directory so the rename survives a crash.
    pub(crate) fn rename_durably(&self, from: &Path, to: &Path) -> Result<(), StandbyError> {
        fs::rename(from, to).map_err(|e| StandbyError::io("cannot rename", from, e))?;
        self.sync_dir()
    }

    pub(crate) fn sync_dir(&self) -> Result<(), StandbyError> {
        File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(|e| StandbyError::io("cannot sync directory", &self.path, e))
    }

    /// Removes every image file `points` does not list: `.partial` files of a run
    /// that died, overlays renamed into place but never listed, folded overlays.
    pub(crate) fn remove_unlisted(&self, points: &[Point]) -> Result<(), StandbyError> {
        let entries =
            fs::read_dir(&self.path).map_err(|e| StandbyError::io("cannot list", &self.path, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let image = name.ends_with(".qcow2") || name.ends_with(".qcow2.partial");
            if image && !points.iter().any(|p| p.file == name) {
                tracing::info!(file = %name, "removing a standby image no point lists");
                fs::remove_file(entry.path())
                    .map_err(|e| StandbyError::io("cannot remove", entry.path(), e))?;
            }
        }
        Ok(())
    }
}

/// A disk's kept points, held for reading: while the value lives no `standby sync`
/// can fold or remove them (it takes the same lock exclusively and reports
/// [`StandbyError::Locked`]), so a VM booted on an overlay of a point keeps a stable
/// backing chain.
pub struct HeldPoints {
    /// The disk's directory: a point's image is `dir.join(&point.file)`.
    pub dir: PathBuf,
    /// Usable points, oldest first (a point being folded away is left out).
    pub points: Vec<Point>,
    _lock: File,
}

impl HeldPoints {
    /// The image that reads as `snapshot`, if it is a kept point.
    pub fn image_of(&self, snapshot: &str) -> Option<PathBuf> {
        self.points
            .iter()
            .find(|p| p.snapshot == snapshot)
            .map(|p| self.dir.join(&p.file))
    }
}

/// Holds the kept points of `root/<vm>/<disk>` for reading; `None` when the disk has
/// no standby directory.
pub fn hold_points(root: &Path, vm: &str, disk: &str) -> Result<Option<HeldPoints>, StandbyError> {
    let path = root.join(path_part(vm)).join(path_part(disk));
    let lock_path = path.join(LOCK_FILE);
    let lock = match File::open(&lock_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StandbyError::io("cannot open", lock_path, e)),
    };
    match lock.try_lock_shared() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(StandbyError::Locked { dir: path }),
        Err(TryLockError::Error(e)) => return Err(StandbyError::io("cannot lock", lock_path, e)),
    }
    // Read under the lock through the same checks a sync uses; `DiskDir` itself
    // would take the lock exclusively.
    let reader = DiskDir {
        path: path.clone(),
        vm: vm.to_string(),
        disk: disk.to_string(),
        _lock: lock
            .try_clone()
            .map_err(|e| StandbyError::io("cannot lock", &lock_path, e))?,
    };
    let points = reader.load()?.into_iter().filter(|p| !p.merging).collect();
    Ok(Some(HeldPoints {
        dir: path,
        points,
        _lock: lock,
    }))
}

/// Removes the standby of `root/<vm>/<disk>` (every point), under its lock, so no
/// sync or drill is using it; then the VM's directory if that left it empty. Returns
/// whether there was one. For a failed-over VM whose own disk is now the truth.
pub fn release_disk(root: &Path, vm: &str, disk: &str) -> Result<bool, StandbyError> {
    let path = root.join(path_part(vm)).join(path_part(disk));
    if !path.exists() {
        return Ok(false);
    }
    let locked = DiskDir::open(root, vm, disk)?;
    fs::remove_dir_all(&locked.path).map_err(|e| StandbyError::io("cannot remove", &path, e))?;
    drop(locked);
    if let Some(vm_dir) = path.parent() {
        // Fails while the VM still has other disks there: that is fine.
        let _ = fs::remove_dir(vm_dir);
    }
    Ok(true)
}

/// fsyncs one file (an image qemu wrote), so a rename after it cannot expose
/// unwritten data after a crash.
pub(crate) fn sync_file(path: &Path) -> Result<(), StandbyError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StandbyError::io("cannot sync", path, e))
}

/// A VM or disk name as one safe path component: `/` and `%` are escaped, and a
/// leading `.` (which could make `.` or `..`) too.
pub(crate) fn path_part(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.chars().enumerate() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '.' if i == 0 => out.push_str("%2E"),
            '\0' => out.push_str("%00"),
            c => out.push(c),
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    out
}

/// `<time>-<id8>.qcow2` for a point after the first: compact UTC time, so the files
/// sort by time, and the snapshot's short id.
pub(crate) fn overlay_name(time: &str, snapshot: &str) -> String {
    let stamp: String = time.chars().filter(|c| !matches!(c, '-' | ':')).collect();
    format!(
        "{}-{}.qcow2",
        path_part(&stamp),
        &snapshot[..snapshot.len().min(8)]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_safe_path_components() {
        assert_eq!(path_part("web01"), "web01");
        assert_eq!(path_part(".."), "%2E.");
        assert_eq!(path_part("a/b%"), "a%2Fb%25");
        assert_eq!(
            overlay_name("2026-11-22T01:00:00Z", "0123456789abcdef"),
            "20261122T010000Z-01234567.qcow2"
        );
    }

    #[test]
    fn points_round_trip_and_a_second_sync_is_locked_out() {
        let root = tempfile::tempdir().unwrap();
        let dir = DiskDir::open(root.path(), "vm", "root").unwrap();
        assert!(dir.load().unwrap().is_empty());
        let p = Point {
            snapshot: "ab".repeat(32),
            time: "2026-11-22T01:00:00Z".into(),
            file: BASE_FILE.into(),
            size: 1 << 20,
            merging: false,
        };
        dir.save(std::slice::from_ref(&p)).unwrap();
        assert_eq!(dir.load().unwrap(), vec![p]);
        assert!(matches!(
            DiskDir::open(root.path(), "vm", "root"),
            Err(StandbyError::Locked { .. })
        ));
    }
}
