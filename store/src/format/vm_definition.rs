//! A VM's definition as recorded next to its disks (FORMAT.md §16): what a recovery
//! needs to boot the disks again on another cluster — firmware, CPUs, memory, machine
//! type, disks with their bus in boot order, NICs with MAC and network.
//!
//! It is part of each disk snapshot's sealed metadata (`SnapshotMeta.vm_definition`),
//! so it is encrypted like the data and travels with the snapshot when it is
//! replicated. A snapshot made before definitions existed has none; a recovery then
//! falls back to defaults and says so.

use serde::{Deserialize, Serialize};

/// How the VM starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    #[default]
    Bios,
    Uefi,
}

/// The bus a disk is attached on, which the guest's drivers depend on (a Windows
/// guest installed on IDE does not boot from virtio).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    #[default]
    Virtio,
    Ide,
    Sata,
    Scsi,
}

impl DiskBus {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskBus::Virtio => "virtio",
            DiskBus::Ide => "ide",
            DiskBus::Sata => "sata",
            DiskBus::Scsi => "scsi",
        }
    }
}

/// Where a definition was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefinitionSource {
    /// The configuration's `[[group.vm]]` entry (or a JSON file given by hand).
    Config,
    /// The running VM, over QMP.
    Qmp,
    /// A libvirt domain XML.
    Libvirt,
}

/// One disk of the VM, in boot order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinedDisk {
    /// The disk's name in the repository (`SnapshotMeta.disk`).
    pub name: String,
    #[serde(default)]
    pub bus: DiskBus,
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinedNic {
    /// `52:54:00:…`; kept so that a guest's DHCP reservations and licences survive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The production network the NIC is on; a recovery plan maps it to a network of
    /// the secondary site.
    pub network: String,
    /// The emulated device (`virtio-net-pci`, `e1000`, …).
    pub model: String,
}

/// A VM's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDefinition {
    pub source: DefinitionSource,
    #[serde(default)]
    pub firmware: Firmware,
    pub cpus: u32,
    pub memory_mib: u64,
    /// QEMU machine type (`q35`, `pc-i440fx-7.2`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// In boot order.
    pub disks: Vec<DefinedDisk>,
    #[serde(default)]
    pub nics: Vec<DefinedNic>,
    /// The libvirt domain XML, verbatim, when the definition came from one: a libvirt
    /// secondary defines the domain from it (with paths and networks rewritten).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libvirt_xml: Option<String>,
}

/// QEMU's own ceiling for x86 guests.
const MAX_CPUS: u32 = 1024;
/// Below this no x86 guest gets past its firmware.
const MIN_MEMORY_MIB: u64 = 16;

/// A definition no launcher can use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DefinitionError {
    #[error("VM definition: cpus = {0}; give 1 to 1024")]
    Cpus(u32),
    #[error("VM definition: memory_mib = {0}; give at least 16")]
    Memory(u64),
    #[error("VM definition: disk {0:?} is listed twice; name each disk once, in boot order")]
    DiskTwice(String),
}

/// Definitions larger than this are refused: a domain XML is a few KiB, and the
/// definition sits in every disk's manifest.
pub const MAX_DEFINITION_BYTES: usize = 256 << 10;

impl VmDefinition {
    /// The defaults a recovery uses for a snapshot that recorded no definition: one
    /// CPU, 1 GiB, BIOS, the given disks on virtio, no NIC.
    pub fn fallback(disks: impl IntoIterator<Item = String>) -> VmDefinition {
        VmDefinition {
            source: DefinitionSource::Config,
            firmware: Firmware::Bios,
            cpus: 1,
            memory_mib: 1024,
            machine: None,
            disks: disks
                .into_iter()
                .map(|name| DefinedDisk {
                    name,
                    bus: DiskBus::Virtio,
                })
                .collect(),
            nics: Vec::new(),
            libvirt_xml: None,
        }
    }

    /// Checks the values a launcher relies on.
    pub fn check(&self) -> Result<(), DefinitionError> {
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(DefinitionError::Cpus(self.cpus));
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(DefinitionError::Memory(self.memory_mib));
        }
        let mut names: Vec<&str> = self.disks.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(DefinitionError::DiskTwice(w[0].to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_defaults() {
        let json = r#"{"source":"config","cpus":2,"memory_mib":2048,
            "disks":[{"name":"root"},{"name":"data","bus":"ide"}]}"#;
        let d: VmDefinition = serde_json::from_str(json).unwrap();
        assert_eq!(d.firmware, Firmware::Bios);
        assert_eq!(d.disks[0].bus, DiskBus::Virtio);
        assert_eq!(d.disks[1].bus, DiskBus::Ide);
        assert!(d.nics.is_empty());
        let again: VmDefinition = serde_json::from_slice(&serde_json::to_vec(&d).unwrap()).unwrap();
        assert_eq!(again, d);
        d.check().unwrap();
    }

    #[test]
    fn check_refuses_what_cannot_boot() {
        let mut d = VmDefinition::fallback(["a".to_string(), "a".to_string()]);
        assert_eq!(d.check(), Err(DefinitionError::DiskTwice("a".into())));
        d.disks.pop();
        d.cpus = 0;
        assert_eq!(d.check(), Err(DefinitionError::Cpus(0)));
        d.cpus = 1;
        d.memory_mib = 1;
        assert_eq!(d.check(), Err(DefinitionError::Memory(1)));
    }
}
