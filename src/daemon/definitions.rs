//! The VM definitions the daemon's backups record (FORMAT.md §16): written from each
//! `[[group.vm]]` entry's hardware keys into `<state_dir>/definitions/<vm>.json` at
//! start, and passed to `lifeboat backup --definition`. A VM with a `libvirt_xml`
//! passes that file instead; a VM backed up live with no hardware keys passes none,
//! so the backup reads the running VM's definition over QMP.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lifeboat_policies::Config;
use lifeboat_policies::config::hardware::{self, VmHardware};
use lifeboat_policies::config::{DiskSource, Vm};
use lifeboat_store::format::vm_definition::{
    DefinedDisk, DefinedNic, DefinitionSource, DiskBus, Firmware, VmDefinition,
};

/// Where the definitions are written.
pub fn definitions_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("definitions")
}

/// Writes the definition file of every VM that gets one.
pub fn write_definitions(config: &Config, state_dir: &Path) -> Result<()> {
    let dir = definitions_dir(state_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for vm in config.groups.iter().flat_map(|g| &g.vms) {
        if let Some(definition) = from_config(vm) {
            let path = file_of(&dir, &vm.name);
            let text = serde_json::to_vec_pretty(&definition).expect("a definition serialises");
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// The `--definition` argument of `vm`'s backups, if it has one.
pub fn definition_arg(state_dir: &Path, vm: &Vm) -> Option<OsString> {
    if let Some(xml) = &vm.hardware.libvirt_xml {
        return Some(xml.clone().into_os_string());
    }
    from_config(vm).map(|_| file_of(&definitions_dir(state_dir), &vm.name).into_os_string())
}

fn file_of(dir: &Path, vm: &str) -> PathBuf {
    let safe: String = vm
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    // The hash keeps two names that differ only in replaced characters apart.
    let tag = &blake3::hash(vm.as_bytes()).to_hex()[..8];
    dir.join(format!("{safe}-{tag}.json"))
}

/// The definition the config gives `vm`; `None` for a live VM without hardware keys
/// (its own, over QMP, is better than defaults).
fn from_config(vm: &Vm) -> Option<VmDefinition> {
    let live = vm
        .disks
        .iter()
        .all(|d| matches!(d.source, DiskSource::Qmp { .. }));
    if vm.hardware.libvirt_xml.is_some() || (live && vm.hardware == VmHardware::default()) {
        return None;
    }
    let h = &vm.hardware;
    Some(VmDefinition {
        source: DefinitionSource::Config,
        firmware: match h.firmware {
            hardware::Firmware::Bios => Firmware::Bios,
            hardware::Firmware::Uefi => Firmware::Uefi,
        },
        cpus: h.cpus,
        memory_mib: h.memory_mib,
        machine: h.machine.clone(),
        disks: vm
            .disks
            .iter()
            .map(|d| DefinedDisk {
                name: d.name.clone(),
                bus: match d.bus {
                    hardware::DiskBus::Virtio => DiskBus::Virtio,
                    hardware::DiskBus::Ide => DiskBus::Ide,
                    hardware::DiskBus::Sata => DiskBus::Sata,
                    hardware::DiskBus::Scsi => DiskBus::Scsi,
                },
            })
            .collect(),
        nics: h
            .nics
            .iter()
            .map(|n| DefinedNic {
                mac: n.mac.clone(),
                network: n.network.clone(),
                model: n.model.clone(),
            })
            .collect(),
        libvirt_xml: None,
    })
}
