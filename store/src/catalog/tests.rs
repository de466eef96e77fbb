//! Catalog tests: pending entries, every copy of a chunk, deleted packs, migration.

use super::*;

fn entry(offset: u64) -> PackEntry {
    PackEntry {
        id: ChunkId::random(),
        offset,
        length: 10,
        raw_len: 20,
    }
}

#[test]
fn pending_entries_become_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let cat = Catalog::open(&dir.path().join("c.sqlite")).unwrap();
    let pack = ChunkId::random();
    let entries = vec![entry(0), entry(10)];
    cat.add_pending_pack(&pack, &entries).unwrap();
    assert!(cat.lookup().unwrap().contains(&entries[1].id).unwrap());
    let pending = cat.pending_packs().unwrap();
    assert_eq!(
        pending,
        vec![IndexedPack {
            pack,
            entries: entries.clone()
        }]
    );
    cat.add_index_object("idx1", &pending).unwrap();
    assert!(cat.pending_packs().unwrap().is_empty());
    assert_eq!(cat.index_objects().unwrap(), vec!["idx1".to_string()]);
    // Reopening finds everything again: the catalog is durable.
    drop(cat);
    let cat = Catalog::open(&dir.path().join("c.sqlite")).unwrap();
    let loc = cat.locate(&entries[0].id).unwrap().unwrap();
    assert_eq!((loc.pack, loc.offset, loc.length), (pack, 0, 10));
    cat.reset_index().unwrap();
    assert_eq!(cat.chunk_count().unwrap(), 0);
}

#[test]
fn every_copy_of_a_chunk_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cat = Catalog::open(&dir.path().join("c.sqlite")).unwrap();
    let (here, there) = (ChunkId::random(), ChunkId::random());
    let e = entry(0);
    cat.add_pending_pack(&here, std::slice::from_ref(&e))
        .unwrap();
    cat.add_index_object(
        "idx",
        &[IndexedPack {
            pack: there,
            entries: vec![e],
        }],
    )
    .unwrap();
    let packs: Vec<(ChunkId, bool)> = cat
        .locations(&e.id)
        .unwrap()
        .iter()
        .map(|l| (l.pack, l.indexed))
        .collect();
    assert_eq!(packs, vec![(there, true), (here, false)]);
    // Lookups prefer the copy every host can find.
    assert_eq!(cat.locate(&e.id).unwrap().unwrap().pack, there);
    assert_eq!(cat.chunk_count().unwrap(), 1);
    // Forgetting one damaged copy leaves the other.
    cat.forget_chunks(&[(e.id, there)]).unwrap();
    assert_eq!(cat.locate(&e.id).unwrap().unwrap().pack, here);
}

#[test]
fn index_entries_for_deleted_packs_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let cat = Catalog::open(&dir.path().join("c.sqlite")).unwrap();
    let (gone, kept) = (ChunkId::random(), ChunkId::random());
    cat.with(|c| {
        c.execute(
            "INSERT INTO gc_condemned (pack, plan, deleted) VALUES (?1, 'gc/p', 1)",
            [&gone.0[..]],
        )
    })
    .unwrap();
    let (a, b) = (entry(0), entry(10));
    cat.add_index_object(
        "stale",
        &[
            IndexedPack {
                pack: gone,
                entries: vec![a, b],
            },
            IndexedPack {
                pack: kept,
                entries: vec![b],
            },
        ],
    )
    .unwrap();
    assert!(cat.locate(&a.id).unwrap().is_none());
    let b_packs: Vec<ChunkId> = cat
        .locations(&b.id)
        .unwrap()
        .iter()
        .map(|l| l.pack)
        .collect();
    assert_eq!(b_packs, vec![kept]);
}

#[test]
fn a_version_1_catalog_is_migrated_with_its_pending_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sqlite");
    let (pack, e) = (ChunkId::random(), entry(0));
    {
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE chunks (id BLOB PRIMARY KEY, pack BLOB NOT NULL,
                 offset INTEGER NOT NULL, length INTEGER NOT NULL,
                 raw_len INTEGER NOT NULL, indexed INTEGER NOT NULL) WITHOUT ROWID;
             CREATE INDEX chunks_by_pack_v2 ON chunks(pack, offset, id, length, raw_len, indexed);
             CREATE TABLE index_objects (id TEXT PRIMARY KEY) WITHOUT ROWID;
             INSERT INTO index_objects VALUES ('index/old');",
        )
        .unwrap();
        old.execute(
            "INSERT INTO chunks VALUES (?1, ?2, 0, 10, 20, 0)",
            [&e.id.0[..], &pack.0[..]],
        )
        .unwrap();
        old.execute(
            "INSERT INTO chunks VALUES (?1, ?2, 0, 10, 20, 1)",
            [&ChunkId::random().0[..], &pack.0[..]],
        )
        .unwrap();
    }
    let cat = Catalog::open(&path).unwrap();
    // Pending entries stay; indexed ones (possibly missing copies) are re-read.
    assert_eq!(cat.pending_packs().unwrap()[0].pack, pack);
    assert_eq!(cat.chunk_count().unwrap(), 1);
    assert!(cat.index_objects().unwrap().is_empty());
    let other = ChunkId::random();
    cat.add_index_object(
        "idx",
        &[IndexedPack {
            pack: other,
            entries: vec![e],
        }],
    )
    .unwrap();
    assert_eq!(cat.locations(&e.id).unwrap().len(), 2);
    drop(cat);
    // Opening again changes nothing.
    let cat = Catalog::open(&path).unwrap();
    assert_eq!(cat.locations(&e.id).unwrap().len(), 2);
}

#[test]
fn a_version_2_catalog_reads_every_index_object_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sqlite");
    let (pack, pending, indexed) = (ChunkId::random(), entry(0), entry(10));
    {
        let cat = Catalog::open(&path).unwrap();
        cat.add_pending_pack(&pack, &[pending]).unwrap();
        cat.add_index_object(
            "index/a",
            &[IndexedPack {
                pack: ChunkId::random(),
                entries: vec![indexed],
            }],
        )
        .unwrap();
        // As version 2 left it: possibly missing second copies.
        cat.with(|c| c.pragma_update(None, "user_version", 2))
            .unwrap();
    }
    let cat = Catalog::open(&path).unwrap();
    assert!(cat.locate(&indexed.id).unwrap().is_none());
    assert!(cat.index_objects().unwrap().is_empty());
    assert_eq!(cat.pending_packs().unwrap()[0].pack, pack);
}
