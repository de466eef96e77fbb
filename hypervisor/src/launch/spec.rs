//! What to boot: the VM's shape, its disks in boot order and its network.

use std::path::PathBuf;

/// One VM to start. Files the launcher creates (console log, QMP and guest-agent
/// sockets, pid file) go to `run_dir`, named after `name`.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Letters, digits, `.`, `_` and `-` only: it names files and QEMU objects.
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// QEMU machine type (`pc`, `q35`, ...); `None` for QEMU's default.
    pub machine: Option<String>,
    pub firmware: Firmware,
    /// In boot order: the first disk is tried first.
    pub disks: Vec<DiskSpec>,
    pub nics: Vec<NicSpec>,
    /// Whether to give the guest a `org.qemu.guest_agent.0` channel.
    pub guest_agent: bool,
    pub run_dir: PathBuf,
    pub accel: Accel,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default.
    Bios,
    /// OVMF: `code` read-only, `vars` (the guest's writable NVRAM copy) if given.
    Uefi {
        code: PathBuf,
        vars: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub path: PathBuf,
    /// QEMU's format name: `raw`, `qcow2`, ...
    pub format: String,
    pub bus: DiskBus,
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBus {
    Virtio,
    Ide,
    Sata,
    Scsi,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    /// `52:54:00:..`; `None` lets QEMU pick.
    pub mac: Option<String>,
    /// QEMU device model: `e1000`, `virtio-net-pci`, `rtl8139`, ...
    pub model: String,
    pub backend: NetBackend,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetBackend {
    /// QEMU user-mode networking (guest 10.0.2.15/24). `restrict` cuts the guest off
    /// from everything but the forwarded ports: the isolated drill network.
    /// `forwards` are guest TCP ports, each reachable on a free 127.0.0.1 port (see
    /// [`RunningVm::forwarded_port`](super::RunningVm::forwarded_port)).
    User { restrict: bool, forwards: Vec<u16> },
    /// An existing host bridge, through QEMU's bridge helper.
    Bridge { bridge: String },
    /// An existing tap interface (no up/down scripts run).
    Tap { ifname: String },
    /// The NIC is present but connected to nothing.
    Unplugged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// KVM when `/dev/kvm` is usable, else TCG (emulation, much slower).
    #[default]
    Auto,
    Kvm,
    Tcg,
}
