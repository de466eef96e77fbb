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

use lifeboat_store::format::manifest::Manifest;
use lifeboat_store::{Repository, StoreError};
use serde::Deserialize;
use tokio::process::Command;

use crate::nbd::{NbdAddress, NbdClient, NbdError, QemuNbd, detect_format};
use crate::nbd_source::{ALLOCATION_CONTEXT, NbdSource, dirty_bitmap_context, nbd_err};
use crate::source::{DiskSource, RawSource};
use crate::{BackupError, ReadMode};

pub const BITMAP_PREFIX: &str = "lifeboat-";

/// A disk ready to be read, and what to do with its bitmaps afterwards.
#[derive(Debug)]
pub struct PreparedDisk {
    pub source: Arc<dyn DiskSource>,
    pub mode: ReadMode,
    /// The bitmap this backup started (qcow2 only).
    pub new_bitmap: Option<String>,
    image: PathBuf,
    server: Option<QemuNbd>,
}

/// The previous committed snapshot of the same disk, if any.
pub struct Previous {
    pub id: String,
    pub manifest: Manifest,
}

#[derive(Deserialize)]
struct ImageInfo {
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    #[serde(rename = "format-specific")]
    format_specific: Option<FormatSpecific>,
}

#[derive(Deserialize)]
struct FormatSpecific {
    data: Option<FormatData>,
}

#[derive(Deserialize)]
struct FormatData {
    #[serde(default)]
    bitmaps: Vec<BitmapInfo>,
}

#[derive(Deserialize)]
struct BitmapInfo {
    name: String,
    #[serde(default)]
    flags: Vec<String>,
}

/// Runs `qemu-img ARGS IMAGE TRAILING`.
async fn qemu_img(args: &[&str], image: &Path, trailing: &[&str]) -> Result<Vec<u8>, BackupError> {
    let out = Command::new("qemu-img")
        .args(args)
        .arg(image)
        .args(trailing)
        .output()
        .await
        .map_err(|e| {
            source_err(
                image,
                format!("running qemu-img (is qemu-utils installed?): {e}"),
            )
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains("lock") {
            " — the image is in use (a running VM?); back up running VMs with --qmp"
        } else {
            ""
        };
        return Err(source_err(
            image,
            format!(
                "qemu-img {} failed: {}{hint}",
                args.join(" "),
                stderr.trim()
            ),
        ));
    }
    Ok(out.stdout)
}

fn source_err(image: &Path, detail: String) -> BackupError {
    BackupError::Source {
        path: image.display().to_string(),
        source: std::io::Error::other(detail),
    }
}

async fn image_info(image: &Path) -> Result<ImageInfo, BackupError> {
    let json = qemu_img(&["info", "--output=json", "-U"], image, &[]).await?;
    serde_json::from_slice(&json)
        .map_err(|e| source_err(image, format!("reading qemu-img info: {e}")))
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
        image: PathBuf::from(uri),
        server: None,
    })
}

/// Picks the source and read mode for `image` (the disk `vm`/`disk`), creating the new
/// bitmap for qcow2.
pub async fn prepare(
    image: &Path,
    repo: &Repository,
    vm: &str,
    disk: &str,
) -> Result<PreparedDisk, BackupError> {
    if let Some(uri) = image.to_str().filter(|s| is_nbd_uri(s)) {
        return prepare_export(uri).await;
    }
    let is_file = std::fs::metadata(image)
        .map(|m| m.is_file())
        .unwrap_or(false);
    let format = if !is_file {
        "raw".to_string() // block devices
    } else {
        match detect_format(image).await {
            Ok(f) => f,
            // Without qemu-utils, image files can still be backed up as raw disks.
            Err(NbdError::Spawn { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                tracing::warn!(
                    "qemu-img not found: treating {} as a raw image",
                    image.display()
                );
                "raw".to_string()
            }
            Err(e) => return Err(nbd_err(&image.display().to_string(), e)),
        }
    };
    let raw = |reason: &str| -> Result<PreparedDisk, BackupError> {
        Ok(PreparedDisk {
            source: Arc::new(RawSource::open(image)?),
            mode: ReadMode::Full {
                reason: reason.to_string(),
            },
            new_bitmap: None,
            image: image.to_path_buf(),
            server: None,
        })
    };
    match format.as_str() {
        "raw" => raw("raw image: no change tracking; reading allocated data"),
        "qcow2" => prepare_qcow2(image, previous_snapshot(repo, vm, disk).await?).await,
        other => {
            let reason = format!("{other} images have no dirty bitmaps; reading allocated data");
            let (server, source) = serve(image, other, None).await?;
            Ok(PreparedDisk {
                source: Arc::new(source),
                mode: ReadMode::Full { reason },
                new_bitmap: None,
                image: image.to_path_buf(),
                server: Some(server),
            })
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
        .map_err(|e| nbd_err(&what, e))?;
    let mut contexts = vec![ALLOCATION_CONTEXT.to_string()];
    contexts.extend(bitmap.map(dirty_bitmap_context));
    let client = NbdClient::connect(&server.address(), &contexts)
        .await
        .map_err(|e| nbd_err(&what, e))?;
    Ok((server, NbdSource::new(client, what)))
}

async fn prepare_qcow2(
    image: &Path,
    previous: Option<Previous>,
) -> Result<PreparedDisk, BackupError> {
    let info = image_info(image).await?;
    let bitmaps = info
        .format_specific
        .and_then(|f| f.data)
        .map(|d| d.bitmaps)
        .unwrap_or_default();
    let usable = |name: &str| {
        bitmaps
            .iter()
            .find(|b| b.name == name)
            .map(|b| !b.flags.iter().any(|f| f == "in-use"))
    };
    let previous_exists = previous.is_some();
    let plan: Result<(Previous, String), String> = match previous {
        None => Err("first backup of this disk".into()),
        Some(p) => match p.manifest.meta.cbt_bitmap.clone() {
            None => Err(format!(
                "previous snapshot {} has no dirty bitmap",
                &p.id[..8]
            )),
            Some(b) if p.manifest.meta.size != info.virtual_size => Err(format!(
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
    let new_bitmap = format!("{BITMAP_PREFIX}{:016x}", rand::random::<u64>());
    qemu_img(&["bitmap", "--add"], image, &[&new_bitmap]).await?;
    let prepared = async {
        match plan {
            Ok((prev, bitmap)) => {
                let (server, source) = serve(image, "qcow2", Some(&bitmap)).await?;
                let dirty = source.dirty_ranges(&bitmap).await?;
                Ok(PreparedDisk {
                    source: Arc::new(source),
                    mode: ReadMode::Incremental {
                        reason: format!(
                            "qcow2 dirty bitmap {bitmap} since snapshot {}",
                            &prev.id[..8]
                        ),
                        parent: prev.id,
                        previous: Arc::new(prev.manifest.extents),
                        dirty,
                    },
                    new_bitmap: Some(new_bitmap.clone()),
                    image: image.to_path_buf(),
                    server: Some(server),
                })
            }
            Err(reason) => {
                let (server, source) = serve(image, "qcow2", None).await?;
                Ok(PreparedDisk {
                    source: Arc::new(source),
                    mode: ReadMode::Full { reason },
                    new_bitmap: Some(new_bitmap.clone()),
                    image: image.to_path_buf(),
                    server: Some(server),
                })
            }
        }
    }
    .await;
    if prepared.is_err() {
        let _ = remove_bitmap(image, &new_bitmap).await;
    }
    prepared
}

async fn remove_bitmap(image: &Path, bitmap: &str) -> Result<(), BackupError> {
    qemu_img(&["bitmap", "--remove"], image, &[bitmap])
        .await
        .map(|_| ())
}

impl PreparedDisk {
    /// Stops the export and keeps only the new bitmap: the snapshot that records it is
    /// committed, so older bitmaps are no longer needed.
    pub async fn committed(mut self) -> Result<(), BackupError> {
        self.stop_server().await;
        let Some(keep) = self.new_bitmap.clone() else {
            return Ok(());
        };
        let info = image_info(&self.image).await?;
        let bitmaps = info
            .format_specific
            .and_then(|f| f.data)
            .map(|d| d.bitmaps)
            .unwrap_or_default();
        for b in bitmaps
            .iter()
            .filter(|b| b.name.starts_with(BITMAP_PREFIX) && b.name != keep)
        {
            remove_bitmap(&self.image, &b.name).await?;
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
