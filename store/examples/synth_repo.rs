//! Builds a synthetic repository for the prune benchmark (`bench/prune_10m.sh`):
//! CHUNKS index entries in packs of 16, SNAPSHOTS manifests that together reference
//! the first LIVE_PERCENT of the chunks, and one tiny placeholder object per pack (the
//! benchmark measures GC bookkeeping, not moving pack data).
//!
//! Usage: synth_repo DIR CHUNKS SNAPSHOTS LIVE_PERCENT   (passphrase: LIFEBOAT_PASSWORD)

use std::path::PathBuf;
use std::sync::Arc;

use lifeboat_store::backend::local::LocalBackend;
use lifeboat_store::format::index::{IndexedPack, encode_index};
use lifeboat_store::format::manifest::{Extent, Manifest, SnapshotMeta};
use lifeboat_store::format::pack::PackEntry;
use lifeboat_store::format::{self, index_key, snapshot_key};
use lifeboat_store::{ChunkId, InitOptions, init_repository};

const CHUNKS_PER_PACK: u64 = 16;
const ENTRIES_PER_INDEX: u64 = 1_000_000;
const CHUNK_LEN: u32 = 1 << 20;

/// Deterministic ids: chunk n and pack n are distinct, stable across runs.
fn id(kind: u8, n: u64) -> ChunkId {
    let mut h = blake3::Hasher::new();
    h.update(&[kind]);
    h.update(&n.to_le_bytes());
    ChunkId(*h.finalize().as_bytes())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, chunks, snapshots, live] = &args[..] else {
        eprintln!("usage: synth_repo DIR CHUNKS SNAPSHOTS LIVE_PERCENT");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let chunks: u64 = chunks.parse().expect("CHUNKS is a number");
    let snapshots: u64 = snapshots.parse().expect("SNAPSHOTS is a number");
    let live: u64 = live.parse().expect("LIVE_PERCENT is a number");
    let pass = std::env::var("LIFEBOAT_PASSWORD").expect("set LIFEBOAT_PASSWORD");
    let root = dir.join("repo");
    let backend = Arc::new(LocalBackend::new(root.clone()));
    let options = InitOptions {
        create_container: true,
        ..Default::default()
    };
    let repo = init_repository(backend, &pass, &options, &dir.join("gen-cache"))
        .await
        .expect("init");

    let packs = chunks.div_ceil(CHUNKS_PER_PACK);
    let mut batch: Vec<IndexedPack> = Vec::new();
    let mut in_batch = 0;
    for p in 0..packs {
        let pack = id(b'p', p);
        let entries: Vec<PackEntry> = (p * CHUNKS_PER_PACK
            ..((p + 1) * CHUNKS_PER_PACK).min(chunks))
            .enumerate()
            .map(|(i, n)| PackEntry {
                id: id(b'c', n),
                offset: i as u64 * 1000,
                length: 1000,
                raw_len: CHUNK_LEN,
            })
            .collect();
        in_batch += entries.len() as u64;
        batch.push(IndexedPack { pack, entries });
        let path = root.join(format::pack_key(&pack));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, [0u8; 16 * 1000]).unwrap();
        if in_batch >= ENTRIES_PER_INDEX || p + 1 == packs {
            let key = index_key(&ChunkId::random());
            repo.put_sealed(&key, &encode_index(&batch)).await.unwrap();
            batch.clear();
            in_batch = 0;
        }
    }
    let live_chunks = chunks * live / 100;
    let per_snapshot = live_chunks.div_ceil(snapshots.max(1));
    for s in 0..snapshots {
        let range = s * per_snapshot..((s + 1) * per_snapshot).min(live_chunks);
        let extents: Vec<Extent> = range
            .map(|n| Extent::Chunk {
                id: id(b'c', n),
                len: CHUNK_LEN,
            })
            .collect();
        let size = extents.len() as u64 * u64::from(CHUNK_LEN);
        let manifest = Manifest {
            meta: synthetic_meta(s, size),
            extents,
        };
        repo.put_sealed(&snapshot_key(&ChunkId::random()), &manifest.encode())
            .await
            .unwrap();
    }
    println!("{chunks} chunks in {packs} packs, {snapshots} snapshots use {live_chunks}");
}

/// The metadata of synthetic snapshot `s`.
fn synthetic_meta(s: u64, size: u64) -> SnapshotMeta {
    SnapshotMeta {
        vm: format!("vm{s}"),
        disk: "root".into(),
        source: "synthetic".into(),
        size,
        time: "2026-11-22T00:00:00.000Z".into(),
        host: "bench".into(),
        tags: vec![],
        parent: None,
        cbt_bitmap: None,
        lifeboat_version: "bench".into(),
        replicated_from: None,
        vm_definition: None,
    }
}
