//! `lifeboat standby sync`: keeps warm standby disks at the repository's newest
//! recovery points ([`lifeboat_replicator::standby::sync`]).

use std::sync::Arc;

use anyhow::{Context, Result};
use lifeboat_replicator::standby::{Mode, StandbyReport, StandbyRequest, sync};
use lifeboat_store::Progress;

use crate::args::{GlobalArgs, StandbyCommand, StandbySyncArgs};
use crate::output::{ProgressGuard, bytes, print_json};
use crate::repository::open;

pub async fn run(g: &GlobalArgs, c: StandbyCommand) -> Result<()> {
    match c {
        StandbyCommand::Sync(a) => run_sync(g, a).await,
    }
}

async fn run_sync(g: &GlobalArgs, a: StandbySyncArgs) -> Result<()> {
    let repo = open(g).await?;
    let progress = Arc::new(Progress::default());
    let guard = ProgressGuard::start("standby", progress.clone(), !g.quiet && !g.json);
    let request = StandbyRequest {
        dir: a.dir.clone(),
        keep: usize::try_from(a.keep).unwrap_or(usize::MAX),
        vms: a.vms,
        fetches: a.fetches.max(1),
    };
    let report = sync(repo, request, progress)
        .await
        .with_context(|| format!("standby sync into {}", a.dir.display()))?;
    drop(guard);
    if g.json {
        print_json(&report);
    } else if !g.quiet {
        print_text(&report);
    }
    Ok(())
}

fn print_text(report: &StandbyReport) {
    for (vm, plan) in &report.failed_over {
        println!(
            "{vm}: left alone, failed over by plan {plan} (`lifeboat failover status {plan}`)"
        );
    }
    for d in &report.disks {
        let what = match d.mode {
            Mode::Unchanged => "already at its newest snapshot".to_string(),
            Mode::Full => format!("first point written in full, {}", bytes(d.bytes_written)),
            Mode::Incremental => format!(
                "{} written, {} zeroed ({} chunks fetched, {})",
                bytes(d.bytes_written),
                bytes(d.bytes_zeroed),
                d.chunks_fetched,
                bytes(d.bytes_fetched)
            ),
        };
        println!(
            "{}/{}: point {} ({}): {what}, took {:.2} s",
            d.vm,
            d.disk,
            &d.point[..d.point.len().min(8)],
            d.time,
            d.duration_secs
        );
        for p in &d.points {
            println!(
                "    {} {}  {}",
                &p.snapshot[..p.snapshot.len().min(8)],
                p.time,
                p.path.display()
            );
        }
    }
}
