//! A VM's hardware (`firmware`, `cpus`, `memory`, `machine`, `libvirt_xml`, each
//! disk's `bus`, `[[group.vm.nic]]`): what a drill or failover needs to boot a VM
//! that was backed up from image files, where no hypervisor definition comes along.
//!
//! ```toml
//! [[group.vm]]
//! name = "db01"
//! firmware = "uefi"                 # "bios" (default) or "uefi"
//! cpus = 2                          # default 1
//! memory = "2GiB"                   # default 1GiB; at least 16MiB
//! machine = "q35"                   # default: the hypervisor's
//! libvirt_xml = "/etc/libvirt/qemu/db01.xml"   # where its domain definition is kept
//! [[group.vm.disk]]                 # disks boot in file order
//! image = "/var/lib/libvirt/images/db01.qcow2"
//! bus = "virtio"                    # "virtio" (default), "ide", "sata" or "scsi"
//! [[group.vm.nic]]
//! mac = "52:54:00:12:34:56"         # optional
//! network = "prod-lan"              # the production network; plans map it
//! model = "virtio-net-pci"          # default
//! ```

use std::path::PathBuf;

use toml::Spanned;

use super::raw::{RawNic, RawVm};
use super::validator::Validator;

/// Memory a VM gets unless `memory` says otherwise.
pub const DEFAULT_MEMORY_MIB: u64 = 1024;
/// Less than this cannot boot any OS a backup product will meet.
pub const MIN_MEMORY_MIB: u64 = 16;
/// The NIC model unless `model` says otherwise.
pub const DEFAULT_NIC_MODEL: &str = "virtio-net-pci";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Firmware {
    #[default]
    Bios,
    Uefi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskBus {
    #[default]
    Virtio,
    Ide,
    Sata,
    Scsi,
}

/// How to boot a VM; every key has a default, so a VM without any has this too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmHardware {
    pub firmware: Firmware,
    pub cpus: u32,
    pub memory_mib: u64,
    /// QEMU machine type; the hypervisor's default if `None`.
    pub machine: Option<String>,
    pub nics: Vec<Nic>,
    /// Where a libvirt domain definition of this VM is kept, if any.
    pub libvirt_xml: Option<PathBuf>,
}

impl Default for VmHardware {
    fn default() -> Self {
        Self {
            firmware: Firmware::Bios,
            cpus: 1,
            memory_mib: DEFAULT_MEMORY_MIB,
            machine: None,
            nics: Vec::new(),
            libvirt_xml: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Lower case, `52:54:00:12:34:56`; the hypervisor picks one if `None`.
    pub mac: Option<String>,
    /// The production network the NIC is on; plans map it to a failover or drill one.
    pub network: String,
    pub model: String,
}

/// `2GiB`, `512MiB`, `1073741824` (bytes) → MiB, at least [`MIN_MEMORY_MIB`].
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let hint = "write a number and a binary unit: B, KiB, MiB, GiB or TiB, e.g. \"2GiB\"";
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size; {hint}"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        other => return Err(format!("{text:?}: unknown unit {other:?}; {hint}")),
    };
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large; {hint}"))?;
    let mib = bytes >> 20;
    if mib < MIN_MEMORY_MIB {
        return Err(format!(
            "{text:?} is less than {MIN_MEMORY_MIB}MiB, too little to boot; write e.g. \"1GiB\""
        ));
    }
    Ok(mib)
}

/// `52:54:00:12:34:56`: six hex pairs, unicast (a multicast MAC cannot be a NIC's).
pub fn parse_mac(text: &str) -> Result<String, String> {
    let hint = "write six hex pairs separated by ':', e.g. \"52:54:00:12:34:56\"";
    let parts: Vec<&str> = text.split(':').collect();
    let bytes: Option<Vec<u8>> = parts
        .iter()
        .map(|p| (p.len() == 2).then(|| u8::from_str_radix(p, 16).ok())?)
        .collect();
    match bytes {
        Some(b) if b.len() == 6 && b[0] & 1 == 1 => Err(format!(
            "{text:?} is a multicast address (first byte odd); {hint}"
        )),
        Some(b) if b.len() == 6 => Ok(text.to_ascii_lowercase()),
        _ => Err(format!("{text:?} is not a MAC address; {hint}")),
    }
}

impl Validator<'_> {
    /// The VM's hardware keys; defaults for those not given.
    pub(super) fn hardware(&mut self, raw: &RawVm, ctx: &str) -> VmHardware {
        let d = VmHardware::default();
        let firmware = raw.firmware.as_ref().and_then(|f| {
            self.choice(
                f,
                "group.vm.firmware",
                ctx,
                &[("bios", Firmware::Bios), ("uefi", Firmware::Uefi)],
            )
        });
        let cpus = raw
            .cpus
            .as_ref()
            .and_then(|c| self.cpus(c, "group.vm.cpus", ctx));
        let memory_mib = raw
            .memory
            .as_ref()
            .and_then(|m| self.memory(m, "group.vm.memory", ctx));
        let libvirt_xml = raw
            .libvirt_xml
            .as_ref()
            .and_then(|p| self.absolute_path(p, "group.vm.libvirt_xml", ctx));
        let nics = raw.nic.iter().filter_map(|n| self.nic(n, ctx)).collect();
        VmHardware {
            firmware: firmware.unwrap_or(d.firmware),
            cpus: cpus.unwrap_or(d.cpus),
            memory_mib: memory_mib.unwrap_or(d.memory_mib),
            machine: raw.machine.as_ref().map(|m| m.get_ref().clone()),
            nics,
            libvirt_xml,
        }
    }

    pub(super) fn disk_bus(&mut self, bus: &Option<Spanned<String>>, ctx: &str) -> DiskBus {
        let choices = [
            ("virtio", DiskBus::Virtio),
            ("ide", DiskBus::Ide),
            ("sata", DiskBus::Sata),
            ("scsi", DiskBus::Scsi),
        ];
        bus.as_ref()
            .and_then(|b| self.choice(b, "group.vm.disk.bus", ctx, &choices))
            .unwrap_or_default()
    }

    fn nic(&mut self, n: &Spanned<RawNic>, ctx: &str) -> Option<Nic> {
        let raw = n.get_ref();
        let mac = match &raw.mac {
            None => None,
            Some(m) => match parse_mac(m.get_ref()) {
                Ok(mac) => Some(mac),
                Err(e) => {
                    self.problem(m.span().start, "group.vm.nic.mac", format!("{ctx}{e}"));
                    return None;
                }
            },
        };
        if raw.network.get_ref().trim().is_empty() {
            self.problem(
                raw.network.span().start,
                "group.vm.nic.network",
                format!("{ctx}empty network; name the production network, e.g. \"prod-lan\""),
            );
            return None;
        }
        Some(Nic {
            mac,
            network: raw.network.get_ref().clone(),
            model: raw
                .model
                .as_ref()
                .map_or(DEFAULT_NIC_MODEL.to_string(), |m| m.get_ref().clone()),
        })
    }

    /// One of a fixed set of words.
    pub(super) fn choice<T: Copy>(
        &mut self,
        value: &Spanned<String>,
        key: &str,
        ctx: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let found = choices.iter().find(|(w, _)| *w == value.get_ref().as_str());
        if found.is_none() {
            let words: Vec<String> = choices.iter().map(|(w, _)| format!("{w:?}")).collect();
            self.problem(
                value.span().start,
                key,
                format!(
                    "{ctx}unknown value {:?}; write one of {}",
                    value.get_ref(),
                    words.join(", ")
                ),
            );
        }
        found.map(|(_, t)| *t)
    }

    pub(super) fn cpus(&mut self, c: &Spanned<i64>, key: &str, ctx: &str) -> Option<u32> {
        match u32::try_from(*c.get_ref()) {
            Ok(n) if (1..=1024).contains(&n) => Some(n),
            _ => {
                self.problem(
                    c.span().start,
                    key,
                    format!("{ctx}cpus = {} is outside 1..=1024", c.get_ref()),
                );
                None
            }
        }
    }

    pub(super) fn memory(&mut self, m: &Spanned<String>, key: &str, ctx: &str) -> Option<u64> {
        match parse_memory(m.get_ref()) {
            Ok(mib) => Some(mib),
            Err(e) => {
                self.problem(m.span().start, key, format!("{ctx}{e}"));
                None
            }
        }
    }
}
