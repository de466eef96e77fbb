//! A VM definition from a libvirt domain XML (`virsh dumpxml NAME`): the pieces a
//! recovery needs, plus the XML itself so a libvirt secondary can define the domain
//! from it.

use std::path::Path;

use lifeboat_store::format::vm_definition::{
    DefinedDisk, DefinedNic, DefinitionSource, DiskBus, Firmware, VmDefinition,
};
use roxmltree::{Document, Node};

/// A domain XML Lifeboat cannot read.
#[derive(Debug, thiserror::Error)]
pub enum LibvirtXmlError {
    #[error("not well-formed XML: {0}")]
    Xml(#[from] roxmltree::Error),
    #[error("the root element is <{0}>, not <domain>")]
    NotDomain(String),
    #[error("<{element}> holds {value:?}, which is not a number")]
    NotANumber {
        element: &'static str,
        value: String,
    },
    #[error("<memory unit={0:?}> is not a unit libvirt writes")]
    Unit(String),
}

/// Parses a domain XML. A disk whose `<source file>` is `backed_up.0` is named
/// `backed_up.1` (its name in the repository); the others by their target (`vda`).
pub fn parse_libvirt_domain(
    xml: &str,
    backed_up: Option<(&Path, &str)>,
) -> Result<VmDefinition, LibvirtXmlError> {
    let doc = Document::parse(xml)?;
    let domain = doc.root_element();
    if domain.tag_name().name() != "domain" {
        return Err(LibvirtXmlError::NotDomain(
            domain.tag_name().name().to_string(),
        ));
    }
    let os = child(domain, "os");
    let machine = os
        .and_then(|os| child(os, "type"))
        .and_then(|t| t.attribute("machine"))
        .map(str::to_string);
    let uefi = os.is_some_and(|os| {
        os.attribute("firmware") == Some("efi")
            || child(os, "loader").is_some_and(|l| l.attribute("type") == Some("pflash"))
    });
    let cpus = match child(domain, "vcpu").and_then(|v| v.text()) {
        Some(t) => number(t, "vcpu")? as u32,
        None => 1,
    };
    let memory_mib = match child(domain, "memory") {
        Some(m) => memory_mib(m)?,
        None => 1024,
    };
    let devices = child(domain, "devices");
    let disks = devices.map(|d| disks(d, backed_up)).unwrap_or_default();
    let nics = devices.map(nics).unwrap_or_default();
    Ok(VmDefinition {
        source: DefinitionSource::Libvirt,
        firmware: if uefi { Firmware::Uefi } else { Firmware::Bios },
        cpus,
        memory_mib,
        machine,
        disks,
        nics,
        libvirt_xml: Some(xml.to_string()),
    })
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| c.has_tag_name(name))
}

fn number(text: &str, element: &'static str) -> Result<u64, LibvirtXmlError> {
    text.trim()
        .parse()
        .map_err(|_| LibvirtXmlError::NotANumber {
            element,
            value: text.to_string(),
        })
}

fn memory_mib(node: Node) -> Result<u64, LibvirtXmlError> {
    let value = number(node.text().unwrap_or_default(), "memory")?;
    // libvirt's default unit is KiB.
    let bytes = match node.attribute("unit").unwrap_or("KiB") {
        "b" | "bytes" => value,
        "KiB" | "k" => value << 10,
        "MiB" | "M" => value << 20,
        "GiB" | "G" => value << 30,
        "KB" => value * 1000,
        "MB" => value * 1000 * 1000,
        "GB" => value * 1000 * 1000 * 1000,
        other => return Err(LibvirtXmlError::Unit(other.to_string())),
    };
    Ok(bytes >> 20)
}

/// `<disk device="disk">` entries; those with `<boot order>` first, in that order,
/// then the rest in document order (libvirt's own rule).
fn disks(devices: Node, backed_up: Option<(&Path, &str)>) -> Vec<DefinedDisk> {
    let mut found: Vec<(u32, DefinedDisk)> = Vec::new();
    for disk in devices.children().filter(|c| c.has_tag_name("disk")) {
        if disk.attribute("device").unwrap_or("disk") != "disk" {
            continue;
        }
        let target = child(disk, "target");
        let source =
            child(disk, "source").and_then(|s| s.attribute("file").or_else(|| s.attribute("dev")));
        let name = match (backed_up, source) {
            (Some((path, name)), Some(src)) if Path::new(src) == path => name.to_string(),
            _ => target
                .and_then(|t| t.attribute("dev"))
                .unwrap_or("disk")
                .to_string(),
        };
        let bus = match target.and_then(|t| t.attribute("bus")) {
            Some("ide") => DiskBus::Ide,
            Some("sata") => DiskBus::Sata,
            Some("scsi") => DiskBus::Scsi,
            _ => DiskBus::Virtio,
        };
        let order = child(disk, "boot")
            .and_then(|b| b.attribute("order"))
            .and_then(|o| o.parse().ok())
            .unwrap_or(u32::MAX);
        found.push((order, DefinedDisk { name, bus }));
    }
    found.sort_by_key(|(order, _)| *order);
    found.into_iter().map(|(_, d)| d).collect()
}

fn nics(devices: Node) -> Vec<DefinedNic> {
    devices
        .children()
        .filter(|c| c.has_tag_name("interface"))
        .map(|nic| {
            let source = child(nic, "source");
            let network = source
                .and_then(|s| {
                    s.attribute("network")
                        .or_else(|| s.attribute("bridge"))
                        .or_else(|| s.attribute("dev"))
                })
                .unwrap_or("default");
            let model = match child(nic, "model").and_then(|m| m.attribute("type")) {
                Some("virtio") | None => "virtio-net-pci".to_string(),
                Some(other) => other.to_string(),
            };
            DefinedNic {
                mac: child(nic, "mac")
                    .and_then(|m| m.attribute("address"))
                    .map(str::to_string),
                network: network.to_string(),
                model,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = r#"<domain type='kvm'>
  <name>erp-db</name>
  <memory unit='KiB'>4194304</memory>
  <vcpu placement='static'>4</vcpu>
  <os firmware='efi'><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <disk type='file' device='cdrom'><target dev='sda' bus='sata'/></disk>
    <disk type='file' device='disk'>
      <source file='/var/lib/libvirt/images/data.qcow2'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <source file='/var/lib/libvirt/images/root.qcow2'/>
      <target dev='sdb' bus='sata'/><boot order='1'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:12:34:56'/><source network='prod-lan'/><model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:12:34:57'/><source bridge='br-backup'/><model type='e1000'/>
    </interface>
  </devices>
</domain>"#;

    #[test]
    fn reads_what_a_recovery_needs() {
        let root = Path::new("/var/lib/libvirt/images/root.qcow2");
        let d = parse_libvirt_domain(DOMAIN, Some((root, "root"))).unwrap();
        assert_eq!(d.source, DefinitionSource::Libvirt);
        assert_eq!((d.cpus, d.memory_mib), (4, 4096));
        assert_eq!(d.firmware, Firmware::Uefi);
        assert_eq!(d.machine.as_deref(), Some("pc-q35-7.2"));
        // Boot order first, then document order; the cdrom is no disk.
        let disks: Vec<(&str, DiskBus)> =
            d.disks.iter().map(|d| (d.name.as_str(), d.bus)).collect();
        assert_eq!(disks, [("root", DiskBus::Sata), ("vdb", DiskBus::Virtio)]);
        assert_eq!(d.nics.len(), 2);
        assert_eq!(d.nics[0].network, "prod-lan");
        assert_eq!(d.nics[0].model, "virtio-net-pci");
        assert_eq!(d.nics[1].mac.as_deref(), Some("52:54:00:12:34:57"));
        assert_eq!(
            (d.nics[1].network.as_str(), d.nics[1].model.as_str()),
            ("br-backup", "e1000")
        );
        assert!(d.libvirt_xml.unwrap().contains("erp-db"));
    }

    #[test]
    fn refuses_what_is_not_a_domain() {
        assert!(matches!(
            parse_libvirt_domain("<network/>", None),
            Err(LibvirtXmlError::NotDomain(_))
        ));
        assert!(matches!(
            parse_libvirt_domain("<domain><vcpu>many</vcpu></domain>", None),
            Err(LibvirtXmlError::NotANumber { .. })
        ));
        assert!(parse_libvirt_domain("<domain", None).is_err());
    }
}
