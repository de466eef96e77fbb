//! Replication history in the state database: runs are `jobs` rows of kind
//! `replicate` (`source` → `repository`), each with the newest point per disk it found
//! on the destination (`replica_points`); `replications` notes when the daemon first
//! scheduled each pair (the lag clock of a disk never replicated starts there).

use anyhow::Result;
use chrono::{DateTime, Utc};
use lifeboat_policies::lag::ReplicaHistory;
use rusqlite::{OptionalExtension, params};

use super::{State, from_ts, ts};

impl State {
    /// Remembers when the replication `source` → `destination` was first scheduled.
    pub fn saw_replication(
        &self,
        source: &str,
        destination: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.with("recording a replication", |c| {
            c.execute(
                "INSERT OR IGNORE INTO replications (source, destination, first_seen)
                 VALUES (?1, ?2, ?3)",
                params![source, destination, ts(now)],
            )
            .map(drop)
        })
    }

    /// What the history says about one disk on the destination of `source` →
    /// `destination`; empty for a database no daemon with replication has opened yet.
    pub fn replica_history(
        &self,
        source: &str,
        destination: &str,
        vm: &str,
        disk: &str,
    ) -> Result<ReplicaHistory> {
        if !self.replication {
            return Ok(ReplicaHistory::default());
        }
        self.with("reading a replica's history", |c| {
            let pair = params![source, destination];
            let first_seen = c
                .query_row(
                    "SELECT first_seen FROM replications WHERE source = ?1 AND destination = ?2",
                    pair,
                    |r| r.get::<_, f64>(0),
                )
                .optional()?
                .map(from_ts);
            let newest: Option<f64> = c.query_row(
                "SELECT MAX(p.time) FROM replica_points p JOIN jobs j ON j.id = p.job
                 WHERE j.kind = 'replicate' AND j.source = ?1 AND j.repository = ?2
                 AND p.vm = ?3 AND p.disk = ?4",
                params![source, destination, vm, disk],
                |r| r.get(0),
            )?;
            let last_duration: Option<f64> = c
                .query_row(
                    "SELECT duration_secs FROM jobs WHERE kind = 'replicate' AND source = ?1
                     AND repository = ?2 AND status = 'ok' ORDER BY id DESC LIMIT 1",
                    pair,
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            let last_run: Option<String> = c
                .query_row(
                    "SELECT status FROM jobs WHERE kind = 'replicate' AND source = ?1
                     AND repository = ?2 AND status IN ('ok', 'failed', 'interrupted')
                     ORDER BY id DESC LIMIT 1",
                    pair,
                    |r| r.get(0),
                )
                .optional()?;
            let last_error = c
                .query_row(
                    "SELECT finished_at, error FROM jobs WHERE kind = 'replicate' AND source = ?1
                     AND repository = ?2 AND error IS NOT NULL AND finished_at IS NOT NULL
                     ORDER BY id DESC LIMIT 1",
                    pair,
                    |r| Ok((from_ts(r.get(0)?), r.get::<_, String>(1)?)),
                )
                .optional()?;
            let running: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE kind = 'replicate' AND source = ?1
                 AND repository = ?2 AND status = 'running')",
                pair,
                |r| r.get(0),
            )?;
            Ok(ReplicaHistory {
                first_seen,
                newest: newest.map(from_ts),
                last_duration,
                last_run_failed: last_run.is_some_and(|s| s != "ok"),
                last_error,
                running,
            })
        })
    }

    /// `(source, destination, bytes)`: pack bytes every recorded run of each pair sent,
    /// for `lifeboat_replication_bytes_sent_total`.
    pub fn replication_bytes_sent(&self) -> Result<Vec<(String, String, u64)>> {
        if !self.replication {
            return Ok(Vec::new());
        }
        self.with("summing replication bytes", |c| {
            let mut stmt = c.prepare(
                "SELECT source, repository, COALESCE(SUM(bytes_sent), 0) FROM jobs
                 WHERE kind = 'replicate' AND source IS NOT NULL
                 GROUP BY source, repository ORDER BY source, repository",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?.max(0) as u64))
            })?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{JobKey, JobResult, JobStatus, ReplicaPoint};
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        format!("2026-05-01T{s}Z").parse().unwrap()
    }

    fn run(s: &State, status: JobStatus, result: JobResult, at: &str) {
        let key = JobKey {
            kind: "replicate",
            group: None,
            repository: "dr".into(),
            source: Some("onsite".into()),
            vm: None,
            disk: None,
        };
        let id = s.add_job(&key, JobStatus::Queued, None, t(at)).unwrap();
        s.job_started(id, t(at)).unwrap();
        s.job_finished(id, status, &result, t(at)).unwrap();
    }

    fn point(disk: &str, at: &str) -> ReplicaPoint {
        ReplicaPoint {
            vm: "web".into(),
            disk: disk.into(),
            time: t(at),
        }
    }

    #[test]
    fn runs_record_points_bytes_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        s.saw_replication("onsite", "dr", t("09:00:00")).unwrap();
        let empty = s.replica_history("onsite", "dr", "web", "root").unwrap();
        assert_eq!(empty.first_seen, Some(t("09:00:00")));
        assert_eq!(empty.newest, None);
        let ok = JobResult {
            bytes_sent: Some(1000),
            snapshots_copied: Some(2),
            duration_secs: Some(3.5),
            points: vec![point("root", "10:00:00"), point("data", "09:30:00")],
            ..JobResult::default()
        };
        run(&s, JobStatus::Ok, ok, "10:01:00");
        let h = s.replica_history("onsite", "dr", "web", "data").unwrap();
        assert_eq!(h.newest, Some(t("09:30:00")));
        assert_eq!(h.last_duration, Some(3.5));
        assert!(!h.last_run_failed);
        let failed = JobResult {
            error: Some("secondary unreachable".into()),
            ..JobResult::default()
        };
        run(&s, JobStatus::Failed, failed, "11:00:00");
        let h = s.replica_history("onsite", "dr", "web", "root").unwrap();
        // The failure keeps the newest point known and marks the pair failed.
        assert_eq!(h.newest, Some(t("10:00:00")));
        assert!(h.last_run_failed);
        assert_eq!(
            h.last_error,
            Some((t("11:00:00"), "secondary unreachable".into()))
        );
        assert_eq!(
            s.replication_bytes_sent().unwrap(),
            [("onsite".to_string(), "dr".to_string(), 1000)]
        );
        // Another pair's runs are its own.
        let other = s.replica_history("onsite", "tape", "web", "root").unwrap();
        assert_eq!(other, ReplicaHistory::default());
    }

    /// A database made before replication existed opens, migrates and keeps its rows;
    /// before that, a read-only `status` sees no replication history instead of failing.
    #[test]
    fn old_databases_are_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = super::super::db_path(dir.path());
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(super::super::SCHEMA).unwrap();
        c.execute(
            "INSERT INTO jobs (kind, grp, repository, vm, disk, queued_at, status)
             VALUES ('backup', 'g', 'r', 'web', 'root', 1.0, 'ok')",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO daemon (id, pid, started_at, heartbeat_at) VALUES (1, 1, 1.0, 1.0)",
            [],
        )
        .unwrap();
        drop(c);
        let ro = State::open_read_only(dir.path()).unwrap().unwrap();
        assert_eq!(
            ro.replica_history("a", "b", "web", "root").unwrap(),
            ReplicaHistory::default()
        );
        assert!(ro.replication_bytes_sent().unwrap().is_empty());
        drop(ro);
        let s = State::open(dir.path()).unwrap();
        assert_eq!(s.job_counts().unwrap(), [("backup".into(), "ok".into(), 1)]);
        s.saw_replication("a", "b", t("09:00:00")).unwrap();
        drop(s);
        // Opening again applies nothing twice.
        let s = State::open(dir.path()).unwrap();
        let v: usize = s
            .with("version", |c| {
                c.query_row("PRAGMA user_version", [], |r| r.get(0))
            })
            .unwrap();
        assert_eq!(v, super::super::MIGRATIONS.len());
        assert!(
            State::open_read_only(dir.path())
                .unwrap()
                .unwrap()
                .replication
        );
    }
}
