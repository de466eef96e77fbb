//! Changed-block tracking for image files: choosing how to read a disk, and owning the
//! qcow2 persistent dirty bitmaps that make incremental backups possible.
//!
//! Bitmap lifecycle (all names start with [`BITMAP_PREFIX`]):
//! 1. Before reading, add a fresh bitmap `B_new`. From then on it records every write.
//! 2. If the disk's last committed snapshot names a bitmap `B_prev` that still exists
//!    and is consistent, read only what `B_prev` marks dirty (`incremental`); otherwise
//!    read everything allocated (`scan`) and say why.
//! 3. After the snapshot is committed (it records `B_new`), delete every other Lifeboat
//!    bitmap. After a failure, delete `B_new` and keep `B_prev`.
//!
//! Why no change is ever lost: `B_prev` keeps recording until a later snapshot is
//! committed, so after a failed or killed backup the next one still reads everything
//! written since the last committed snapshot. A killed backup can leave its `B_new`
//! behind; the next successful backup removes it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lifeboat_hypervisor::ToolError;
use lifeboat_hypervisor::nbd::{ALLOCATION_CONTEXT, NbdAddress, NbdClient, dirty_bitmap_context};
use lifeboat_hypervisor::qemu_img::{self, Bitmap, ImageInfo};
use lifeboat_hypervisor::qemu_nbd::QemuNbd;
use lifeboat_store::format::manifest::Manifest;
use lifeboat_store::{Repository, StoreError};

use crate::error::BackupError;
use crate::request::ReadMode;
use crate::source::{DiskSource, NbdSource, RawSource, nbd_err};

pub const BITMAP_PREFIX: &str = "lifeboat-";

/// A disk ready to be read, and what to do with its bitmaps afterwards.
#[derive(Debug)]
pub struct PreparedDisk {
    pub source: Arc<dyn DiskSource>,
    pub mode: ReadMode,
    /// The bitmap this backup started (qcow2 only).
    pub new_bitmap: Option<String>,
    /// Lifeboat's bitmaps that existed before this backup: removed once it commits.
    old_bitmaps: Vec<String>,
    image: PathBuf,
    server: Option<QemuNbd>,
}

/// The previous committed snapshot of the same disk, if any.
pub struct Previous {
    pub id: String,
    pub manifest: Manifest,
}

/// A qemu-img or qemu-nbd failure on `image`, with what to do about a locked image.
fn tool_err(image: &Path, e: ToolError) -> BackupError {
    let hint = if matches!(e, ToolError::ImageLocked { .. }) {
        " — the image is in use (a running VM?); back up running VMs with --qmp"
    } else {
        ""
    };
    BackupError::Source {
        path: image.display().to_string(),
        source: std::io::Error::other(format!("{e}{hint}")),
    }
}

fn lifeboat_bitmaps(info: &ImageInfo) -> impl Iterator<Item = &Bitmap> {
    info.bitmaps()
        .iter()
        .filter(|b| b.name.starts_with(BITMAP_PREFIX))
}

/// The last committed snapshot of `vm`/`disk`, with its manifest.
pub async fn previous_snapshot(
    repo: &Repository,
    vm: &str,
    disk: &str,
) -> Result<Option<Previous>, BackupError> {
    match repo.find_snapshot("latest", Some(vm), Some(disk)).await {
        Ok(s) => Ok(Some(Previous {
            manifest: repo.read_manifest(&s.id).await?,
            id: s.id,
        })),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether a backup source names an existing NBD export rather than a file.
pub fn is_nbd_uri(source: &str) -> bool {
    source.starts_with("nbd://") || source.starts_with("nbd+unix://")
}

/// An existing NBD export (`nbd://host:port/name`, `nbd+unix:///name?socket=PATH`):
/// read what its allocation map says is data. Its bitmaps are not Lifeboat's to rotate.
async fn prepare_export(uri: &str) -> Result<PreparedDisk, BackupError> {
    let address = NbdAddress::parse(uri).map_err(|e| nbd_err(uri, e))?;
    let client = NbdClient::connect(&address, &[ALLOCATION_CONTEXT.to_string()])
        .await
        .map_err(|e| nbd_err(uri, e))?;
    Ok(PreparedDisk {
        source: Arc::new(NbdSource::new(client, uri.to_string())),
        mode: ReadMode::Full {
            reason: "existing NBD export: no Lifeboat-owned bitmap; reading allocated data".into(),
        },
        new_bitmap: None,
        old_bitmaps: Vec::new(),
        image: PathBuf::from(uri),
        server: None,
    })
}

/// What can be done to an image before the repository is open — one `qemu-img info`
/// and, for qcow2, adding the new bitmap (lifecycle step 1) — so that it overlaps the
/// repository's key derivation. Finish with [`prepare`], or [`ImageStart::abandon`].
#[derive(Debug)]
pub struct ImageStart {
    image: PathBuf,
    kind: StartKind,
}

#[derive(Debug)]
enum StartKind {
    Export(String),
    Raw { reason: String },
    Qcow2(Box<Qcow2Start>),
    Other { format: String },
}

#[derive(Debug)]
struct Qcow2Start {
    virtual_size: u64,
    /// Lifeboat's bitmaps before this backup: name and whether qemu marks it consistent.
    existing: Vec<(String, bool)>,
    new_bitmap: String,
    /// The export started before the repository was open, when the image had exactly
    /// one consistent Lifeboat bitmap: almost always the previous snapshot's.
    early: Option<EarlyExport>,
}

#[derive(Debug)]
struct EarlyExport {
    bitmap: String,
    server: QemuNbd,
    source: NbdSource,
}

impl Qcow2Start {
    /// Stops the early export (its lock would stop `qemu-img`) and drops the new bitmap:
    /// the previous one still covers every change since the last committed snapshot.
    async fn abandon(mut self, image: &Path) {
        stop_early(self.early.take()).await;
        if let Err(e) = remove_bitmap(image, &self.new_bitmap).await {
            tracing::warn!("could not remove bitmap {}: {e}", self.new_bitmap);
        }
    }
}

async fn stop_early(early: Option<EarlyExport>) {
    if let Some(e) = early {
        drop(e.source);
        if let Err(err) = e.server.stop().await {
            tracing::warn!("stopping qemu-nbd: {err}");
        }
    }
}

const RAW_REASON: &str = "raw image: no change tracking; reading allocated data";

/// Starts work on `image`: a file, a block device, or an NBD export URI.
pub async fn start(image: &Path) -> Result<ImageStart, BackupError> {
    let kind = if let Some(uri) = image.to_str().filter(|s| is_nbd_uri(s)) {
        StartKind::Export(uri.to_string())
    } else if !std::fs::metadata(image).is_ok_and(|m| m.is_file()) {
        StartKind::Raw {
            reason: RAW_REASON.into(),
        }
    } else {
        match qemu_img::info(image).await {
            // Without qemu-utils, image files can still be backed up as raw disks.
            Err(e) if e.is_not_installed() => {
                tracing::warn!(
                    "qemu-img not found: treating {} as a raw image",
                    image.display()
                );
                StartKind::Raw {
                    reason: "qemu-img not found: reading the file as a raw image".into(),
                }
            }
            Err(e) => return Err(tool_err(image, e)),
            Ok(info) if info.format == "raw" => StartKind::Raw {
                reason: RAW_REASON.into(),
            },
            Ok(info) if info.format == "qcow2" => {
                let existing: Vec<(String, bool)> = lifeboat_bitmaps(&info)
                    .map(|b| (b.name.clone(), !b.in_use()))
                    .collect();
                let new_bitmap = format!("{BITMAP_PREFIX}{:016x}", rand::random::<u64>());
                qemu_img::add_bitmap(image, &new_bitmap)
                    .await
                    .map_err(|e| tool_err(image, e))?;
                let early = start_early_export(image, &existing).await;
                StartKind::Qcow2(Box::new(Qcow2Start {
                    virtual_size: info.virtual_size,
                    existing,
                    new_bitmap,
                    early,
                }))
            }
            Ok(info) => StartKind::Other {
                format: info.format,
            },
        }
    };
    Ok(ImageStart {
        image: image.to_path_buf(),
        kind,
    })
}

/// Which bitmap an incremental will read is known only once the repository is open;
/// when the image has exactly one consistent candidate, qemu-nbd is started now, during
/// the repository's key derivation. A failure here only means starting it later.
async fn start_early_export(image: &Path, existing: &[(String, bool)]) -> Option<EarlyExport> {
    let mut consistent = existing.iter().filter(|b| b.1);
    let (Some((bitmap, _)), None) = (consistent.next(), consistent.next()) else {
        return None;
    };
    match serve(image, "qcow2", Some(bitmap)).await {
        Ok((server, source)) => Some(EarlyExport {
            bitmap: bitmap.clone(),
            server,
            source,
        }),
        Err(e) => {
            tracing::debug!("early export of {bitmap} failed ({e}); exporting later");
            None
        }
    }
}

impl ImageStart {
    /// Undoes [`start`] when the backup ends before [`prepare`]: stops any early export
    /// and drops the new bitmap.
    pub async fn abandon(self) {
        if let StartKind::Qcow2(q) = self.kind {
            q.abandon(&self.image).await;
        }
    }
}

/// Picks the source and read mode for the started image (the disk `vm`/`disk`).
pub async fn prepare(
    start: ImageStart,
    repo: &Repository,
    vm: &str,
    disk: &str,
) -> Result<PreparedDisk, BackupError> {
    let image = start.image.as_path();
    match start.kind {
        StartKind::Export(uri) => prepare_export(&uri).await,
        StartKind::Raw { reason } => Ok(PreparedDisk {
            source: Arc::new(RawSource::open(image)?),
            mode: ReadMode::Full { reason },
            new_bitmap: None,
            old_bitmaps: Vec::new(),
            image: image.to_path_buf(),
            server: None,
        }),
        StartKind::Other { format } => {
            let reason = format!("{format} images have no dirty bitmaps; reading allocated data");
            let (server, source) = serve(image, &format, None).await?;
            Ok(PreparedDisk {
                source: Arc::new(source),
                mode: ReadMode::Full { reason },
                new_bitmap: None,
                old_bitmaps: Vec::new(),
                image: image.to_path_buf(),
                server: Some(server),
            })
        }
        StartKind::Qcow2(mut q) => {
            let prepared = match previous_snapshot(repo, vm, disk).await {
                Ok(previous) => prepare_qcow2(image, &mut q, previous).await,
                Err(e) => Err(e),
            };
            if prepared.is_err() {
                q.abandon(image).await;
            }
            prepared
        }
    }
}

async fn serve(
    image: &Path,
    format: &str,
    bitmap: Option<&str>,
) -> Result<(QemuNbd, NbdSource), BackupError> {
    let what = image.display().to_string();
    let server = QemuNbd::start(image, Some(format), bitmap)
        .await
        .map_err(|e| tool_err(image, e))?;
    let mut contexts = vec![ALLOCATION_CONTEXT.to_string()];
    contexts.extend(bitmap.map(dirty_bitmap_context));
    let client = NbdClient::connect(&server.address(), &contexts)
        .await
        .map_err(|e| nbd_err(&what, e))?;
    Ok((server, NbdSource::new(client, what)))
}

async fn prepare_qcow2(
    image: &Path,
    q: &mut Qcow2Start,
    previous: Option<Previous>,
) -> Result<PreparedDisk, BackupError> {
    let usable = |name: &str| q.existing.iter().find(|b| b.0 == name).map(|b| b.1);
    let previous_exists = previous.is_some();
    let plan: Result<(Previous, String), String> = match previous {
        None => Err("first backup of this disk".into()),
        Some(p) => match p.manifest.meta.cbt_bitmap.clone() {
            None => Err(format!(
                "previous snapshot {} has no dirty bitmap",
                &p.id[..8]
            )),
            Some(b) if p.manifest.meta.size != q.virtual_size => Err(format!(
                "disk size changed since snapshot {} (bitmap {b} not used)",
                &p.id[..8]
            )),
            Some(b) => match usable(&b) {
                None => Err(format!(
                    "bitmap {b} of snapshot {} is missing from the image",
                    &p.id[..8]
                )),
                Some(false) => Err(format!(
                    "existing bitmap {b} was invalid (image not closed cleanly) and has been cleared"
                )),
                Some(true) => Ok((p, b)),
            },
        },
    };
    // A first backup reading everything is expected; losing a bitmap is worth a warning
    // (like Proxmox's "existing bitmap was invalid and has been cleared").
    match (&plan, previous_exists) {
        (Err(reason), true) => tracing::warn!("{}: full read: {reason}", image.display()),
        (Err(reason), false) => tracing::info!("{}: full read: {reason}", image.display()),
        (Ok(_), _) => {}
    }
    let bitmap = plan.as_ref().ok().map(|(_, b)| b.as_str());
    // The early export serves a full read as well as it serves its own bitmap.
    let (server, source) = match q.early.take() {
        Some(e) if bitmap.is_none_or(|b| b == e.bitmap) => (e.server, e.source),
        other => {
            stop_early(other).await;
            serve(image, "qcow2", bitmap).await?
        }
    };
    let mode = match plan {
        Ok((prev, bitmap)) => ReadMode::Incremental {
            reason: format!(
                "qcow2 dirty bitmap {bitmap} since snapshot {}",
                &prev.id[..8]
            ),
            dirty: source.dirty_ranges(&bitmap).await?,
            parent: prev.id,
            previous: Arc::new(prev.manifest.extents),
        },
        Err(reason) => ReadMode::Full { reason },
    };
    Ok(PreparedDisk {
        source: Arc::new(source),
        mode,
        new_bitmap: Some(q.new_bitmap.clone()),
        old_bitmaps: q.existing.iter().map(|b| b.0.clone()).collect(),
        image: image.to_path_buf(),
        server: Some(server),
    })
}

async fn remove_bitmap(image: &Path, bitmap: &str) -> Result<(), BackupError> {
    qemu_img::remove_bitmap(image, bitmap)
        .await
        .map_err(|e| tool_err(image, e))
}

impl PreparedDisk {
    /// Stops the export and keeps only the new bitmap: the snapshot that records it is
    /// committed, so older bitmaps are no longer needed.
    pub async fn committed(mut self) -> Result<(), BackupError> {
        self.stop_server().await;
        // The bitmaps that were there when this backup started (a killed backup's
        // leftover among them), not whatever exists now: one added since belongs to
        // someone else.
        for b in std::mem::take(&mut self.old_bitmaps) {
            remove_bitmap(&self.image, &b).await?;
        }
        Ok(())
    }

    /// Stops the export and drops the new bitmap; the previous one still covers every
    /// change since the last committed snapshot.
    pub async fn failed(mut self) {
        self.stop_server().await;
        if let Some(b) = self.new_bitmap.take()
            && let Err(e) = remove_bitmap(&self.image, &b).await
        {
            tracing::warn!("could not remove bitmap {b} after a failed backup: {e}");
        }
    }

    async fn stop_server(&mut self) {
        if let Some(server) = self.server.take()
            && let Err(e) = server.stop().await
        {
            tracing::warn!("stopping qemu-nbd: {e}");
        }
    }
}
