//! Validation of the VMs in a group and their disks: one source per disk, names that
//! match what `lifeboat backup` would record.

use std::collections::HashMap;
use std::path::PathBuf;

use toml::Spanned;

use super::raw::{RawDisk, RawVm};
use super::validator::Validator;
use super::{Disk, DiskSource, Vm};

impl Validator<'_> {
    pub(super) fn vm(&mut self, vm: &Spanned<RawVm>, group_ctx: &str) -> Vm {
        let raw = vm.get_ref();
        let ctx = format!("{group_ctx}VM {:?}: ", raw.name.get_ref());
        if raw.disk.is_empty() {
            self.problem(
                vm.span().start,
                "group.vm.disk",
                format!(
                    "{ctx}no disks; add a [[group.vm.disk]] table with image, qmp + drive, or nbd"
                ),
            );
        }
        let mut disk_names = HashMap::new();
        let mut disks = Vec::new();
        for (i, d) in raw.disk.iter().enumerate() {
            let dctx = format!("{ctx}disk {}: ", i + 1);
            if let Some(disk) = self.disk(d, &dctx) {
                let name = Spanned::new(
                    d.get_ref().name.as_ref().map_or(d.span(), |n| n.span()),
                    disk.name.clone(),
                );
                self.name(&name, "group.vm.disk.name", "disk", &mut disk_names);
                disks.push(disk);
            }
        }
        let hardware = self.hardware(raw, &ctx);
        Vm {
            name: raw.name.get_ref().clone(),
            disks,
            hardware,
        }
    }

    fn disk(&mut self, d: &Spanned<RawDisk>, ctx: &str) -> Option<Disk> {
        let raw = d.get_ref();
        let at = d.span().start;
        let sources: Vec<&str> = [
            ("image", raw.image.is_some()),
            ("qmp", raw.qmp.is_some() || raw.drive.is_some()),
            ("nbd", raw.nbd.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| k)
        .collect();
        let what = "give exactly one source: image = \"/path\", qmp = \"/socket\" with drive = \"node\", or nbd = \"nbd://host/export\"";
        let source = match sources.as_slice() {
            [] => {
                self.problem(at, "group.vm.disk", format!("{ctx}no source; {what}"));
                return None;
            }
            [_, _, ..] => {
                self.problem(
                    at,
                    "group.vm.disk",
                    format!(
                        "{ctx}{} sources ({}); {what}",
                        sources.len(),
                        sources.join(", ")
                    ),
                );
                return None;
            }
            ["image"] => DiskSource::Image(PathBuf::from(raw.image.as_ref()?.get_ref())),
            ["nbd"] => DiskSource::Nbd(raw.nbd.as_ref()?.get_ref().clone()),
            _ => match (&raw.qmp, &raw.drive) {
                (Some(qmp), Some(drive)) => DiskSource::Qmp {
                    socket: PathBuf::from(qmp.get_ref()),
                    drive: drive.get_ref().clone(),
                },
                (Some(qmp), None) => {
                    self.problem(
                        qmp.span().start,
                        "group.vm.disk.qmp",
                        format!("{ctx}qmp needs drive = \"<block node name>\" too"),
                    );
                    return None;
                }
                (None, Some(drive)) => {
                    self.problem(
                        drive.span().start,
                        "group.vm.disk.drive",
                        format!("{ctx}drive needs qmp = \"<QMP socket path>\" too"),
                    );
                    return None;
                }
                (None, None) => unreachable!("the qmp source is only chosen when one is set"),
            },
        };
        // Same default names as `lifeboat backup`, so config and CLI backups line up.
        let name = match (&raw.name, &source) {
            (Some(n), _) => n.get_ref().clone(),
            (None, DiskSource::Image(p)) => p.file_stem()?.to_string_lossy().into_owned(),
            (None, DiskSource::Qmp { drive, .. }) => drive.clone(),
            (None, DiskSource::Nbd(_)) => {
                self.problem(
                    at,
                    "group.vm.disk.name",
                    format!("{ctx}an NBD disk needs name = \"...\" (its URI says nothing stable)"),
                );
                return None;
            }
        };
        let bus = self.disk_bus(&raw.bus, ctx);
        Some(Disk { name, source, bus })
    }
}
