//! Where a backup's VM definition comes from (FORMAT.md §16): a file given with
//! `--definition` (Lifeboat's JSON, or a libvirt domain XML), or the running VM over
//! QMP when a live backup names none.

mod file;
mod libvirt;
mod qmp;

pub use file::{DefinitionFileError, load_definition_file};
pub use libvirt::LibvirtXmlError;
pub use libvirt::parse_libvirt_domain;
pub use qmp::capture_from_qmp;
