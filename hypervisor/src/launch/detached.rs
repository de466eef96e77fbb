//! A VM that outlives the process that started it: what a failover leaves running
//! on the secondary after `lifeboat failover` returns.
//!
//! A [`DetachedVm`] is plain data (serialisable into the failover's state file): the
//! QEMU process id and its control socket. A later command — `failover status`,
//! `failover abort`, `failback` — checks whether it still runs and stops it. The pid
//! alone is not trusted (pids are reused): a process counts as this VM only while its
//! command line still names this VM's QMP socket.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::LaunchError;
use crate::qmp::Qmp;

/// After `quit`, QEMU exits in milliseconds; a hung one is killed after this.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);

/// A running VM no Lifeboat process holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DetachedVm {
    pub name: String,
    pub pid: u32,
    /// The QMP socket: how the VM is controlled, and how its process is recognised.
    pub qmp: PathBuf,
    /// The serial console log (growing while the VM runs).
    pub console: PathBuf,
    /// QEMU's own messages (its stderr).
    pub log: PathBuf,
    /// Sockets and the pid file, removed once the VM has stopped.
    pub runtime_files: Vec<PathBuf>,
    /// Guest TCP port → where it answers on the host.
    pub forwards: Vec<(u16, SocketAddr)>,
}

impl DetachedVm {
    /// Whether the VM's QEMU process still runs.
    pub fn is_running(&self) -> bool {
        process_is(self.pid, &self.qmp)
    }

    /// Where a forwarded guest TCP port answers on the host.
    pub fn forwarded_port(&self, guest_port: u16) -> Option<SocketAddr> {
        self.forwards
            .iter()
            .find(|(g, _)| *g == guest_port)
            .map(|(_, a)| *a)
    }

    /// Asks the guest to power off (ACPI) and waits up to `grace`; never forces it.
    /// Returns whether it is off: only then are its disks consistent and free.
    pub async fn power_off(&self, grace: Duration) -> Result<bool, LaunchError> {
        if !self.is_running() {
            self.remove_runtime_files();
            return Ok(true);
        }
        let mut qmp = Qmp::connect(&self.qmp).await?;
        qmp.execute("system_powerdown", json!(null)).await?;
        drop(qmp);
        let off = self.wait_exit(grace).await;
        if off {
            self.remove_runtime_files();
        }
        Ok(off)
    }

    /// Asks the guest to power off (ACPI) and waits up to `grace`; then tells QEMU to
    /// quit; then kills it. Removes the sockets and pid file. Returns whether the
    /// guest shut down by itself (its disks are then consistent).
    pub async fn stop(&self, grace: Duration) -> Result<bool, LaunchError> {
        if !self.is_running() {
            self.remove_runtime_files();
            return Ok(true);
        }
        let mut qmp = Qmp::connect(&self.qmp).await.ok();
        if let Some(q) = qmp.as_mut()
            && q.execute("system_powerdown", json!(null)).await.is_ok()
            && self.wait_exit(grace).await
        {
            self.remove_runtime_files();
            return Ok(true);
        }
        if let Some(q) = qmp.as_mut() {
            // QEMU may close the connection before it answers: not an error.
            let _ = q.execute("quit", json!(null)).await;
        }
        drop(qmp);
        if !self.wait_exit(QUIT_TIMEOUT).await {
            tracing::warn!(vm = %self.name, pid = self.pid, "QEMU did not quit; killing it");
            if let Some(pid) = Pid::from_raw(self.pid as i32)
                && self.is_running()
            {
                let _ = kill_process(pid, Signal::KILL);
            }
            if !self.wait_exit(QUIT_TIMEOUT).await {
                return Err(LaunchError::Io {
                    what: format!("VM {} (pid {})", self.name, self.pid),
                    source: std::io::Error::other("QEMU survived SIGKILL"),
                });
            }
        }
        self.remove_runtime_files();
        Ok(false)
    }

    /// Waits up to `limit` for the process to be gone.
    pub async fn wait_exit(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if !self.is_running() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn remove_runtime_files(&self) {
        for f in &self.runtime_files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Shuts down a VM known only by its QMP socket (one Lifeboat did not start, e.g. on
/// the primary before a planned failover): ACPI power-off, then waits up to `grace`
/// for QEMU to close the socket. Never forces it; returns whether it is off.
pub async fn power_off_by_qmp(socket: &Path, grace: Duration) -> Result<bool, LaunchError> {
    let mut qmp = Qmp::connect(socket).await?;
    qmp.execute("system_powerdown", json!(null)).await?;
    drop(qmp);
    let deadline = Instant::now() + grace;
    loop {
        // QEMU removes its socket on exit; a socket nobody accepts on is as good. A
        // connect that hangs (another client holds the monitor) means it still runs.
        match tokio::time::timeout(POLL * 20, Qmp::connect(socket)).await {
            Ok(Err(_)) => return Ok(true),
            Ok(Ok(q)) => drop(q),
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(POLL * 5).await;
    }
}

/// Pids of running QEMU processes whose command line names `dir` (a path under it):
/// the VMs of an interrupted failover, which never got recorded.
pub fn qemu_pids_naming(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let program = cmdline.split(|&b| b == 0).next().unwrap_or_default();
            program.ends_with(b"qemu-system-x86_64") && process_is(pid, dir)
        })
        .collect()
}

/// SIGKILL to `pid` (no error if it is already gone).
pub fn kill_pid(pid: u32) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = kill_process(pid, Signal::KILL);
    }
}

/// Whether `pid` is a live (not zombie) process whose command line mentions `qmp`.
fn process_is(pid: u32, qmp: &Path) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(cmdline) = std::fs::read(proc.join("cmdline")) else {
        return false;
    };
    let needle = qmp.as_os_str().as_encoded_bytes();
    let named = !needle.is_empty() && cmdline.windows(needle.len()).any(|w| w == needle);
    // A zombie (exited, not yet reaped by its parent) has an empty command line on
    // Linux, but check its state too: it no longer runs anything.
    let zombie = std::fs::read_to_string(proc.join("stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false);
    named && !zombie
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_counts_only_while_its_command_line_names_the_socket() {
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap();
        assert!(
            process_is(me, &exe),
            "our own binary is on our command line"
        );
        assert!(!process_is(me, Path::new("/run/lifeboat/nobody.qmp")));
        assert!(!process_is(u32::MAX - 1, &exe), "no such pid");
    }
}
