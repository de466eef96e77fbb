//! The protection status of configured VMs: per disk, its last good backup, its RPO
//! state (see [`crate::rpo`]), the last error, its lag on each replica (see
//! [`crate::lag`]); per VM, the worst of its disks; and whether the daemon is alive.
//!
//! Built from the daemon's job history, which the caller reads (this crate does no
//! I/O) and hands over as one [`DiskHistory`] per disk, plus the configuration and
//! `now`. `lifeboat status` and the daemon's `/metrics` both render this one report,
//! so they cannot disagree.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Config, Group, Replication};
use crate::lag::{ReplicaHistory, ReplicaStatus, replica_status};
use crate::rpo::{RpoInput, RpoState, Subject, assess_rpo};

/// A daemon heartbeat older than this means it is not running.
pub const HEARTBEAT_STALE_SECS: i64 = 60;

/// A disk's last good backup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastSuccess {
    /// The recovery point: the snapshot's time (the start of the backup, the moment its
    /// data was read).
    pub time: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub snapshot: Option<String>,
    pub bytes_read: Option<u64>,
    pub stored_bytes: Option<u64>,
    pub duration_secs: Option<f64>,
}

/// What the job history says about one disk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiskHistory {
    /// When the daemon first scheduled the disk.
    pub first_seen: Option<DateTime<Utc>>,
    pub last_success: Option<LastSuccess>,
    /// The newest finished attempt was not a success.
    pub last_attempt_failed: bool,
    pub last_error: Option<(DateTime<Utc>, String)>,
    pub running: bool,
}

/// The daemon's heartbeat, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonRecord {
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DaemonInfo {
    pub running: bool,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
}

impl DaemonInfo {
    /// Running means: not recorded as stopped, and a heartbeat within
    /// [`HEARTBEAT_STALE_SECS`] (a killed daemon records no stop).
    pub fn at(record: &DaemonRecord, now: DateTime<Utc>) -> Self {
        DaemonInfo {
            running: record.stopped_at.is_none()
                && (now - record.heartbeat_at).num_seconds() < HEARTBEAT_STALE_SECS,
            pid: record.pid,
            started_at: record.started_at,
            heartbeat_at: record.heartbeat_at,
            stopped_at: record.stopped_at,
        }
    }
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
    /// Its lag on each replica its VM is replicated to (empty when none).
    pub replicas: Vec<ReplicaStatus>,
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
    /// The worst replication state of its disks on any replica (`null` when no
    /// replication with a `replication_rpo` covers it).
    pub replica_state: Option<RpoState>,
    /// The largest lag of its disks on any replica; `null` when not replicated or
    /// some disk has no point on a replica yet.
    pub replica_lag_secs: Option<i64>,
    pub disks: Vec<DiskStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub now: DateTime<Utc>,
    pub daemon: Option<DaemonInfo>,
    pub vms: Vec<VmStatus>,
}

/// The status of every VM in `config` (or only the group `only_group`) at `now`.
/// `history(group, vm, disk)` supplies each disk's job history, `replica(r, vm, disk)`
/// its history on the destination of replication `r`; their errors are passed on.
pub fn status_report<E>(
    config: &Config,
    daemon: Option<&DaemonRecord>,
    now: DateTime<Utc>,
    only_group: Option<&str>,
    mut history: impl FnMut(&str, &str, &str) -> Result<DiskHistory, E>,
    mut replica: impl FnMut(&Replication, &str, &str) -> Result<ReplicaHistory, E>,
) -> Result<StatusReport, E> {
    let mut vms = Vec::new();
    for g in &config.groups {
        if only_group.is_some_and(|o| o != g.name) {
            continue;
        }
        let next_run = g.schedule.next_after(now);
        for vm in &g.vms {
            let mut disks = Vec::new();
            for d in &vm.disks {
                let h = history(&g.name, &vm.name, &d.name)?;
                let backup_secs = h.last_success.as_ref().and_then(|s| s.duration_secs);
                let mut status = disk_status(g, &d.name, h, next_run, now);
                for r in config.replications_of(&g.name, &vm.name) {
                    let rh = replica(r, &vm.name, &d.name)?;
                    status
                        .replicas
                        .push(replica_status(r, g, rh, backup_secs, now));
                }
                disks.push(status);
            }
            vms.push(vm_status(g, &vm.name, disks, next_run));
        }
    }
    Ok(StatusReport {
        now,
        daemon: daemon.map(|d| DaemonInfo::at(d, now)),
        vms,
    })
}

/// One disk of group `g`: its RPO state (none without an `rpo`) and last results.
pub fn disk_status(
    g: &Group,
    disk: &str,
    h: DiskHistory,
    next_run: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DiskStatus {
    let assessment = g.rpo.map(|rpo| {
        assess_rpo(
            &RpoInput {
                subject: Subject::Backup,
                rpo,
                last_success: h.last_success.as_ref().map(|s| s.time),
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
            .map(|s| (now - s.time).num_seconds()),
        deadline: assessment.and_then(|a| a.deadline),
        last_success: h.last_success,
        last_error_at: h.last_error.as_ref().map(|e| e.0),
        last_error: h.last_error.map(|e| e.1),
        running: h.running,
        replicas: Vec::new(),
    }
}

/// One VM of group `g`: the worst state of its disks; an age and a last success only
/// when every disk has been backed up (a VM is only as recoverable as its worst disk).
pub fn vm_status(
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
    let replicas: Vec<&ReplicaStatus> = disks.iter().flat_map(|d| &d.replicas).collect();
    let all_replicated = replicas.iter().all(|r| r.lag_secs.is_some());
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
        replica_state: replicas
            .iter()
            .filter_map(|r| r.state)
            .max_by_key(|s| s.level()),
        replica_lag_secs: if all_replicated {
            replicas.iter().filter_map(|r| r.lag_secs).max()
        } else {
            None
        },
        disks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_config;

    fn t(s: &str) -> DateTime<Utc> {
        format!("2026-05-01T{s}Z").parse().unwrap()
    }

    const CONFIG: &str = r#"
[[repository]]
name = "r"
url = "/srv/r"

[[group]]
name = "prod"
repository = "r"
schedule = "0 * * * *"
timezone = "UTC"
rpo = "2h"
retention = { keep_last = 3 }
[[group.vm]]
name = "web"
[[group.vm.disk]]
name = "root"
image = "/a.qcow2"
[[group.vm.disk]]
name = "data"
image = "/b.qcow2"

[[group]]
name = "lab"
repository = "r"
schedule = "0 * * * *"
timezone = "UTC"
retention = { keep_last = 3 }
[[group.vm]]
name = "test"
[[group.vm.disk]]
name = "root"
image = "/c.qcow2"
"#;

    fn success(time: &str) -> LastSuccess {
        LastSuccess {
            time: t(time),
            finished: t(time) + chrono::Duration::minutes(1),
            snapshot: Some("abcd".into()),
            bytes_read: Some(10),
            stored_bytes: Some(4),
            duration_secs: Some(60.0),
        }
    }

    #[test]
    fn a_vm_is_as_good_as_its_worst_disk() {
        let config = parse_config(CONFIG, "t.toml").unwrap();
        let now = t("12:10:00");
        let report = status_report(
            &config,
            None,
            now,
            None,
            |_, _, disk| {
                Ok::<_, ()>(match disk {
                    "root" => DiskHistory {
                        last_success: Some(success("12:00:00")),
                        ..DiskHistory::default()
                    },
                    _ => DiskHistory {
                        last_success: Some(success("09:00:00")),
                        last_attempt_failed: true,
                        last_error: Some((t("11:00:00"), "disk gone".into())),
                        ..DiskHistory::default()
                    },
                })
            },
            no_replica,
        )
        .unwrap();
        assert!(report.daemon.is_none());
        let web = &report.vms[0];
        assert_eq!((web.group.as_str(), web.vm.as_str()), ("prod", "web"));
        assert_eq!(web.disks[0].rpo_state, Some(RpoState::Ok));
        assert_eq!(web.disks[1].rpo_state, Some(RpoState::Breached));
        assert_eq!(web.rpo_state, Some(RpoState::Breached));
        assert_eq!(web.age_secs, Some(3 * 3600 + 600));
        assert_eq!(web.last_success, Some(t("09:00:00")));
        assert_eq!(web.last_error.as_deref(), Some("disk gone"));
        assert_eq!(web.next_run, Some(t("13:00:00")));
        // No rpo: no state, but the history is still shown.
        let lab = &report.vms[1];
        assert_eq!(lab.rpo_state, None);
        assert_eq!(lab.disks[0].rpo_reason, None);
        assert_eq!(lab.disks[0].last_success, Some(success("12:00:00")));
    }

    #[test]
    fn a_disk_never_backed_up_leaves_the_vm_without_an_age() {
        let config = parse_config(CONFIG, "t.toml").unwrap();
        let now = t("12:10:00");
        let report = status_report(
            &config,
            None,
            now,
            Some("prod"),
            |_, _, disk| {
                Ok::<_, ()>(match disk {
                    "root" => DiskHistory {
                        last_success: Some(success("12:00:00")),
                        ..DiskHistory::default()
                    },
                    _ => DiskHistory {
                        first_seen: Some(t("11:00:00")),
                        running: true,
                        ..DiskHistory::default()
                    },
                })
            },
            no_replica,
        )
        .unwrap();
        assert_eq!(report.vms.len(), 1, "only the group asked for");
        let web = &report.vms[0];
        assert_eq!(web.rpo_state, Some(RpoState::AtRisk));
        assert_eq!((web.age_secs, web.last_success), (None, None));
        assert!(web.disks[1].running);
        assert_eq!(web.disks[1].deadline, Some(t("13:00:00")));
    }

    fn no_replica<E>(_: &Replication, _: &str, _: &str) -> Result<ReplicaHistory, E> {
        panic!("no replication is configured")
    }

    #[test]
    fn replica_lag_is_shown_per_disk_and_the_worst_per_vm() {
        let text = format!(
            "{CONFIG}\n[[repository]]\nname = \"dr\"\nurl = \"/srv/dr\"\n\n\
             [[replication]]\nfrom = \"r\"\nto = \"dr\"\ngroups = [\"prod\"]\n\
             after_backup = true\nreplication_rpo = \"2h\"\n"
        );
        let config = parse_config(&text, "t.toml").unwrap();
        let now = t("12:10:00");
        let history = |_: &str, _: &str, _: &str| {
            Ok::<_, ()>(DiskHistory {
                last_success: Some(success("12:00:00")),
                ..DiskHistory::default()
            })
        };
        let replica = |r: &Replication, vm: &str, disk: &str| {
            assert_eq!((r.to.as_str(), vm), ("dr", "web"));
            Ok(ReplicaHistory {
                newest: Some(if disk == "root" {
                    t("12:00:00")
                } else {
                    t("09:00:00")
                }),
                last_duration: Some(5.0),
                ..ReplicaHistory::default()
            })
        };
        let report = status_report(&config, None, now, None, history, replica).unwrap();
        let web = &report.vms[0];
        assert_eq!(web.rpo_state, Some(RpoState::Ok));
        assert_eq!(web.disks[0].replicas[0].state, Some(RpoState::Ok));
        assert_eq!(web.disks[0].replicas[0].lag_secs, Some(600));
        assert_eq!(web.disks[1].replicas[0].state, Some(RpoState::Breached));
        assert_eq!(web.replica_state, Some(RpoState::Breached));
        assert_eq!(web.replica_lag_secs, Some(3 * 3600 + 600));
        let json = serde_json::to_value(web).unwrap();
        assert_eq!(json["disks"][1]["replicas"][0]["destination"], "dr");
        assert_eq!(
            json["disks"][1]["replicas"][0]["replication_rpo_secs"],
            7200
        );
        assert_eq!(json["replica_state"], "BREACHED");
        // Not replicated: no replica fields.
        let lab = &report.vms[1];
        assert!(lab.disks[0].replicas.is_empty());
        assert_eq!((lab.replica_state, lab.replica_lag_secs), (None, None));

        // A disk with nothing on the replica yet: the VM has no lag.
        let replica = |_: &Replication, _: &str, disk: &str| {
            Ok(ReplicaHistory {
                newest: (disk == "root").then(|| t("12:00:00")),
                first_seen: Some(t("12:00:00")),
                ..ReplicaHistory::default()
            })
        };
        let report = status_report(&config, None, now, None, history, replica).unwrap();
        let web = &report.vms[0];
        assert_eq!(web.replica_lag_secs, None);
        assert_eq!(web.replica_state, Some(RpoState::AtRisk));
    }

    #[test]
    fn history_errors_are_passed_on() {
        let config = parse_config(CONFIG, "t.toml").unwrap();
        let r = status_report(
            &config,
            None,
            t("12:00:00"),
            None,
            |_, _, _| Err("db gone"),
            no_replica,
        );
        assert_eq!(r.err(), Some("db gone"));
    }

    #[test]
    fn the_daemon_runs_while_its_heartbeat_is_fresh() {
        let record = DaemonRecord {
            pid: 7,
            started_at: t("10:00:00"),
            heartbeat_at: t("12:00:00"),
            stopped_at: None,
        };
        assert!(DaemonInfo::at(&record, t("12:00:59")).running);
        assert!(!DaemonInfo::at(&record, t("12:01:00")).running);
        let stopped = DaemonRecord {
            stopped_at: Some(t("12:00:00")),
            ..record
        };
        assert!(!DaemonInfo::at(&stopped, t("12:00:01")).running);
    }
}
