//! Booting a VM from disk images and proving it booted: what disaster-recovery
//! drills and failover use to start a restored replica.
//!
//! * [`LaunchSpec`] describes the VM (CPUs, memory, firmware, disks in boot order,
//!   NICs and their network, guest agent);
//! * [`VmLauncher`] starts one and returns a [`RunningVm`]; [`QemuLauncher`] is the
//!   embedded driver (`qemu-system-x86_64` as a child process, KVM when usable), and
//!   a libvirt driver can implement the same traits later;
//! * [`watch_boot`] reads the serial console and runs [`HealthCheck`]s until the
//!   guest is healthy, panics, exits or the time is up;
//! * [`DetachedVm`] is a VM handed over to run on after Lifeboat exits (failover).

mod args;
mod detached;
mod error;
mod qemu;
mod spec;
mod vm;
mod watch;

pub use detached::{DetachedVm, kill_pid, power_off_by_qmp, qemu_pids_naming};
pub use error::LaunchError;
pub use qemu::QemuLauncher;
pub use spec::{Accel, DiskBus, DiskSpec, Firmware, LaunchSpec, NetBackend, NicSpec};
pub use vm::{RunningVm, VmLauncher};
pub use watch::{BootOutcome, BootWatch, HealthCheck, watch_boot};
