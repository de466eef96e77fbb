//! `qemu-img` on an image file: its format, size and persistent dirty bitmaps, and
//! adding or removing a bitmap; and the qcow2 chain operations a standby directory
//! needs (create an image or overlay, check, commit an overlay, rebase unsafely).
//!
//! Reading uses `--force-share`, so it works on an image a running VM has open.
//! Changing bitmaps needs the image's write lock and fails with
//! [`ToolError::ImageLocked`] while another process holds it. Which bitmaps to keep
//! is the caller's business; this only runs the tool.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;
use tokio::process::Command;

use crate::tool::ToolError;

const TOOL: &str = "qemu-img";

/// What `qemu-img info` reports about an image.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageInfo {
    /// "qcow2", "raw", "vhdx", "vmdk", "vdi", …
    pub format: String,
    /// Size of the disk the image holds, in bytes.
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    #[serde(rename = "format-specific")]
    format_specific: Option<FormatSpecific>,
}

#[derive(Debug, Clone, Deserialize)]
struct FormatSpecific {
    data: Option<FormatData>,
}

#[derive(Debug, Clone, Deserialize)]
struct FormatData {
    #[serde(default)]
    bitmaps: Vec<Bitmap>,
}

/// A persistent dirty bitmap stored in a qcow2 image.
#[derive(Debug, Clone, Deserialize)]
pub struct Bitmap {
    pub name: String,
    /// qemu's flags: "auto" (records writes), "in-use" (see [`Bitmap::in_use`]).
    #[serde(default)]
    pub flags: Vec<String>,
}

impl Bitmap {
    /// The image was not closed cleanly since QEMU last opened it for writing (or a
    /// process has it open now): the bitmap may miss writes.
    pub fn in_use(&self) -> bool {
        self.flags.iter().any(|f| f == "in-use")
    }
}

impl ImageInfo {
    /// The persistent dirty bitmaps (qcow2 only; empty for other formats).
    pub fn bitmaps(&self) -> &[Bitmap] {
        self.format_specific
            .as_ref()
            .and_then(|f| f.data.as_ref())
            .map_or(&[], |d| d.bitmaps.as_slice())
    }
}

/// `qemu-img info` of `image`.
pub async fn info(image: &Path) -> Result<ImageInfo, ToolError> {
    let (abs, json) = run(&["info", "--output=json", "--force-share"], image, &[]).await?;
    serde_json::from_slice(&json).map_err(|e| ToolError::Failed {
        tool: TOOL,
        message: format!("info {} printed unexpected JSON: {e}", abs.display()),
    })
}

/// The image format `qemu-img info` detects: "qcow2", "raw", "vhdx", "vmdk", "vdi", …
/// Works on images a running VM has open.
pub async fn detect_format(image: &Path) -> Result<String, ToolError> {
    Ok(info(image).await?.format)
}

/// Adds the persistent dirty bitmap `name` to a qcow2 image; from now on it records
/// every write.
pub async fn add_bitmap(image: &Path, name: &str) -> Result<(), ToolError> {
    run(&["bitmap", "--add"], image, &[name]).await.map(drop)
}

/// Removes the persistent dirty bitmap `name` from a qcow2 image.
pub async fn remove_bitmap(image: &Path, name: &str) -> Result<(), ToolError> {
    run(&["bitmap", "--remove"], image, &[name]).await.map(drop)
}

/// Creates the qcow2 image `image` of `size` bytes; with `backing`, an overlay on
/// that qcow2 file. A relative `backing` is stored as given and resolved from the
/// overlay's directory, so a directory of chained images can move as a whole.
pub async fn create_qcow2(image: &Path, size: u64, backing: Option<&str>) -> Result<(), ToolError> {
    create_overlay(image, size, backing.map(|b| (b, "qcow2"))).await
}

/// Creates the qcow2 image `image` of `size` bytes, an overlay on `backing` of the
/// given format when one is given: a file name (resolved as for [`create_qcow2`]) or
/// an NBD URI (`nbd+unix:///?socket=PATH`, with format `raw`).
pub async fn create_overlay(
    image: &Path,
    size: u64,
    backing: Option<(&str, &str)>,
) -> Result<(), ToolError> {
    let mut args: Vec<String> = vec!["create".into(), "-q".into(), "-f".into(), "qcow2".into()];
    if let Some((b, format)) = backing {
        args.extend(["-b".into(), b.into(), "-F".into(), format.into()]);
    }
    // Run in the image's directory, so that QEMU versions that resolve a relative
    // backing name from the current directory agree with those that resolve it from
    // the overlay's; "./" keeps a name like "host:file" from reading as a protocol.
    let name = image.file_name().ok_or_else(|| ToolError::Failed {
        tool: TOOL,
        message: format!("{} names no file", image.display()),
    })?;
    args.push(Path::new(".").join(name).display().to_string());
    args.push(size.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    exec(&args, image.parent()).await.map(drop)
}

/// `qemu-img check` of a qcow2 image: fails on corruption. Leaked clusters (exit
/// status 3) only waste space and pass.
pub async fn check_qcow2(image: &Path) -> Result<(), ToolError> {
    match run(&["check", "-q", "-f", "qcow2"], image, &[]).await {
        Err(ToolError::Failed { message, .. }) if message.contains("exit status: 3") => Ok(()),
        other => other.map(drop),
    }
}

/// `qemu-img commit -d`: writes the qcow2 overlay `image`'s data into its backing
/// file, leaving the overlay as it is (so it still reads the same).
pub async fn commit(image: &Path) -> Result<(), ToolError> {
    run(&["commit", "-q", "-d", "-f", "qcow2"], image, &[])
        .await
        .map(drop)
}

/// `qemu-img rebase -u`: points the qcow2 overlay `image` at the qcow2 file
/// `backing` (relative to the overlay's directory) without copying anything; only
/// correct when the new backing reads the same as the old one.
pub async fn rebase_unsafe(image: &Path, backing: &str) -> Result<(), ToolError> {
    run(
        &[
            "rebase", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b", backing,
        ],
        image,
        &[],
    )
    .await
    .map(drop)
}

/// `qemu-img rebase -b ""` (safe mode): copies everything the qcow2 overlay `image`
/// still reads from its backing chain into it and drops the backing file, so the
/// image stands alone. Only for an image no running VM has open (a running one is
/// streamed over QMP: [`crate::block_stream`]).
pub async fn flatten(image: &Path) -> Result<(), ToolError> {
    run(&["rebase", "-q", "-f", "qcow2", "-b", ""], image, &[])
        .await
        .map(drop)
}

/// `qemu-img convert -O raw`: a standalone, sparse raw copy of `image` (any format,
/// its backing chain flattened) at `target`, which must not exist yet. The copy is
/// the target's own: nothing of `image` is written or kept referenced.
pub async fn convert_to_raw(image: &Path, target: &Path) -> Result<(), ToolError> {
    let target = std::path::absolute(target).map_err(|e| ToolError::Failed {
        tool: TOOL,
        message: format!("cannot resolve {}: {e}", target.display()),
    })?;
    // "./"-free absolute path: a name like "host:file" must not read as a protocol.
    let target = target.display().to_string();
    run(&["convert", "-q", "-O", "raw"], image, &[&target])
        .await
        .map(drop)
}

/// Runs `qemu-img ARGS IMAGE TRAILING` on the image's absolute path (QEMU would read
/// "host:file" as a protocol, "-x" as an option); returns that path and stdout.
async fn run(
    args: &[&str],
    image: &Path,
    trailing: &[&str],
) -> Result<(PathBuf, Vec<u8>), ToolError> {
    let abs = tokio::fs::canonicalize(image)
        .await
        .map_err(|e| ToolError::Failed {
            tool: TOOL,
            message: format!("cannot open image {}: {e}", image.display()),
        })?;
    let path = abs.display().to_string();
    let all: Vec<&str> = args
        .iter()
        .copied()
        .chain([path.as_str()])
        .chain(trailing.iter().copied())
        .collect();
    let stdout = exec(&all, None).await?;
    Ok((abs, stdout))
}

/// Runs `qemu-img ARGS` (in `cwd` if given) and returns its stdout.
async fn exec(args: &[&str], cwd: Option<&Path>) -> Result<Vec<u8>, ToolError> {
    let mut cmd = Command::new(TOOL);
    cmd.args(args).stdin(Stdio::null());
    if let Some(dir) = cwd.filter(|d| !d.as_os_str().is_empty()) {
        cmd.current_dir(dir);
    }
    let out = cmd
        .output()
        .await
        .map_err(|source| ToolError::Spawn { tool: TOOL, source })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = format!("{} ({}): {}", args.join(" "), out.status, stderr.trim());
    // QEMU says `Failed to get "write" lock` (or a shared one) when another process
    // has the image open.
    if stderr.contains("Failed to get") && stderr.contains("lock") {
        Err(ToolError::ImageLocked {
            tool: TOOL,
            message,
        })
    } else {
        Err(ToolError::Failed {
            tool: TOOL,
            message,
        })
    }
}
