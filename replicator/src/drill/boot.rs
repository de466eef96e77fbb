//! Starting one boot group of a drill and watching it come up: the launch spec of
//! each VM (its definition, the plan's overrides, NICs moved to the test network),
//! the health checks, and the evidence captured at the end of the wait — the whole
//! console log, a screenshot, the timings and the verdict.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::future::join_all;
use lifeboat_hypervisor::launch::{
    Accel, BootOutcome, BootWatch, DiskBus as LaunchBus, DiskSpec, Firmware as LaunchFirmware,
    HealthCheck, LaunchSpec, NetBackend, NicSpec, RunningVm, VmLauncher, watch_boot,
};
use lifeboat_policies::config::{HealthSpec, Network, NetworkKind, Plan, PlanVm};
use lifeboat_store::format::vm_definition::{DiskBus, Firmware};
use regex::Regex;

use super::disks::{ReadyVm, sanitize};
use super::error::DrillError;
use super::report::{EvidenceFile, VmResult, VmVerdict};

/// Where UEFI guests get their firmware (Debian's `ovmf` package).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// Lines of console kept in the report itself (the whole log is an evidence file).
const CONSOLE_TAIL_LINES: usize = 40;
/// Without a health check in the plan: a login prompt or a boot-complete message.
const DEFAULT_CONSOLE_HEALTH: &str = r"(?i)login:|reached target|welcome to";

/// A VM of the group, started.
pub(crate) struct StartedVm {
    pub(crate) ready: ReadyVm,
    pub(crate) running: Box<dyn RunningVm>,
    pub(crate) checks: Vec<HealthCheck>,
    pub(crate) check_text: Vec<String>,
    pub(crate) timeout: Duration,
    pub(crate) started_at: Duration,
    pub(crate) warnings: Vec<String>,
    /// Guest TCP ports forwarded to the host (the TCP health check's).
    pub(crate) forwards: Vec<u16>,
}

/// Which of the plan's network maps a VM's NICs go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetworkUse {
    /// A drill: `test_network_map`, isolated networks only.
    Drill,
    /// A failover: `network_map`, the secondary's production networks.
    Production,
}

/// The launch spec of `ready` for a drill or failover of `plan`; NICs on a production
/// network the plan's map for `usage` does not map are left unplugged (and the report
/// says so).
pub(crate) fn launch_spec(
    ready: &ReadyVm,
    plan: &Plan,
    (networks, usage): (&[Network], NetworkUse),
    run_dir: &Path,
    warnings: &mut Vec<String>,
) -> LaunchSpec {
    let d = &ready.definition;
    let overrides = plan.overrides(&ready.vm);
    let health = overrides.map(|o| o.health.clone()).unwrap_or_default();
    let nics = d
        .nics
        .iter()
        .map(|nic| {
            let (mapped, map_name) = match usage {
                NetworkUse::Drill => (plan.test_network_for(&nic.network), "test_network_map"),
                NetworkUse::Production => (plan.failover_network_for(&nic.network), "network_map"),
            };
            let backend = match mapped.and_then(|name| networks.iter().find(|n| n.name == name)) {
                Some(net) => backend_of(net, &health),
                None => {
                    warnings.push(format!(
                        "NIC {} on production network {:?} left unplugged: the plan's \
                         {map_name} does not map that network",
                        nic.mac.as_deref().unwrap_or("(no MAC)"),
                        nic.network
                    ));
                    NetBackend::Unplugged
                }
            };
            NicSpec {
                mac: nic.mac.clone(),
                model: nic.model.clone(),
                backend,
            }
        })
        .collect();
    LaunchSpec {
        name: sanitize(&ready.vm),
        cpus: overrides.and_then(|o| o.cpus).unwrap_or(d.cpus),
        memory_mib: overrides.and_then(|o| o.memory_mib).unwrap_or(d.memory_mib),
        machine: d.machine.as_deref().map(generic_machine),
        firmware: match d.firmware {
            Firmware::Bios => LaunchFirmware::Bios,
            Firmware::Uefi => LaunchFirmware::Uefi {
                code: PathBuf::from(OVMF_CODE),
                vars: None,
            },
        },
        disks: ready
            .disks
            .iter()
            .map(|disk| DiskSpec {
                path: disk.path.clone(),
                format: disk.format.to_string(),
                bus: match disk.bus {
                    DiskBus::Virtio => LaunchBus::Virtio,
                    DiskBus::Ide => LaunchBus::Ide,
                    DiskBus::Sata => LaunchBus::Sata,
                    DiskBus::Scsi => LaunchBus::Scsi,
                },
                read_only: false,
            })
            .collect(),
        nics,
        guest_agent: health.guest_agent,
        run_dir: run_dir.to_path_buf(),
        accel: Accel::Auto,
    }
}

/// A versioned machine type (`pc-q35-7.2`) may not exist on the secondary's QEMU;
/// the family alias boots the same guest.
fn generic_machine(machine: &str) -> String {
    if machine.starts_with("pc-q35") {
        "q35".to_string()
    } else if machine.starts_with("pc-i440fx") || machine.starts_with("pc-") {
        "pc".to_string()
    } else {
        machine.to_string()
    }
}

fn backend_of(net: &Network, health: &HealthSpec) -> NetBackend {
    match &net.kind {
        NetworkKind::User => NetBackend::User {
            restrict: net.isolated,
            forwards: health.tcp.into_iter().collect(),
        },
        NetworkKind::Bridge(bridge) => NetBackend::Bridge {
            bridge: bridge.clone(),
        },
        NetworkKind::Tap(ifname) => NetBackend::Tap {
            ifname: ifname.clone(),
        },
    }
}

/// The checks the plan asks for, and their text for the report.
pub(crate) fn checks_of(overrides: Option<&PlanVm>) -> (Vec<HealthCheck>, Vec<String>) {
    let health = overrides.map(|o| o.health.clone()).unwrap_or_default();
    let mut checks = Vec::new();
    let mut text = Vec::new();
    let console = match &health.console {
        Some(re) => Some(re.clone()),
        None if health.is_default() => {
            Some(Regex::new(DEFAULT_CONSOLE_HEALTH).expect("the default pattern compiles"))
        }
        None => None,
    };
    if let Some(re) = console {
        text.push(format!("console /{}/", re.as_str()));
        checks.push(HealthCheck::Console(re));
    }
    if let Some(port) = health.tcp {
        text.push(format!("tcp {port}"));
        checks.push(HealthCheck::Tcp { port });
    }
    if health.guest_agent {
        text.push("guest agent".to_string());
        checks.push(HealthCheck::GuestAgent);
    }
    (checks, text)
}

/// Starts every VM of a group; on a start failure the ones already started are
/// stopped before the error is returned, so nothing is left running.
pub(crate) async fn start_group(
    launcher: &dyn VmLauncher,
    ready: Vec<(ReadyVm, LaunchSpec, Duration, Vec<String>)>,
    plan: &Plan,
    drill_started: Instant,
) -> Result<Vec<StartedVm>, (DrillError, Vec<ReadyVm>)> {
    let mut started: Vec<StartedVm> = Vec::new();
    let mut iter = ready.into_iter();
    while let Some((ready, spec, timeout, warnings)) = iter.next() {
        match launcher.start(&spec).await {
            Ok(running) => {
                let (checks, check_text) = checks_of(plan.overrides(&ready.vm));
                let forwards = plan
                    .overrides(&ready.vm)
                    .and_then(|o| o.health.tcp)
                    .into_iter()
                    .collect();
                started.push(StartedVm {
                    forwards,
                    ready,
                    running,
                    checks,
                    check_text,
                    timeout,
                    started_at: drill_started.elapsed(),
                    warnings,
                });
            }
            Err(e) => {
                let mut left: Vec<ReadyVm> = vec![ready];
                left.extend(iter.map(|(r, ..)| r));
                for vm in started {
                    let _ = vm.running.stop(STOP_GRACE).await;
                    left.push(vm.ready);
                }
                return Err((DrillError::Launch(e), left));
            }
        }
    }
    Ok(started)
}

/// How long a drilled VM gets to power off cleanly before QEMU is told to quit: none.
/// It runs on a throwaway overlay that is deleted next, so a clean guest shutdown
/// protects nothing and would only add to the drill's time.
pub(crate) const STOP_GRACE: Duration = Duration::ZERO;

/// Waits for every VM of the group at once, then captures each one's evidence into
/// `evidence_dir` (paths in the report relative to `reports_dir`).
pub(crate) async fn watch_group(
    group: usize,
    vms: &mut [StartedVm],
    evidence_dir: &Path,
    reports_dir: &Path,
) -> Result<Vec<VmResult>, DrillError> {
    let watches: Vec<BootWatch> = join_all(vms.iter_mut().map(|vm| {
        let (checks, timeout) = (vm.checks.clone(), vm.timeout);
        async move { watch_boot(vm.running.as_mut(), &checks, timeout).await }
    }))
    .await;
    let mut results = Vec::new();
    for (vm, watch) in vms.iter_mut().zip(watches) {
        results.push(evidence(group, vm, watch, evidence_dir, reports_dir).await?);
    }
    Ok(results)
}

async fn evidence(
    group: usize,
    vm: &mut StartedVm,
    watch: BootWatch,
    evidence_dir: &Path,
    reports_dir: &Path,
) -> Result<VmResult, DrillError> {
    let name = sanitize(&vm.ready.vm);
    let mut warnings = std::mem::take(&mut vm.warnings);
    warnings.extend(vm.ready.warnings.iter().cloned());
    let console_path = evidence_dir.join(format!("{name}.console.log"));
    std::fs::copy(vm.running.console_log(), &console_path)
        .map_err(|e| DrillError::evidence(&console_path, e))?;
    let console_text = String::from_utf8_lossy(
        &std::fs::read(&console_path).map_err(|e| DrillError::evidence(&console_path, e))?,
    )
    .into_owned();
    let shot_path = evidence_dir.join(format!("{name}.png"));
    let screenshot = match vm.running.screendump(&shot_path).await {
        Ok(()) => Some(evidence_file(&shot_path, reports_dir)?),
        Err(e) => {
            warnings.push(format!("no screenshot: {e}"));
            None
        }
    };
    let start = vm.started_at.as_secs_f64();
    let (verdict, reason) = verdict(&watch.outcome);
    Ok(VmResult {
        vm: vm.ready.vm.clone(),
        group,
        verdict,
        reason,
        disks: vm.ready.disks.iter().map(|d| d.booted.clone()).collect(),
        point_age_secs: None,
        checks: vm.check_text.clone(),
        started_secs: Some(start),
        first_output_secs: watch.first_output.map(|d| start + d.as_secs_f64()),
        healthy_secs: watch.healthy.map(|d| start + d.as_secs_f64()),
        console_tail: tail(&console_text, CONSOLE_TAIL_LINES),
        console: Some(evidence_file(&console_path, reports_dir)?),
        screenshot,
        warnings,
    })
}

/// The verdict of a boot and, unless it booted, why not (as reports and errors say it).
pub(crate) fn verdict(outcome: &BootOutcome) -> (VmVerdict, String) {
    match outcome {
        BootOutcome::Healthy => (VmVerdict::Booted, String::new()),
        BootOutcome::Panicked { line } => {
            (VmVerdict::Failed, format!("panic on the console: {line}"))
        }
        BootOutcome::NoOutput => (
            VmVerdict::Failed,
            "no console output before the timeout".into(),
        ),
        BootOutcome::TimedOut { waiting_for } => (
            VmVerdict::Failed,
            format!("health check timed out waiting for {waiting_for}"),
        ),
        BootOutcome::Exited { status } => (VmVerdict::Failed, format!("QEMU exited: {status}")),
    }
}

fn evidence_file(path: &Path, reports_dir: &Path) -> Result<EvidenceFile, DrillError> {
    let bytes = std::fs::read(path).map_err(|e| DrillError::evidence(path, e))?;
    Ok(EvidenceFile {
        path: path
            .strip_prefix(reports_dir)
            .unwrap_or(path)
            .display()
            .to_string(),
        blake3: blake3::hash(&bytes).to_hex().to_string(),
        bytes: bytes.len() as u64,
    })
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
