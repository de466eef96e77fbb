//! A VM definition read from the running VM over QMP, for a live backup that was
//! given none: CPUs, memory, machine type, firmware, its disks with their bus, and its
//! NICs with MAC and netdev.
//!
//! QMP does not know which production network a NIC is on; the NIC's netdev id
//! stands in for it (give `--definition` or `[[group.vm.nic]]` to name networks).

use lifeboat_hypervisor::qmp::{Qmp, QmpError};
use lifeboat_store::format::vm_definition::{
    DefinedDisk, DefinedNic, DefinitionSource, DiskBus, Firmware, VmDefinition,
};
use serde_json::{Value, json};

/// Where QEMU puts devices given an `id=` and those without one.
const DEVICE_CONTAINERS: [&str; 2] = ["/machine/peripheral", "/machine/peripheral-anon"];

/// Reads the definition of the VM on the monitor `qmp`; the drive `drive` (node name,
/// device or qdev id) is the disk being backed up and gets the name `disk`.
pub async fn capture_from_qmp(
    qmp: &mut Qmp,
    drive: &str,
    disk: &str,
) -> Result<VmDefinition, QmpError> {
    let machine_type = qom_get(qmp, "/machine", "type").await?;
    let machine = machine_type
        .as_str()
        .map(|t| t.trim_end_matches("-machine").to_string());
    let q35 = machine.as_deref().is_some_and(|m| m.contains("q35"));
    let cpus = qmp
        .execute("query-cpus-fast", Value::Null)
        .await?
        .as_array()
        .map_or(1, |a| a.len().max(1)) as u32;
    let memory = qmp
        .execute("query-memory-size-summary", Value::Null)
        .await?;
    let memory_mib = memory["base-memory"].as_u64().unwrap_or(1 << 30) >> 20;
    let blocks = qmp.execute("query-block", Value::Null).await?;
    let blocks = blocks.as_array().cloned().unwrap_or_default();
    let firmware = if blocks.iter().any(|b| {
        b["device"]
            .as_str()
            .is_some_and(|d| d.starts_with("pflash"))
    }) {
        Firmware::Uefi
    } else {
        Firmware::Bios
    };
    let mut disks = Vec::new();
    for block in &blocks {
        if let Some(d) = defined_disk(qmp, block, (drive, disk), q35).await? {
            disks.push(d);
        }
    }
    let nics = nics(qmp).await?;
    Ok(VmDefinition {
        source: DefinitionSource::Qmp,
        firmware,
        cpus,
        memory_mib,
        machine,
        disks,
        nics,
        libvirt_xml: None,
    })
}

async fn qom_get(qmp: &mut Qmp, path: &str, property: &str) -> Result<Value, QmpError> {
    qmp.execute("qom-get", json!({ "path": path, "property": property }))
        .await
}

/// A `query-block` entry as a disk: inserted, not removable (CD-ROM, SD), not a
/// firmware flash.
async fn defined_disk(
    qmp: &mut Qmp,
    block: &Value,
    (drive, disk): (&str, &str),
    q35: bool,
) -> Result<Option<DefinedDisk>, QmpError> {
    let device = block["device"].as_str().unwrap_or_default();
    let qdev = block["qdev"].as_str().unwrap_or_default();
    let node = block["inserted"]["node-name"].as_str().unwrap_or_default();
    if block["inserted"].is_null()
        || block["removable"].as_bool().unwrap_or(false)
        || device.starts_with("pflash")
    {
        return Ok(None);
    }
    // A virtio disk's qdev is `/machine/peripheral/<id>/virtio-backend`.
    let device_path = match qdev.strip_suffix("/virtio-backend") {
        Some(parent) => parent.to_string(),
        None if qdev.starts_with('/') => qdev.to_string(),
        None => format!("{}/{qdev}", DEVICE_CONTAINERS[0]),
    };
    let id = device_path.rsplit('/').next().unwrap_or_default();
    let is_backed_up = [device, node, qdev, id].contains(&drive);
    let kind = match qom_get(qmp, &device_path, "type").await {
        Ok(t) => t.as_str().unwrap_or_default().to_string(),
        // A device QOM cannot name still is a disk; its bus is a guess.
        Err(QmpError::Command { .. }) => String::new(),
        Err(e) => return Err(e),
    };
    let bus = match kind.as_str() {
        k if k.starts_with("ide-") && q35 => DiskBus::Sata,
        k if k.starts_with("ide-") => DiskBus::Ide,
        k if k.starts_with("scsi-") => DiskBus::Scsi,
        _ => DiskBus::Virtio,
    };
    let name = if is_backed_up {
        disk.to_string()
    } else if !device.is_empty() {
        device.to_string()
    } else {
        id.to_string()
    };
    Ok(Some(DefinedDisk { name, bus }))
}

/// Every device with a `netdev` property is a NIC.
async fn nics(qmp: &mut Qmp) -> Result<Vec<DefinedNic>, QmpError> {
    let mut nics = Vec::new();
    for container in DEVICE_CONTAINERS {
        let children = match qmp.execute("qom-list", json!({ "path": container })).await {
            Ok(c) => c.as_array().cloned().unwrap_or_default(),
            Err(QmpError::Command { .. }) => continue,
            Err(e) => return Err(e),
        };
        for child in children {
            let (Some(name), Some(kind)) = (child["name"].as_str(), child["type"].as_str()) else {
                continue;
            };
            let Some(model) = kind
                .strip_prefix("child<")
                .and_then(|k| k.strip_suffix('>'))
            else {
                continue;
            };
            let path = format!("{container}/{name}");
            let Ok(netdev) = qom_get(qmp, &path, "netdev").await else {
                continue;
            };
            let mac = qom_get(qmp, &path, "mac").await.ok();
            nics.push(DefinedNic {
                mac: mac.and_then(|m| m.as_str().map(str::to_string)),
                network: netdev.as_str().unwrap_or("default").to_string(),
                model: model.to_string(),
            });
        }
    }
    Ok(nics)
}
