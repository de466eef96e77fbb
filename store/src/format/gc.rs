//! Garbage-collection records: prune plans, their completion records, and the GC lease.
//!
//! ```text
//! gc/<id>        plan  = "LBGP" ‖ version: u32 ‖ meta_json: u32-len ‖ index: u32-len
//! gc/<id>.done   done  = "LBGD" ‖ version: u32 ‖ meta_json: u32-len ‖ count: u64 ‖ pack id [32]*
//! locks/gc-<gen> lease = JSON (sealed)
//! ```
//! `index` is an encoded index object (see [`super::index`]) listing the condemned
//! packs and their chunks: the sweep needs the chunk ids to resurrect a pack that a
//! snapshot committed after the mark still uses. All three are sealed with their key
//! as associated data, like every other object.

use serde::{Deserialize, Serialize};

use super::index::{IndexedPack, decode_index, encode_index};
use super::wire::{DecodeError, Reader, Writer};
use crate::crypto::ChunkId;

pub const GC_PREFIX: &str = "gc/";
pub const LEASE_PREFIX: &str = "locks/gc-";
const DONE_SUFFIX: &str = ".done";
const PLAN_MAGIC: &[u8; 4] = b"LBGP";
const DONE_MAGIC: &[u8; 4] = b"LBGD";
const VERSION: u32 = 1;

pub fn plan_key(id: &ChunkId) -> String {
    format!("{GC_PREFIX}{id}")
}

pub fn done_key(plan_key: &str) -> String {
    format!("{plan_key}{DONE_SUFFIX}")
}

/// What a key under `gc/` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcKey {
    Plan(String),
    /// The completion record of the plan with this key.
    Done(String),
}

pub fn classify_gc_key(key: &str) -> Option<GcKey> {
    let rest = key.strip_prefix(GC_PREFIX)?;
    let (id, done) = match rest.strip_suffix(DONE_SUFFIX) {
        Some(id) => (id, true),
        None => (rest, false),
    };
    let id: ChunkId = id.parse().ok()?;
    let plan = plan_key(&id);
    Some(if done {
        GcKey::Done(plan)
    } else {
        GcKey::Plan(plan)
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlanMeta {
    /// RFC 3339 time of the mark.
    pub created: String,
    /// Unix seconds before which no sweep may delete these packs: the mark time plus
    /// the grace period. Backups that reuse a condemned pack must commit before this
    /// (minus a safety margin), so the sweep sees their manifest.
    pub sweep_after: u64,
    /// The grace period the plan was made with, in seconds.
    pub grace_secs: u64,
    pub host: String,
}

impl PlanMeta {
    /// Unix seconds after which a backup may no longer commit a snapshot that reuses
    /// a condemned pack: `sweep_after` less a safety margin for the manifest upload.
    pub fn commit_deadline(&self) -> u64 {
        let margin = (self.grace_secs / 4).min(COMMIT_MARGIN_MAX_SECS);
        self.sweep_after.saturating_sub(margin)
    }
}

/// Upper bound of the margin between a backup's last check and the sweep: far longer
/// than one manifest upload with all its retries.
const COMMIT_MARGIN_MAX_SECS: u64 = 600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub meta: PlanMeta,
    pub condemned: Vec<IndexedPack>,
}

impl Plan {
    pub fn encode(&self) -> Vec<u8> {
        let meta = serde_json::to_vec(&self.meta).expect("plan metadata serialises");
        let index = encode_index(&self.condemned);
        let mut w = Writer::with_capacity(16 + meta.len() + index.len());
        w.bytes(PLAN_MAGIC)
            .u32(VERSION)
            .var_bytes(&meta)
            .var_bytes(&index);
        w.into_inner()
    }

    pub fn decode(plain: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(plain);
        r.magic(PLAN_MAGIC, "prune plan")?;
        r.version("prune plan", VERSION)?;
        let meta = json(r.var_bytes()?, "prune plan metadata")?;
        let condemned = decode_index(r.var_bytes()?)?;
        r.finish()?;
        Ok(Self { meta, condemned })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DoneMeta {
    pub swept: String,
    pub host: String,
}

/// Which packs of a plan the sweep really deleted. The others were resurrected
/// (a snapshot uses them), are listed by an index again, or are still locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub meta: DoneMeta,
    pub deleted: Vec<ChunkId>,
}

impl Done {
    pub fn encode(&self) -> Vec<u8> {
        let meta = serde_json::to_vec(&self.meta).expect("done metadata serialises");
        let mut w = Writer::with_capacity(24 + meta.len() + self.deleted.len() * 32);
        w.bytes(DONE_MAGIC)
            .u32(VERSION)
            .var_bytes(&meta)
            .u64(self.deleted.len() as u64);
        for id in &self.deleted {
            w.bytes(&id.0);
        }
        w.into_inner()
    }

    pub fn decode(plain: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(plain);
        r.magic(DONE_MAGIC, "prune completion record")?;
        r.version("prune completion record", VERSION)?;
        let meta = json(r.var_bytes()?, "prune completion metadata")?;
        let count = r.count(32)?;
        let mut deleted = Vec::with_capacity(count);
        for _ in 0..count {
            deleted.push(ChunkId(r.array()?));
        }
        r.finish()?;
        Ok(Self { meta, deleted })
    }
}

/// The GC lease: whoever wrote the highest generation holds it until `expires`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseRecord {
    pub host: String,
    pub pid: u32,
    /// Unix seconds.
    pub expires: u64,
    /// Set when the holder finished: the lease is free at once.
    #[serde(default)]
    pub released: bool,
}

pub fn lease_key(generation: u64) -> String {
    // Zero-padded so keys sort like numbers.
    format!("{LEASE_PREFIX}{generation:020}")
}

pub fn lease_generation(key: &str) -> Option<u64> {
    key.strip_prefix(LEASE_PREFIX)?.parse().ok()
}

fn json<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| DecodeError::Invalid {
        what,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::PackEntry;

    #[test]
    fn records_round_trip_and_reject_truncation() {
        let plan = Plan {
            meta: PlanMeta {
                created: "2026-11-22T01:00:00.000Z".into(),
                sweep_after: 1_800_000_000,
                grace_secs: 3600,
                host: "node1".into(),
            },
            condemned: vec![IndexedPack {
                pack: ChunkId::random(),
                entries: vec![PackEntry {
                    id: ChunkId::random(),
                    offset: 0,
                    length: 10,
                    raw_len: 20,
                }],
            }],
        };
        let bytes = plan.encode();
        assert_eq!(Plan::decode(&bytes).unwrap(), plan);
        for cut in 0..bytes.len() {
            assert!(Plan::decode(&bytes[..cut]).is_err(), "plan cut at {cut}");
        }
        let done = Done {
            meta: DoneMeta {
                swept: "2026-11-23T01:00:00.000Z".into(),
                host: "node2".into(),
            },
            deleted: vec![ChunkId::random(), ChunkId::random()],
        };
        let bytes = done.encode();
        assert_eq!(Done::decode(&bytes).unwrap(), done);
        for cut in 0..bytes.len() {
            assert!(Done::decode(&bytes[..cut]).is_err(), "done cut at {cut}");
        }
    }

    #[test]
    fn keys_classify() {
        let id = ChunkId::random();
        let plan = plan_key(&id);
        assert_eq!(classify_gc_key(&plan), Some(GcKey::Plan(plan.clone())));
        assert_eq!(
            classify_gc_key(&done_key(&plan)),
            Some(GcKey::Done(plan.clone()))
        );
        assert_eq!(classify_gc_key("gc/.tmp-x"), None);
        assert_eq!(lease_generation(&lease_key(42)), Some(42));
        assert!(lease_key(9) < lease_key(10));
    }
}
