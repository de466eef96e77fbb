//! The daemon's state database (`<state dir>/state.db`, SQLite): every job it queued,
//! ran, skipped or cancelled, when each disk was first scheduled, the points each
//! replication run left on its destination (see [`replication`]), and the daemon's
//! heartbeat. `lifeboat status` and `/metrics` read it; it is the RPO's evidence, so
//! it lives on disk and survives restarts, unlike anything in the daemon's memory.
//! [`read_status`] turns the history into the status report (`lifeboat_policies::status`).
//!
//! Times are Unix seconds (REAL). Secrets never reach this file: job rows hold names,
//! sizes and error messages, and passphrases never appear in error messages.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use lifeboat_policies::lag::ReplicaHistory;
use lifeboat_policies::{
    Config, DaemonRecord, DiskHistory, LastSuccess, StatusReport, status_report,
};

mod replication;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

/// One transaction, so a concurrent `status` sees all tables or none.
const SCHEMA: &str = "
BEGIN;
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    grp TEXT,
    repository TEXT NOT NULL,
    vm TEXT,
    disk TEXT,
    queued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    snapshot TEXT,
    snapshot_time REAL,
    bytes_read INTEGER,
    stored_bytes INTEGER,
    duration_secs REAL,
    summary TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_disk ON jobs (kind, grp, vm, disk, id);
CREATE TABLE IF NOT EXISTS disks (
    grp TEXT NOT NULL,
    vm TEXT NOT NULL,
    disk TEXT NOT NULL,
    first_seen REAL NOT NULL,
    PRIMARY KEY (grp, vm, disk)
);
CREATE TABLE IF NOT EXISTS daemon (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    stopped_at REAL
);
COMMIT;
";

/// Schema changes after [`SCHEMA`], in order; `PRAGMA user_version` counts those
/// applied. Only ever append: a database made by an older daemon is brought up to
/// date when a newer one opens it, and keeps its history.
const MIGRATIONS: &[&str] = &[
    // 1: replication runs (the destination is `repository`, the source `source`) and,
    // per run, the newest point of each disk on the destination.
    "ALTER TABLE jobs ADD COLUMN source TEXT;
     ALTER TABLE jobs ADD COLUMN bytes_sent INTEGER;
     ALTER TABLE jobs ADD COLUMN snapshots_copied INTEGER;
     CREATE INDEX jobs_by_pair ON jobs (kind, source, repository, id);
     CREATE TABLE replica_points (
         job INTEGER NOT NULL,
         vm TEXT NOT NULL,
         disk TEXT NOT NULL,
         time REAL NOT NULL,
         PRIMARY KEY (job, vm, disk)
     );
     CREATE INDEX replica_points_by_disk ON replica_points (vm, disk, time);
     CREATE TABLE replications (
         source TEXT NOT NULL,
         destination TEXT NOT NULL,
         first_seen REAL NOT NULL,
         PRIMARY KEY (source, destination)
     );",
];

/// Applies the migrations `c` lacks, each in its own transaction with its version.
fn migrate(c: &Connection) -> rusqlite::Result<()> {
    let have: usize = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, step) in MIGRATIONS.iter().enumerate().skip(have) {
        let tx = c.unchecked_transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// Finished job rows older than this are deleted at start-up (the newest success of
/// each disk is always kept: it is what the RPO is measured from).
const HISTORY_SECS: f64 = 180.0 * 86_400.0;

pub fn ts(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

pub fn from_ts(secs: f64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis((secs * 1000.0) as i64).unwrap_or_default()
}

/// How a job ended (or why it never ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Queued,
    Running,
    Ok,
    Failed,
    /// Stopped by a daemon shutdown (or left running by a daemon that died).
    Interrupted,
    /// Queued, then the daemon stopped before it started.
    Cancelled,
    /// Not started: the previous job for the same disk was still queued or running.
    Skipped,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Ok => "ok",
            JobStatus::Failed => "failed",
            JobStatus::Interrupted => "interrupted",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Skipped => "skipped",
        }
    }
}

/// What a job is about, as recorded.
#[derive(Debug, Clone)]
pub struct JobKey {
    pub kind: &'static str,
    pub group: Option<String>,
    /// The repository written to (a replication's destination).
    pub repository: String,
    /// A replication's source repository.
    pub source: Option<String>,
    pub vm: Option<String>,
    pub disk: Option<String>,
}

/// The result of a finished job.
#[derive(Debug, Clone, Default)]
pub struct JobResult {
    pub attempts: u32,
    pub error: Option<String>,
    pub snapshot: Option<String>,
    pub snapshot_time: Option<DateTime<Utc>>,
    pub bytes_read: Option<u64>,
    pub stored_bytes: Option<u64>,
    pub duration_secs: Option<f64>,
    /// A one-line summary, e.g. forget's kept/forgotten counts.
    pub summary: Option<String>,
    /// A replication run's pack bytes sent and snapshots copied.
    pub bytes_sent: Option<u64>,
    pub snapshots_copied: Option<u64>,
    /// After a replication run: the newest point of each disk on the destination.
    pub points: Vec<ReplicaPoint>,
}

/// The newest recovery point of one disk on a replica, as a run reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaPoint {
    pub vm: String,
    pub disk: String,
    pub time: DateTime<Utc>,
}

pub struct State {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// The replication tables exist (a read-only `status` may meet a database an
    /// older daemon made and no newer one has migrated yet).
    replication: bool,
}

pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("state.db")
}

impl State {
    /// Opens (creating) the database for the daemon.
    /// The state directory (where `state.db` is).
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "creating the state directory {} (pass --state-dir or set LIFEBOAT_STATE_DIR \
                 to a writable directory)",
                dir.display()
            )
        })?;
        let path = db_path(dir);
        let conn = Connection::open(&path)
            .and_then(|c| {
                c.busy_timeout(std::time::Duration::from_secs(10))?;
                c.pragma_update(None, "journal_mode", "WAL")?;
                c.execute_batch(SCHEMA)?;
                migrate(&c)?;
                Ok(c)
            })
            .with_context(|| format!("opening the state database {}", path.display()))?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
            replication: true,
        })
    }

    /// Opens an existing database read-only, for `status`; `None` if there is none yet.
    pub fn open_read_only(dir: &Path) -> Result<Option<Self>> {
        let path = db_path(dir);
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| {
                c.busy_timeout(std::time::Duration::from_secs(10))?;
                let ready: bool = c.query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'daemon')",
                    [],
                    |r| r.get(0),
                )?;
                Ok(ready.then_some(c))
            })
            .with_context(|| format!("opening the state database {}", path.display()))?;
        // A daemon that has just created the file has not created the tables yet.
        let Some(conn) = conn else {
            return Ok(None);
        };
        let version: usize = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .with_context(|| format!("reading the version of {}", path.display()))?;
        Ok(Some(Self {
            path,
            conn: Mutex::new(conn),
            replication: version >= 1,
        }))
    }

    fn with<T>(&self, what: &str, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.conn.lock().expect("state mutex poisoned");
        f(&conn).with_context(|| format!("{what} in {}", self.path.display()))
    }

    /// At daemon start: jobs a previous daemon left queued or running were cut off by
    /// a crash or a kill, so say so; trim old history; take the heartbeat row.
    pub fn start_daemon(&self, now: DateTime<Utc>) -> Result<usize> {
        let now = ts(now);
        self.with("recovering jobs of a previous run", |c| {
            let stale = c.execute(
                "UPDATE jobs SET status = 'interrupted', finished_at = ?1,
                 error = COALESCE(error, 'the daemon stopped while this job was queued or running')
                 WHERE status IN ('queued', 'running')",
                params![now],
            )?;
            c.execute(
                "DELETE FROM jobs WHERE finished_at < ?1 AND id NOT IN
                 (SELECT MAX(id) FROM jobs WHERE status = 'ok'
                  GROUP BY kind, grp, repository, source, vm, disk)",
                params![now - HISTORY_SECS],
            )?;
            c.execute(
                "DELETE FROM replica_points WHERE job NOT IN (SELECT id FROM jobs)",
                [],
            )?;
            c.execute(
                "INSERT OR REPLACE INTO daemon (id, pid, started_at, heartbeat_at, stopped_at)
                 VALUES (1, ?1, ?2, ?2, NULL)",
                params![std::process::id(), now],
            )?;
            Ok(stale)
        })
    }

    pub fn heartbeat(&self, now: DateTime<Utc>) -> Result<()> {
        self.with("recording the heartbeat", |c| {
            c.execute("UPDATE daemon SET heartbeat_at = ?1", params![ts(now)])
                .map(drop)
        })
    }

    pub fn stop_daemon(&self, now: DateTime<Utc>) -> Result<()> {
        self.with("recording the daemon's stop", |c| {
            c.execute("UPDATE daemon SET stopped_at = ?1", params![ts(now)])
                .map(drop)
        })
    }

    pub fn daemon(&self) -> Result<Option<DaemonRecord>> {
        self.with("reading the daemon row", |c| {
            c.query_row(
                "SELECT pid, started_at, heartbeat_at, stopped_at FROM daemon WHERE id = 1",
                [],
                |r| {
                    Ok(DaemonRecord {
                        pid: r.get(0)?,
                        started_at: from_ts(r.get(1)?),
                        heartbeat_at: from_ts(r.get(2)?),
                        stopped_at: r.get::<_, Option<f64>>(3)?.map(from_ts),
                    })
                },
            )
            .optional()
        })
    }

    /// Remembers when a disk was first scheduled (the RPO clock of a disk never
    /// backed up starts there).
    pub fn saw_disk(&self, group: &str, vm: &str, disk: &str, now: DateTime<Utc>) -> Result<()> {
        self.with("recording a disk", |c| {
            c.execute(
                "INSERT OR IGNORE INTO disks (grp, vm, disk, first_seen) VALUES (?1, ?2, ?3, ?4)",
                params![group, vm, disk, ts(now)],
            )
            .map(drop)
        })
    }

    /// Records a job in `status` (queued or skipped) and returns its id.
    pub fn add_job(
        &self,
        key: &JobKey,
        status: JobStatus,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<i64> {
        let finished = (status != JobStatus::Queued).then(|| ts(now));
        self.with("recording a job", |c| {
            c.execute(
                "INSERT INTO jobs (kind, grp, repository, vm, disk, queued_at, finished_at, status,
                 error, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    key.kind,
                    key.group,
                    key.repository,
                    key.vm,
                    key.disk,
                    ts(now),
                    finished,
                    status.as_str(),
                    error,
                    key.source
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    pub fn job_started(&self, id: i64, now: DateTime<Utc>) -> Result<()> {
        self.with("recording a job start", |c| {
            c.execute(
                "UPDATE jobs SET status = ?3, started_at = ?2 WHERE id = ?1",
                params![id, ts(now), JobStatus::Running.as_str()],
            )
            .map(drop)
        })
    }

    pub fn job_finished(
        &self,
        id: i64,
        status: JobStatus,
        r: &JobResult,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.with("recording a job's end", |c| {
            // One transaction: a run's points are visible with its status or not at all.
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "UPDATE jobs SET status = ?2, finished_at = ?3, attempts = ?4, error = ?5,
                 snapshot = ?6, snapshot_time = ?7, bytes_read = ?8, stored_bytes = ?9,
                 duration_secs = ?10, summary = ?11, bytes_sent = ?12, snapshots_copied = ?13
                 WHERE id = ?1",
                params![
                    id,
                    status.as_str(),
                    ts(now),
                    r.attempts,
                    r.error,
                    r.snapshot,
                    r.snapshot_time.map(ts),
                    r.bytes_read.map(|b| b as i64),
                    r.stored_bytes.map(|b| b as i64),
                    r.duration_secs,
                    r.summary,
                    r.bytes_sent.map(|b| b as i64),
                    r.snapshots_copied.map(|b| b as i64)
                ],
            )?;
            for p in &r.points {
                tx.execute(
                    "INSERT OR REPLACE INTO replica_points (job, vm, disk, time)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![id, p.vm, p.disk, ts(p.time)],
                )?;
            }
            tx.commit()
        })
    }

    /// The history the RPO state and metrics of one disk are computed from.
    pub fn disk_history(&self, group: &str, vm: &str, disk: &str) -> Result<DiskHistory> {
        self.with("reading a disk's history", |c| {
            let first_seen = c
                .query_row(
                    "SELECT first_seen FROM disks WHERE grp = ?1 AND vm = ?2 AND disk = ?3",
                    params![group, vm, disk],
                    |r| r.get::<_, f64>(0),
                )
                .optional()?
                .map(from_ts);
            let last_success = c
                .query_row(
                    "SELECT COALESCE(snapshot_time, started_at, queued_at), finished_at, snapshot,
                     bytes_read, stored_bytes, duration_secs FROM jobs
                     WHERE kind = 'backup' AND grp = ?1 AND vm = ?2 AND disk = ?3 AND status = 'ok'
                     ORDER BY id DESC LIMIT 1",
                    params![group, vm, disk],
                    |r| {
                        Ok(LastSuccess {
                            time: from_ts(r.get(0)?),
                            finished: from_ts(r.get::<_, Option<f64>>(1)?.unwrap_or_default()),
                            snapshot: r.get(2)?,
                            bytes_read: r.get::<_, Option<i64>>(3)?.map(|b| b as u64),
                            stored_bytes: r.get::<_, Option<i64>>(4)?.map(|b| b as u64),
                            duration_secs: r.get(5)?,
                        })
                    },
                )
                .optional()?;
            let last_attempt: Option<String> = c
                .query_row(
                    "SELECT status FROM jobs WHERE kind = 'backup' AND grp = ?1 AND vm = ?2
                     AND disk = ?3 AND status IN ('ok', 'failed', 'interrupted')
                     ORDER BY id DESC LIMIT 1",
                    params![group, vm, disk],
                    |r| r.get(0),
                )
                .optional()?;
            let last_error = c
                .query_row(
                    "SELECT finished_at, error FROM jobs WHERE kind = 'backup' AND grp = ?1
                     AND vm = ?2 AND disk = ?3 AND error IS NOT NULL AND finished_at IS NOT NULL
                     ORDER BY id DESC LIMIT 1",
                    params![group, vm, disk],
                    |r| Ok((from_ts(r.get(0)?), r.get::<_, String>(1)?)),
                )
                .optional()?;
            let running: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE kind = 'backup' AND grp = ?1 AND vm = ?2
                 AND disk = ?3 AND status = 'running')",
                params![group, vm, disk],
                |r| r.get(0),
            )?;
            Ok(DiskHistory {
                first_seen,
                last_attempt_failed: last_attempt.is_some_and(|s| s != "ok"),
                last_success,
                last_error,
                running,
            })
        })
    }

    /// `(kind, status, count)` over the whole history, for `lifeboat_jobs_total`.
    pub fn job_counts(&self) -> Result<Vec<(String, String, u64)>> {
        self.with("counting jobs", |c| {
            let mut stmt = c.prepare(
                "SELECT kind, status, COUNT(*) FROM jobs GROUP BY kind, status ORDER BY kind, status",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64)))?;
            rows.collect()
        })
    }
}

/// The status of every VM in `config` (or one group) at `now`, from the history in
/// `state`; without one (the daemon never ran here) every disk has an empty history.
pub fn read_status(
    config: &Config,
    state: Option<&State>,
    now: DateTime<Utc>,
    only_group: Option<&str>,
) -> Result<StatusReport> {
    let daemon = match state {
        Some(s) => s.daemon()?,
        None => None,
    };
    status_report(
        config,
        daemon.as_ref(),
        now,
        only_group,
        |group, vm, disk| match state {
            Some(s) => s.disk_history(group, vm, disk),
            None => Ok(DiskHistory::default()),
        },
        |r, vm, disk| match state {
            Some(s) => s.replica_history(&r.from, &r.to, vm, disk),
            None => Ok(ReplicaHistory::default()),
        },
    )
}
