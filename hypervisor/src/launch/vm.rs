//! The driver-neutral interface: a launcher starts a VM, a running VM is watched,
//! photographed and stopped. QEMU implements it here; libvirt can later.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use async_trait::async_trait;

use super::detached::DetachedVm;
use super::error::LaunchError;
use super::spec::LaunchSpec;

/// Something that boots a [`LaunchSpec`].
#[async_trait]
pub trait VmLauncher: Send + Sync {
    /// The driver's name, for logs: `qemu`, `libvirt`.
    fn name(&self) -> &'static str;
    /// Starts the VM and returns once its hypervisor runs and can be controlled. The
    /// guest has not necessarily booted: see [`watch_boot`](super::watch_boot).
    async fn start(&self, spec: &LaunchSpec) -> Result<Box<dyn RunningVm>, LaunchError>;
}

/// A started VM. Dropping it kills the VM; [`stop`](Self::stop) shuts it down
/// properly and cleans up.
#[async_trait]
pub trait RunningVm: Send {
    fn name(&self) -> &str;
    /// A file holding everything the guest wrote to its serial console; it grows
    /// while the VM runs and is kept after [`stop`](Self::stop) as evidence.
    fn console_log(&self) -> &Path;
    /// Where on the host a forwarded guest TCP port is reachable.
    fn forwarded_port(&self, guest_port: u16) -> Option<SocketAddr>;
    /// Whether the guest accepts a TCP connection on `guest_port` through its
    /// forward. A driver whose network accepts on the guest's behalf (QEMU's user
    /// network does, and holds the connection until the guest answers) must look
    /// past that: a guest whose network is not up yet is not listening.
    async fn guest_tcp_port_open(&mut self, guest_port: u16) -> bool;
    /// The guest agent's unix socket, when the spec asked for one.
    fn guest_agent_socket(&self) -> Option<&Path>;
    /// Writes a PNG of the VM's screen to `png`.
    async fn screendump(&mut self, png: &Path) -> Result<(), LaunchError>;
    /// The exit status, once the VM's process has exited.
    fn try_exit_status(&mut self) -> Option<ExitStatus>;
    /// Hands the VM over to run on after this handle and Lifeboat are gone: the
    /// driver must have been asked for detachable VMs (failover); others refuse and
    /// the VM is stopped with the handle.
    fn detach(self: Box<Self>) -> Result<DetachedVm, LaunchError> {
        Err(LaunchError::CannotDetach {
            vm: self.name().to_string(),
            why: "this driver ties its VMs to Lifeboat".to_string(),
        })
    }
    /// Asks the guest to power off (ACPI), after `grace` tells the hypervisor to
    /// quit, then kills it; removes sockets and pid files. Never leaves a process.
    async fn stop(self: Box<Self>, grace: Duration) -> Result<(), LaunchError>;
}
