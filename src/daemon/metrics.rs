//! `/metrics` for Prometheus: a minimal HTTP/1.1 server on a tokio `TcpListener` (one
//! request per connection, GET only) — a web framework would be most of the binary
//! for one text endpoint.
//!
//! Every scrape reads the state database, so the numbers are the same `status` shows
//! and survive daemon restarts. Per disk (labels group, vm, disk):
//! `lifeboat_last_success_timestamp_seconds`, `lifeboat_last_backup_bytes` (read from
//! the disk), `lifeboat_last_backup_stored_bytes` (added to the repository),
//! `lifeboat_last_backup_duration_seconds`, `lifeboat_rpo_seconds`,
//! `lifeboat_rpo_state` (0 OK, 1 AT RISK, 2 BREACHED), `lifeboat_backup_running`;
//! per disk and replica (labels group, vm, disk, destination):
//! `lifeboat_replication_lag_seconds`, `lifeboat_replication_rpo_seconds`,
//! `lifeboat_replication_rpo_state`; `lifeboat_replication_bytes_sent_total{source,
//! destination}` and `lifeboat_jobs_total{kind,status}` over the job history; per plan
//! (label plan), from its newest drill report: `lifeboat_drill_last_success_timestamp_seconds`,
//! `lifeboat_drill_rto_seconds`, `lifeboat_drill_state` (0 OK, 1 AT RISK); per
//! metadata-backup target (label target): `lifeboat_metadata_backup_last_success_timestamp_seconds`,
//! `lifeboat_metadata_backup_age_seconds`, `lifeboat_metadata_backup_state` (0 OK,
//! 1 AT RISK, 2 BREACHED).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lifeboat_policies::{Config, StatusReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::drills::{PlanDrillStatus, plan_drills};
use super::metadata::{MetadataTargetStatus, metadata_status};
use super::state::{State, read_status};

/// A scraper that sends nothing is dropped after this.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REQUEST: usize = 8 * 1024;

pub async fn serve(listener: TcpListener, config: Arc<Config>, state: Arc<State>) {
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                tokio::spawn(handle(conn, config.clone(), state.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("metrics: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn handle(mut conn: TcpStream, config: Arc<Config>, state: Arc<State>) {
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    if head.is_err() {
        return;
    }
    let text = String::from_utf8_lossy(&buf);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => {
            let rendered = tokio::task::spawn_blocking(move || render(&config, &state)).await;
            match rendered {
                Ok(Ok(body)) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body),
                Ok(Err(e)) => (
                    "500 Internal Server Error",
                    "text/plain; charset=utf-8",
                    format!("reading the state database failed: {e:#}\n"),
                ),
                Err(_) => (
                    "500 Internal Server Error",
                    "text/plain; charset=utf-8",
                    "rendering metrics panicked\n".to_string(),
                ),
            }
        }
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found; metrics are at /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET /metrics is served\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(response.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// Label values escaped as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, help: &str, rows: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in rows {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// One gauge family's rows: labels and value.
type Rows = Vec<(String, f64)>;

/// The per-disk gauges, in exposition order.
#[derive(Default)]
struct DiskGauges {
    success: Rows,
    read: Rows,
    stored: Rows,
    duration: Rows,
    rpo: Rows,
    rpo_state: Rows,
    running: Rows,
    lag: Rows,
    replica_rpo: Rows,
    replica_state: Rows,
}

impl DiskGauges {
    fn from_report(report: &StatusReport) -> Self {
        let mut g = DiskGauges::default();
        for vm in &report.vms {
            for d in &vm.disks {
                let l = format!(
                    "group=\"{}\",vm=\"{}\",disk=\"{}\"",
                    label(&vm.group),
                    label(&vm.vm),
                    label(&d.disk)
                );
                if let Some(s) = &d.last_success {
                    g.success
                        .push((l.clone(), s.time.timestamp_millis() as f64 / 1000.0));
                    if let Some(b) = s.bytes_read {
                        g.read.push((l.clone(), b as f64));
                    }
                    if let Some(b) = s.stored_bytes {
                        g.stored.push((l.clone(), b as f64));
                    }
                    if let Some(t) = s.duration_secs {
                        g.duration.push((l.clone(), t));
                    }
                }
                if let (Some(secs), Some(st)) = (vm.rpo_secs, d.rpo_state) {
                    g.rpo.push((l.clone(), secs as f64));
                    g.rpo_state.push((l.clone(), f64::from(st.level())));
                }
                g.running
                    .push((l.clone(), if d.running { 1.0 } else { 0.0 }));
                for r in &d.replicas {
                    let l = format!("{l},destination=\"{}\"", label(&r.destination));
                    if let Some(lag) = r.lag_secs {
                        g.lag.push((l.clone(), lag as f64));
                    }
                    if let (Some(secs), Some(st)) = (r.replication_rpo_secs, r.state) {
                        g.replica_rpo.push((l.clone(), secs as f64));
                        g.replica_state.push((l, f64::from(st.level())));
                    }
                }
            }
        }
        g
    }

    fn write(&self, out: &mut String) {
        let families: [(&str, &str, &Rows); 10] = [
            (
                "lifeboat_last_success_timestamp_seconds",
                "Start (recovery point) of the disk's last successful backup, Unix time.",
                &self.success,
            ),
            (
                "lifeboat_last_backup_bytes",
                "Bytes the last successful backup read from the disk.",
                &self.read,
            ),
            (
                "lifeboat_last_backup_stored_bytes",
                "Bytes the last successful backup added to the repository (compressed, encrypted).",
                &self.stored,
            ),
            (
                "lifeboat_last_backup_duration_seconds",
                "How long the last successful backup took.",
                &self.duration,
            ),
            (
                "lifeboat_rpo_seconds",
                "The group's recovery point objective.",
                &self.rpo,
            ),
            (
                "lifeboat_rpo_state",
                "RPO state: 0 OK, 1 AT RISK, 2 BREACHED (see lifeboat status --help).",
                &self.rpo_state,
            ),
            (
                "lifeboat_backup_running",
                "1 while a backup of the disk runs.",
                &self.running,
            ),
            (
                "lifeboat_replication_lag_seconds",
                "Age of the disk's newest recovery point on the replica (destination).",
                &self.lag,
            ),
            (
                "lifeboat_replication_rpo_seconds",
                "The replication's replication_rpo.",
                &self.replica_rpo,
            ),
            (
                "lifeboat_replication_rpo_state",
                "Replication lag state: 0 OK, 1 AT RISK, 2 BREACHED.",
                &self.replica_state,
            ),
        ];
        for (name, help, rows) in families {
            family(out, name, help, rows);
        }
    }
}

/// Per plan: the newest passed drill, the newest drill's RTO, and the drill state.
fn drill_gauges(out: &mut String, plans: &[PlanDrillStatus]) {
    let rows = |value: &dyn Fn(&PlanDrillStatus) -> Option<f64>| -> Rows {
        plans
            .iter()
            .filter_map(|p| Some((format!("plan=\"{}\"", label(&p.plan)), value(p)?)))
            .collect()
    };
    family(
        out,
        "lifeboat_drill_last_success_timestamp_seconds",
        "When the plan's newest passed drill started (Unix time).",
        &rows(&|p| p.last_success.map(|t| t.timestamp() as f64)),
    );
    family(
        out,
        "lifeboat_drill_rto_seconds",
        "Measured RTO of the plan's newest drill: command to last VM healthy.",
        &rows(&|p| p.rto_secs),
    );
    family(
        out,
        "lifeboat_drill_state",
        "Drill state: 0 OK, 1 AT RISK (never drilled, failed, over the RTO target or overdue).",
        &rows(&|p| Some(if p.state == "OK" { 0.0 } else { 1.0 })),
    );
}

/// Per metadata-backup target: its newest good point and its state.
fn metadata_gauges(out: &mut String, targets: &[MetadataTargetStatus]) {
    let rows = |value: &dyn Fn(&MetadataTargetStatus) -> Option<f64>| -> Rows {
        targets
            .iter()
            .filter_map(|t| Some((format!("target=\"{}\"", label(&t.target)), value(t)?)))
            .collect()
    };
    family(
        out,
        "lifeboat_metadata_backup_last_success_timestamp_seconds",
        "When the newest metadata point stored at the target was started (Unix time).",
        &rows(&|t| t.last_success.map(|s| s.timestamp() as f64)),
    );
    family(
        out,
        "lifeboat_metadata_backup_age_seconds",
        "Age of the newest metadata point stored at the target.",
        &rows(&|t| t.age_secs.map(|a| a as f64)),
    );
    family(
        out,
        "lifeboat_metadata_backup_state",
        "Metadata backup state: 0 OK, 1 AT RISK, 2 BREACHED (newest point older than its rpo).",
        &rows(&|t| Some(f64::from(t.state.level()))),
    );
}

/// The exposition text at this moment.
pub fn render(config: &Config, state: &State) -> anyhow::Result<String> {
    let now = Utc::now();
    let report = read_status(config, Some(state), now, None)?;
    let mut out = String::new();
    DiskGauges::from_report(&report).write(&mut out);
    drill_gauges(&mut out, &plan_drills(config, state.dir(), now));
    metadata_gauges(&mut out, &metadata_status(config, state.dir(), now));
    let _ = writeln!(
        out,
        "# HELP lifeboat_replication_bytes_sent_total Pack bytes replication runs sent to the destination.\n# TYPE lifeboat_replication_bytes_sent_total counter"
    );
    for (source, destination, n) in state.replication_bytes_sent()? {
        let _ = writeln!(
            out,
            "lifeboat_replication_bytes_sent_total{{source=\"{}\",destination=\"{}\"}} {n}",
            label(&source),
            label(&destination)
        );
    }
    let _ = writeln!(
        out,
        "# HELP lifeboat_jobs_total Jobs recorded in the state database, by kind and final status.\n# TYPE lifeboat_jobs_total counter"
    );
    for (kind, status, n) in state.job_counts()? {
        let _ = writeln!(
            out,
            "lifeboat_jobs_total{{kind=\"{}\",status=\"{}\"}} {n}",
            label(&kind),
            label(&status)
        );
    }
    Ok(out)
}
