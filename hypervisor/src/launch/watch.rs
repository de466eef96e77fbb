//! Proving a VM booted: read its serial console and run health checks until all
//! pass, the guest panics, the VM exits or the time is up.
//!
//! The console file is append-only: it is polled every [`POLL`] from where the last
//! read stopped, so a long boot log is read once.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::vm::RunningVm;

const POLL: Duration = Duration::from_millis(100);
/// How often a failed TCP or guest-agent check is tried again.
const RETRY: Duration = Duration::from_millis(500);
/// How long one guest-agent attempt may take: a busy guest answers late.
const ATTEMPT: Duration = Duration::from_secs(2);

/// Console lines that mean the guest crashed: Linux panics, BUGs and oopses, Windows
/// bug checks as printed on a serial console (EMS).
static PANIC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"Kernel panic - not syncing|\bBUG: |\bOops: |\*\*\* STOP|\bSTOP: 0x")
        .expect("a valid regex")
});

/// One thing that must be true of a booted guest.
#[derive(Debug, Clone)]
pub enum HealthCheck {
    /// A console line matches.
    Console(Regex),
    /// The guest accepts a connection on this TCP port, reached through its forward
    /// ([`RunningVm::guest_tcp_port_open`]).
    Tcp { port: u16 },
    /// The QEMU guest agent answers `guest-sync`.
    GuestAgent,
}

impl HealthCheck {
    fn describe(&self) -> String {
        match self {
            HealthCheck::Console(re) => format!("console output matching /{re}/"),
            HealthCheck::Tcp { port } => format!("guest TCP port {port}"),
            HealthCheck::GuestAgent => "the guest agent".into(),
        }
    }
}

/// What [`watch_boot`] saw; times are from the start of the watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootWatch {
    pub first_output: Option<Duration>,
    pub healthy: Option<Duration>,
    pub outcome: BootOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootOutcome {
    /// Every check passed.
    Healthy,
    /// A crash line on the console, e.g. `Kernel panic - not syncing: ...`.
    Panicked { line: String },
    /// Timed out and the guest never wrote to its console.
    NoOutput,
    /// Timed out with these checks still failing.
    TimedOut { waiting_for: String },
    /// The VM's process exited first.
    Exited { status: String },
}

/// Watches `vm` until every check passes or `timeout`. With no checks, the first
/// console output counts as healthy.
pub async fn watch_boot(
    vm: &mut dyn RunningVm,
    checks: &[HealthCheck],
    timeout: Duration,
) -> BootWatch {
    let start = Instant::now();
    let mut console = ConsoleTail::default();
    let mut passed = vec![false; checks.len()];
    let mut next_probe = start;
    let mut agent_id: u64 = start.elapsed().as_nanos() as u64 % 1_000_000 + 1;
    let mut first_output = None;
    let finish = |first_output, healthy, outcome| BootWatch {
        first_output,
        healthy,
        outcome,
    };
    loop {
        let exited = vm.try_exit_status();
        let lines = console.read_new(vm.console_log());
        if first_output.is_none() && console.offset > 0 {
            first_output = Some(start.elapsed());
        }
        for line in &lines {
            if let Some(m) = PANIC.find(line) {
                let line = line[m.start()..].trim_end().to_string();
                return finish(first_output, None, BootOutcome::Panicked { line });
            }
            for (c, ok) in checks.iter().zip(passed.iter_mut()) {
                if let HealthCheck::Console(re) = c {
                    *ok |= re.is_match(line);
                }
            }
        }
        if let Some(status) = exited {
            let status = status.to_string();
            return finish(first_output, None, BootOutcome::Exited { status });
        }
        if Instant::now() >= next_probe {
            next_probe = Instant::now() + RETRY;
            for (c, ok) in checks.iter().zip(passed.iter_mut()) {
                *ok = *ok || probe(&mut *vm, c, &mut agent_id).await;
            }
        }
        let all = passed.iter().all(|&p| p) && (!checks.is_empty() || first_output.is_some());
        if all {
            return finish(first_output, Some(start.elapsed()), BootOutcome::Healthy);
        }
        if start.elapsed() >= timeout {
            let outcome = if first_output.is_none() {
                BootOutcome::NoOutput
            } else {
                let waiting: Vec<String> = checks
                    .iter()
                    .zip(&passed)
                    .filter(|(_, p)| !**p)
                    .map(|(c, _)| c.describe())
                    .collect();
                BootOutcome::TimedOut {
                    waiting_for: waiting.join(", "),
                }
            };
            return finish(first_output, None, outcome);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One attempt at a TCP or guest-agent check; console checks pass only by lines.
async fn probe(vm: &mut dyn RunningVm, check: &HealthCheck, agent_id: &mut u64) -> bool {
    match check {
        HealthCheck::Console(_) => false,
        HealthCheck::Tcp { port } => vm.guest_tcp_port_open(*port).await,
        HealthCheck::GuestAgent => match vm.guest_agent_socket() {
            Some(sock) => {
                *agent_id += 1;
                tokio::time::timeout(ATTEMPT, agent_sync(sock, *agent_id))
                    .await
                    .unwrap_or(false)
            }
            None => false,
        },
    }
}

/// `guest-sync` with `id`; the agent echoes the id. Replies to earlier attempts that
/// timed out may still be queued in the channel: they carry other ids.
async fn agent_sync(socket: &Path, id: u64) -> bool {
    let Ok(stream) = UnixStream::connect(socket).await else {
        return false;
    };
    let (read, mut write) = stream.into_split();
    let msg = json!({"execute": "guest-sync", "arguments": {"id": id}});
    if write
        .write_all(format!("{msg}\n").as_bytes())
        .await
        .is_err()
    {
        return false;
    }
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v.get("return") == Some(&json!(id))
        {
            return true;
        }
    }
    false
}

/// Reads what was appended to the console file since the last call.
#[derive(Default)]
struct ConsoleTail {
    offset: u64,
    partial: Vec<u8>,
}

impl ConsoleTail {
    /// New complete lines, plus the unfinished last line (a prompt, or a panic
    /// message the guest could not finish) so it is seen without its newline.
    fn read_new(&mut self, path: &Path) -> Vec<String> {
        let mut fresh = Vec::new();
        if let Ok(mut f) = std::fs::File::open(path)
            && f.seek(SeekFrom::Start(self.offset)).is_ok()
        {
            let _ = f.read_to_end(&mut fresh);
        }
        if fresh.is_empty() {
            return Vec::new();
        }
        self.offset += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        let mut lines = Vec::new();
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            lines.push(String::from_utf8_lossy(&line).into_owned());
        }
        if !self.partial.is_empty() {
            lines.push(String::from_utf8_lossy(&self.partial).into_owned());
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_lines_of_linux_and_windows_are_recognised() {
        for line in [
            "[    1.2] Kernel panic - not syncing: VFS: Unable to mount root fs",
            "[    3.4] BUG: kernel NULL pointer dereference, address: 0000000000000000",
            "[    3.4] Oops: 0002 [#1] PREEMPT SMP NOPTI",
            "*** STOP: 0x0000007B (0xF78D2524,0xC0000034,0x00000000,0x00000000)",
        ] {
            assert!(PANIC.is_match(line), "{line}");
        }
        for line in [
            "Run /init as init process",
            "DEBUG: fine",
            "STOPPED service",
        ] {
            assert!(!PANIC.is_match(line), "{line}");
        }
    }

    #[test]
    fn console_is_read_from_where_it_stopped_with_the_unfinished_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut tail = ConsoleTail::default();
        assert!(tail.read_new(&path).is_empty());
        std::fs::write(&path, "one\ntw").unwrap();
        assert_eq!(tail.read_new(&path), ["one\n", "tw"]);
        std::fs::write(&path, "one\ntwo\n").unwrap();
        assert_eq!(tail.read_new(&path), ["two\n"]);
        assert!(tail.read_new(&path).is_empty());
    }
}
