//! Snapshot manifests: one VM disk at one point in time.
//!
//! ```text
//! manifest = "LBSN" ‖ version: u32 ‖ meta_json: u32-len bytes ‖ count: u64 ‖ Extent*
//! Extent   = 0u8 ‖ chunk id [32] ‖ len: u32      (data chunk)
//!          | 1u8 ‖ len: u64                      (zero run / hole)
//! ```
//! Extents are in disk order and cover the disk exactly (their lengths sum to `size`).
//! Sealed with the object key (`snapshots/<id>`) as associated data. A manifest is
//! written last, after every pack and index object it needs: a snapshot exists only
//! once it is complete.

use serde::{Deserialize, Serialize};

use super::vm_definition::VmDefinition;
use super::wire::{DecodeError, Reader, Writer};
use crate::crypto::ChunkId;

const MAGIC: &[u8; 4] = b"LBSN";
const VERSION: u32 = 1;
const TAG_CHUNK: u8 = 0;
const TAG_ZERO: u8 = 1;
/// Smallest encoded extent, for the count sanity check.
const MIN_EXTENT_LEN: usize = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    Chunk { id: ChunkId, len: u32 },
    Zero { len: u64 },
}

impl Extent {
    pub fn len(&self) -> u64 {
        match self {
            Extent::Chunk { len, .. } => u64::from(*len),
            Extent::Zero { len } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Descriptive fields of a snapshot, stored as JSON inside the sealed manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub vm: String,
    pub disk: String,
    /// Where the disk was read from (path or NBD address).
    pub source: String,
    /// Disk size in bytes.
    pub size: u64,
    /// RFC 3339 UTC time the backup started.
    pub time: String,
    pub host: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Snapshot this one was made incrementally from, if any.
    #[serde(default)]
    pub parent: Option<String>,
    /// Changed-block tracking: the dirty bitmap created when this backup started,
    /// which records every write since; the next backup reads only what it marks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cbt_bitmap: Option<String>,
    pub lifeboat_version: String,
    /// Set on a replica's copy of a snapshot: where it was copied from. Replication
    /// uses it to know which source snapshots the destination already holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicated_from: Option<ReplicatedFrom>,
    /// The VM's definition when this disk was backed up (FORMAT.md §16), so that a
    /// recovery boots it as it ran; `None` in snapshots made before definitions were
    /// recorded, or when nothing described the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_definition: Option<VmDefinition>,
}

/// The origin of a replicated snapshot (FORMAT.md §15).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicatedFrom {
    /// The source repository's id (its `config.id`).
    pub repository: String,
    /// The snapshot's id in the source repository.
    pub snapshot: String,
    /// RFC 3339 UTC time the replication run that copied it started.
    pub copied: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub meta: SnapshotMeta,
    pub extents: Vec<Extent>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let meta = serde_json::to_vec(&self.meta).expect("snapshot metadata always serialises");
        let mut w = Writer::with_capacity(24 + meta.len() + self.extents.len() * 37);
        w.bytes(MAGIC)
            .u32(VERSION)
            .var_bytes(&meta)
            .u64(self.extents.len() as u64);
        for e in &self.extents {
            match e {
                Extent::Chunk { id, len } => w.u8(TAG_CHUNK).bytes(&id.0).u32(*len),
                Extent::Zero { len } => w.u8(TAG_ZERO).u64(*len),
            };
        }
        w.into_inner()
    }

    pub fn decode(plain: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(plain);
        r.magic(MAGIC, "snapshot manifest")?;
        r.version("snapshot manifest", VERSION)?;
        let meta: SnapshotMeta =
            serde_json::from_slice(r.var_bytes()?).map_err(|e| DecodeError::Invalid {
                what: "snapshot metadata",
                detail: e.to_string(),
            })?;
        let count = r.count(MIN_EXTENT_LEN)?;
        let mut extents = Vec::with_capacity(count);
        let mut total: u64 = 0;
        for _ in 0..count {
            let extent = match r.u8()? {
                TAG_CHUNK => Extent::Chunk {
                    id: ChunkId(r.array()?),
                    len: r.u32()?,
                },
                TAG_ZERO => Extent::Zero { len: r.u64()? },
                tag => {
                    return Err(DecodeError::Invalid {
                        what: "extent",
                        detail: format!("unknown tag {tag}"),
                    });
                }
            };
            total = total
                .checked_add(extent.len())
                .ok_or(DecodeError::Invalid {
                    what: "extents",
                    detail: "lengths overflow".into(),
                })?;
            extents.push(extent);
        }
        r.finish()?;
        if total != meta.size {
            return Err(DecodeError::Invalid {
                what: "extents",
                detail: format!("cover {total} bytes but the disk is {} bytes", meta.size),
            });
        }
        Ok(Self { meta, extents })
    }

    /// Iterates `(disk offset, extent)` in disk order.
    pub fn extents_with_offsets(&self) -> impl Iterator<Item = (u64, &Extent)> {
        self.extents.iter().scan(0u64, |offset, e| {
            let at = *offset;
            *offset += e.len();
            Some((at, e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            meta: SnapshotMeta {
                vm: "web01".into(),
                disk: "root".into(),
                source: "/var/lib/vm/web01.img".into(),
                size: 1000 + (1 << 20),
                time: "2026-11-22T01:00:00Z".into(),
                host: "node1".into(),
                tags: vec!["nightly".into()],
                parent: None,
                cbt_bitmap: None,
                lifeboat_version: "0.1.0".into(),
                replicated_from: None,
                vm_definition: None,
            },
            extents: vec![
                Extent::Chunk {
                    id: ChunkId::random(),
                    len: 1000,
                },
                Extent::Zero { len: 1 << 20 },
            ],
        }
    }

    #[test]
    fn manifest_round_trip_and_offsets() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        let offsets: Vec<u64> = m.extents_with_offsets().map(|(o, _)| o).collect();
        assert_eq!(offsets, vec![0, 1000]);
        for cut in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn extents_must_cover_the_disk() {
        let mut m = sample();
        m.meta.size += 1;
        assert!(Manifest::decode(&m.encode()).is_err());
    }
}
