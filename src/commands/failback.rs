//! `lifeboat failback PLAN --to REPOSITORY`: the failed-over VMs' final backups,
//! replicated home, then the secondary cleaned up. Orchestrated here because it
//! spans the backup pipeline and the replicator (which must not depend on `backup`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lifeboat_replicator::failover::{FailoverError, FailoverState, FailoverStates, Phase, abort};
use lifeboat_replicator::{ReplicateReport, ReplicateRequest, replicate};
use lifeboat_store::Progress;
use serde::Serialize;

use crate::args::{FailbackArgs, GlobalArgs};
use crate::config_file::{self, global_for, load};
use crate::final_backup::final_backups;
use crate::output::{bytes, print_json};
use crate::repository::open;

#[derive(Serialize)]
struct FailbackReport {
    plan: String,
    /// Final snapshots taken here, by `vm/disk`.
    final_snapshots: Vec<String>,
    /// Total size of the VMs' disks.
    disk_bytes: u64,
    /// Pack bytes replicated to the primary by the final replication.
    bytes_sent: u64,
    /// Seconds from the first VM shutdown to the data being home.
    downtime_secs: f64,
    replication: ReplicateReport,
}

pub async fn run(g: &GlobalArgs, a: FailbackArgs) -> Result<ExitCode> {
    let config = load(&a.files.config)?;
    let (plan, repo_config) = config_file::plan(&config, &a.plan)?;
    let primary_config = primary_repository(&config, &a)?;
    let state_dir: PathBuf = a
        .files
        .state_dir
        .clone()
        .unwrap_or_else(|| config.daemon.state_dir.clone());
    let states = FailoverStates::new(&state_dir);
    let state = running_failover(&states, &plan.name)?;
    let here = open(&global_for(g, repo_config)).await?;
    let home = open(&global_for(g, primary_config))
        .await
        .with_context(|| {
            format!(
                "opening the primary's repository {} (is the primary site back? it must \
                 be the repository this one replicates from, or initialised with `init \
                 --replica-of` this one); nothing was stopped",
                primary_config.url
            )
        })?;
    let request = ReplicateRequest {
        vms: state.vms.iter().map(|v| v.vm.clone()).collect(),
        ..ReplicateRequest::default()
    };
    // Reverse replication works before anything is stopped; whatever is new here
    // already moves while the VMs still run.
    replicate(
        here.clone(),
        home.clone(),
        &request,
        Arc::new(Progress::default()),
    )
    .await
    .context("replicating this site to the primary (nothing was stopped)")?;

    if !(g.quiet || g.json) {
        eprintln!(
            "shutting down {} VM(s) (ACPI, up to {} s)",
            state.vms.len(),
            a.shutdown_timeout
        );
    }
    let down = Instant::now();
    let grace = Duration::from_secs(a.shutdown_timeout);
    power_off_all(&state, grace, a.shutdown_timeout).await?;
    let (final_snapshots, disk_bytes) = take_final_backups(&here, &state).await?;
    let replication = replicate(here, home, &request, Arc::new(Progress::default()))
        .await
        .context(
            "replicating the final backups to the primary; the VMs are off and their disks \
             kept here: run failback again",
        )?;
    let downtime_secs = down.elapsed().as_secs_f64();
    let standby = repo_config.standby.as_ref().map(|s| s.dir.as_path());
    abort(&states, &plan.name, standby, grace)
        .await
        .context("removing the failover's disks on this site (the data is home)")?;
    let report = FailbackReport {
        plan: plan.name.clone(),
        final_snapshots,
        disk_bytes,
        bytes_sent: replication.bytes_sent,
        downtime_secs,
        replication,
    };
    print_report(g, &report);
    Ok(ExitCode::SUCCESS)
}

/// The `[[repository]]` `--to` names.
fn primary_repository<'a>(
    config: &'a lifeboat_policies::Config,
    a: &FailbackArgs,
) -> Result<&'a lifeboat_policies::config::RepositoryConfig> {
    config.repository(&a.to).with_context(|| {
        let known: Vec<&str> = config
            .repositories
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        format!(
            "no repository {:?} in {}; --to names the primary site's [[repository]] \
             (configured: {})",
            a.to,
            a.files.config.display(),
            known.join(", ")
        )
    })
}

/// The plan's failover, which must have finished starting.
fn running_failover(states: &FailoverStates, plan: &str) -> Result<FailoverState> {
    let Some(state) = states.read(plan)? else {
        return Err(FailoverError::NotFailedOver {
            plan: plan.to_string(),
            state: states.path(plan),
            action: "fail back",
        }
        .into());
    };
    if state.phase != Phase::Running {
        bail!(
            "the failover of plan {plan} never finished starting; `lifeboat failover abort \
             {plan} --discard` cleans it up (nothing to fail back)"
        );
    }
    Ok(state)
}

/// Powers every VM off at once (each gets the whole grace period); never forces one.
async fn power_off_all(state: &FailoverState, grace: Duration, secs: u64) -> Result<()> {
    let mut offs = tokio::task::JoinSet::new();
    for vm in &state.vms {
        if let Some(running) = vm.running.clone() {
            let name = vm.vm.clone();
            offs.spawn(async move { (name, running.power_off(grace).await) });
        }
    }
    let mut still = Vec::new();
    for (vm, off) in offs.join_all().await {
        match off {
            Ok(true) => {}
            Ok(false) => still.push(vm),
            Err(e) => still.push(format!("{vm} ({e})")),
        }
    }
    if !still.is_empty() {
        bail!(
            "VM(s) {} did not power off within {secs} s; nothing was backed up. Shut them \
             down in the guest (or raise --shutdown-timeout) and run failback again; VMs \
             already off stay off",
            still.join(", ")
        );
    }
    Ok(())
}

/// Final backups of every failed-over disk; their names and the disks' total size.
async fn take_final_backups(
    here: &Arc<lifeboat_store::Repository>,
    state: &FailoverState,
) -> Result<(Vec<String>, u64)> {
    let mut names = Vec::new();
    let mut disk_bytes = 0;
    for vm in &state.vms {
        let disks: Vec<(String, PathBuf)> = vm
            .disks
            .iter()
            .map(|d| (d.disk.clone(), d.path.clone()))
            .collect();
        for r in final_backups(here, &vm.vm, &disks, None).await? {
            disk_bytes += r.disk_size;
            names.push(format!(
                "{}/{} {}",
                r.snapshot.meta.vm,
                r.snapshot.meta.disk,
                r.snapshot.short_id()
            ));
        }
    }
    Ok((names, disk_bytes))
}

fn print_report(g: &GlobalArgs, report: &FailbackReport) {
    if g.json {
        print_json(report);
    } else if !g.quiet {
        for s in &report.final_snapshots {
            println!("final backup {s}");
        }
        println!(
            "failback of plan {}: {} sent to the primary for {} of disks; VMs down {:.1} s \
             so far. Now on the primary: lifeboat failover {} --planned",
            report.plan,
            bytes(report.bytes_sent),
            bytes(report.disk_bytes),
            report.downtime_secs,
            report.plan
        );
    }
}
