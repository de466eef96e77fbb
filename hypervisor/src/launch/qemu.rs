//! The embedded driver: `qemu-system-x86_64` as a child process of Lifeboat.
//!
//! QEMU is started under `setpriv --pdeathsig KILL` (when util-linux has it) and
//! with `kill_on_drop`, so no VM outlives its handle or Lifeboat itself: a drill VM
//! left running would hold its disks and, with a bridge, answer on the network.
//!
//! The one exception is a [`QemuLauncher::detachable`] launcher (failover): its VMs
//! run in their own process group, without a parent-death signal, their stderr in
//! `<run_dir>/<name>.log`, and [`RunningVm::detach`] hands them over as a
//! [`DetachedVm`] that outlives Lifeboat. Until detached they die with their handle
//! like any other.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::args::{Plan, check_spec, qemu_args};
use super::detached::DetachedVm;
use super::error::LaunchError;
use super::spec::{Accel, Firmware, LaunchSpec, NetBackend};
use super::vm::{RunningVm, VmLauncher};
use crate::qmp::Qmp;
use crate::tool::find_program;

const PROGRAM: &str = "qemu-system-x86_64";
/// QEMU opens its monitor before the guest runs; even TCG on a busy host does it in
/// a few seconds.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// After `quit`, QEMU exits in milliseconds; a hung one is killed after this.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);
const STDERR_TAIL: usize = 4096;
/// How long one TCP health probe waits for the guest to take the connection.
const PROBE: Duration = Duration::from_millis(500);
/// sockaddr_un holds 108 bytes including the NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Starts VMs with the local `qemu-system-x86_64`.
#[derive(Debug, Default, Clone)]
pub struct QemuLauncher {
    detachable: bool,
}

impl QemuLauncher {
    /// VMs that die with their handle and with Lifeboat (drills).
    pub fn new() -> QemuLauncher {
        QemuLauncher { detachable: false }
    }

    /// VMs that [`RunningVm::detach`] can leave running after Lifeboat exits
    /// (failover). Until detached, dropping the handle still kills them.
    pub fn detachable() -> QemuLauncher {
        QemuLauncher { detachable: true }
    }
}

#[async_trait]
impl VmLauncher for QemuLauncher {
    fn name(&self) -> &'static str {
        "qemu"
    }

    async fn start(&self, spec: &LaunchSpec) -> Result<Box<dyn RunningVm>, LaunchError> {
        Ok(Box::new(QemuVm::start(spec, self.detachable).await?))
    }
}

/// Whether KVM can run our guests: `/dev/kvm` opens read-write, and it is not the
/// PVM flavour of KVM (module `kvm_pvm`, nested clouds), which only runs guests
/// built for PVM and fails on a BIOS boot loader with "KVM internal error".
fn kvm_usable() -> bool {
    let opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    opens && !Path::new("/sys/module/kvm_pvm").exists()
}

/// A VM run by a `qemu-system-x86_64` child.
pub struct QemuVm {
    name: String,
    child: Option<Child>,
    qmp: Option<Qmp>,
    plan: Plan,
    forwards: Vec<(u16, SocketAddr)>,
    exit: Option<ExitStatus>,
    /// QEMU's stderr file, for a detachable VM (else it is piped and logged).
    stderr_log: Option<PathBuf>,
    /// Handed over as a [`DetachedVm`]: dropping the handle must not touch the VM.
    detached: bool,
}

impl QemuVm {
    async fn start(spec: &LaunchSpec, detachable: bool) -> Result<QemuVm, LaunchError> {
        check_spec(spec)?;
        let program = find_program(PROGRAM).ok_or(LaunchError::QemuNotInstalled)?;
        let spec = absolute_files(spec)?;
        let plan = make_plan(&spec)?;
        for f in [&plan.console, &plan.qmp, &plan.pidfile] {
            remove_stale(f)?;
        }
        if let Some(q) = &plan.qga {
            remove_stale(q)?;
        }
        let stderr_log = detachable.then(|| spec.run_dir.join(format!("{}.log", spec.name)));
        let mut cmd = qemu_command(&program, stderr_log.as_deref())?;
        cmd.args(qemu_args(&spec, &plan)?)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let mut child = cmd.spawn().map_err(LaunchError::Spawn)?;
        let tail = Arc::new(Mutex::new(String::new()));
        let drain = child
            .stderr
            .take()
            .map(|e| tokio::spawn(drain_stderr(e, tail.clone())));
        let forwards = plan
            .forwards
            .iter()
            .flatten()
            .map(|&(g, h)| (g, SocketAddr::from((Ipv4Addr::LOCALHOST, h))))
            .collect();
        let mut vm = QemuVm {
            name: spec.name.clone(),
            child: Some(child),
            qmp: None,
            plan,
            forwards,
            exit: None,
            stderr_log,
            detached: false,
        };
        match vm.connect_qmp().await {
            Ok(()) => {
                tracing::info!(vm = %vm.name, kvm = vm.plan.kvm, "QEMU started");
                Ok(vm)
            }
            Err(e) => {
                vm.kill_and_clean().await;
                if let Some(d) = drain {
                    let _ = tokio::time::timeout(Duration::from_secs(2), d).await;
                }
                let mut stderr = tail.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let Some(log) = &vm.stderr_log {
                    stderr = std::fs::read_to_string(log).unwrap_or_default();
                    let cut = stderr.len().saturating_sub(STDERR_TAIL);
                    let cut = (cut..stderr.len())
                        .find(|&i| stderr.is_char_boundary(i))
                        .unwrap_or(stderr.len());
                    stderr.drain(..cut);
                }
                Err(match e {
                    LaunchError::EarlyExit { status, .. } => LaunchError::EarlyExit {
                        status,
                        stderr: stderr.trim().to_string(),
                    },
                    other => other,
                })
            }
        }
    }

    /// Waits for the QMP socket, or QEMU's exit, or [`START_TIMEOUT`].
    async fn connect_qmp(&mut self) -> Result<(), LaunchError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Err(LaunchError::EarlyExit {
                    status: status.to_string(),
                    stderr: String::new(),
                });
            }
            if self.plan.qmp.exists()
                && let Ok(q) = Qmp::connect(&self.plan.qmp).await
            {
                self.qmp = Some(q);
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LaunchError::StartTimeout {
                    path: self.plan.qmp.clone(),
                    secs: START_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to `limit` for the process to exit.
    async fn wait_exit(&mut self, limit: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(Ok(status)) => {
                self.exit = Some(status);
                true
            }
            Ok(Err(_)) | Err(_) => false,
        }
    }

    async fn kill_and_clean(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            if let Ok(status) = child.wait().await {
                self.exit = Some(status);
            }
        }
        self.qmp = None;
        self.remove_files();
    }

    /// Sockets and the pid file; the console log stays as the boot's evidence.
    fn remove_files(&self) {
        let mut files = vec![&self.plan.qmp, &self.plan.pidfile];
        files.extend(self.plan.qga.as_ref());
        for f in files {
            let _ = std::fs::remove_file(f);
        }
    }

    fn qmp(&mut self) -> Result<&mut Qmp, LaunchError> {
        self.qmp.as_mut().ok_or_else(|| LaunchError::Io {
            what: format!("VM {}", self.name),
            source: std::io::Error::other("its QMP connection was lost"),
        })
    }
}

#[async_trait]
impl RunningVm for QemuVm {
    fn name(&self) -> &str {
        &self.name
    }

    fn console_log(&self) -> &Path {
        &self.plan.console
    }

    fn forwarded_port(&self, guest_port: u16) -> Option<SocketAddr> {
        self.forwards
            .iter()
            .find(|(g, _)| *g == guest_port)
            .map(|(_, a)| *a)
    }

    async fn guest_tcp_port_open(&mut self, guest_port: u16) -> bool {
        let Some(addr) = self.forwarded_port(guest_port) else {
            return false;
        };
        // The user network accepts on the host at once and then connects to the
        // guest: only its own table says whether the guest took the connection.
        let Ok(Ok(_stream)) = tokio::time::timeout(PROBE, TcpStream::connect(addr)).await else {
            return false;
        };
        let deadline = Instant::now() + PROBE;
        while Instant::now() < deadline {
            let Ok(qmp) = self.qmp() else { return false };
            let table = qmp
                .execute(
                    "human-monitor-command",
                    json!({"command-line": "info usernet"}),
                )
                .await;
            match table {
                Ok(Value::String(t)) if guest_established(&t, guest_port) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    fn guest_agent_socket(&self) -> Option<&Path> {
        self.plan.qga.as_deref()
    }

    async fn screendump(&mut self, png: &Path) -> Result<(), LaunchError> {
        // QEMU writes the file itself, relative to its own working directory.
        let png = std::path::absolute(png).map_err(|source| LaunchError::Io {
            what: format!("screendump path {}", png.display()),
            source,
        })?;
        let args = json!({ "filename": png.to_string_lossy(), "format": "png" });
        self.qmp()?.execute("screendump", args).await?;
        Ok(())
    }

    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.exit = Some(status);
        }
        self.exit
    }

    fn detach(mut self: Box<Self>) -> Result<DetachedVm, LaunchError> {
        let name = self.name.clone();
        let cannot = |why: &str| LaunchError::CannotDetach {
            vm: name.clone(),
            why: why.to_string(),
        };
        if self.stderr_log.is_none() {
            return Err(cannot(
                "it was started by a launcher that ties VMs to Lifeboat (use QemuLauncher::detachable)",
            ));
        }
        if self.try_exit_status().is_some() {
            return Err(cannot("it is no longer running"));
        }
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .ok_or_else(|| cannot("its process id is unknown"))?;
        let mut runtime_files = vec![self.plan.qmp.clone(), self.plan.pidfile.clone()];
        runtime_files.extend(self.plan.qga.clone());
        let vm = DetachedVm {
            name: self.name.clone(),
            pid,
            qmp: self.plan.qmp.clone(),
            console: self.plan.console.clone(),
            log: self.stderr_log.clone().unwrap_or_default(),
            runtime_files,
            forwards: self.forwards.clone(),
        };
        // Without kill_on_drop, dropping the child leaves QEMU running; tokio reaps
        // it if it exits while this process still lives.
        self.detached = true;
        self.qmp = None;
        self.child = None;
        tracing::info!(vm = %vm.name, pid, "VM detached");
        Ok(vm)
    }

    async fn stop(mut self: Box<Self>, grace: Duration) -> Result<(), LaunchError> {
        if self.try_exit_status().is_none() {
            let powerdown = match self.qmp.as_mut() {
                Some(q) => q.execute("system_powerdown", json!(null)).await.is_ok(),
                None => false,
            };
            if !(powerdown && self.wait_exit(grace).await) {
                if let Some(q) = self.qmp.as_mut() {
                    // QEMU may close the connection before it answers: not an error.
                    let _ = q.execute("quit", json!(null)).await;
                }
                if !self.wait_exit(QUIT_TIMEOUT).await {
                    tracing::warn!(vm = %self.name, "QEMU did not quit; killing it");
                }
            }
        }
        self.kill_and_clean().await;
        tracing::info!(vm = %self.name, status = ?self.exit, "VM stopped");
        Ok(())
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            // Reap without blocking; without a runtime tokio's orphan queue does it.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = child.wait().await;
                });
            }
        }
        self.remove_files();
    }
}

/// The spec with absolute, existing disk and firmware paths: QEMU resolves relative
/// ones against its own working directory, and a missing disk must be named clearly.
fn absolute_files(spec: &LaunchSpec) -> Result<LaunchSpec, LaunchError> {
    let mut spec = spec.clone();
    for d in &mut spec.disks {
        d.path = std::fs::canonicalize(&d.path).map_err(|e| LaunchError::DiskMissing {
            path: d.path.clone(),
            reason: e.to_string(),
        })?;
    }
    if let Firmware::Uefi { code, vars } = &mut spec.firmware {
        for f in std::iter::once(code).chain(vars.as_mut()) {
            *f = std::fs::canonicalize(&*f).map_err(|e| LaunchError::FirmwareMissing {
                path: f.clone(),
                reason: e.to_string(),
            })?;
        }
    }
    Ok(spec)
}

/// The command that runs QEMU. Tied to Lifeboat (parent-death signal, stderr piped
/// to the log) unless `stderr_log` is given: then QEMU gets its own process group (a
/// Ctrl-C at the terminal does not reach it), no parent-death signal, and writes its
/// stderr to that file, so it can run on after Lifeboat exits.
fn qemu_command(program: &Path, stderr_log: Option<&Path>) -> Result<Command, LaunchError> {
    let Some(log) = stderr_log else {
        let mut cmd = match find_program("setpriv") {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.stderr(Stdio::piped()).kill_on_drop(true);
        return Ok(cmd);
    };
    let file = std::fs::File::create(log).map_err(|source| LaunchError::Io {
        what: format!("cannot create QEMU's log {}", log.display()),
        source,
    })?;
    let mut cmd = Command::new(program);
    // Dropping the handle still kills it (QemuVm's Drop), until it is detached.
    cmd.stderr(file).process_group(0).kill_on_drop(false);
    Ok(cmd)
}

/// Checks the run directory, names the files and picks host ports for forwards.
fn make_plan(spec: &LaunchSpec) -> Result<Plan, LaunchError> {
    let run_dir_err = |source| LaunchError::RunDir {
        path: spec.run_dir.clone(),
        source,
    };
    std::fs::create_dir_all(&spec.run_dir).map_err(run_dir_err)?;
    let run_dir = std::path::absolute(&spec.run_dir).map_err(run_dir_err)?;
    let probe = run_dir.join(format!(".{}.probe", spec.name));
    std::fs::write(&probe, b"").map_err(run_dir_err)?;
    let _ = std::fs::remove_file(&probe);
    let file = |ext: &str| run_dir.join(format!("{}.{ext}", spec.name));
    let qmp = file("qmp");
    if qmp.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(LaunchError::InvalidSpec(format!(
            "socket path {} is longer than {MAX_SOCKET_PATH} bytes: use a shorter run_dir or name",
            qmp.display()
        )));
    }
    let mut forwards = Vec::new();
    for nic in &spec.nics {
        let mut these = Vec::new();
        if let NetBackend::User { forwards: f, .. } = &nic.backend {
            for &guest in f {
                these.push((guest, free_port()?));
            }
        }
        forwards.push(these);
    }
    Ok(Plan {
        kvm: match spec.accel {
            Accel::Auto => kvm_usable(),
            Accel::Kvm => true,
            Accel::Tcg => false,
        },
        console: file("console"),
        qga: spec.guest_agent.then(|| file("qga")),
        pidfile: file("pid"),
        qmp,
        forwards,
    })
}

/// Whether `info usernet` lists an established connection to the guest's `port`:
/// `  TCP[ESTABLISHED]  19  127.0.0.1 40000  10.0.2.15  80  0  0`.
fn guest_established(table: &str, port: u16) -> bool {
    let port = port.to_string();
    table.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.first() == Some(&"TCP[ESTABLISHED]") && f.get(5) == Some(&port.as_str())
    })
}

/// A 127.0.0.1 port nothing listens on now. Another process could take it before
/// QEMU binds it; QEMU then fails at start and says so.
fn free_port() -> Result<u16, LaunchError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| LaunchError::Io {
            what: "cannot find a free 127.0.0.1 port for a forward".into(),
            source,
        })
}

/// A file left by an earlier run of a VM of the same name.
fn remove_stale(path: &PathBuf) -> Result<(), LaunchError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LaunchError::Io {
            what: format!("cannot remove stale {}", path.display()),
            source,
        }),
    }
}

/// Logs QEMU's stderr and keeps its tail for [`LaunchError::EarlyExit`]; reading it
/// also keeps QEMU from blocking on a full pipe.
async fn drain_stderr(stderr: tokio::process::ChildStderr, tail: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::warn!("qemu-system-x86_64: {line}");
        let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
        t.push_str(&line);
        t.push('\n');
        if t.len() > STDERR_TAIL {
            let cut = t.len() - STDERR_TAIL;
            let cut = (cut..t.len())
                .find(|&i| t.is_char_boundary(i))
                .unwrap_or(t.len());
            t.drain(..cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::guest_established;

    #[test]
    fn only_an_established_guest_connection_counts() {
        let table = "Hub -1 (net0):\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\n  TCP[SYN_SENT]      19       127.0.0.1 40001       10.0.2.15    81     0     0\n  TCP[ESTABLISHED]   18       127.0.0.1 40000       10.0.2.15    80     0     0\n  TCP[HOST_FORWARD]  12       127.0.0.1 40002       10.0.2.15    22     0     0\n";
        assert!(guest_established(table, 80));
        assert!(!guest_established(table, 81));
        assert!(!guest_established(table, 22));
    }
}
