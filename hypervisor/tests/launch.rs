//! The VM launcher against real QEMU and real guests built by
//! scripts/make-test-guest.sh: a good guest boots healthy (console marker, HTTP on a
//! forwarded port, guest agent, a screenshot), a broken one is reported as a kernel panic, and
//! nothing is left running or lying around after stop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lifeboat_hypervisor::launch::{
    Accel, BootOutcome, DiskBus, DiskSpec, Firmware, HealthCheck, LaunchError, LaunchSpec,
    NetBackend, NicSpec, QemuLauncher, VmLauncher, watch_boot,
};
use regex::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MARKER: &str = "LIFEBOAT-GUEST-UP";
/// KVM boots the guest in about 2 s, TCG in about 6 s; a loaded CI host is slower.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Builds a guest image with the script, and a qcow2 overlay on it to boot, as a
/// drill boots an overlay on a restored disk.
fn guest(dir: &Path, broken: bool) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-test-guest.sh");
    let raw = dir.join("guest.img");
    let mut cmd = Command::new(script);
    cmd.arg(&raw).args(["--marker", MARKER, "--port", "80"]);
    if broken {
        cmd.arg("--broken");
    }
    let out = cmd.output().expect("run make-test-guest.sh");
    assert!(
        out.status.success(),
        "make-test-guest.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let overlay = dir.join("overlay.qcow2");
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&raw)
        .arg(&overlay)
        .output()
        .expect("run qemu-img");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    overlay
}

fn spec(name: &str, disk: PathBuf, run_dir: &Path) -> LaunchSpec {
    LaunchSpec {
        name: name.into(),
        cpus: 1,
        memory_mib: 256,
        machine: None,
        firmware: Firmware::Bios,
        disks: vec![DiskSpec {
            path: disk,
            format: "qcow2".into(),
            bus: DiskBus::Virtio,
            read_only: false,
        }],
        nics: vec![NicSpec {
            mac: None,
            model: "e1000".into(),
            backend: NetBackend::User {
                restrict: true,
                forwards: vec![80],
            },
        }],
        guest_agent: false,
        run_dir: run_dir.to_path_buf(),
        accel: Accel::Auto,
    }
}

fn pid_of(run_dir: &Path, name: &str) -> u32 {
    let text = std::fs::read_to_string(run_dir.join(format!("{name}.pid"))).expect("pid file");
    text.trim().parse().expect("a pid")
}

/// Stops the VM and checks that neither its process nor its sockets remain.
async fn stop_and_check_gone(vm: Box<dyn lifeboat_hypervisor::launch::RunningVm>, run_dir: &Path) {
    let name = vm.name().to_string();
    let pid = pid_of(run_dir, &name);
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    vm.stop(Duration::from_secs(3)).await.expect("stop");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "QEMU {pid} still running"
    );
    assert!(
        !run_dir.join(format!("{name}.qmp")).exists(),
        "QMP socket left behind"
    );
    assert!(
        !run_dir.join(format!("{name}.pid")).exists(),
        "pid file left behind"
    );
    assert!(
        run_dir.join(format!("{name}.console")).exists(),
        "console log must stay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_guest_boots_healthy_serves_its_port_and_stops_clean() {
    let dir = tempfile::tempdir().unwrap();
    let disk = guest(dir.path(), false);
    let run_dir = dir.path().join("run");
    let mut s = spec("good", disk, &run_dir);
    s.guest_agent = true;
    let mut vm = QemuLauncher::new().start(&s).await.expect("start");
    let agent = vm.guest_agent_socket().expect("agent socket").to_path_buf();
    let checks = [
        HealthCheck::Console(Regex::new(MARKER).unwrap()),
        HealthCheck::Tcp { port: 80 },
        // The test guest answers guest-sync as qemu-ga does.
        HealthCheck::GuestAgent,
    ];
    let watch = watch_boot(vm.as_mut(), &checks, BOOT_TIMEOUT).await;
    let console = std::fs::read_to_string(vm.console_log()).unwrap_or_default();
    assert_eq!(watch.outcome, BootOutcome::Healthy, "console:\n{console}");
    let (first, healthy) = (watch.first_output.unwrap(), watch.healthy.unwrap());
    assert!(first <= healthy, "{watch:?}");
    assert!(console.contains(MARKER));
    assert!(console.contains("guest agent on /dev/vport"), "{console}");

    // The forward reaches the guest's web server, which serves the marker.
    let addr = vm.forwarded_port(80).expect("port 80 is forwarded");
    assert!(addr.ip().is_loopback());
    assert!(vm.forwarded_port(22).is_none());
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut reply))
        .await
        .expect("HTTP reply in time")
        .unwrap();
    assert!(
        reply.starts_with("HTTP/1.") && reply.contains(MARKER),
        "{reply}"
    );

    let png = dir.path().join("screen.png");
    vm.screendump(&png).await.expect("screendump");
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 1024, "PNG of {} bytes", bytes.len());
    assert!(vm.try_exit_status().is_none());

    stop_and_check_gone(vm, &run_dir).await;
    assert!(!agent.exists(), "guest agent socket left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_guest_is_reported_as_a_kernel_panic() {
    let dir = tempfile::tempdir().unwrap();
    let disk = guest(dir.path(), true);
    let run_dir = dir.path().join("run");
    let mut vm = QemuLauncher::new()
        .start(&spec("broken", disk, &run_dir))
        .await
        .expect("start");
    let checks = [
        HealthCheck::Console(Regex::new(MARKER).unwrap()),
        HealthCheck::Tcp { port: 80 },
    ];
    let watch = watch_boot(vm.as_mut(), &checks, BOOT_TIMEOUT).await;
    match &watch.outcome {
        BootOutcome::Panicked { line } => assert!(line.contains("Kernel panic"), "{line}"),
        other => panic!("expected a panic, got {other:?}"),
    }
    assert!(watch.first_output.is_some());
    assert!(watch.healthy.is_none());
    stop_and_check_gone(vm, &run_dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_port_nobody_listens_on_keeps_the_guest_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let disk = guest(dir.path(), false);
    let run_dir = dir.path().join("run");
    let mut s = spec("noport", disk, &run_dir);
    s.nics[0].backend = NetBackend::User {
        restrict: true,
        forwards: vec![81],
    };
    let mut vm = QemuLauncher::new().start(&s).await.expect("start");
    // First the guest is up and serving port 80 (however slow the host)...
    let up = [HealthCheck::Console(
        Regex::new("serving tcp port 80").unwrap(),
    )];
    let watch = watch_boot(vm.as_mut(), &up, BOOT_TIMEOUT).await;
    assert_eq!(watch.outcome, BootOutcome::Healthy, "the guest did boot");
    // ...then a check on a port it does not listen on never passes: QEMU's user
    // network accepting on the host side must not count.
    let checks = [HealthCheck::Tcp { port: 81 }];
    let watch = watch_boot(vm.as_mut(), &checks, Duration::from_secs(5)).await;
    match &watch.outcome {
        BootOutcome::TimedOut { waiting_for } => {
            assert!(waiting_for.contains("81"), "{waiting_for}")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    stop_and_check_gone(vm, &run_dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_kills_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let run_dir = dir.path().join("run");
    let mut s = spec("dropped", disk, &run_dir);
    s.disks[0].format = "raw".into();
    let vm = QemuLauncher::new().start(&s).await.expect("start");
    let pid = pid_of(&run_dir, "dropped");
    drop(vm);
    let gone = async {
        while Path::new(&format!("/proc/{pid}")).exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), gone)
        .await
        .expect("QEMU must die with its handle");
    assert!(!run_dir.join("dropped.qmp").exists());
}

/// A failover VM: detached, it runs on without any handle, still serves its guest,
/// and a later stop by its recorded pid and socket powers it off and cleans up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_vm_runs_on_without_its_handle_and_stops_by_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let disk = guest(dir.path(), false);
    let run_dir = dir.path().join("run");
    let s = spec("detached", disk, &run_dir);
    let mut vm = QemuLauncher::detachable().start(&s).await.expect("start");
    let checks = [HealthCheck::Tcp { port: 80 }];
    let watch = watch_boot(vm.as_mut(), &checks, BOOT_TIMEOUT).await;
    assert_eq!(watch.outcome, BootOutcome::Healthy);
    let record = vm.detach().expect("a detachable VM detaches");
    // Through its serialised form, as `failover status` reads it back.
    let record: lifeboat_hypervisor::launch::DetachedVm =
        serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(record.is_running(), "the VM must outlive its handle");
    assert_eq!(record.pid, pid_of(&run_dir, "detached"));
    let addr = record.forwarded_port(80).expect("the forward is recorded");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).await.unwrap();
    assert!(
        body.contains(MARKER),
        "the detached guest still serves: {body}"
    );
    record.stop(Duration::from_secs(3)).await.expect("stop");
    assert!(!record.is_running());
    assert!(!run_dir.join("detached.qmp").exists(), "socket removed");
    assert!(!run_dir.join("detached.pid").exists(), "pid file removed");
    assert!(run_dir.join("detached.console").exists(), "console kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_vm_refuses_to_detach_and_dies_with_its_handle() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let run_dir = dir.path().join("run");
    let mut s = spec("tied", disk, &run_dir);
    s.disks[0].format = "raw".into();
    let vm = QemuLauncher::new().start(&s).await.expect("start");
    let pid = pid_of(&run_dir, "tied");
    let err = vm
        .detach()
        .expect_err("a drill launcher's VM must not detach");
    assert!(matches!(err, LaunchError::CannotDetach { .. }), "{err}");
    let gone = async {
        while Path::new(&format!("/proc/{pid}")).exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), gone)
        .await
        .expect("the refused VM dies with its handle");
}

#[tokio::test]
async fn missing_disk_is_named_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let missing = dir.path().join("restored-disk.qcow2");
    let err = QemuLauncher::new()
        .start(&spec("nodisk", missing.clone(), &run_dir))
        .await
        .err()
        .expect("a missing disk must fail");
    assert!(matches!(err, LaunchError::DiskMissing { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );
    assert!(!run_dir.join("nodisk.pid").exists());
    assert!(!run_dir.join("nodisk.qmp").exists());
}

#[tokio::test]
async fn qemu_refusing_the_command_line_quotes_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let run_dir = dir.path().join("run");
    let mut s = spec("badmodel", disk, &run_dir);
    s.disks[0].format = "raw".into();
    s.nics[0].model = "no-such-nic".into();
    let err = QemuLauncher::new()
        .start(&s)
        .await
        .err()
        .expect("an unknown NIC model must fail");
    let LaunchError::EarlyExit { stderr, .. } = &err else {
        panic!("expected EarlyExit, got {err:?}");
    };
    assert!(stderr.contains("no-such-nic"), "{err}");
    assert!(!run_dir.join("badmodel.qmp").exists());
    assert!(!run_dir.join("badmodel.pid").exists());
}
