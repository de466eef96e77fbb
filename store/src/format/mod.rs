//! The repository format (versions 1 and 2, see [`FORMAT_VERSION`]): what each object is called and how it is encoded.
//!
//! `docs/FORMAT.md` is the prose description of the same thing; keep them in step.
//! Every decoder here is total: hostile input gives a [`DecodeError`], never a panic.
//!
//! | key                         | contents                                   | sealed |
//! |-----------------------------|--------------------------------------------|--------|
//! | `lifeboat-repository.json`  | format marker and version                  | no     |
//! | `keys/<16 hex>`             | key slot: argon2id params + wrapped master | yes (by passphrase) |
//! | `config`                    | chunker, compression, pack size            | yes    |
//! | `data/<2 hex>/<64 hex>`     | pack: chunk blobs + sealed header          | yes    |
//! | `index/<64 hex>`            | chunk id → pack, offset, length            | yes    |
//! | `snapshots/<64 hex>`        | manifest of one VM disk at one time        | yes    |
//! | `gc/<64 hex>[.done]`        | prune plan / its completion record         | yes    |
//! | `locks/gc-<generation>`     | the garbage-collection lease               | yes    |
//! | `reports/drill/<seq>-<hash>`| a signed drill report (FORMAT.md §17)      | yes    |

pub mod blob;
pub mod config;
pub mod gc;
pub mod index;
pub mod manifest;
pub mod pack;
pub mod vm_definition;
pub mod wire;

use crate::crypto::ChunkId;

pub use wire::DecodeError;

/// Newest repository format version this build reads and writes.
///
/// - 1: a repository whose chunk-id key is derived from its own master key.
/// - 2: a *replica* (`config.replica_of`, FORMAT.md §15): its chunk-id key is the
///   source repository's, stored in its sealed config. A build that only knows
///   version 1 would derive the wrong id key and must refuse it, so only replicas
///   carry version 2; plain repositories stay at 1 and open with older builds.
pub const FORMAT_VERSION: u32 = 2;
/// The version of a repository that is not a replica.
pub const PLAIN_FORMAT_VERSION: u32 = 1;

/// The format version a repository with (or without) a `replica_of` record carries.
pub fn format_version(replica: bool) -> u32 {
    if replica {
        FORMAT_VERSION
    } else {
        PLAIN_FORMAT_VERSION
    }
}

pub const MARKER_KEY: &str = "lifeboat-repository.json";
pub const CONFIG_KEY: &str = "config";
pub const KEYS_PREFIX: &str = "keys/";
pub const DATA_PREFIX: &str = "data/";
pub const INDEX_PREFIX: &str = "index/";
pub const SNAPSHOTS_PREFIX: &str = "snapshots/";

pub fn pack_key(pack: &ChunkId) -> String {
    let hex = pack.to_hex();
    format!("{DATA_PREFIX}{}/{hex}", &hex[..2])
}

pub fn index_key(id: &ChunkId) -> String {
    format!("{INDEX_PREFIX}{id}")
}

pub fn snapshot_key(id: &ChunkId) -> String {
    format!("{SNAPSHOTS_PREFIX}{id}")
}

/// Parses the id out of `prefix…/<64 hex>` keys; `None` for foreign objects.
pub fn id_from_key(key: &str) -> Option<ChunkId> {
    key.rsplit('/').next()?.parse().ok()
}

/// The plaintext marker: the only thing in the bucket readable without a key.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Marker {
    pub format: String,
    pub version: u32,
}

impl Marker {
    pub const FORMAT_NAME: &'static str = "lifeboat-repository";

    /// The marker of a repository of format `version`.
    pub fn new(version: u32) -> Self {
        Self {
            format: Self::FORMAT_NAME.to_string(),
            version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_ids() {
        let id = ChunkId::random();
        assert_eq!(id_from_key(&pack_key(&id)), Some(id));
        assert_eq!(id_from_key(&index_key(&id)), Some(id));
        assert_eq!(id_from_key(&snapshot_key(&id)), Some(id));
        assert_eq!(id_from_key("index/.tmp-1"), None);
        assert!(pack_key(&id).starts_with(&format!("data/{}/", &id.to_hex()[..2])));
    }
}
