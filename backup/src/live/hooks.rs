//! Pre/post hooks around the point in time: shell commands, typically a guest-agent
//! `guest-fsfreeze-freeze` / `guest-fsfreeze-thaw`, that make the snapshot
//! application-consistent instead of only crash-consistent.
//!
//! Each runs as `sh -c CMD` with stdin closed and these variables set:
//! `LIFEBOAT_HOOK` (`pre`/`post`), `LIFEBOAT_VM`, `LIFEBOAT_DISK`, `LIFEBOAT_DRIVE`,
//! and for the post hook `LIFEBOAT_SNAPSHOT_TAKEN` (`1`, or `0` if the transaction
//! failed or the pre hook did). Output is logged, never mixed into Lifeboat's own
//! stdout (which may be `--json`). A hook that runs longer than [`HOOK_TIMEOUT`] is
//! killed and counts as failed.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// A guest freeze must be short: a hook this slow is stuck.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(120);

/// Hooks run around the point in time (e.g. guest-agent fsfreeze / thaw for
/// application consistency).
///
/// Shell commands run with `sh -c`. A failing pre hook aborts the backup cleanly
/// (after running the post hook, so a partial freeze is thawed: the post hook must
/// tolerate running after a failed pre hook). The post hook runs whether or not the
/// snapshot was taken; its failure is logged but does not fail the backup.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub pre: Option<String>,
    pub post: Option<String>,
}

/// What a hook is told about the backup.
pub(super) struct Env {
    pub vm: String,
    pub disk: String,
    pub node: String,
}

/// Runs `cmd` (if any) to completion. The error says which hook failed and how,
/// with the end of its stderr.
pub(super) async fn run(
    cmd: Option<&str>,
    stage: &str,
    env: &Env,
    extra: &[(&str, &str)],
) -> Result<(), String> {
    let Some(cmd) = cmd.filter(|c| !c.trim().is_empty()) else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    let child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("LIFEBOAT_HOOK", stage)
        .env("LIFEBOAT_VM", &env.vm)
        .env("LIFEBOAT_DISK", &env.disk)
        .env("LIFEBOAT_DRIVE", &env.node)
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropped on timeout: the hook must not outlive the backup.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{stage}-backup hook `{cmd}` could not start: {e}"))?;
    let out = match tokio::time::timeout(HOOK_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("{stage}-backup hook `{cmd}`: {e}")),
        Err(_) => {
            return Err(format!(
                "{stage}-backup hook `{cmd}` did not finish within {} s and was killed",
                HOOK_TIMEOUT.as_secs()
            ));
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        tracing::info!("{stage} hook (stdout): {line}");
    }
    for line in stderr.lines() {
        tracing::warn!("{stage} hook (stderr): {line}");
    }
    tracing::info!(
        "{stage}-backup hook `{cmd}` finished in {:.2} s: {}",
        started.elapsed().as_secs_f64(),
        out.status
    );
    if out.status.success() {
        return Ok(());
    }
    let tail: String = {
        let t = stderr.trim();
        let start = t.char_indices().rev().nth(499).map_or(0, |(i, _)| i);
        t[start..].to_string()
    };
    Err(format!(
        "{stage}-backup hook `{cmd}` failed ({}){}",
        out.status,
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        }
    ))
}
