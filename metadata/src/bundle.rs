//! A metadata point: Lifeboat's configuration, the files it names, the daemon's state
//! database and what each repository held, in one JSON document that records every
//! file's size, mode and BLAKE3 hash; compressed (zstd) and encrypted to the recovery
//! recipients (age, X25519; its payload is authenticated, so an edited or truncated
//! point fails to open rather than restoring something else).

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::error::MetadataError;

pub const BUNDLE_VERSION: u32 = 1;
const ZSTD_LEVEL: i32 = 9;

/// What a bundled file is to Lifeboat, which decides where `recover` puts it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileRole {
    /// The configuration file itself.
    Config,
    /// A password or credentials file the configuration names (written 0600).
    Secret,
    /// A plan's pre- or post-script (written 0700).
    Script,
    /// A VM's libvirt domain XML a `[[group.vm]]` names (written 0600).
    Definition,
    /// The daemon's `state.db`: job history, first-scheduled times.
    StateDb,
    /// Drill reports and their evidence, under the state directory.
    State,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BundleFile {
    pub role: FileRole,
    /// Where it was on the protected site (absolute).
    pub path: String,
    /// Unix permission bits it had.
    pub mode: u32,
    pub size: u64,
    pub blake3: String,
    /// Base64 of the content.
    data: String,
}

impl BundleFile {
    pub fn new(role: FileRole, path: String, mode: u32, bytes: &[u8]) -> BundleFile {
        BundleFile {
            role,
            path,
            mode,
            size: bytes.len() as u64,
            blake3: blake3::hash(bytes).to_hex().to_string(),
            data: B64.encode(bytes),
        }
    }

    /// The content, checked against the recorded size and hash.
    pub fn content(&self) -> Result<Vec<u8>, String> {
        let bytes = B64
            .decode(&self.data)
            .map_err(|e| format!("{}: not base64: {e}", self.path))?;
        let hash = blake3::hash(&bytes).to_hex().to_string();
        if bytes.len() as u64 != self.size || hash != self.blake3 {
            return Err(format!(
                "{}: content does not match its manifest entry (size {} vs {}, hash {hash} vs {})",
                self.path,
                bytes.len(),
                self.size,
                self.blake3
            ));
        }
        Ok(bytes)
    }
}

/// One repository as the protected site saw it when the point was written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RepositorySummary {
    /// Its `[[repository]]` name.
    pub name: String,
    pub url: String,
    /// The repository id, when it could be opened.
    pub id: Option<String>,
    /// Why it could not be opened, if it could not.
    pub error: Option<String>,
    pub newest: Vec<NewestSnapshot>,
}

/// A disk's newest snapshot in a repository, with the VM's definition recorded by it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewestSnapshot {
    pub vm: String,
    pub disk: String,
    pub snapshot: String,
    pub time: String,
    pub definition: Option<serde_json::Value>,
}

/// A metadata point's content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bundle {
    pub version: u32,
    pub created: String,
    pub host: String,
    pub lifeboat_version: String,
    pub files: Vec<BundleFile>,
    pub repositories: Vec<RepositorySummary>,
}

impl Bundle {
    /// Compressed and encrypted to every recipient.
    pub fn seal(&self, recipients: &[age::x25519::Recipient]) -> Result<Vec<u8>, MetadataError> {
        if recipients.is_empty() {
            return Err(MetadataError::NoRecipients);
        }
        let json = serde_json::to_vec(self).expect("a bundle serialises");
        let packed = zstd::encode_all(&json[..], ZSTD_LEVEL).expect("zstd into memory");
        let encryptor =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| MetadataError::BadKey {
                    what: "the recipients".into(),
                    kind: "recipient",
                    detail: e.to_string(),
                })?;
        let mut out = Vec::with_capacity(packed.len() + 512);
        let mut writer = encryptor
            .wrap_output(&mut out)
            .expect("writing into memory");
        writer.write_all(&packed).expect("writing into memory");
        writer.finish().expect("writing into memory");
        Ok(out)
    }

    /// Decrypts with whichever of `identities` the point was sealed to (after a key
    /// rotation, old points need the old key), decompresses and checks every file
    /// against its manifest entry.
    pub fn open(
        sealed: &[u8],
        identities: &[age::x25519::Identity],
        point: &str,
    ) -> Result<Bundle, MetadataError> {
        let damaged = |detail: String| MetadataError::Damaged {
            point: point.to_string(),
            detail,
            older: None,
        };
        let decryptor = age::Decryptor::new(sealed).map_err(|e| damaged(e.to_string()))?;
        let mut reader = decryptor
            .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => MetadataError::WrongKey {
                    point: point.to_string(),
                },
                other => damaged(other.to_string()),
            })?;
        let mut packed = Vec::new();
        reader
            .read_to_end(&mut packed)
            .map_err(|e| damaged(e.to_string()))?;
        let json = zstd::decode_all(&packed[..]).map_err(|e| damaged(e.to_string()))?;
        let bundle: Bundle =
            serde_json::from_slice(&json).map_err(|e| damaged(format!("manifest: {e}")))?;
        if bundle.version != BUNDLE_VERSION {
            return Err(damaged(format!(
                "version {} (this Lifeboat reads {BUNDLE_VERSION})",
                bundle.version
            )));
        }
        for f in &bundle.files {
            f.content().map_err(damaged)?;
        }
        Ok(bundle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{new_recovery_key, parse_recipient};
    use std::str::FromStr;

    fn key() -> (age::x25519::Identity, age::x25519::Recipient) {
        let (text, recipient) = new_recovery_key();
        let line = text.lines().find(|l| !l.starts_with('#')).unwrap();
        (
            age::x25519::Identity::from_str(line).unwrap(),
            parse_recipient(&recipient).unwrap(),
        )
    }

    fn bundle() -> Bundle {
        Bundle {
            version: BUNDLE_VERSION,
            created: "2026-12-06T00:00:00Z".into(),
            host: "pve1".into(),
            lifeboat_version: "0.1.0".into(),
            files: vec![BundleFile::new(
                FileRole::Config,
                "/etc/lifeboat/lifeboat.toml".into(),
                0o644,
                b"[daemon]\nstate_dir = \"/var/lib/lifeboat\"\nSECRET-MARKER\n",
            )],
            repositories: Vec::new(),
        }
    }

    #[test]
    fn only_a_recipient_reads_a_point_and_the_ciphertext_shows_nothing() {
        let (primary, primary_r) = key();
        let (escrow, escrow_r) = key();
        let (stranger, _) = key();
        let sealed = bundle().seal(&[primary_r, escrow_r]).unwrap();
        assert!(!sealed.windows(13).any(|w| w == b"SECRET-MARKER"));
        assert_eq!(Bundle::open(&sealed, &[primary], "p").unwrap(), bundle());
        assert_eq!(Bundle::open(&sealed, &[escrow], "p").unwrap(), bundle());
        assert!(matches!(
            Bundle::open(&sealed, &[stranger], "p"),
            Err(MetadataError::WrongKey { .. })
        ));
    }

    #[test]
    fn after_a_key_rotation_old_and_new_points_open_with_both_keys_given() {
        let (old, old_r) = key();
        let (new, new_r) = key();
        let before = bundle().seal(&[old_r]).unwrap();
        let after = bundle().seal(&[new_r]).unwrap();
        assert!(matches!(
            Bundle::open(&after, std::slice::from_ref(&old), "p"),
            Err(MetadataError::WrongKey { .. })
        ));
        let both = [old, new];
        assert!(Bundle::open(&before, &both, "p").is_ok());
        assert!(Bundle::open(&after, &both, "p").is_ok());
    }

    #[test]
    fn an_edited_or_truncated_point_does_not_open() {
        let (identity, recipient) = key();
        let sealed = bundle().seal(&[recipient]).unwrap();
        let mut edited = sealed.clone();
        let at = edited.len() - 20;
        edited[at] ^= 1;
        let truncated = &sealed[..sealed.len() - 7];
        for bad in [&edited[..], truncated] {
            assert!(
                matches!(
                    Bundle::open(bad, std::slice::from_ref(&identity), "p"),
                    Err(MetadataError::Damaged { .. })
                ),
                "damage must be detected"
            );
        }
    }

    #[test]
    fn a_file_that_does_not_match_its_manifest_entry_is_refused() {
        let mut f = BundleFile::new(FileRole::Secret, "/etc/x".into(), 0o600, b"abc");
        f.data = B64.encode(b"abd");
        assert!(f.content().is_err());
    }
}
