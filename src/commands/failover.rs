//! `lifeboat failover PLAN` and `failover status|abort|commit`: maps the plan, its
//! networks and its repository (with its standby directory) to a
//! [`lifeboat_replicator::failover`] request, and renders the recorded state.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use lifeboat_hypervisor::launch::{QemuLauncher, power_off_by_qmp};
use lifeboat_policies::Config;
use lifeboat_replicator::drill::PointChoice;
use lifeboat_replicator::failover::{
    FailoverError, FailoverKind, FailoverRequest, FailoverState, FailoverStates, Phase, abort,
    commit, fail_over,
};

use crate::args::{
    DrillFiles, FailoverAbortArgs, FailoverArgs, FailoverCommand, FailoverPlanArgs,
    FailoverPrepareArgs, FailoverRunArgs, FailoverStatusArgs, GlobalArgs,
};
use crate::config_file::{self, global_for, load};
use crate::final_backup::final_backups;
use crate::output::{bytes, print_json};
use crate::repository::open;

pub async fn run(g: &GlobalArgs, a: FailoverArgs) -> Result<ExitCode> {
    match a.command {
        Some(FailoverCommand::Status(s)) => status(g, s),
        Some(FailoverCommand::Abort(a)) => abort_failover(g, a).await,
        Some(FailoverCommand::Commit(c)) => commit_failover(g, c).await,
        Some(FailoverCommand::Prepare(p)) => prepare(g, p).await,
        None => failover(g, a.run).await,
    }
}

fn state_dir(config: &Config, files: &DrillFiles) -> PathBuf {
    files
        .state_dir
        .clone()
        .unwrap_or_else(|| config.daemon.state_dir.clone())
}

async fn failover(g: &GlobalArgs, a: FailoverRunArgs) -> Result<ExitCode> {
    let config = load(&a.files.config)?;
    let name = a.plan.as_deref().unwrap_or_default();
    let (plan, repo_config) = config_file::plan(&config, name)
        .with_context(|| format!("in {}", a.files.config.display()))?;
    let repo = open(&global_for(g, repo_config)).await?;
    let kind = if a.planned {
        FailoverKind::Planned
    } else {
        FailoverKind::Unplanned
    };
    let request = FailoverRequest {
        plan: plan.clone(),
        networks: config.networks.clone(),
        point: PointChoice::parse(&a.point),
        kind,
        standby_dir: repo_config.standby.as_ref().map(|s| s.dir.clone()),
        states: FailoverStates::new(&state_dir(&config, &a.files)),
        fetches: a.fetches.max(1),
        launcher: Arc::new(QemuLauncher::detachable()),
    };
    if !g.quiet && !g.json {
        let how = match kind {
            FailoverKind::Planned => "planned, from the final backups".to_string(),
            FailoverKind::Unplanned => format!("unplanned, point {}", a.point),
        };
        eprintln!("failing over plan {name} from {} ({how})", repo.location());
    }
    let state = fail_over(repo, request)
        .await
        .with_context(|| format!("failover of plan {name}"))?;
    if g.json {
        print_json(&state);
    } else if !g.quiet {
        print_state(&state);
        if kind == FailoverKind::Unplanned {
            println!(
                "warning: the primary copies of these VMs must not run on the production \
                 network while the failover runs"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One plan's state, each VM's liveness checked now.
#[derive(serde::Serialize)]
struct StatusEntry<'a> {
    #[serde(flatten)]
    state: &'a FailoverState,
    /// VM name → whether its QEMU process runs now.
    alive: std::collections::BTreeMap<String, bool>,
}

fn status(g: &GlobalArgs, a: FailoverStatusArgs) -> Result<ExitCode> {
    let config = load(&a.files.config)?;
    let states = FailoverStates::new(&state_dir(&config, &a.files));
    let plans: Vec<&str> = match &a.plan {
        Some(p) => vec![config_file::plan(&config, p)?.0.name.as_str()],
        None => config.plans.iter().map(|p| p.name.as_str()).collect(),
    };
    let mut found = Vec::new();
    for plan in plans {
        if let Some(state) = states.read(plan)? {
            found.push(state);
        }
    }
    let entries: Vec<StatusEntry> = found
        .iter()
        .map(|state| StatusEntry {
            state,
            alive: state
                .vms
                .iter()
                .map(|vm| {
                    let alive = vm.running.as_ref().is_some_and(|r| r.is_running());
                    (vm.vm.clone(), alive)
                })
                .collect(),
        })
        .collect();
    if g.json {
        print_json(&entries);
    } else if entries.is_empty() {
        println!("no plan is failed over");
    } else {
        for e in &entries {
            print_state(e.state);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_state(s: &FailoverState) {
    let kind = match s.kind {
        FailoverKind::Planned => "planned",
        FailoverKind::Unplanned => "unplanned",
    };
    let phase = match (s.phase, s.committed) {
        (Phase::Starting, _) => "INTERRUPTED while starting (`failover abort --discard` cleans up)",
        (Phase::Running, false) => "running",
        (Phase::Running, true) => "running, committed",
    };
    let rto = s.rto_secs.map_or("—".to_string(), |r| format!("{r:.1} s"));
    println!(
        "plan {}: failed over ({kind}) since {}, {phase}; RTO {rto}; from {} ({})",
        s.plan, s.started, s.repository, s.point
    );
    println!("  primary: {}", s.primary);
    for vm in &s.vms {
        let alive = match &vm.running {
            Some(r) if r.is_running() => format!("RUNNING (pid {})", r.pid),
            Some(_) => "NOT RUNNING".to_string(),
            None => "not started".to_string(),
        };
        println!(
            "  {} (group {}): {alive}; RPO {} (point age when started); healthy after {:.1} s",
            vm.vm,
            vm.group,
            age(vm.rpo_secs),
            vm.healthy_secs
        );
        for d in &vm.disks {
            println!(
                "    {}: snapshot {} of {} via {} -> {}",
                d.disk,
                &d.snapshot[..d.snapshot.len().min(8)],
                d.time,
                d.from,
                d.path.display()
            );
        }
        if let Some(r) = &vm.running {
            println!("    console: {}", r.console.display());
            for (guest, host) in &r.forwards {
                println!("    guest port {guest} -> {host}");
            }
        }
        for w in &vm.warnings {
            println!("    warning: {w}");
        }
    }
}

fn age(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        _ => format!("{:.1} h", secs as f64 / 3600.0),
    }
}

async fn abort_failover(g: &GlobalArgs, a: FailoverAbortArgs) -> Result<ExitCode> {
    let config = load(&a.target.files.config)?;
    let (plan, repo_config) = config_file::plan(&config, &a.target.plan)?;
    let standby = repo_config.standby.as_ref().map(|s| s.dir.as_path());
    let states = FailoverStates::new(&state_dir(&config, &a.target.files));
    let grace = Duration::from_secs(a.shutdown_timeout);
    let state = abort(&states, &plan.name, standby, grace)
        .await
        .with_context(|| format!("aborting the failover of plan {}", plan.name))?;
    if g.json {
        print_json(&state);
    } else if !g.quiet {
        println!(
            "failover of plan {} ended: {} VM(s) stopped, {} removed",
            plan.name,
            state.vms.len(),
            state.dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn commit_failover(g: &GlobalArgs, a: FailoverPlanArgs) -> Result<ExitCode> {
    let config = load(&a.files.config)?;
    let (plan, repo_config) = config_file::plan(&config, &a.plan)?;
    let states = FailoverStates::new(&state_dir(&config, &a.files));
    let standby = repo_config.standby.as_ref().map(|s| s.dir.as_path());
    let released = commit(&states, &plan.name, standby)
        .await
        .with_context(|| format!("committing the failover of plan {}", plan.name))?;
    if g.json {
        print_json(&serde_json::json!({ "plan": plan.name, "released_standby": released }));
    } else if !g.quiet {
        println!(
            "failover of plan {} committed; standby images released: {}",
            plan.name,
            if released.is_empty() {
                "none".to_string()
            } else {
                released.join(", ")
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// On the primary: ACPI power-off (never forced), then the final backups.
async fn prepare(g: &GlobalArgs, a: FailoverPrepareArgs) -> Result<ExitCode> {
    for (disk, image) in &a.disks {
        anyhow::ensure!(
            image.exists(),
            "disk {disk}: image {} does not exist; nothing was shut down",
            image.display()
        );
    }
    let repo = open(g).await?;
    if !g.quiet && !g.json {
        eprintln!(
            "shutting down {} (ACPI, up to {} s)",
            a.vm, a.shutdown_timeout
        );
    }
    let grace = Duration::from_secs(a.shutdown_timeout);
    let off = power_off_by_qmp(&a.qmp, grace).await.with_context(|| {
        format!(
            "asking VM {} to power off through {}",
            a.vm,
            a.qmp.display()
        )
    })?;
    if !off {
        return Err(FailoverError::PrimaryStillRunning {
            vm: a.vm.clone(),
            secs: a.shutdown_timeout,
        }
        .into());
    }
    let definition = match &a.definition {
        Some(path) => Some(lifeboat_backup::definition::load_definition_file(
            path, None,
        )?),
        None => None,
    };
    let reports = final_backups(&repo, &a.vm, &a.disks, definition).await?;
    if g.json {
        print_json(&reports);
    } else if !g.quiet {
        for r in &reports {
            println!(
                "final backup of {}/{}: snapshot {} ({} new data)",
                r.snapshot.meta.vm,
                r.snapshot.meta.disk,
                r.snapshot.short_id(),
                bytes(r.new_bytes)
            );
        }
        println!(
            "{} is off and backed up; replicate to the secondary, then run `lifeboat failover \
             PLAN --planned` there",
            a.vm
        );
    }
    Ok(ExitCode::SUCCESS)
}
