//! `qemu-img` on an image file: its format, size and persistent dirty bitmaps, and
//! adding or removing a bitmap.
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
    let out = Command::new(TOOL)
        .args(args)
        .arg(&abs)
        .args(trailing)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| ToolError::Spawn { tool: TOOL, source })?;
    if out.status.success() {
        return Ok((abs, out.stdout));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let command: Vec<String> = args
        .iter()
        .map(|a| a.to_string())
        .chain([abs.display().to_string()])
        .chain(trailing.iter().map(|a| a.to_string()))
        .collect();
    let message = format!("{} ({}): {}", command.join(" "), out.status, stderr.trim());
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
