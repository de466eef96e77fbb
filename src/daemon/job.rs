//! One job = one child process of this same binary (`lifeboat backup --json …`,
//! `forget --group … --json`, `prune --json`, `replicate --json …`), with retries for
//! transient failures.
//!
//! Children instead of in-process tasks: a job that crashes, leaks or hangs cannot take
//! the daemon down, its memory goes back to the OS when it exits, and a stop is a
//! signal to a process group. Backups are resumable, so interrupting one loses only
//! the time spent: the packs it uploaded are reused by the next run.
//!
//! A child exiting with 75 (`EX_TEMPFAIL`, see `exit.rs`) failed transiently and is
//! retried after `retry_delay`, doubling; any other failure is final for this run.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

use super::state::{JobResult, ReplicaPoint};
use crate::exit::TEMPORARY_FAILURE;

/// After SIGTERM, how long an interrupted child gets before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(30);
/// Bytes of a child's stderr kept for the error message.
const ERROR_TAIL: usize = 4096;

/// Where the daemon is in its life; jobs watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Running,
    /// Stop starting jobs and retries; let running children finish.
    Stopping,
    /// Interrupt running children (SIGTERM, then SIGKILL).
    Interrupting,
}

/// Resolves once the stage satisfies `f` (or the daemon's sender is gone). Unlike
/// `wait_for`, it holds no borrow of the value afterwards, so it can sit in a
/// `select!` inside a task that must be `Send`.
pub async fn reached(stage: &mut watch::Receiver<Stage>, f: impl FnMut(&Stage) -> bool) {
    let _ = stage.wait_for(f).await;
}

/// Everything needed to run one job's child process.
#[derive(Debug, Clone)]
pub struct Spec {
    /// e.g. `backup web01/root` — for logs.
    pub label: String,
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

/// How the job ended.
#[derive(Debug)]
pub enum Outcome {
    Ok(JobResult),
    Failed(JobResult),
    Interrupted(JobResult),
}

/// Runs `spec` until it succeeds, fails for good, runs out of attempts, or the daemon
/// stops.
pub async fn run(
    spec: &Spec,
    retries: u32,
    retry_delay: Duration,
    mut stage: watch::Receiver<Stage>,
) -> Outcome {
    let mut delay = retry_delay;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let started = Utc::now();
        let a = run_once(spec, &mut stage).await;
        let mut result = JobResult {
            attempts: attempt,
            ..JobResult::default()
        };
        match a {
            Attempt::Interrupted => {
                result.error = Some(
                    "interrupted by the daemon's shutdown; the next run resumes (uploaded data is reused)"
                        .into(),
                );
                return Outcome::Interrupted(result);
            }
            Attempt::Exited {
                code: 0, stdout, ..
            } => {
                fill_from_report(&mut result, &stdout, started);
                return Outcome::Ok(result);
            }
            Attempt::Exited { code, error, .. } => {
                result.error = Some(error);
                let transient = code == i32::from(TEMPORARY_FAILURE);
                if !transient || attempt > retries {
                    if transient && let Some(e) = &mut result.error {
                        e.push_str(&format!(" (transient; gave up after {attempt} attempt(s))"));
                    }
                    return Outcome::Failed(result);
                }
                tracing::warn!(
                    "{}: transient failure (attempt {attempt} of {}), retrying in {}s: {}",
                    spec.label,
                    retries + 1,
                    delay.as_secs(),
                    result.error.as_deref().unwrap_or("")
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = reached(&mut stage, |s| *s != Stage::Running) => {
                        if let Some(e) = &mut result.error {
                            e.push_str(" (not retried: the daemon is stopping)");
                        }
                        return Outcome::Failed(result);
                    }
                }
                delay = delay.saturating_mul(2);
            }
            Attempt::NotStarted(error) => {
                result.error = Some(error);
                return Outcome::Failed(result);
            }
        }
    }
}

enum Attempt {
    Exited {
        code: i32,
        stdout: Vec<u8>,
        error: String,
    },
    Interrupted,
    NotStarted(String),
}

async fn run_once(spec: &Spec, stage: &mut watch::Receiver<Stage>) -> Attempt {
    let mut cmd = Command::new(&spec.exe);
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C in the daemon's terminal reaches only the
        // daemon, which decides when (and whether) to stop the children.
        .process_group(0)
        .env_remove("LIFEBOAT_REPO")
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Attempt::NotStarted(format!("could not start {}: {e}", spec.exe.display()));
        }
    };
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let out_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf).await;
        buf
    });
    let err_task = tokio::spawn(log_stderr(stderr, spec.label.clone()));
    let status = tokio::select! {
        s = child.wait() => s,
        () = reached(stage, |s| *s == Stage::Interrupting) => {
            if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            if tokio::time::timeout(TERM_GRACE, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
            let _ = out_task.await;
            let _ = err_task.await;
            return Attempt::Interrupted;
        }
    };
    let stdout = out_task.await.unwrap_or_default();
    let tail = err_task.await.unwrap_or_default();
    match status {
        Ok(s) => {
            let code = s.code().unwrap_or(-1);
            Attempt::Exited {
                code,
                stdout,
                error: error_text(&tail, s),
            }
        }
        Err(e) => Attempt::NotStarted(format!("waiting for the job's process: {e}")),
    }
}

/// Child log lines go to the daemon's log (the journal); the last
/// [`ERROR_TAIL`] bytes or so are kept for the error message.
async fn log_stderr(stderr: tokio::process::ChildStderr, label: String) -> String {
    let mut lines = BufReader::new(stderr).lines();
    let mut tail = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!("{label}: {line}");
        tail.push_str(&line);
        tail.push('\n');
        if tail.len() > 2 * ERROR_TAIL {
            let cut = tail.len() - ERROR_TAIL;
            let cut = (cut..tail.len())
                .find(|&i| tail.is_char_boundary(i))
                .unwrap_or(0);
            tail.drain(..cut);
        }
    }
    tail
}

/// The child's own `error: …` message (from its first line to the end), else how it
/// exited plus its last output.
fn error_text(stderr: &str, status: std::process::ExitStatus) -> String {
    // The message main.rs prints starts a line; "error: " inside a log line is not it.
    if let Some((at, _)) = stderr
        .match_indices("error: ")
        .find(|(i, _)| *i == 0 || stderr.as_bytes()[i - 1] == b'\n')
    {
        return stderr[at + "error: ".len()..].trim().to_string();
    }
    let last: Vec<&str> = stderr.lines().rev().take(3).collect();
    let last: Vec<&str> = last.into_iter().rev().collect();
    let how = match status.code() {
        Some(c) => format!("exited with code {c}"),
        None => format!("killed ({status})"),
    };
    if last.is_empty() {
        how
    } else {
        format!("{how}: {}", last.join(" | "))
    }
}

fn rfc3339(v: &serde_json::Value) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(v.as_str()?).ok()?;
    Some(t.with_timezone(&Utc))
}

/// Sizes and the snapshot from a `backup --json` report; what a `replicate --json`
/// run sent and the newest point per disk on the destination; a one-line summary
/// from `forget --json` and `prune --json`.
fn fill_from_report(r: &mut JobResult, stdout: &[u8], started: DateTime<Utc>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(stdout) else {
        return;
    };
    if let (Some(newest), Some(_)) = (v.get("newest"), v.get("destination")) {
        r.bytes_sent = v.get("bytes_sent").and_then(|b| b.as_u64());
        r.snapshots_copied = v.get("snapshots_copied").and_then(|b| b.as_u64());
        r.duration_secs = v.get("duration_secs").and_then(|d| d.as_f64());
        r.points = newest
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some(ReplicaPoint {
                    vm: p.get("vm")?.as_str()?.to_string(),
                    disk: p.get("disk")?.as_str()?.to_string(),
                    time: rfc3339(p.get("time")?)?,
                })
            })
            .collect();
        r.summary = Some(format!(
            "copied {} snapshot(s), sent {} bytes",
            r.snapshots_copied.unwrap_or(0),
            r.bytes_sent.unwrap_or(0)
        ));
    } else if let Some(s) = v.get("snapshot") {
        r.snapshot = s.get("id").and_then(|i| i.as_str()).map(String::from);
        r.snapshot_time = s.get("time").and_then(rfc3339).or(Some(started));
        r.bytes_read = v.get("bytes_read").and_then(|b| b.as_u64());
        r.stored_bytes = v.get("stored_bytes").and_then(|b| b.as_u64());
        r.duration_secs = v.get("duration_secs").and_then(|d| d.as_f64());
    } else if let Some(kept) = v.get("kept").and_then(|k| k.as_u64()) {
        let forgotten = v.get("forgotten").and_then(|k| k.as_u64()).unwrap_or(0);
        r.summary = Some(format!("kept {kept}, forgot {forgotten}"));
    } else if let Some(obj) = v.as_object() {
        // prune, or anything newer: keep its numbers, not its lists.
        let nums: Vec<String> = obj
            .iter()
            .filter(|(_, v)| v.is_number())
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        r.summary = Some(nums.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_read() {
        let mut r = JobResult::default();
        let started = Utc::now();
        fill_from_report(
            &mut r,
            br#"{"snapshot":{"id":"abcd","time":"2026-05-01T01:00:00Z"},"bytes_read":10,"stored_bytes":4,"duration_secs":1.5}"#,
            started,
        );
        assert_eq!(r.snapshot.as_deref(), Some("abcd"));
        assert_eq!(r.snapshot_time, "2026-05-01T01:00:00Z".parse().ok());
        assert_eq!(
            (r.bytes_read, r.stored_bytes, r.duration_secs),
            (Some(10), Some(4), Some(1.5))
        );
        let mut r = JobResult::default();
        fill_from_report(
            &mut r,
            br#"{"kept":3,"forgotten":2,"decisions":[]}"#,
            started,
        );
        assert_eq!(r.summary.as_deref(), Some("kept 3, forgot 2"));
        let mut r = JobResult::default();
        fill_from_report(
            &mut r,
            br#"{"source":"s3://a","destination":"/srv/dr","snapshots_copied":2,
                "snapshots_present":1,"chunks_sent":5,"bytes_sent":4096,"chunks_skipped":1,
                "bytes_skipped":10,"duration_secs":2.5,"copied":[{"vm":"web","disk":"root",
                "time":"2026-05-01T01:00:00Z","source_snapshot":"ab","snapshot":"cd"}],
                "newest":[{"vm":"web","disk":"root","time":"2026-05-01T01:00:00Z","lag_secs":7},
                {"vm":"web","disk":"data","time":"2026-04-30T01:00:00+02:00","lag_secs":9}]}"#,
            started,
        );
        assert_eq!((r.bytes_sent, r.snapshots_copied), (Some(4096), Some(2)));
        assert_eq!(r.duration_secs, Some(2.5));
        assert_eq!(r.snapshot, None);
        let points: Vec<(&str, String)> = r
            .points
            .iter()
            .map(|p| (p.disk.as_str(), p.time.to_rfc3339()))
            .collect();
        assert_eq!(
            points,
            [
                ("root", "2026-05-01T01:00:00+00:00".to_string()),
                ("data", "2026-04-29T23:00:00+00:00".to_string())
            ]
        );
        assert_eq!(
            r.summary.as_deref(),
            Some("copied 2 snapshot(s), sent 4096 bytes")
        );
    }

    #[test]
    fn error_text_prefers_the_childs_message() {
        use std::os::unix::process::ExitStatusExt;
        let st = std::process::ExitStatus::from_raw(1 << 8);
        assert_eq!(
            error_text("INFO x\nerror: disk image /a does not exist\n", st),
            "disk image /a does not exist"
        );
        assert_eq!(error_text("", st), "exited with code 1");
        assert_eq!(error_text("a\nb\n", st), "exited with code 1: a | b");
    }
}
