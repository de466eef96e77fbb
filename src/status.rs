//! `lifeboat status`: per configured VM (and disk), the last successful backup, its age
//! against the group's RPO (OK / AT RISK / BREACHED), the last error and the next run.
//!
//! It reads the configuration and the daemon's state database only — no repository,
//! no passphrase, no network — so it works when the daemon is down (the RPO clock
//! keeps running: that is exactly when it matters) and from monitoring scripts.
//! `/metrics` serves the same numbers, from [`collect`].

use anyhow::Result;
use chrono::{DateTime, Utc};
use lifeboat_policies::config::Group;
use lifeboat_policies::{Config, RpoInput, RpoState, assess_rpo, format_duration};
use serde::Serialize;

use crate::args::{GlobalArgs, StatusArgs};
use crate::daemon::state::{DiskHistory, State};
use crate::output::{bytes, print_json};

/// Shown by `lifeboat status --help`; README says the same.
pub const RPO_RULE_HELP: &str = "\
RPO states (per disk; a VM shows its worst disk). The age of a backup is measured from
its start, the moment its data was read:
  BREACHED  the last good backup is older than the group's rpo, or the disk was never
            backed up and rpo has passed since the daemon first scheduled it
  AT RISK   not breached, but: no good backup yet, or the latest attempt failed, or
            the next scheduled run (taking as long as the last good one) would finish
            after the rpo runs out, or nothing is scheduled
  OK        otherwise
Set rpo above the schedule interval plus the backup time (a nightly schedule needs
e.g. rpo = \"26h\"), or every disk is AT RISK by design.
Status reads the configuration and the daemon's job history (state.db) only: backups
made by hand with `lifeboat backup` do not count.";

/// A daemon heartbeat older than this means it is not running.
const HEARTBEAT_STALE_SECS: i64 = 60;

#[derive(Debug, Clone, Serialize)]
pub struct LastSuccess {
    /// The recovery point (start of the backup).
    pub time: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub snapshot: Option<String>,
    pub bytes_read: Option<u64>,
    pub stored_bytes: Option<u64>,
    pub duration_secs: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskStatus {
    pub disk: String,
    /// `null` when the group has no `rpo`.
    pub rpo_state: Option<RpoState>,
    pub rpo_reason: Option<String>,
    pub age_secs: Option<i64>,
    pub deadline: Option<DateTime<Utc>>,
    pub last_success: Option<LastSuccess>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub running: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct VmStatus {
    pub group: String,
    pub vm: String,
    pub repository: String,
    pub rpo_secs: Option<u64>,
    /// The worst of its disks.
    pub rpo_state: Option<RpoState>,
    /// Age of its oldest disk's last good backup (`null` if a disk has none).
    pub age_secs: Option<i64>,
    /// The oldest of its disks' last good backups.
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub next_run: Option<DateTime<Utc>>,
    pub disks: Vec<DiskStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DaemonInfo {
    pub running: bool,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub now: DateTime<Utc>,
    pub daemon: Option<DaemonInfo>,
    pub vms: Vec<VmStatus>,
}

/// The status of every VM in `config` (or one group) at `now`.
pub fn collect(
    config: &Config,
    state: Option<&State>,
    now: DateTime<Utc>,
    only_group: Option<&str>,
) -> Result<Report> {
    let daemon = match state {
        Some(s) => s.daemon()?.map(|d| DaemonInfo {
            running: d.stopped_at.is_none()
                && (now - d.heartbeat_at).num_seconds() < HEARTBEAT_STALE_SECS,
            pid: d.pid,
            started_at: d.started_at,
            heartbeat_at: d.heartbeat_at,
            stopped_at: d.stopped_at,
        }),
        None => None,
    };
    let mut vms = Vec::new();
    for g in &config.groups {
        if only_group.is_some_and(|o| o != g.name) {
            continue;
        }
        let next_run = g.schedule.next_after(now);
        for vm in &g.vms {
            let mut disks = Vec::new();
            for d in &vm.disks {
                let h = match state {
                    Some(s) => s.disk_history(&g.name, &vm.name, &d.name)?,
                    None => DiskHistory::default(),
                };
                disks.push(disk_status(g, &d.name, h, next_run, now));
            }
            vms.push(vm_status(g, &vm.name, disks, next_run));
        }
    }
    Ok(Report { now, daemon, vms })
}

fn disk_status(
    g: &Group,
    disk: &str,
    h: DiskHistory,
    next_run: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DiskStatus {
    let assessment = g.rpo.map(|rpo| {
        assess_rpo(
            &RpoInput {
                rpo,
                last_success: h.last_success.as_ref().map(|s| s.point),
                last_duration: h.last_success.as_ref().and_then(|s| s.duration_secs),
                first_seen: h.first_seen,
                last_attempt_failed: h.last_attempt_failed,
                next_run,
            },
            now,
        )
    });
    DiskStatus {
        disk: disk.to_string(),
        rpo_state: assessment.as_ref().map(|a| a.state),
        rpo_reason: assessment.as_ref().map(|a| a.reason.clone()),
        age_secs: h
            .last_success
            .as_ref()
            .map(|s| (now - s.point).num_seconds()),
        deadline: assessment.and_then(|a| a.deadline),
        last_success: h.last_success.map(|s| LastSuccess {
            time: s.point,
            finished: s.finished,
            snapshot: s.snapshot,
            bytes_read: s.bytes_read,
            stored_bytes: s.stored_bytes,
            duration_secs: s.duration_secs,
        }),
        last_error_at: h.last_error.as_ref().map(|e| e.0),
        last_error: h.last_error.map(|e| e.1),
        running: h.running,
    }
}

fn vm_status(
    g: &Group,
    vm: &str,
    disks: Vec<DiskStatus>,
    next_run: Option<DateTime<Utc>>,
) -> VmStatus {
    let all_backed_up = disks.iter().all(|d| d.last_success.is_some());
    let oldest = disks
        .iter()
        .filter_map(|d| d.last_success.as_ref().map(|s| s.time))
        .min();
    let newest_error = disks
        .iter()
        .filter_map(|d| Some((d.last_error_at?, d.last_error.clone()?)))
        .max_by_key(|(t, _)| *t);
    VmStatus {
        group: g.name.clone(),
        vm: vm.to_string(),
        repository: g.repository.clone(),
        rpo_secs: g.rpo,
        rpo_state: disks
            .iter()
            .filter_map(|d| d.rpo_state)
            .max_by_key(|s| s.level()),
        age_secs: if all_backed_up {
            disks.iter().filter_map(|d| d.age_secs).max()
        } else {
            None
        },
        last_success: if all_backed_up { oldest } else { None },
        last_error: newest_error.map(|(_, e)| e),
        next_run,
        disks,
    }
}

pub async fn status(g: &GlobalArgs, a: StatusArgs) -> Result<()> {
    let config = crate::config_file::load(&a.config)?;
    if let Some(name) = &a.group {
        crate::config_file::group(&config, name)?;
    }
    let dir = a
        .state_dir
        .clone()
        .unwrap_or_else(|| config.daemon.state_dir.clone());
    let report = tokio::task::spawn_blocking(move || -> Result<Report> {
        let state = State::open_read_only(&dir)?;
        collect(&config, state.as_ref(), Utc::now(), a.group.as_deref())
    })
    .await??;
    if g.json {
        print_json(&report);
    } else {
        print_text(&report);
    }
    Ok(())
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

fn print_text(r: &Report) {
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
        "{:<12} {:<16} {:<9} {:<22} {:>9} {:<21} LAST ERROR",
        "GROUP", "VM", "STATE", "LAST GOOD BACKUP", "AGE", "NEXT RUN"
    );
    for v in &r.vms {
        let state = v.rpo_state.map_or("no RPO", RpoState::as_str);
        let age = v
            .age_secs
            .map_or("-".into(), |a| format_duration(a.max(0) as u64));
        println!(
            "{:<12} {:<16} {:<9} {:<22} {:>9} {:<21} {}",
            v.group,
            v.vm,
            state,
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
        }
    }
}
