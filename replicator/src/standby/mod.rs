//! Warm standby disks: for each protected disk, a directory of qcow2 images on the
//! secondary cluster that read as the last N recovery points, brought forward from
//! each new snapshot by writing only what changed.
//!
//! ```text
//! DIR/<vm>/<disk>/base.qcow2                    the oldest kept point
//!                 <time>-<id8>.qcow2            each later point: an overlay whose
//!                                               backing file is the point before it
//!                 points.json                   the kept points (the truth)
//! ```
//! Backing files are named relative to the directory, so DIR can move. A failover
//! boots a throwaway overlay on a point's file; the chain is never booted writable.
//!
//! One disk's sync (`sync_disk`): the newest snapshot of the disk; if it is not a
//! kept point, the manifests of the previous point and the new one are compared
//! (`diff`), a `.partial` overlay on the previous point gets only the changed chunks
//! and newly zeroed runs (`write`), is checked (`qemu-img check`), fsynced and
//! renamed into place; only then is it listed in `points.json` (`points`). Then the
//! oldest points are folded away down to `keep` (`chain`). A crash at any moment
//! leaves every listed point reading as its snapshot; the next run removes what the
//! crashed one left.

mod chain;
mod diff;
mod error;
mod fence;
mod points;
mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use lifeboat_hypervisor::qemu_img;
use lifeboat_store::{Progress, Repository, SnapshotSummary, StoreError};
use serde::Serialize;

pub use error::StandbyError;
pub use fence::{fence, fenced_by, unfence};
pub use points::{HeldPoints, Point, hold_points, release_disk};

use diff::Below;
use points::{BASE_FILE, DiskDir, overlay_name, sync_file};

/// Points kept per disk unless the caller says otherwise.
pub const DEFAULT_KEEP: usize = 3;

/// What `sync` brings forward, and where.
#[derive(Debug, Clone)]
pub struct StandbyRequest {
    /// The standby directory.
    pub dir: PathBuf,
    /// Points kept per disk (at least 1).
    pub keep: usize,
    /// Only these VMs (every VM in the repository when empty).
    pub vms: Vec<String>,
    /// Ranged reads in flight.
    pub fetches: usize,
}

/// How a disk's newest point came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The first point: every data chunk written into `base.qcow2`.
    Full,
    /// An overlay on the previous point with what changed.
    Incremental,
    /// The newest snapshot was already a kept point.
    Unchanged,
}

/// One kept point as reported.
#[derive(Debug, Clone, Serialize)]
pub struct KeptPoint {
    pub snapshot: String,
    pub time: String,
    /// The image file that reads as this point (boot an overlay on it).
    pub path: PathBuf,
}

/// What `sync` did for one disk.
#[derive(Debug, Clone, Serialize)]
pub struct DiskReport {
    pub vm: String,
    pub disk: String,
    /// The newest point's snapshot id.
    pub point: String,
    pub time: String,
    pub mode: Mode,
    /// Chunk data written into the new image.
    pub bytes_written: u64,
    /// Bytes of the disk newly zeroed (where the previous point held data).
    pub bytes_zeroed: u64,
    pub chunks_fetched: u64,
    /// Bytes downloaded from the repository (sealed, with range-merging waste).
    pub bytes_fetched: u64,
    pub duration_secs: f64,
    /// The kept points, oldest first.
    pub points: Vec<KeptPoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StandbyReport {
    pub disks: Vec<DiskReport>,
    /// VMs left alone because they are failed over (VM, plan).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_over: Vec<(String, String)>,
    pub duration_secs: f64,
}

/// Brings every selected disk's standby directory to its newest snapshot in `repo`
/// (whose catalog the caller has synced). `progress` counts chunk bytes written.
pub async fn sync(
    repo: Arc<Repository>,
    request: StandbyRequest,
    progress: Arc<Progress>,
) -> Result<StandbyReport, StandbyError> {
    let started = Instant::now();
    let mut failed_over = Vec::new();
    for vm in &request.vms {
        if let Some(plan) = fenced_by(&request.dir, vm) {
            return Err(StandbyError::FailedOver {
                vm: vm.clone(),
                plan,
            });
        }
    }
    let mut newest = newest_per_disk(&repo, &request.vms).await?;
    newest.retain(|s| match fenced_by(&request.dir, &s.meta.vm) {
        Some(plan) => {
            let entry = (s.meta.vm.clone(), plan);
            if !failed_over.contains(&entry) {
                failed_over.push(entry);
            }
            false
        }
        None => true,
    });
    std::fs::create_dir_all(&request.dir).map_err(|source| StandbyError::DirNotWritable {
        dir: request.dir.clone(),
        source,
    })?;
    // Report absolute image paths: what a failover script boots from.
    let request = StandbyRequest {
        dir: std::fs::canonicalize(&request.dir)
            .map_err(|e| StandbyError::io("cannot resolve", &request.dir, e))?,
        ..request
    };
    let mut disks = Vec::with_capacity(newest.len());
    for snap in newest {
        let report = sync_disk(&repo, &request, &snap, &progress)
            .await
            .map_err(|e| no_space_named(e, &request.dir, &snap))?;
        disks.push(report);
    }
    Ok(StandbyReport {
        disks,
        failed_over,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

/// The newest snapshot of every disk of the selected VMs; an error naming any
/// selected VM that has none.
async fn newest_per_disk(
    repo: &Repository,
    vms: &[String],
) -> Result<Vec<SnapshotSummary>, StandbyError> {
    let mut newest: BTreeMap<(String, String), SnapshotSummary> = BTreeMap::new();
    for s in repo.snapshots().await? {
        if !vms.is_empty() && !vms.contains(&s.meta.vm) {
            continue;
        }
        let key = (s.meta.vm.clone(), s.meta.disk.clone());
        match newest.get(&key) {
            Some(have) if (&have.meta.time, &have.id) >= (&s.meta.time, &s.id) => {}
            _ => {
                newest.insert(key, s);
            }
        }
    }
    let missing: Vec<&str> = vms
        .iter()
        .filter(|vm| !newest.keys().any(|(v, _)| v == *vm))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(StandbyError::NoSnapshots {
            what: format!("VM {}", missing.join(", VM ")),
        });
    }
    if newest.is_empty() {
        return Err(StandbyError::NoSnapshots {
            what: "any VM".into(),
        });
    }
    Ok(newest.into_values().collect())
}

/// A full disk, however it surfaced, becomes the error that says what to do.
fn no_space_named(e: StandbyError, dir: &Path, snap: &SnapshotSummary) -> StandbyError {
    if matches!(e, StandbyError::NoSpace { .. }) || !e.is_no_space() {
        return e;
    }
    StandbyError::NoSpace {
        dir: dir.to_path_buf(),
        what: format!(
            "point {} of {}/{}",
            snap.short_id(),
            snap.meta.vm,
            snap.meta.disk
        ),
    }
}

async fn sync_disk(
    repo: &Arc<Repository>,
    request: &StandbyRequest,
    snap: &SnapshotSummary,
    progress: &Arc<Progress>,
) -> Result<DiskReport, StandbyError> {
    let started = Instant::now();
    let dir = DiskDir::open(&request.dir, &snap.meta.vm, &snap.meta.disk)?;
    let mut points = dir.load()?;
    chain::finish_fold(&dir, &mut points).await?;
    dir.remove_unlisted(&points)?;
    // Nothing newer than the newest point (also when the repository's newest
    // snapshot is older than it: its own snapshot was forgotten since).
    let current = points.iter().any(|p| p.snapshot == snap.id)
        || points.last().is_some_and(|p| p.time > snap.meta.time);
    let (mode, filled) = if current {
        (Mode::Unchanged, write::Filled::default())
    } else {
        let (point, mode, filled) = add_point(repo, request, &dir, &points, snap, progress).await?;
        points.push(point);
        dir.save(&points)?;
        (mode, filled)
    };
    chain::keep_last(&dir, &mut points, request.keep).await?;
    let newest = points.last().expect("a point was kept or added");
    Ok(DiskReport {
        vm: snap.meta.vm.clone(),
        disk: snap.meta.disk.clone(),
        point: newest.snapshot.clone(),
        time: newest.time.clone(),
        mode,
        bytes_written: filled.bytes_written,
        bytes_zeroed: filled.bytes_zeroed,
        chunks_fetched: filled.chunks_fetched,
        bytes_fetched: filled.bytes_fetched,
        duration_secs: started.elapsed().as_secs_f64(),
        points: points
            .iter()
            .map(|p| KeptPoint {
                snapshot: p.snapshot.clone(),
                time: p.time.clone(),
                path: dir.file(&p.file),
            })
            .collect(),
    })
}

/// Writes the new point's image completely, verified and durable, under its final
/// name; the caller lists it. On failure the `.partial` file is removed (it may be
/// what filled the disk) and nothing else has changed.
async fn add_point(
    repo: &Arc<Repository>,
    request: &StandbyRequest,
    dir: &DiskDir,
    points: &[Point],
    snap: &SnapshotSummary,
    progress: &Arc<Progress>,
) -> Result<(Point, Mode, write::Filled), StandbyError> {
    let file = match points.last() {
        None => BASE_FILE.to_string(),
        Some(_) => overlay_name(&snap.meta.time, &snap.id),
    };
    let partial = dir.file(&format!("{file}.partial"));
    let written = write_partial(repo, request, points, snap, &partial, progress).await;
    let finished = match written {
        Ok((mode, filled)) => {
            let done = async {
                qemu_img::check_qcow2(&partial).await?;
                tracing::debug!("standby: qemu-img check passed");
                sync_file(&partial)?;
                dir.rename_durably(&partial, &dir.file(&file))
            };
            done.await.map(|()| (mode, filled))
        }
        Err(e) => Err(e),
    };
    let (mode, filled) = finished.inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })?;
    let point = Point {
        snapshot: snap.id.clone(),
        time: snap.meta.time.clone(),
        file,
        size: snap.meta.size,
        merging: false,
    };
    Ok((point, mode, filled))
}

/// Creates `partial` (an overlay on the last point, or a new base) and fills it.
async fn write_partial(
    repo: &Arc<Repository>,
    request: &StandbyRequest,
    points: &[Point],
    snap: &SnapshotSummary,
    partial: &Path,
    progress: &Arc<Progress>,
) -> Result<(Mode, write::Filled), StandbyError> {
    let new = repo.read_manifest(&snap.id).await?;
    let previous = match points.last() {
        None => None,
        Some(p) => match repo.read_manifest(&p.snapshot).await {
            Ok(m) => Some(Some(m)),
            // Forgotten since: the overlay still works, it just cannot skip anything.
            Err(StoreError::Backend(e)) if e.is_not_found() => Some(None),
            Err(e) => return Err(e.into()),
        },
    };
    let (below, mode) = match &previous {
        None => (Below::Empty, Mode::Full),
        Some(Some(m)) => (Below::Point(m), Mode::Incremental),
        Some(None) => (Below::Unknown, Mode::Incremental),
    };
    let backing = points.last().map(|p| p.file.as_str());
    qemu_img::create_qcow2(partial, new.meta.size, backing).await?;
    let plan = diff::plan(below, &new);
    tracing::debug!(
        chunks = plan.chunks.len(),
        data_bytes = plan.data_bytes,
        zero_bytes = plan.zero_bytes,
        "standby: manifests compared, overlay created"
    );
    progress.set_total(progress.total() + plan.data_bytes);
    let target = write::Target {
        snapshot: &snap.id,
        size: new.meta.size,
        image: partial,
    };
    let filled = write::fill(repo, target, plan, request.fetches, progress.clone()).await?;
    Ok((mode, filled))
}
