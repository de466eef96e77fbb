//! `lifeboat drill PLAN` and `lifeboat drill history`: maps the plan, its networks and
//! its repository (with its standby directory) from the configuration to a
//! [`lifeboat_replicator::drill`] request, and renders the report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use lifeboat_hypervisor::launch::QemuLauncher;
use lifeboat_policies::Config;
use lifeboat_policies::config::RepositoryConfig;
use lifeboat_replicator::drill::report::{
    DrillReport, DrillVerdict, HistoryCheck, ReportChain, VmVerdict, check_history,
};
use lifeboat_replicator::drill::{DrillRequest, KeptDrill, PointChoice, clean_up, run_drill};
use lifeboat_replicator::failover::FailoverStates;

use crate::args::{
    DrillArgs, DrillCleanupArgs, DrillCommand, DrillFiles, DrillHistoryArgs, DrillRunArgs,
    GlobalArgs,
};
use crate::config_file::{self, global_for, load};
use crate::output::print_json;
use crate::repository::open;

/// The drill ran and a VM did not boot.
const EXIT_DRILL_FAILED: u8 = 4;
/// `history --verify` found a report that does not hold.
const EXIT_CHAIN_BROKEN: u8 = 3;

pub async fn run(g: &GlobalArgs, a: DrillArgs) -> Result<ExitCode> {
    match a.command {
        Some(DrillCommand::History(h)) => history(g, h).await,
        Some(DrillCommand::Cleanup(c)) => cleanup(g, c),
        None => drill(g, a.run).await,
    }
}

/// The reports directory of the plans recovering from `repo`.
fn reports_dir(config: &Config, files: &DrillFiles, repo: &RepositoryConfig) -> PathBuf {
    files
        .state_dir
        .clone()
        .unwrap_or_else(|| config.daemon.state_dir.clone())
        .join("drills")
        .join(&repo.name)
}

async fn drill(g: &GlobalArgs, a: DrillRunArgs) -> Result<ExitCode> {
    let config = load(&a.files.config)?;
    let name = a.plan.as_deref().unwrap_or_default();
    let (plan, repo_config) = config_file::plan(&config, name)
        .with_context(|| format!("in {}", a.files.config.display()))?;
    let state_dir = a
        .files
        .state_dir
        .clone()
        .unwrap_or_else(|| config.daemon.state_dir.clone());
    if let Some(failover) = FailoverStates::new(&state_dir).read(name)? {
        anyhow::bail!(
            "plan {name} is failed over since {}: its VMs run on this site for real, and a \
             drill would boot second copies of them; drill again after failback (`lifeboat \
             failover status {name}`)",
            failover.started
        );
    }
    let repo = open(&global_for(g, repo_config)).await?;
    let request = DrillRequest {
        plan: plan.clone(),
        networks: config.networks.clone(),
        point: PointChoice::parse(&a.point),
        standby_dir: repo_config.standby.as_ref().map(|s| s.dir.clone()),
        reports_dir: reports_dir(&config, &a.files, repo_config),
        fetches: a.fetches.max(1),
        launcher: Arc::new(QemuLauncher::new()),
        keep: a.keep,
    };
    if !g.quiet && !g.json {
        eprintln!(
            "drilling plan {name} from {} ({})",
            repo.location(),
            a.point
        );
    }
    let mut outcome = run_drill(repo, request)
        .await
        .with_context(|| format!("drill of plan {name}"))?;
    if let Some(e) = &outcome.repository_copy_error {
        eprintln!("warning: the report's copy in the repository could not be stored: {e}");
    }
    if g.json {
        print_json(&serde_json::json!({
            "report": outcome.report,
            "json": outcome.json,
            "html": outcome.html,
        }));
    } else if !g.quiet {
        print_report(&outcome.report);
        println!(
            "report: {} ({})",
            outcome.html.display(),
            outcome.json.display()
        );
    }
    if let Some(kept) = outcome.kept.take() {
        hold_until_signal(&kept, g.quiet).await;
        kept.end().await.context("ending the kept drill")?;
    }
    Ok(match outcome.report.verdict {
        DrillVerdict::Passed => ExitCode::SUCCESS,
        DrillVerdict::Failed => ExitCode::from(EXIT_DRILL_FAILED),
    })
}

fn print_report(r: &DrillReport) {
    for vm in &r.vms {
        let verdict = match vm.verdict {
            VmVerdict::Booted => "BOOTED",
            VmVerdict::Failed => "FAILED",
            VmVerdict::NotStarted => "NOT STARTED",
        };
        let when = vm
            .healthy_secs
            .map(|s| format!(" healthy after {s:.1} s"))
            .unwrap_or_default();
        let why = if vm.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", vm.reason)
        };
        println!("  {} (group {}): {verdict}{when}{why}", vm.vm, vm.group);
        for w in &vm.warnings {
            println!("    warning: {w}");
        }
    }
    let rto = r
        .rto_secs
        .map_or("not reached".to_string(), |s| format!("{s:.1} s"));
    let target = r
        .rto_target_secs
        .map(|t| format!(" (target {t} s)"))
        .unwrap_or_default();
    let verdict = match r.verdict {
        DrillVerdict::Passed => "PASSED",
        DrillVerdict::Failed => "FAILED",
    };
    println!(
        "drill {} of plan {}: {verdict}; RTO {rto}{target}; Lifeboat's overhead {:.1} s",
        r.seq,
        r.plan,
        r.prepare_secs + r.cleanup_secs
    );
}

fn cleanup(g: &GlobalArgs, a: DrillCleanupArgs) -> Result<ExitCode> {
    let config = load(&a.files.config)?;
    let (plan, _) = config_file::plan(&config, &a.plan)?;
    let done = clean_up(plan)?;
    if g.json {
        print_json(&done);
    } else if !g.quiet {
        if done.removed.is_empty() {
            println!(
                "plan {}: no drill left anything in {}",
                plan.name,
                plan.overlay_dir.display()
            );
        }
        for pid in &done.stopped {
            println!("stopped QEMU pid {pid}");
        }
        for dir in &done.removed {
            println!("removed {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn history(g: &GlobalArgs, a: DrillHistoryArgs) -> Result<ExitCode> {
    let config = load(&a.files.config)?;
    let mut repositories: Vec<&RepositoryConfig> = config
        .plans
        .iter()
        .filter_map(|p| config.repository(&p.repository))
        .filter(|r| a.repository.as_ref().is_none_or(|n| *n == r.name))
        .collect();
    repositories.sort_by(|x, y| x.name.cmp(&y.name));
    repositories.dedup_by(|x, y| x.name == y.name);
    let mut checks: Vec<(String, HistoryCheck)> = Vec::new();
    for repo_config in repositories {
        let dir = reports_dir(&config, &a.files, repo_config);
        let repo = open(&global_for(g, repo_config)).await?;
        let chain = ReportChain::open(&dir, repo.evidence_key())?;
        let check = check_history(&chain, Some(&repo), a.verify).await?;
        checks.push((repo_config.name.clone(), check));
    }
    let broken = checks.iter().any(|(_, c)| !c.problems.is_empty());
    if g.json {
        let all: serde_json::Map<String, serde_json::Value> = checks
            .iter()
            .map(|(n, c)| (n.clone(), serde_json::to_value(c).expect("serialises")))
            .collect();
        print_json(&all);
    } else {
        for (name, check) in &checks {
            print_history(name, check);
        }
    }
    Ok(if broken {
        ExitCode::from(EXIT_CHAIN_BROKEN)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_history(repository: &str, check: &HistoryCheck) {
    println!("drills recovering from {repository}:");
    for r in &check.reports {
        let rto = r.rto_secs.map_or("—".to_string(), |s| format!("{s:.1} s"));
        println!(
            "  #{:<4} {}  {:<8} {:?}  RTO {rto}  {}",
            r.seq, r.started, r.plan, r.verdict, r.report
        );
    }
    if check.verified {
        if check.problems.is_empty() {
            println!(
                "  chain verified: {} report(s), signatures, links and evidence hold",
                check.reports.len()
            );
        }
        for p in &check.problems {
            println!("  TAMPERED: {p}");
        }
    }
}

/// `--keep`: says where the kept VMs can be reached, then waits for Ctrl-C or
/// SIGTERM.
async fn hold_until_signal(kept: &KeptDrill, quiet: bool) {
    if !quiet {
        for kept_vm in kept.vms() {
            let ports: Vec<String> = kept_vm
                .ports
                .iter()
                .map(|(guest, host)| format!("guest port {guest} at {host}"))
                .collect();
            eprintln!(
                "kept running: {}: console {}; {}",
                kept_vm.vm,
                kept_vm.console.display(),
                ports.join(", ")
            );
        }
        eprintln!("Ctrl-C or SIGTERM ends the drill: stops the VMs and removes the overlays");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
