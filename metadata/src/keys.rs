//! Recovery keys: an age X25519 identity kept offline (printed, escrowed), whose public
//! recipient goes into the configuration. The cluster only ever holds recipients, so
//! it can write metadata backups but never read one back.

use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use age::secrecy::ExposeSecret;

/// A recovery key's public half, which points are sealed to.
pub use age::x25519::Recipient;

use super::error::MetadataError;

/// A new recovery key: the identity file's text and its public recipient.
pub fn new_recovery_key() -> (String, String) {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let text = format!(
        "# Lifeboat recovery key, created {created}\n# public recipient: {recipient}\n# Keep this \
         file offline. Without it, no metadata backup encrypted to the recipient can be read.\n{}\n",
        identity.to_string().expose_secret()
    );
    (text, recipient)
}

/// Writes `text` to `path` readable by its owner only; refuses to replace a file.
pub fn write_key_file(path: &Path, text: &str) -> Result<(), MetadataError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| MetadataError::io("cannot create the recovery key file", path, e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| MetadataError::io("cannot write the recovery key file", path, e))
}

/// Parses a public recipient (`age1…`).
pub fn parse_recipient(text: &str) -> Result<age::x25519::Recipient, MetadataError> {
    age::x25519::Recipient::from_str(text.trim()).map_err(|e| MetadataError::BadKey {
        what: format!("{:?}", text.trim()),
        kind: "recipient",
        detail: e.to_string(),
    })
}

/// Reads the identity from a recovery key file (comment lines are skipped).
pub fn read_identity(path: &Path) -> Result<age::x25519::Identity, MetadataError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| MetadataError::io("cannot read the recovery key", path, e))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default();
    age::x25519::Identity::from_str(line).map_err(|e| MetadataError::BadKey {
        what: path.display().to_string(),
        kind: "identity",
        detail: e.to_string(),
    })
}
