//! `lifeboat verify`: checks that every snapshot can be restored.
//!
//! Structure (always): the index objects and manifests decrypt and parse, every chunk a
//! manifest names is indexed, and every indexed pack exists and is long enough.
//! Data (`--read-data[=PERCENT]`): packs are downloaded whole (all, or a random sample),
//! their headers checked against the index, and every chunk decrypted and re-hashed.
//! Each problem is then traced to the snapshots, disks and offsets it affects.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use lifeboat_store::catalog::ChunkLocation;
use lifeboat_store::format::blob::open_chunk;
use lifeboat_store::format::manifest::{Extent, Manifest};
use lifeboat_store::format::pack::decode_pack;
use lifeboat_store::format::{self, INDEX_PREFIX, SNAPSHOTS_PREFIX};
use lifeboat_store::{ChunkId, Progress, Repository, StoreError, StoreResult};
use rand::seq::SliceRandom;
use serde::Serialize;

/// Packs downloaded at once by `--read-data`.
const READ_CONCURRENCY: usize = 4;
/// Offsets listed per damaged snapshot; the count says how many there are in all.
const MAX_OFFSETS_SHOWN: usize = 8;

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// `None`: structure only. `Some(p)`: read and check `p` percent of the packs.
    pub read_data_percent: Option<f64>,
}

/// A damaged object.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub object: String,
    pub detail: String,
}

/// A snapshot that would not restore completely.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedSnapshot {
    pub snapshot: String,
    pub vm: String,
    pub disk: String,
    /// First few disk offsets whose data is missing or bad.
    pub offsets: Vec<u64>,
    pub damaged_chunks: u64,
    pub damaged_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub snapshots: u64,
    pub index_objects: u64,
    pub packs: u64,
    pub packs_read: u64,
    pub chunks_read: u64,
    pub bytes_read: u64,
    pub problems: Vec<Problem>,
    pub damaged_snapshots: Vec<DamagedSnapshot>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.damaged_snapshots.is_empty()
    }
}

/// What is known to be bad, for tracing problems to snapshots.
#[derive(Default)]
struct Damage {
    /// Damaged copies: (chunk, pack) → why.
    chunks: HashMap<(ChunkId, ChunkId), String>,
    packs: HashMap<ChunkId, String>,
    /// Packs that exist in the repository listing.
    present: HashSet<ChunkId>,
}

pub async fn verify_repository(
    repo: Arc<Repository>,
    options: &VerifyOptions,
    progress: Arc<Progress>,
) -> StoreResult<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut damage = Damage::default();
    // Index objects are listed before packs: backups write packs first, so every pack
    // a listed index object names was in the bucket before the pack listing began.
    let index_objects = repo.backend().list(INDEX_PREFIX).await?;
    let mut pack_sizes: HashMap<ChunkId, u64> = repo
        .list_packs()
        .await?
        .into_iter()
        .map(|p| (p.id, p.size))
        .collect();
    for obj in index_objects {
        report.index_objects += 1;
        check_index_object(&repo, &obj.key, &mut pack_sizes, &mut report, &mut damage).await?;
    }
    report.packs = pack_sizes.len() as u64;
    damage.present = pack_sizes.keys().copied().collect();
    for (pack, detail) in &damage.packs {
        report.problems.push(Problem {
            object: format::pack_key(pack),
            detail: detail.clone(),
        });
    }

    // Key slots: damage here locks out whoever holds that slot's passphrase.
    for p in repo.check_key_slots().await? {
        report.problems.push(Problem {
            object: p.object,
            detail: p.detail,
        });
    }

    // Make sure the catalog reflects exactly what the repository holds before using it.
    repo.sync_catalog().await?;

    if let Some(percent) = options.read_data_percent {
        let packs = sample(&pack_sizes, percent);
        progress.set_total(packs.iter().map(|(_, s)| s).sum());
        read_packs(&repo, &packs, &mut report, &mut damage, &progress).await?;
    }

    check_snapshots(&repo, &damage, &mut report).await?;
    // The catalog forgets the damaged data, so later backups store it afresh rather
    // than deduplicating new snapshots against data that is gone.
    let bad_packs: Vec<ChunkId> = damage.packs.keys().copied().collect();
    let bad_chunks: Vec<(ChunkId, ChunkId)> = damage.chunks.keys().copied().collect();
    repo.with_catalog(move |c| {
        c.forget_packs(&bad_packs)?;
        c.forget_chunks(&bad_chunks)
    })
    .await?;
    Ok(report)
}

/// One index object must open, and every pack it names must exist and be long enough.
/// A pack missing from the listing is asked for once more (listings can lag) and, if
/// found, added to `pack_sizes`.
async fn check_index_object(
    repo: &Repository,
    key: &str,
    pack_sizes: &mut HashMap<ChunkId, u64>,
    report: &mut VerifyReport,
    damage: &mut Damage,
) -> StoreResult<()> {
    let packs = match repo.read_index_object(key).await {
        Ok(packs) => packs,
        Err(e) => {
            report.problems.push(problem_from(key, e)?);
            return Ok(());
        }
    };
    for p in packs {
        let end = p
            .entries
            .iter()
            .map(|e| e.offset + u64::from(e.length))
            .max()
            .unwrap_or(0);
        if let Entry::Vacant(slot) = pack_sizes.entry(p.pack) {
            let key = format::pack_key(&p.pack);
            if let Some(size) = repo.backend().size(&key).await? {
                slot.insert(size);
            }
        }
        match pack_sizes.get(&p.pack) {
            None => {
                damage.packs.insert(
                    p.pack,
                    format!("pack {} is missing", format::pack_key(&p.pack)),
                );
            }
            Some(&size) if size < end => {
                damage.packs.insert(
                    p.pack,
                    format!(
                        "pack {} is truncated ({size} bytes, index needs {end})",
                        format::pack_key(&p.pack)
                    ),
                );
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// A random `percent` of the packs (rounded up), for `--read-data`.
fn sample(pack_sizes: &HashMap<ChunkId, u64>, percent: f64) -> Vec<(ChunkId, u64)> {
    let mut packs: Vec<(ChunkId, u64)> = pack_sizes.iter().map(|(k, v)| (*k, *v)).collect();
    packs.shuffle(&mut rand::thread_rng());
    let take = ((packs.len() as f64 * percent / 100.0).ceil() as usize).min(packs.len());
    packs.truncate(take);
    packs
}

/// Manifests: each must open; every chunk must be indexed and not known damaged.
async fn check_snapshots(
    repo: &Repository,
    damage: &Damage,
    report: &mut VerifyReport,
) -> StoreResult<()> {
    let mut unindexed = 0u64;
    for obj in repo.backend().list(SNAPSHOTS_PREFIX).await? {
        let Some(id) = format::id_from_key(&obj.key) else {
            continue;
        };
        report.snapshots += 1;
        match repo.read_manifest(&id.to_hex()).await {
            Ok(manifest) => {
                if let Some(d) =
                    check_manifest(repo, &id.to_hex(), &manifest, damage, &mut unindexed).await?
                {
                    report.damaged_snapshots.push(d);
                }
            }
            Err(e) => {
                let p = problem_from(&obj.key, e)?;
                report.damaged_snapshots.push(DamagedSnapshot {
                    snapshot: id.short(),
                    vm: "?".into(),
                    disk: "?".into(),
                    offsets: vec![],
                    damaged_chunks: 0,
                    damaged_bytes: 0,
                });
                report.problems.push(p);
            }
        }
    }
    if unindexed > 0 {
        report.problems.push(Problem {
            object: INDEX_PREFIX.to_string(),
            detail: format!(
                "{unindexed} chunk reference(s) point at chunks no index object lists (only this host's catalog knows them); run `lifeboat repair index`"
            ),
        });
    }
    Ok(())
}

/// Damaged or missing objects become problems; anything else (network) aborts verify.
fn problem_from(key: &str, err: StoreError) -> StoreResult<Problem> {
    match err {
        StoreError::Corrupt { detail, .. } => Ok(Problem {
            object: key.to_string(),
            detail,
        }),
        StoreError::UnsupportedFormat { .. } => Ok(Problem {
            object: key.to_string(),
            detail: err.to_string(),
        }),
        StoreError::Backend(e) if e.is_not_found() => Ok(Problem {
            object: key.to_string(),
            detail: "missing".into(),
        }),
        other => Err(other),
    }
}

async fn read_packs(
    repo: &Arc<Repository>,
    packs: &[(ChunkId, u64)],
    report: &mut VerifyReport,
    damage: &mut Damage,
    progress: &Arc<Progress>,
) -> StoreResult<()> {
    let mut stream = futures::stream::iter(packs.iter().map(|&(pack, _)| {
        let repo = repo.clone();
        async move {
            let key = format::pack_key(&pack);
            let bytes = repo.backend().get(&key).await;
            (pack, key, bytes)
        }
    }))
    .buffer_unordered(READ_CONCURRENCY);
    while let Some((pack, key, bytes)) = stream.next().await {
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                damage
                    .packs
                    .insert(pack, format!("{key} vanished during verify"));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        report.packs_read += 1;
        report.bytes_read += bytes.len() as u64;
        progress.add(bytes.len() as u64);
        let repo2 = repo.clone();
        let checked = tokio::task::spawn_blocking(move || check_pack(&repo2, &pack, &bytes))
            .await
            .expect("pack check panicked");
        report.chunks_read += checked.chunks_ok;
        if let Some(detail) = checked.pack_problem {
            report.problems.push(Problem {
                object: key.clone(),
                detail: detail.clone(),
            });
            damage.packs.insert(pack, detail);
        }
        for (id, detail) in checked.bad_chunks {
            report.problems.push(Problem {
                object: key.clone(),
                detail: format!("chunk {id:?}: {detail}"),
            });
            damage.chunks.insert((id, pack), detail);
        }
    }
    Ok(())
}

struct PackCheck {
    chunks_ok: u64,
    pack_problem: Option<String>,
    bad_chunks: Vec<(ChunkId, String)>,
}

fn check_pack(repo: &Repository, pack: &ChunkId, bytes: &[u8]) -> PackCheck {
    let mut out = PackCheck {
        chunks_ok: 0,
        pack_problem: None,
        bad_chunks: vec![],
    };
    if blake3::hash(bytes).as_bytes() != &pack.0 {
        out.pack_problem =
            Some("content does not match its name (bit rot, truncation or tampering)".into());
    }
    let entries = match decode_pack(repo.keys(), bytes) {
        Ok(e) => e,
        Err(e) => {
            out.pack_problem = Some(format!("pack header unreadable: {e}"));
            return out;
        }
    };
    for e in entries {
        let blob = &bytes[e.offset as usize..][..e.length as usize];
        match open_chunk(repo.keys(), &e.id, blob) {
            Ok(_) => out.chunks_ok += 1,
            Err(err) => out.bad_chunks.push((e.id, err.to_string())),
        }
    }
    out
}

async fn check_manifest(
    repo: &Repository,
    id: &str,
    manifest: &Manifest,
    damage: &Damage,
    unindexed: &mut u64,
) -> StoreResult<Option<DamagedSnapshot>> {
    let chunks: Vec<(u64, ChunkId, u32)> = manifest
        .extents_with_offsets()
        .filter_map(|(off, e)| match e {
            Extent::Chunk { id, len } => Some((off, *id, *len)),
            Extent::Zero { .. } => None,
        })
        .collect();
    let located = repo
        .with_catalog(move |c| {
            chunks
                .into_iter()
                .map(|(off, id, len)| Ok((off, id, len, c.locations(&id)?)))
                .collect::<StoreResult<Vec<_>>>()
        })
        .await?;
    let mut d = DamagedSnapshot {
        snapshot: id[..8].to_string(),
        vm: manifest.meta.vm.clone(),
        disk: manifest.meta.disk.clone(),
        offsets: vec![],
        damaged_chunks: 0,
        damaged_bytes: 0,
    };
    for (off, chunk, len, copies) in located {
        // Fine if any indexed copy is intact. A chunk only this host's catalog knows
        // (an upload no index object lists) is restorable here but by no other host,
        // so it counts as damage.
        let intact = |loc: &&ChunkLocation| {
            damage.present.contains(&loc.pack)
                && !damage.packs.contains_key(&loc.pack)
                && !damage.chunks.contains_key(&(chunk, loc.pack))
        };
        let indexed: Vec<&ChunkLocation> = copies.iter().filter(|l| l.indexed).collect();
        let bad = if indexed.is_empty() {
            if !copies.is_empty() {
                *unindexed += 1;
            }
            true
        } else {
            !indexed.iter().any(intact)
        };
        if bad {
            d.damaged_chunks += 1;
            d.damaged_bytes += u64::from(len);
            if d.offsets.len() < MAX_OFFSETS_SHOWN {
                d.offsets.push(off);
            }
        }
    }
    Ok((d.damaged_chunks > 0).then_some(d))
}
