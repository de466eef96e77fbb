//! Reading a definition file: Lifeboat's JSON (what the daemon writes from a
//! `[[group.vm]]` entry) or a libvirt domain XML (`virsh dumpxml`), told apart by
//! their first character.

use std::path::{Path, PathBuf};

use lifeboat_store::format::vm_definition::{DefinitionError, MAX_DEFINITION_BYTES, VmDefinition};

use super::libvirt::{LibvirtXmlError, parse_libvirt_domain};

#[derive(Debug, thiserror::Error)]
pub enum DefinitionFileError {
    #[error("cannot read VM definition {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "VM definition {} is {len} bytes; the limit is {MAX_DEFINITION_BYTES} (is it the right file?)",
        path.display()
    )]
    TooBig { path: PathBuf, len: usize },
    #[error("VM definition {} is not Lifeboat's JSON definition: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("VM definition {} is not a libvirt domain XML Lifeboat can read: {source}", path.display())]
    Libvirt {
        path: PathBuf,
        #[source]
        source: LibvirtXmlError,
    },
    #[error("VM definition {} is not UTF-8 text", path.display())]
    NotText { path: PathBuf },
    #[error("VM definition {}: {source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: DefinitionError,
    },
}

/// Reads and checks the definition in `path`. `backed_up` is the image being backed up
/// and its disk name: a domain XML names disks by target device (`vda`), and the one
/// whose source is that image is given its name in the repository.
pub fn load_definition_file(
    path: &Path,
    backed_up: Option<(&Path, &str)>,
) -> Result<VmDefinition, DefinitionFileError> {
    let bytes = std::fs::read(path).map_err(|source| DefinitionFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.len() > MAX_DEFINITION_BYTES {
        return Err(DefinitionFileError::TooBig {
            path: path.to_path_buf(),
            len: bytes.len(),
        });
    }
    let path_buf = || path.to_path_buf();
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| DefinitionFileError::NotText { path: path_buf() })?;
    let definition = if text.trim_start().starts_with('<') {
        parse_libvirt_domain(text, backed_up).map_err(|source| DefinitionFileError::Libvirt {
            path: path_buf(),
            source,
        })?
    } else {
        serde_json::from_str(text).map_err(|source| DefinitionFileError::Json {
            path: path_buf(),
            source,
        })?
    };
    definition
        .check()
        .map_err(|source| DefinitionFileError::Invalid {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(definition)
}
