//! `lifeboat backup`: names the disk and its input (image, NBD export, or a running
//! VM's drive) from the flags; the preparation, the backup and the dirty-bitmap
//! lifecycle are [`lifeboat_backup::disk_backup`].

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use lifeboat_backup::BackupReport;
use lifeboat_backup::cbt::is_nbd_uri;
use lifeboat_backup::definition::load_definition_file;
use lifeboat_backup::disk_backup::{DiskBackupRequest, DiskInput, prepare_disk_backup};
use lifeboat_backup::live::Hooks;
use lifeboat_store::Progress;

use crate::args::{BackupArgs, GlobalArgs};
use crate::output::{ProgressGuard, bytes, print_json, rate};
use crate::repository::open;

pub async fn run(g: &GlobalArgs, a: BackupArgs) -> Result<()> {
    let request = request(a)?;
    let prepared = prepare_disk_backup(request, open(g)).await?;
    let progress = Arc::new(Progress::default());
    let guard = ProgressGuard::start("backup", progress.clone(), !g.quiet && !g.json);
    let result = prepared.run(progress).await;
    drop(guard);
    let report = result?;
    if g.json {
        print_json(&report);
    } else if !g.quiet {
        print_text(&report);
    }
    Ok(())
}

/// The disk's name (given, else the image's file name, else the drive) and its input;
/// checked before the repository is opened.
fn request(a: BackupArgs) -> Result<DiskBackupRequest> {
    let is_nbd = a
        .image
        .as_ref()
        .is_some_and(|i| is_nbd_uri(&i.to_string_lossy()));
    let disk = match (&a.disk, &a.image, &a.drive) {
        (Some(d), _, _) => d.clone(),
        (None, Some(_), _) if is_nbd => bail!("name the disk of an NBD export with --disk"),
        (None, Some(image), _) => image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .context("cannot name the disk after the image path; pass --disk")?,
        (None, None, Some(drive)) => drive.clone(),
        (None, None, None) => bail!("pass a disk image, or --qmp and --drive"),
    };
    let input = match (a.qmp, a.drive, a.image.clone()) {
        (Some(qmp), Some(drive), _) => DiskInput::Live {
            qmp,
            drive,
            hooks: Hooks {
                pre: a.pre_hook,
                post: a.post_hook,
            },
        },
        (_, _, Some(image)) if is_nbd => DiskInput::Nbd(image.to_string_lossy().into_owned()),
        (_, _, Some(image)) if !image.exists() => {
            bail!("disk image {} does not exist", image.display())
        }
        (_, _, Some(image)) => DiskInput::Image(image),
        _ => bail!("pass a disk image, or --qmp and --drive"),
    };
    let definition = match &a.definition {
        Some(path) => {
            let image = a.image.as_deref().filter(|_| !is_nbd);
            Some(load_definition_file(
                path,
                image.map(|i| (i, disk.as_str())),
            )?)
        }
        None => None,
    };
    Ok(DiskBackupRequest {
        definition,
        vm: a.vm,
        disk,
        input,
        tags: a.tags,
        workers: a
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        upload_concurrency: a.uploads,
    })
}

fn print_text(report: &BackupReport) {
    let reused = if report.chunks == 0 {
        100.0
    } else {
        100.0 * (report.chunks - report.new_chunks) as f64 / report.chunks as f64
    };
    println!(
        "snapshot {} saved: vm {} disk {}",
        report.snapshot.short_id(),
        report.snapshot.meta.vm,
        report.snapshot.meta.disk
    );
    println!("  mode {}: {}", report.mode, report.mode_reason);
    let dirty = report
        .bytes_dirty
        .map(|d| format!(", dirty {}", bytes(d)))
        .unwrap_or_default();
    println!(
        "  disk {}{dirty}, read {}, zero/holes {}",
        bytes(report.disk_size),
        bytes(report.bytes_read),
        bytes(report.zero_bytes)
    );
    println!(
        "  chunks {} ({} new, {reused:.1}% deduplicated), new data {} stored as {} in {} pack(s)",
        report.chunks,
        report.new_chunks,
        bytes(report.new_bytes),
        bytes(report.stored_bytes),
        report.packs
    );
    println!(
        "  took {:.2} s, {} of disk",
        report.duration_secs,
        rate(report.disk_size, report.duration_secs)
    );
}
