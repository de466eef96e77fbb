//! Making a running VM's qcow2 overlays standalone: QMP `block-stream` copies what
//! each overlay still reads from its backing chain into the overlay, live, while the
//! guest keeps writing; when the job ends QEMU drops the backing file from the
//! overlay. Success is judged by `query-block` afterwards (the overlay has no backing
//! image left), not by the job's disappearance, which looks the same for a failure.
//! `failover commit` uses it so a failed-over VM stops depending on the standby
//! images it booted on, and `export --migrate` so a VM booted on an export stops
//! depending on the repository; [`crate::qemu_img::flatten`] does the same offline.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::qmp::{Qmp, QmpError};

const POLL: Duration = Duration::from_millis(200);
const JOB_PREFIX: &str = "lifeboat-stream-";

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error(
        "the VM's disk {drive} still reads from its backing file after streaming: {detail}; \
         nothing was released, run the command again"
    )]
    Unfinished { drive: String, detail: String },
}

/// Streams the backing data of each of `drives` (the `-drive id=` names) into its
/// overlay in the running VM behind `qmp`; returns once every overlay stands alone,
/// or fails after `limit`.
pub async fn stream_into_overlays(
    qmp: &Path,
    drives: &[String],
    limit: Duration,
) -> Result<(), StreamError> {
    let mut q = Qmp::connect(qmp).await?;
    for drive in drives {
        if backing_of(&mut q, drive).await?.is_none() {
            continue;
        }
        q.execute(
            "block-stream",
            json!({ "job-id": format!("{JOB_PREFIX}{drive}"), "device": drive }),
        )
        .await?;
    }
    let started = Instant::now();
    while ours_running(&mut q).await? {
        if started.elapsed() > limit {
            return Err(StreamError::Unfinished {
                drive: drives.join(", "),
                detail: format!(
                    "the block-stream jobs still run after {} s",
                    limit.as_secs()
                ),
            });
        }
        tokio::time::sleep(POLL).await;
    }
    for drive in drives {
        if let Some(backing) = backing_of(&mut q, drive).await? {
            return Err(StreamError::Unfinished {
                drive: drive.clone(),
                detail: format!(
                    "backing file {backing} (QEMU's log of the VM says why the job stopped)"
                ),
            });
        }
    }
    flush_all(&mut q).await?;
    Ok(())
}

/// Makes what the stream wrote durable before anyone relies on it: the overlay's new
/// header (no backing file) is on disk at once, but the qcow2 tables pointing at the
/// streamed data sit in QEMU's cache until a flush, so a host crash in between would
/// leave an overlay that reads zeros where the backing file's data was. Pausing the
/// VM drains and flushes every drive; it resumes at once (a pause of milliseconds).
async fn flush_all(q: &mut Qmp) -> Result<(), QmpError> {
    let status = q.execute("query-status", Value::Null).await?;
    let running = status["running"].as_bool() == Some(true);
    q.execute("stop", Value::Null).await?;
    if running {
        q.execute("cont", Value::Null).await?;
    }
    Ok(())
}

async fn ours_running(q: &mut Qmp) -> Result<bool, QmpError> {
    let jobs = q.execute("query-block-jobs", Value::Null).await?;
    Ok(jobs.as_array().is_some_and(|jobs| {
        jobs.iter().any(|j| {
            j["device"]
                .as_str()
                .is_some_and(|d| d.starts_with(JOB_PREFIX))
        })
    }))
}

/// The drive of the VM behind `qmp` whose image is backed by a file whose name
/// contains `backing` (e.g. an NBD export's socket path), if there is one.
pub async fn drive_backed_by(qmp: &Path, backing: &str) -> Result<Option<String>, QmpError> {
    let mut q = Qmp::connect(qmp).await?;
    let devices = q.execute("query-block", Value::Null).await?;
    Ok(devices.as_array().and_then(|ds| {
        ds.iter()
            .find(|d| {
                d["inserted"]["image"]["backing-image"]["filename"]
                    .as_str()
                    .is_some_and(|f| f.contains(backing))
            })
            .and_then(|d| d["device"].as_str().map(str::to_string))
    }))
}

/// The backing file `drive`'s image still has, if any.
async fn backing_of(q: &mut Qmp, drive: &str) -> Result<Option<String>, StreamError> {
    let devices = q.execute("query-block", Value::Null).await?;
    let device = devices
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["device"] == drive))
        .ok_or_else(|| StreamError::Unfinished {
            drive: drive.to_string(),
            detail: "the VM has no such drive".into(),
        })?;
    let image = &device["inserted"]["image"];
    Ok(image
        .get("backing-image")
        .map(|b| b["filename"].as_str().unwrap_or("?").to_string()))
}
