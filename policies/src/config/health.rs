//! `[[plan.vm]]` tables: a plan's per-VM overrides (cpus, memory, boot timeout) and
//! the health check that says a recovered VM is up.
//!
//! ```toml
//! [[plan.vm]]
//! name = "db01"
//! cpus = 4
//! memory = "8GiB"
//! timeout = "5m"                   # boot timeout (default 10m)
//! health = { console = "login:", tcp = 5432, guest_agent = false }
//! ```

use regex::Regex;
use toml::Spanned;

use super::raw::RawPlanVm;
use super::validator::Validator;

/// Seconds a VM may take to become healthy unless `timeout` says otherwise.
pub const DEFAULT_BOOT_TIMEOUT: u64 = 600;

/// When a recovered VM counts as healthy: every check given must pass. With none
/// given (the default), console output seen and no kernel panic on it.
#[derive(Debug, Clone, Default)]
pub struct HealthSpec {
    /// A console line matching this.
    pub console: Option<Regex>,
    /// This TCP port accepts a connection.
    pub tcp: Option<u16>,
    /// The QEMU guest agent answers a ping.
    pub guest_agent: bool,
}

impl HealthSpec {
    /// The console pattern as written, for display.
    pub fn console_source(&self) -> Option<&str> {
        self.console.as_ref().map(Regex::as_str)
    }

    /// No check given: console output seen and no panic.
    pub fn is_default(&self) -> bool {
        self.console.is_none() && self.tcp.is_none() && !self.guest_agent
    }
}

/// A plan's overrides for one VM.
#[derive(Debug, Clone)]
pub struct PlanVm {
    pub name: String,
    /// Replaces the VM's configured `cpus`, if set.
    pub cpus: Option<u32>,
    /// Replaces the VM's configured `memory`, if set.
    pub memory_mib: Option<u64>,
    /// Seconds from start until healthy before the VM (and the run) fails.
    pub timeout: u64,
    pub health: HealthSpec,
}

impl Validator<'_> {
    pub(super) fn plan_vm(&mut self, vm: &Spanned<RawPlanVm>, ctx: &str) -> PlanVm {
        let raw = vm.get_ref();
        let ctx = format!("{ctx}VM {:?}: ", raw.name.get_ref());
        let cpus = raw
            .cpus
            .as_ref()
            .and_then(|c| self.cpus(c, "plan.vm.cpus", &ctx));
        let memory_mib = raw
            .memory
            .as_ref()
            .and_then(|m| self.memory(m, "plan.vm.memory", &ctx));
        let timeout = self
            .duration(&raw.timeout, "plan.vm.timeout", &ctx)
            .unwrap_or(DEFAULT_BOOT_TIMEOUT);
        let mut health = HealthSpec::default();
        if let Some(h) = &raw.health {
            health.guest_agent = h.guest_agent;
            if let Some(c) = &h.console {
                match Regex::new(c.get_ref()) {
                    Ok(re) => health.console = Some(re),
                    Err(e) => self.problem(
                        c.span().start,
                        "plan.vm.health.console",
                        format!(
                            "{ctx}{:?} is not a valid regular expression ({e}); escape special characters, e.g. \"login\\\\:\"",
                            c.get_ref()
                        ),
                    ),
                }
            }
            if let Some(port) = &h.tcp {
                match u16::try_from(*port.get_ref()) {
                    Ok(p) if p > 0 => health.tcp = Some(p),
                    _ => self.problem(
                        port.span().start,
                        "plan.vm.health.tcp",
                        format!(
                            "{ctx}tcp = {} is not a port; write 1..=65535",
                            port.get_ref()
                        ),
                    ),
                }
            }
        }
        PlanVm {
            name: raw.name.get_ref().clone(),
            cpus,
            memory_mib,
            timeout,
            health,
        }
    }
}
