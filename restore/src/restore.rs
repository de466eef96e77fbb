//! Restoring one snapshot to a file or block device.
//!
//! Files are written to `<target>.lifeboat-partial`, sparse, and renamed into place
//! only when every chunk has been verified and written: a failed restore never leaves
//! a plausible-looking but wrong disk under the target name.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use lifeboat_store::format::manifest::{Extent, Manifest};
use lifeboat_store::read_plan::FetchRange;
use lifeboat_store::{
    ChunkReader, FetchedRange, Progress, ReadFailure, ReadPlan, Repository, SnapshotSummary,
};
use serde::Serialize;

use crate::error::RestoreError;

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub snapshot: SnapshotSummary,
    pub target: PathBuf,
    /// Replace an existing non-empty file.
    pub overwrite: bool,
    /// Ranged reads in flight.
    pub concurrency: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    pub vm: String,
    pub disk: String,
    pub target: String,
    pub disk_size: u64,
    /// Chunk bytes written (zero extents are left as holes on files).
    pub bytes_written: u64,
    pub zero_bytes: u64,
    pub chunks: u64,
    pub bytes_fetched: u64,
    pub duration_secs: f64,
}

/// Where restored bytes go.
struct Target {
    file: File,
    /// Final path; `None` when writing straight to a block device.
    rename_to: Option<PathBuf>,
    written_path: PathBuf,
    is_device: bool,
}

fn target_err(path: &Path, detail: impl std::fmt::Display) -> RestoreError {
    RestoreError::Target {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

fn open_target(path: &Path, size: u64, overwrite: bool) -> Result<Target, RestoreError> {
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.file_type().is_block_device() {
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| target_err(path, e))?;
            let dev_size = std::io::Seek::seek(&mut &file, std::io::SeekFrom::End(0))
                .map_err(|e| target_err(path, e))?;
            if dev_size < size {
                return Err(target_err(
                    path,
                    format!("device holds {dev_size} bytes, the disk needs {size}"),
                ));
            }
            return Ok(Target {
                file,
                rename_to: None,
                written_path: path.to_path_buf(),
                is_device: true,
            });
        }
        if meta.is_dir() {
            return Err(target_err(
                path,
                "is a directory; give a file name for the restored disk",
            ));
        }
        if meta.len() > 0 && !overwrite {
            return Err(target_err(
                path,
                "exists and is not empty; pass --overwrite to replace it",
            ));
        }
    }
    let mut partial = path.as_os_str().to_owned();
    partial.push(".lifeboat-partial");
    let partial = PathBuf::from(partial);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&partial)
        .map_err(|e| target_err(&partial, e))?;
    file.set_len(size).map_err(|e| target_err(&partial, e))?;
    Ok(Target {
        file,
        rename_to: Some(path.to_path_buf()),
        written_path: partial,
        is_device: false,
    })
}

pub async fn restore_snapshot(
    repo: Arc<Repository>,
    req: RestoreRequest,
    progress: Arc<Progress>,
) -> Result<RestoreReport, RestoreError> {
    let started = Instant::now();
    let manifest = repo.read_manifest(&req.snapshot.id).await?;
    let damaged = |offset: u64, detail: String| RestoreError::Damaged {
        snapshot: req.snapshot.short_id().to_string(),
        vm: manifest.meta.vm.clone(),
        disk: manifest.meta.disk.clone(),
        offset,
        detail,
    };
    let plan = ReadPlan::for_manifest(&repo, &manifest).await?;
    if let Some(first) = plan.unlocated.first() {
        return Err(damaged(
            first.offset,
            format!(
                "{} chunk(s) are in no index (first: {:?}); if packs survive, `lifeboat repair index` may recover them",
                plan.unlocated.len(),
                first.id
            ),
        ));
    }
    let target = Arc::new(open_target(&req.target, manifest.meta.size, req.overwrite)?);
    progress.set_total(manifest.meta.size);
    let result = write_all(
        &repo,
        &manifest,
        plan.ranges,
        &target,
        &progress,
        req.concurrency,
        &damaged,
    )
    .await;
    let (bytes_written, bytes_fetched) = match result {
        Ok(counts) => counts,
        Err(e) => {
            if target.rename_to.is_some() {
                let _ = std::fs::remove_file(&target.written_path);
            }
            return Err(e);
        }
    };
    let zero_bytes = manifest
        .extents
        .iter()
        .filter(|e| matches!(e, Extent::Zero { .. }))
        .map(Extent::len)
        .sum();
    let target = Arc::into_inner(target).expect("all writers finished");
    finish_target(target, &manifest)?;
    Ok(RestoreReport {
        snapshot: req.snapshot.id.clone(),
        vm: manifest.meta.vm.clone(),
        disk: manifest.meta.disk.clone(),
        target: req.target.display().to_string(),
        disk_size: manifest.meta.size,
        bytes_written,
        zero_bytes,
        chunks: manifest
            .extents
            .iter()
            .filter(|e| matches!(e, Extent::Chunk { .. }))
            .count() as u64,
        bytes_fetched,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

/// Fetches every range, verifies its chunks and writes them; returns
/// `(bytes written, bytes fetched)`. Fetch, decrypt and write of one range form one
/// unit of the shared [`ChunkReader`], so `concurrency` ranges are in flight at once.
async fn write_all(
    repo: &Arc<Repository>,
    manifest: &Manifest,
    ranges: Vec<FetchRange>,
    target: &Arc<Target>,
    progress: &Arc<Progress>,
    concurrency: usize,
    damaged: &(dyn Fn(u64, String) -> RestoreError + Sync),
) -> Result<(u64, u64), RestoreError> {
    let (writer_target, writer_progress) = (target.clone(), progress.clone());
    let mut stream = ChunkReader::new(repo.clone(), concurrency).read(ranges, move |fetched| {
        write_range(&fetched, &writer_target, &writer_progress)
    });
    let (mut written, mut fetched_total) = (0u64, 0u64);
    while let Some(outcome) = stream.next().await {
        match outcome {
            Ok((w, f)) => {
                written += w;
                fetched_total += f;
            }
            Err(ReadFailure::Storage(e)) => return Err(RestoreError::Store(e.into())),
            Err(ReadFailure::Damaged(d)) => return Err(damaged(d.offset, d.detail)),
            Err(ReadFailure::Consumer(e)) => return Err(target_err(&target.written_path, e)),
        }
    }
    if target.is_device {
        write_device_zeros(manifest, target)?;
    }
    let zeros: u64 = manifest
        .extents
        .iter()
        .filter(|e| matches!(e, Extent::Zero { .. }))
        .map(Extent::len)
        .sum();
    progress.add(zeros);
    Ok((written, fetched_total))
}

/// Verifies and writes the chunks of one fetched range (on a blocking thread).
fn write_range(
    fetched: &FetchedRange,
    target: &Target,
    progress: &Progress,
) -> Result<(u64, u64), ReadFailure<std::io::Error>> {
    let mut written = 0;
    let mut out = CoalescedWriter::new(&target.file, progress);
    for need in &fetched.range.needs {
        let data = fetched.open(need)?;
        for &off in &need.offsets {
            out.write_at(&data, off).map_err(ReadFailure::Consumer)?;
            written += data.len() as u64;
        }
    }
    out.flush().map_err(ReadFailure::Consumer)?;
    Ok((written, fetched.fetched_len()))
}

/// Joins chunks that land next to each other on the disk into one `pwrite`: a pack's
/// chunks are mostly neighbours on the disk, and with small chunks (64 KiB fixed cells)
/// one write per chunk spent more time on the target's inode lock than copying.
struct CoalescedWriter<'a> {
    file: &'a File,
    progress: &'a Progress,
    start: u64,
    buf: Vec<u8>,
}

impl<'a> CoalescedWriter<'a> {
    /// Writes are flushed once this much is joined.
    const MAX: usize = 4 * 1024 * 1024;

    fn new(file: &'a File, progress: &'a Progress) -> Self {
        Self {
            file,
            progress,
            start: 0,
            buf: Vec::new(),
        }
    }

    fn write_at(&mut self, data: &[u8], offset: u64) -> std::io::Result<()> {
        let joins = !self.buf.is_empty() && offset == self.start + self.buf.len() as u64;
        if !joins || self.buf.len() + data.len() > Self::MAX {
            self.flush()?;
        }
        if data.len() >= Self::MAX {
            self.file.write_all_at(data, offset)?;
            self.progress.add(data.len() as u64);
            return Ok(());
        }
        if self.buf.is_empty() {
            self.start = offset;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all_at(&self.buf, self.start)?;
            self.progress.add(self.buf.len() as u64);
            self.buf.clear();
        }
        Ok(())
    }
}

/// Block devices keep old contents in "holes": zero runs must be written out.
fn write_device_zeros(manifest: &Manifest, target: &Target) -> Result<(), RestoreError> {
    let zeros = vec![0u8; 1 << 20];
    for (offset, e) in manifest.extents_with_offsets() {
        if let Extent::Zero { len } = e {
            let mut done = 0;
            while done < *len {
                let n = (*len - done).min(zeros.len() as u64) as usize;
                target
                    .file
                    .write_all_at(&zeros[..n], offset + done)
                    .map_err(|e| target_err(&target.written_path, e))?;
                done += n as u64;
            }
        }
    }
    Ok(())
}

fn finish_target(target: Target, manifest: &Manifest) -> Result<(), RestoreError> {
    target
        .file
        .sync_all()
        .map_err(|e| target_err(&target.written_path, e))?;
    if let Some(final_path) = target.rename_to {
        std::fs::rename(&target.written_path, &final_path)
            .map_err(|e| target_err(&final_path, e))?;
    }
    tracing::debug!(
        "restored {} bytes of {}/{}",
        manifest.meta.size,
        manifest.meta.vm,
        manifest.meta.disk
    );
    Ok(())
}
