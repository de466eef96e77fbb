//! `lifeboat restore`: writes a snapshot back to a file or block device
//! ([`lifeboat_restore::restore_snapshot`]).

use std::sync::Arc;

use anyhow::Result;
use lifeboat_restore::{RestoreRequest, restore_snapshot};
use lifeboat_store::Progress;

use crate::args::{GlobalArgs, RestoreArgs};
use crate::output::{ProgressGuard, bytes, print_json, rate};
use crate::repository::{open, with_selection_advice};

pub async fn run(g: &GlobalArgs, a: RestoreArgs) -> Result<()> {
    let repo = open(g).await?;
    let snapshot = repo
        .find_snapshot(&a.snapshot, a.vm.as_deref(), a.disk.as_deref())
        .await
        .map_err(with_selection_advice)?;
    let progress = Arc::new(Progress::default());
    let guard = ProgressGuard::start("restore", progress.clone(), !g.quiet && !g.json);
    let request = RestoreRequest {
        snapshot,
        target: a.target,
        overwrite: a.overwrite,
        concurrency: a.fetches,
    };
    let report = restore_snapshot(repo, request, progress).await?;
    drop(guard);
    if g.json {
        print_json(&report);
    } else if !g.quiet {
        println!(
            "restored snapshot {} ({}/{}) to {}: {} disk, {} written, took {:.2} s ({})",
            &report.snapshot[..8],
            report.vm,
            report.disk,
            report.target,
            bytes(report.disk_size),
            bytes(report.bytes_written),
            report.duration_secs,
            rate(report.disk_size, report.duration_secs)
        );
    }
    Ok(())
}
