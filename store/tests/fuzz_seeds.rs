//! The fuzzers' seed corpus (`fuzz/seeds/<target>/`): real encoded objects, so the
//! fuzzers start from valid input instead of having to discover magic numbers.
//!
//! This test checks that every committed seed is still accepted by the decoder its
//! target exercises (a format change that breaks them would silently make fuzzing
//! shallow). `LIFEBOAT_WRITE_FUZZ_SEEDS=1 cargo test -p lifeboat-store --test fuzz_seeds`
//! regenerates them from freshly encoded objects.

use std::path::{Path, PathBuf};

use lifeboat_store::ChunkId;
use lifeboat_store::backend::LockMode;
use lifeboat_store::crypto::{MasterKey, RepoKeys};
use lifeboat_store::format::blob::seal_chunk;
use lifeboat_store::format::config::{ChunkerParams, Immutability, RepoConfig};
use lifeboat_store::format::index::{IndexedPack, decode_index, encode_index};
use lifeboat_store::format::manifest::{Extent, Manifest, SnapshotMeta};
use lifeboat_store::format::pack::{PackBuilder, encode_header, parse_header};
use lifeboat_store::keys::slot::{KdfParams, create_slot, parse_slot};

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds")
}

/// Freshly encoded seeds: `(target, file name, bytes)`.
fn generate() -> Vec<(&'static str, String, Vec<u8>)> {
    let master = MasterKey::from_bytes([7; 32]);
    let keys = RepoKeys::derive(&master);
    let mut out = Vec::new();
    let mut packs = Vec::new();
    for n in [1usize, 3, 8] {
        let mut builder = PackBuilder::default();
        for i in 0..n {
            let data = vec![i as u8; 100 + 37 * i];
            let id = keys.chunk_id(&data);
            builder.add(id, &seal_chunk(&keys, &id, &data, 3), data.len() as u32);
        }
        let pack = builder.finish(&keys);
        let header = encode_header(&pack.entries);
        let blob_area = pack
            .entries
            .iter()
            .map(|e| e.offset + u64::from(e.length))
            .max();
        let mut seed = blob_area.unwrap_or(0).to_le_bytes().to_vec();
        seed.extend_from_slice(&header);
        out.push(("pack_header", format!("header-{n}"), seed));
        // Whole packs too: the target's second half parses trailers with this key.
        out.push(("pack_header", format!("pack-{n}"), pack.bytes.clone()));
        packs.push(IndexedPack {
            pack: pack.id,
            entries: pack.entries,
        });
    }
    out.push(("index", "one-pack".into(), encode_index(&packs[..1])));
    out.push(("index", "three-packs".into(), encode_index(&packs)));
    let mut extents = vec![Extent::Zero { len: 4096 }];
    for p in &packs {
        for e in &p.entries {
            extents.push(Extent::Chunk {
                id: e.id,
                len: e.raw_len,
            });
        }
    }
    let manifest = Manifest {
        meta: SnapshotMeta {
            vm: "web01".into(),
            disk: "root".into(),
            source: "/var/lib/vm/web01.qcow2".into(),
            size: extents.iter().map(Extent::len).sum(),
            time: "2026-11-22T01:00:00.000Z".into(),
            host: "node1".into(),
            tags: vec!["nightly".into()],
            parent: Some(ChunkId([1; 32]).to_hex()),
            cbt_bitmap: Some("lifeboat-0011223344556677".into()),
            lifeboat_version: "0.1.0".into(),
            replicated_from: None,
            vm_definition: None,
        },
        extents,
    };
    out.push(("manifest", "mixed".into(), manifest.encode()));
    let cheap = KdfParams {
        m_cost_kib: 1024,
        t_cost: 1,
        p_cost: 1,
    };
    let slot = create_slot("00112233aabbccdd", &master, b"pw", cheap, "now", "node1");
    out.push(("keyslot", "slot".into(), serde_json::to_vec(&slot).unwrap()));
    let config = RepoConfig {
        version: 1,
        id: "5e0c".repeat(8),
        created: "2026-11-22T01:00:00.123Z".into(),
        chunker: ChunkerParams::default(),
        fixed_chunk_size: None,
        zero_run_min: 65536,
        compression_level: 3,
        pack_size: 16 << 20,
        immutability: Some(Immutability {
            period_secs: 30 * 86400,
            mode: LockMode::Compliance,
        }),
        replica_of: None,
    };
    out.push((
        "config",
        "default".into(),
        serde_json::to_vec(&config).unwrap(),
    ));
    out
}

/// Whether the decoder `target` fuzzes accepts `seed` (pack seeds: at least the header
/// form must parse; whole packs are accepted by the key-bound decoder).
fn accepted(target: &str, name: &str, seed: &[u8]) -> bool {
    match target {
        "pack_header" if name.starts_with("pack-") => {
            let keys = RepoKeys::derive(&MasterKey::from_bytes([7; 32]));
            lifeboat_store::format::pack::decode_pack(&keys, seed).is_ok()
        }
        "pack_header" => seed
            .split_first_chunk::<8>()
            .is_some_and(|(area, plain)| parse_header(plain, u64::from_le_bytes(*area)).is_ok()),
        "index" => decode_index(seed).is_ok(),
        "manifest" => Manifest::decode(seed).is_ok(),
        "keyslot" => parse_slot("00112233aabbccdd", seed).is_ok(),
        "config" => RepoConfig::decode(seed).is_ok(),
        other => panic!("seed for unknown fuzz target {other}"),
    }
}

#[test]
fn fuzz_seeds_are_valid_objects() {
    let dir = seeds_dir();
    if std::env::var_os("LIFEBOAT_WRITE_FUZZ_SEEDS").is_some() {
        for (target, name, bytes) in generate() {
            std::fs::create_dir_all(dir.join(target)).unwrap();
            std::fs::write(dir.join(target).join(name), bytes).unwrap();
        }
    }
    for (target, name, bytes) in generate() {
        assert!(
            accepted(target, &name, &bytes),
            "fresh {target}/{name} rejected"
        );
    }
    let mut checked = 0;
    for target in ["pack_header", "index", "manifest", "keyslot", "config"] {
        let entries = std::fs::read_dir(dir.join(target)).unwrap_or_else(|e| {
            panic!("fuzz/seeds/{target}: {e}; regenerate with LIFEBOAT_WRITE_FUZZ_SEEDS=1")
        });
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                accepted(target, &name, &bytes),
                "seed {} is no longer a valid object; regenerate with LIFEBOAT_WRITE_FUZZ_SEEDS=1",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} seeds found");
}
