//! One disk's whole backup, for any caller (the CLI, the daemon, later a failover):
//! open the disk input — an image file, an NBD export or a running VM's drive —,
//! choose how to read it (scan or incremental), run the pipeline, then commit the
//! dirty bitmap the snapshot records, or roll it back if the backup failed, so that
//! no write is ever missed by the next backup (see `cbt` and `live` for the rules).
//!
//! Two calls, so a caller can show progress only while data moves:
//! [`prepare_disk_backup`] (the repository is opened by the caller, side by side with
//! the image's own preparation) and [`PreparedBackup::run`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lifeboat_store::format::vm_definition::VmDefinition;
use lifeboat_store::{Progress, Repository};

use crate::cbt::{self, PreparedDisk};
use crate::error::BackupError;
use crate::live::{Hooks, LiveDisk, prepare_live};
use crate::pipeline::run_backup;
use crate::request::{BackupReport, BackupRequest, ReadMode};
use crate::source::DiskSource;

/// Where a disk's data comes from.
#[derive(Debug, Clone)]
pub enum DiskInput {
    /// A disk image (qcow2, raw, VHDX, VMDK, …) or a block device.
    Image(PathBuf),
    /// An existing NBD export: `nbd://host:port/name` or `nbd+unix:///name?socket=PATH`.
    Nbd(String),
    /// A drive (block node name, or device / qdev id) of a running QEMU VM, read through
    /// a point-in-time view taken over its QMP socket between the hooks.
    Live {
        qmp: PathBuf,
        drive: String,
        hooks: Hooks,
    },
}

/// One disk to back up, and how hard to push.
#[derive(Debug, Clone)]
pub struct DiskBackupRequest {
    pub vm: String,
    pub disk: String,
    pub input: DiskInput,
    pub tags: Vec<String>,
    /// Threads hashing, compressing and encrypting.
    pub workers: usize,
    /// Pack uploads in flight at once.
    pub upload_concurrency: usize,
    /// The VM's definition; for a live backup without one, it is read over QMP.
    pub definition: Option<VmDefinition>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiskBackupError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    // The cause is printed by the error chain (`{:#}`), not repeated here.
    #[error("preparing a point-in-time view of drive {drive} through {}", qmp.display())]
    LiveView {
        drive: String,
        qmp: PathBuf,
        #[source]
        source: BackupError,
    },
    /// The snapshot is committed and restorable; only removing the previous bitmaps
    /// failed (the next backup removes them).
    #[error("snapshot committed, but cleaning up old dirty bitmaps failed")]
    BitmapCleanup {
        report: Box<BackupReport>,
        #[source]
        source: BackupError,
    },
}

impl DiskBackupError {
    /// Whether running the same backup again may succeed (uploaded data is reused).
    pub fn is_retryable(&self) -> bool {
        match self {
            DiskBackupError::Backup(e)
            | DiskBackupError::LiveView { source: e, .. }
            | DiskBackupError::BitmapCleanup { source: e, .. } => e.is_retryable(),
        }
    }
}

/// A disk ready to read: an image file or NBD export (`cbt`), or a running VM's drive
/// (`live`).
enum Prepared {
    Image(PreparedDisk),
    Live(LiveDisk),
}

impl Prepared {
    fn source(&self) -> Arc<dyn DiskSource> {
        match self {
            Prepared::Image(p) => p.source.clone(),
            Prepared::Live(l) => l.source.clone(),
        }
    }

    fn mode(&self) -> ReadMode {
        match self {
            Prepared::Image(p) => p.mode.clone(),
            Prepared::Live(l) => l.mode.clone(),
        }
    }

    fn new_bitmap(&self) -> Option<String> {
        match self {
            Prepared::Image(p) => p.new_bitmap.clone(),
            Prepared::Live(l) => l.new_bitmap.clone(),
        }
    }

    async fn committed(self) -> Result<(), BackupError> {
        match self {
            Prepared::Image(p) => p.committed().await,
            Prepared::Live(l) => l.committed().await,
        }
    }

    async fn failed(self) {
        match self {
            Prepared::Image(p) => p.failed().await,
            Prepared::Live(l) => l.failed().await,
        }
    }
}

/// A disk whose source and read mode are chosen and whose new dirty bitmap exists.
/// Finish it with [`run`](Self::run); dropping it instead leaves the new bitmap behind
/// (harmless: the next backup removes it) and, for a live drive, QEMU objects that the
/// next backup of the drive removes.
pub struct PreparedBackup {
    repo: Arc<Repository>,
    prepared: Prepared,
    request: BackupRequest,
}

/// Prepares `request`'s disk for a backup into the repository `repository` resolves to.
///
/// For an image, the image's `qemu-img` calls (and its new bitmap) run while the
/// repository opens: the key derivation takes about as long, and neither needs the
/// other. A live drive needs the repository (its previous snapshot) before anything
/// changes in QEMU, so it waits for it. If the repository cannot be opened, whatever
/// was started on the image is undone and the caller's error returned.
pub async fn prepare_disk_backup<E>(
    request: DiskBackupRequest,
    repository: impl Future<Output = Result<Arc<Repository>, E>>,
) -> Result<PreparedBackup, E>
where
    E: From<DiskBackupError>,
{
    let DiskBackupRequest {
        vm,
        disk,
        input,
        tags,
        workers,
        upload_concurrency,
        definition,
    } = request;
    let (repo, prepared) = match &input {
        DiskInput::Live { qmp, drive, hooks } => {
            let repo = repository.await?;
            let live = prepare_live(qmp, drive, &repo, &vm, &disk, hooks, definition.is_none())
                .await
                .map_err(|source| DiskBackupError::LiveView {
                    drive: drive.clone(),
                    qmp: qmp.clone(),
                    source,
                })?;
            (repo, Prepared::Live(live))
        }
        DiskInput::Image(image) => prepare_image(image, repository, &vm, &disk).await?,
        DiskInput::Nbd(uri) => prepare_image(Path::new(uri), repository, &vm, &disk).await?,
    };
    let definition = match &prepared {
        Prepared::Live(live) if definition.is_none() => live.definition.as_deref().cloned(),
        _ => definition,
    };
    let request = BackupRequest {
        source: prepared.source(),
        mode: prepared.mode(),
        cbt_bitmap: prepared.new_bitmap(),
        vm,
        disk,
        tags,
        workers,
        upload_concurrency,
        definition,
    };
    Ok(PreparedBackup {
        repo,
        prepared,
        request,
    })
}

async fn prepare_image<E>(
    image: &Path,
    repository: impl Future<Output = Result<Arc<Repository>, E>>,
    vm: &str,
    disk: &str,
) -> Result<(Arc<Repository>, Prepared), E>
where
    E: From<DiskBackupError>,
{
    let (repo, started) = tokio::join!(repository, cbt::start(image));
    let started = started.map_err(DiskBackupError::from)?;
    let repo = match repo {
        Ok(repo) => repo,
        Err(e) => {
            started.abandon().await;
            return Err(e);
        }
    };
    let prepared = cbt::prepare(started, &repo, vm, disk)
        .await
        .map_err(DiskBackupError::from)?;
    Ok((repo, Prepared::Image(prepared)))
}

impl PreparedBackup {
    /// How the backup will read the disk, and why.
    pub fn mode(&self) -> &ReadMode {
        &self.request.mode
    }

    /// Runs the backup, then keeps only the new dirty bitmap (the committed snapshot
    /// records it) — or, if the backup failed, drops the new bitmap so the previous
    /// one still covers every change since the last committed snapshot.
    pub async fn run(self, progress: Arc<Progress>) -> Result<BackupReport, DiskBackupError> {
        let PreparedBackup {
            repo,
            prepared,
            request,
        } = self;
        match run_backup(repo, request, progress).await {
            Ok(report) => match prepared.committed().await {
                Ok(()) => Ok(report),
                Err(source) => Err(DiskBackupError::BitmapCleanup {
                    report: Box::new(report),
                    source,
                }),
            },
            Err(e) => {
                prepared.failed().await;
                Err(e.into())
            }
        }
    }
}
