//! The `qemu-system-x86_64` command line for a [`LaunchSpec`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::error::LaunchError;
use super::spec::{DiskBus, Firmware, LaunchSpec, NetBackend};

/// Files and choices the launcher made for one start.
pub(crate) struct Plan {
    pub kvm: bool,
    pub console: PathBuf,
    pub qmp: PathBuf,
    pub qga: Option<PathBuf>,
    pub pidfile: PathBuf,
    /// Per NIC, `(guest port, host port)` of its forwards.
    pub forwards: Vec<Vec<(u16, u16)>>,
}

/// QEMU splits option values at commas; a comma inside a value is written twice.
fn esc(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// The arguments after the program name.
pub(crate) fn qemu_args(spec: &LaunchSpec, plan: &Plan) -> Result<Vec<OsString>, LaunchError> {
    let mut a: Vec<String> = vec![
        "-name".into(),
        format!("guest={},debug-threads=on", spec.name),
        // No default NIC, serial, monitor or CD-ROM: only what the spec asks for.
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-no-reboot".into(),
        "-accel".into(),
        if plan.kvm { "kvm" } else { "tcg" }.into(),
        "-smp".into(),
        spec.cpus.to_string(),
        "-m".into(),
        format!("{}M", spec.memory_mib),
        // A display adapter without a window: screendump still has a framebuffer.
        "-vga".into(),
        "std".into(),
        "-display".into(),
        "none".into(),
        "-chardev".into(),
        format!("file,id=console0,path={}", esc(&plan.console)),
        "-serial".into(),
        "chardev:console0".into(),
        "-chardev".into(),
        format!("socket,id=qmp0,path={},server=on,wait=off", esc(&plan.qmp)),
        "-mon".into(),
        "chardev=qmp0,mode=control".into(),
        "-pidfile".into(),
        plan.pidfile.to_string_lossy().into_owned(),
    ];
    if plan.kvm {
        a.extend(["-cpu".into(), "host".into()]);
    }
    if let Some(m) = &spec.machine {
        a.extend(["-machine".into(), m.clone()]);
    }
    if let Firmware::Uefi { code, vars } = &spec.firmware {
        a.push("-drive".into());
        a.push(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            esc(code)
        ));
        if let Some(v) = vars {
            a.push("-drive".into());
            a.push(format!("if=pflash,format=raw,unit=1,file={}", esc(v)));
        }
    }
    disk_args(spec, &mut a)?;
    nic_args(spec, plan, &mut a);
    if let Some(qga) = &plan.qga {
        a.extend([
            "-chardev".into(),
            format!("socket,id=qga0,path={},server=on,wait=off", esc(qga)),
            "-device".into(),
            "virtio-serial-pci,id=vserial0".into(),
            "-device".into(),
            "virtserialport,bus=vserial0.0,chardev=qga0,name=org.qemu.guest_agent.0".into(),
        ]);
    }
    Ok(a.into_iter().map(OsString::from).collect())
}

/// One `-drive if=none` per disk and a device on the asked bus, with `bootindex`
/// in the spec's order.
fn disk_args(spec: &LaunchSpec, a: &mut Vec<String>) -> Result<(), LaunchError> {
    let (mut ide, mut sata, mut scsi) = (0usize, 0usize, 0usize);
    for (i, d) in spec.disks.iter().enumerate() {
        let fmt = &d.format;
        if fmt.is_empty() || !fmt.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(LaunchError::InvalidSpec(format!(
                "disk {}: invalid format {fmt:?} (use raw, qcow2, vmdk, ...)",
                d.path.display()
            )));
        }
        let ro = if d.read_only { ",readonly=on" } else { "" };
        a.push("-drive".into());
        a.push(format!(
            "file={},format={fmt},if=none,id=disk{i}{ro}",
            esc(&d.path)
        ));
        let boot = i + 1;
        let dev = match d.bus {
            DiskBus::Virtio => format!("virtio-blk-pci,drive=disk{i},bootindex={boot}"),
            DiskBus::Ide => {
                ide += 1;
                if ide > 4 {
                    return Err(LaunchError::InvalidSpec(
                        "more than 4 IDE disks: put the others on sata, scsi or virtio".into(),
                    ));
                }
                format!("ide-hd,drive=disk{i},bootindex={boot}")
            }
            DiskBus::Sata => {
                if sata == 0 {
                    a.extend(["-device".into(), "ahci,id=sata0".into()]);
                }
                sata += 1;
                if sata > 6 {
                    return Err(LaunchError::InvalidSpec(
                        "more than 6 SATA disks: put the others on scsi or virtio".into(),
                    ));
                }
                format!(
                    "ide-hd,drive=disk{i},bus=sata0.{},bootindex={boot}",
                    sata - 1
                )
            }
            DiskBus::Scsi => {
                if scsi == 0 {
                    a.extend(["-device".into(), "virtio-scsi-pci,id=scsi0".into()]);
                }
                scsi += 1;
                format!("scsi-hd,drive=disk{i},bus=scsi0.0,bootindex={boot}")
            }
        };
        a.extend(["-device".into(), dev]);
    }
    Ok(())
}

fn nic_args(spec: &LaunchSpec, plan: &Plan, a: &mut Vec<String>) {
    for (i, nic) in spec.nics.iter().enumerate() {
        let netdev = match &nic.backend {
            NetBackend::User { restrict, .. } => {
                let mut s = format!("user,id=net{i}");
                if *restrict {
                    s.push_str(",restrict=on");
                }
                for (guest, host) in plan.forwards.get(i).into_iter().flatten() {
                    s.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
                }
                Some(s)
            }
            NetBackend::Bridge { bridge } => Some(format!("bridge,id=net{i},br={bridge}")),
            NetBackend::Tap { ifname } => Some(format!(
                "tap,id=net{i},ifname={ifname},script=no,downscript=no"
            )),
            NetBackend::Unplugged => None,
        };
        let mut dev = nic.model.clone();
        if let Some(n) = netdev {
            a.extend(["-netdev".into(), n]);
            dev.push_str(&format!(",netdev=net{i}"));
        }
        if let Some(mac) = &nic.mac {
            dev.push_str(&format!(",mac={mac}"));
        }
        a.extend(["-device".into(), dev]);
    }
}

/// Refuses names and values that would change the meaning of QEMU's options.
pub(crate) fn check_spec(spec: &LaunchSpec) -> Result<(), LaunchError> {
    let plain = |s: &str, extra: &[char]| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(&c))
    };
    let bad = |what: String| Err(LaunchError::InvalidSpec(what));
    if !plain(&spec.name, &[]) {
        return bad(format!(
            "name {:?}: use letters, digits, '.', '_' and '-' only",
            spec.name
        ));
    }
    if spec.cpus == 0 || spec.memory_mib == 0 {
        return bad("cpus and memory_mib must be at least 1".into());
    }
    if spec.disks.is_empty() {
        return bad("no disks: a VM needs at least one disk to boot from".into());
    }
    if spec.machine.as_deref().is_some_and(|m| !plain(m, &[])) {
        return bad(format!("machine type {:?}", spec.machine));
    }
    for nic in &spec.nics {
        if !plain(&nic.model, &[]) || nic.mac.as_deref().is_some_and(|m| !plain(m, &[':'])) {
            return bad(format!("NIC model {:?} or MAC {:?}", nic.model, nic.mac));
        }
        let name = match &nic.backend {
            NetBackend::Bridge { bridge } => bridge,
            NetBackend::Tap { ifname } => ifname,
            _ => continue,
        };
        if !plain(name, &[]) {
            return bad(format!("interface name {name:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::spec::{Accel, DiskSpec, NicSpec};

    fn spec() -> LaunchSpec {
        let disk = |p: &str, bus| DiskSpec {
            path: p.into(),
            format: "qcow2".into(),
            bus,
            read_only: false,
        };
        LaunchSpec {
            name: "web-1".into(),
            cpus: 2,
            memory_mib: 1024,
            machine: Some("q35".into()),
            firmware: Firmware::Bios,
            disks: vec![
                disk("/r/a,b.qcow2", DiskBus::Sata),
                disk("/r/data.qcow2", DiskBus::Virtio),
            ],
            nics: vec![NicSpec {
                mac: Some("52:54:00:00:00:01".into()),
                model: "virtio-net-pci".into(),
                backend: NetBackend::User {
                    restrict: true,
                    forwards: vec![80, 22],
                },
            }],
            guest_agent: true,
            run_dir: "/run/x".into(),
            accel: Accel::Auto,
        }
    }

    fn plan() -> Plan {
        Plan {
            kvm: false,
            console: "/run/x/web-1.console".into(),
            qmp: "/run/x/web-1.qmp".into(),
            qga: Some("/run/x/web-1.qga".into()),
            pidfile: "/run/x/web-1.pid".into(),
            forwards: vec![vec![(80, 4000), (22, 4001)]],
        }
    }

    #[test]
    fn disks_boot_in_order_on_their_bus_and_forwards_bind_loopback() {
        let args: Vec<String> = qemu_args(&spec(), &plan())
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let line = args.join(" ");
        // A comma in a path is doubled, or QEMU would read "b.qcow2" as an option.
        assert!(
            line.contains("file=/r/a,,b.qcow2,format=qcow2,if=none,id=disk0"),
            "{line}"
        );
        assert!(
            line.contains(
                "-device ahci,id=sata0 -device ide-hd,drive=disk0,bus=sata0.0,bootindex=1"
            )
        );
        assert!(line.contains("virtio-blk-pci,drive=disk1,bootindex=2"));
        assert!(line.contains(
            "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:4000-:80,hostfwd=tcp:127.0.0.1:4001-:22"
        ));
        assert!(line.contains("virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01"));
        assert!(line.contains("name=org.qemu.guest_agent.0"));
        assert!(line.contains("-accel tcg") && !line.contains("-cpu host"));
        assert!(line.contains("-no-reboot") && line.contains("-machine q35"));
    }

    #[test]
    fn names_that_would_inject_options_are_refused() {
        let mut s = spec();
        s.name = "a,b".into();
        assert!(matches!(check_spec(&s), Err(LaunchError::InvalidSpec(_))));
        let mut s = spec();
        s.nics[0].model = "e1000,romfile=/etc/shadow".into();
        assert!(check_spec(&s).is_err());
        let mut s = spec();
        s.disks.clear();
        assert!(check_spec(&s).unwrap_err().to_string().contains("no disks"));
        assert!(check_spec(&spec()).is_ok());
    }
}
