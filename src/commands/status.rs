//! `lifeboat status`: per configured VM (and disk), the last successful backup, its age
//! against the group's RPO (OK / AT RISK / BREACHED), its replication lag against the
//! `replication_rpo` (REPLICA (LAG)), the last error and the next run; then each
//! recovery plan's drill state (OK / AT RISK) from its newest drill report; then each
//! metadata-backup target's last good point (OK / AT RISK / BREACHED); then the
//! plans failed over onto this site, with how many of their VMs run.
//!
//! It reads the configuration and the daemon's state database only — no repository,
//! no passphrase, no network — so it works when the daemon is down (the RPO clock
//! keeps running: that is exactly when it matters) and from monitoring scripts.
//! The report is [`lifeboat_policies::status`]'s; `/metrics` serves the same numbers.

use anyhow::Result;
use chrono::{DateTime, Utc};
use lifeboat_policies::rpo::RpoState;
use lifeboat_policies::status::VmStatus;
use lifeboat_policies::{StatusReport, format_duration};
use lifeboat_replicator::failover::{FailoverKind, FailoverStates};
use serde::Serialize;

use crate::args::{GlobalArgs, StatusArgs};
use crate::config_file;
use crate::daemon::drills::{PlanDrillStatus, plan_drills};
use crate::daemon::metadata::{MetadataTargetStatus, metadata_status};
use crate::daemon::state::{State, read_status};
use crate::output::{bytes, print_json};

pub async fn run(g: &GlobalArgs, a: StatusArgs) -> Result<()> {
    let config = config_file::load(&a.config)?;
    if let Some(name) = &a.group {
        config_file::group(&config, name)?;
    }
    let dir = a
        .state_dir
        .clone()
        .unwrap_or_else(|| config.daemon.state_dir.clone());
    let now = Utc::now();
    let drills = plan_drills(&config, &dir, now);
    let metadata = metadata_status(&config, &dir, now);
    let failovers = failovers(&config, &dir)?;
    let report = tokio::task::spawn_blocking(move || -> Result<StatusReport> {
        let state = State::open_read_only(&dir)?;
        read_status(&config, state.as_ref(), now, a.group.as_deref())
    })
    .await??;
    if g.json {
        print_json(&WithDrills {
            report: &report,
            drills: &drills,
            failovers: &failovers,
            metadata_backups: &metadata,
        });
    } else {
        print_text(&report);
        print_drills(&drills);
        print_metadata(&metadata);
        print_failovers(&failovers);
    }
    Ok(())
}

/// A plan failed over onto this site.
#[derive(Serialize)]
struct PlanFailover {
    plan: String,
    kind: FailoverKind,
    since: String,
    /// VMs of the failover whose QEMU runs now, and all of them.
    running: usize,
    vms: usize,
    committed: bool,
}

fn failovers(
    config: &lifeboat_policies::Config,
    dir: &std::path::Path,
) -> Result<Vec<PlanFailover>> {
    let states = FailoverStates::new(dir);
    let mut out = Vec::new();
    for plan in &config.plans {
        if let Some(s) = states.read(&plan.name)? {
            out.push(PlanFailover {
                plan: s.plan.clone(),
                kind: s.kind,
                since: s.started.clone(),
                running: s
                    .vms
                    .iter()
                    .filter(|v| v.running.as_ref().is_some_and(|r| r.is_running()))
                    .count(),
                vms: s.vms.len(),
                committed: s.committed,
            });
        }
    }
    Ok(out)
}

fn print_failovers(failovers: &[PlanFailover]) {
    for f in failovers {
        let kind = match f.kind {
            FailoverKind::Planned => "planned",
            FailoverKind::Unplanned => "unplanned",
        };
        let health = if f.running == f.vms {
            ""
        } else {
            " — VMs DOWN"
        };
        println!(
            "\nplan {} is FAILED OVER onto this site ({kind}, since {}): {}/{} VMs running{health} \
             (`lifeboat failover status {}`)",
            f.plan, f.since, f.running, f.vms, f.plan
        );
    }
}

/// The status report with each recovery plan's drill state beside it.
#[derive(Serialize)]
struct WithDrills<'a> {
    #[serde(flatten)]
    report: &'a StatusReport,
    drills: &'a [PlanDrillStatus],
    failovers: &'a [PlanFailover],
    metadata_backups: &'a [MetadataTargetStatus],
}

fn print_metadata(targets: &[MetadataTargetStatus]) {
    if targets.is_empty() {
        return;
    }
    println!(
        "\n{:<40} {:<9} {:<22} {:>9} {:<21} WHY",
        "METADATA TARGET", "STATE", "LAST GOOD POINT", "AGE", "NEXT RUN"
    );
    for t in targets {
        println!(
            "{:<40} {:<9} {:<22} {:>9} {:<21} {}",
            t.target,
            t.state.as_str(),
            t.last_success.map_or("never".into(), when),
            t.age_secs
                .map_or("-".into(), |a| format_duration(a.max(0) as u64)),
            t.next_run.map_or("-".into(), when),
            t.reason
        );
    }
}

fn print_drills(drills: &[PlanDrillStatus]) {
    if drills.is_empty() {
        return;
    }
    println!(
        "\n{:<16} {:<8} {:<22} {:<8} {:>16} {:<21} WHY",
        "PLAN", "DRILL", "LAST DRILL", "VERDICT", "RTO (TARGET)", "NEXT DRILL"
    );
    for d in drills {
        let rto = d.rto_secs.map_or("-".to_string(), |r| format!("{r:.0}s"));
        println!(
            "{:<16} {:<8} {:<22} {:<8} {:>16} {:<21} {}",
            d.plan,
            d.state,
            d.last_drill.map_or("never".into(), when),
            d.last_verdict
                .map_or("-".into(), |v| format!("{v:?}").to_uppercase()),
            format!("{rto} ({}s)", d.rto_target_secs),
            d.next_drill.map_or("-".into(), when),
            d.reason
        );
    }
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

fn print_text(r: &StatusReport) {
    match &r.daemon {
        Some(d) if d.running => println!(
            "daemon: running (pid {}, since {})",
            d.pid,
            when(d.started_at)
        ),
        Some(d) => println!(
            "daemon: NOT RUNNING (last seen {}); nothing is being backed up",
            when(d.stopped_at.unwrap_or(d.heartbeat_at))
        ),
        None => println!("daemon: has never run with this state directory"),
    }
    println!(
        "{:<12} {:<16} {:<9} {:<18} {:<22} {:>9} {:<21} LAST ERROR",
        "GROUP", "VM", "STATE", "REPLICA (LAG)", "LAST GOOD BACKUP", "AGE", "NEXT RUN"
    );
    for v in &r.vms {
        let state = v.rpo_state.map_or("no RPO", RpoState::as_str);
        let age = v
            .age_secs
            .map_or("-".into(), |a| format_duration(a.max(0) as u64));
        println!(
            "{:<12} {:<16} {:<9} {:<18} {:<22} {:>9} {:<21} {}",
            v.group,
            v.vm,
            state,
            replica_column(v),
            v.last_success.map_or("never".into(), when),
            age,
            v.next_run.map_or("-".into(), when),
            v.last_error
                .as_deref()
                .map_or("-", |e| e.lines().next().unwrap_or(""))
        );
        for d in &v.disks {
            let size = d
                .last_success
                .as_ref()
                .and_then(|s| s.bytes_read)
                .map(|b| format!(", read {}", bytes(b)))
                .unwrap_or_default();
            println!(
                "  disk {:<12} {}{}{size}",
                d.disk,
                d.rpo_reason
                    .as_deref()
                    .unwrap_or("no rpo set for this group"),
                if d.running { " (backup running)" } else { "" },
            );
            for rep in &d.replicas {
                let lag = rep.lag_secs.map_or(String::new(), |l| {
                    format!("lag {}; ", format_duration(l.max(0) as u64))
                });
                let why = rep
                    .reason
                    .as_deref()
                    .unwrap_or("no replication_rpo set for this replication");
                let err = rep
                    .last_error
                    .as_deref()
                    .filter(|_| rep.state != Some(RpoState::Ok))
                    .map(|e| format!("; last error: {}", e.lines().next().unwrap_or("")))
                    .unwrap_or_default();
                println!(
                    "    replica {}: {lag}{why}{err}{}",
                    rep.destination,
                    if rep.running { " (replicating)" } else { "" },
                );
            }
        }
    }
}

/// `OK (3m)`: the worst replica state of the VM's disks and their largest lag; `-`
/// when it is not replicated.
fn replica_column(v: &VmStatus) -> String {
    if v.disks.iter().all(|d| d.replicas.is_empty()) {
        return "-".into();
    }
    let state = v.replica_state.map_or("no RPO", RpoState::as_str);
    let lag = v
        .replica_lag_secs
        .map_or("never".into(), |l| format_duration(l.max(0) as u64));
    format!("{state} ({lag})")
}
