//! Final backups: a shut-down VM's disks backed up with
//! [`FINAL_BACKUP_TAG`], the point a planned failover (or the planned failover back
//! after failback) starts from, so nothing the VM wrote is lost. Shared by `failover
//! prepare` (on the primary) and `failback` (on the secondary).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use lifeboat_backup::BackupReport;
use lifeboat_backup::disk_backup::{DiskBackupRequest, DiskInput, prepare_disk_backup};
use lifeboat_replicator::failover::FINAL_BACKUP_TAG;
use lifeboat_store::format::vm_definition::VmDefinition;
use lifeboat_store::{Progress, Repository};

/// Pack uploads in flight for a final backup (the `backup` command's default).
const UPLOADS: usize = 4;

/// Backs up each `(disk name, image)` of the shut-down `vm` into `repo`, tagged
/// final, recording `definition` — else the one of the VM's newest snapshot, so the
/// VM boots on the other site with the shape it had.
pub async fn final_backups(
    repo: &Arc<Repository>,
    vm: &str,
    disks: &[(String, PathBuf)],
    definition: Option<VmDefinition>,
) -> Result<Vec<BackupReport>> {
    let definition = match definition {
        Some(d) => Some(d),
        None => newest_definition(repo, vm).await?,
    };
    let mut reports = Vec::new();
    for (disk, image) in disks {
        let request = DiskBackupRequest {
            vm: vm.to_string(),
            disk: disk.clone(),
            input: DiskInput::Image(image.clone()),
            tags: vec![FINAL_BACKUP_TAG.to_string()],
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            upload_concurrency: UPLOADS,
            definition: definition.clone(),
        };
        let repo = repo.clone();
        let prepared = prepare_disk_backup(request, async { Ok::<_, anyhow::Error>(repo) })
            .await
            .with_context(|| format!("final backup of {vm}/{disk} ({})", image.display()))?;
        let report = prepared
            .run(Arc::new(Progress::default()))
            .await
            .with_context(|| format!("final backup of {vm}/{disk} ({})", image.display()))?;
        reports.push(report);
    }
    Ok(reports)
}

/// The definition recorded with `vm`'s newest snapshot that has one.
async fn newest_definition(repo: &Repository, vm: &str) -> Result<Option<VmDefinition>> {
    let mut mine: Vec<_> = repo
        .snapshots()
        .await?
        .into_iter()
        .filter(|s| s.meta.vm == vm && s.meta.vm_definition.is_some())
        .collect();
    mine.sort_by(|a, b| a.meta.time.cmp(&b.meta.time));
    Ok(mine.pop().and_then(|s| s.meta.vm_definition))
}
