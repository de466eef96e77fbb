//! The local catalog: a SQLite cache of the repository's index and snapshot list.
//!
//! Dedup lookups during a backup hit this file instead of the bucket, and memory stays
//! flat however large the repository grows. It holds nothing the repository does not:
//! delete it and the next command rebuilds it from the index objects and manifests.
//!
//! One exception, by design: chunks in packs this host uploaded but has not yet listed
//! in an index object (`indexed = 0`). They exist after a killed backup; the next backup
//! reuses them and its index object covers them, which is what makes backups resumable.
//! If the catalog is lost before that, the packs are orphans that only cost space.
//!
//! Locking: SQLite's own. Writers share one connection behind a mutex; each backup
//! worker opens its own read connection ([`ChunkLookup`]) so lookups run in parallel (WAL).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::crypto::ChunkId;
use crate::error::{StoreError, StoreResult};
use crate::format::index::IndexedPack;
use crate::format::pack::PackEntry;

/// Bumped when a table changes shape; [`migrate`] brings older catalogs forward.
const SCHEMA_VERSION: i64 = 3;

/// One row per stored copy of a chunk: hosts that back up the same new data at the
/// same time each upload it, so a chunk can live in several packs, and every copy
/// must stay listed while its pack exists (prune rewrites the index from this table).
const CHUNKS_TABLE: &str = "
CREATE TABLE IF NOT EXISTS chunks (
    id      BLOB NOT NULL,
    pack    BLOB NOT NULL,
    offset  INTEGER NOT NULL,
    length  INTEGER NOT NULL,
    raw_len INTEGER NOT NULL,
    indexed INTEGER NOT NULL,
    PRIMARY KEY (id, pack)
) WITHOUT ROWID;
";

const SCHEMA: &str = "
CREATE INDEX IF NOT EXISTS chunks_unindexed ON chunks(indexed) WHERE indexed = 0;
-- Per-pack access (prune, verify, repair forgetting a pack) must not scan every
-- chunk. Covering, so prune reads a pack's entries in one range scan instead of one
-- random table lookup per chunk.
DROP INDEX IF EXISTS chunks_by_pack;
CREATE INDEX IF NOT EXISTS chunks_by_pack_v2 ON chunks(pack, offset, id, length, raw_len, indexed);
CREATE TABLE IF NOT EXISTS index_objects (id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    id   TEXT PRIMARY KEY,
    vm   TEXT NOT NULL,
    disk TEXT NOT NULL,
    time TEXT NOT NULL,
    meta TEXT NOT NULL
) WITHOUT ROWID;
-- Prune plans seen in the repository (gc/), so backups can tell whether data they
-- reuse is being garbage-collected; see gc/guard.rs.
CREATE TABLE IF NOT EXISTS gc_plans (
    key         TEXT PRIMARY KEY,
    sweep_after INTEGER NOT NULL,
    done        INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gc_condemned (
    pack    BLOB NOT NULL,
    plan    TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    PRIMARY KEY (pack, plan)
) WITHOUT ROWID;
-- Object Lock retain-until times this host has set (unix seconds), so prune extends
-- each lock once per half period instead of asking the bucket about every object.
CREATE TABLE IF NOT EXISTS object_locks (key TEXT PRIMARY KEY, until INTEGER NOT NULL) WITHOUT ROWID;
";

/// SQLite page cache per connection, KiB.
const CACHE_KIB: i64 = 32 * 1024;

/// Where one stored chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLocation {
    pub pack: ChunkId,
    pub offset: u64,
    pub length: u32,
    pub raw_len: u32,
    /// Whether an index object in the repository lists it; `false` for chunks only
    /// this host's catalog knows (uploaded, not yet indexed), which other hosts
    /// cannot find.
    pub indexed: bool,
}

pub struct Catalog {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Catalog({})", self.path.display())
    }
}

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // Best effort: SQLite creates the file with the umask's mode.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Chunk ids are random, so every insert and lookup lands on a random page: a
    // 2 MiB default cache thrashes on a repository of millions of chunks.
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    Ok(conn)
}

pub(crate) fn blob_id(bytes: Vec<u8>) -> rusqlite::Result<ChunkId> {
    bytes.try_into().map(ChunkId).map_err(|_| {
        rusqlite::Error::InvalidColumnType(0, "id".into(), rusqlite::types::Type::Blob)
    })
}

impl Catalog {
    pub fn open(path: &Path) -> StoreResult<Self> {
        if let Some(dir) = path.parent() {
            // The catalog holds VM names and chunk ids in the clear: owner-only.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StoreError::LocalIo {
                    path: dir.display().to_string(),
                    source,
                })?;
        }
        let catalog = Self {
            path: path.to_path_buf(),
            conn: Mutex::new(open_conn(path).map_err(|source| StoreError::Catalog {
                path: path.display().to_string(),
                source,
            })?),
        };
        catalog.with(|c| {
            migrate(c)?;
            c.execute_batch(CHUNKS_TABLE)?;
            c.execute_batch(SCHEMA)?;
            c.pragma_update(None, "user_version", SCHEMA_VERSION)
        })?;
        Ok(catalog)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Catalog {
            path: self.path.display().to_string(),
            source,
        }
    }

    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> StoreResult<T> {
        let mut conn = self.conn.lock().expect("catalog mutex poisoned");
        f(&mut conn).map_err(|e| self.err(e))
    }

    /// A private connection (its TEMP tables are its own): prune's working set.
    pub(crate) fn connection(&self) -> StoreResult<Connection> {
        open_conn(&self.path).map_err(|e| self.err(e))
    }

    /// A separate read connection for a backup worker thread.
    pub fn lookup(&self) -> StoreResult<ChunkLookup> {
        Ok(ChunkLookup {
            conn: open_conn(&self.path).map_err(|e| self.err(e))?,
        })
    }

    /// One copy of `id` (an indexed one if any): where a backup or restore reads it.
    pub fn locate(&self, id: &ChunkId) -> StoreResult<Option<ChunkLocation>> {
        self.with(|c| locate(c, id))
    }

    /// Every copy of `id` the catalog knows, indexed ones first.
    pub fn locations(&self, id: &ChunkId) -> StoreResult<Vec<ChunkLocation>> {
        self.with(|c| locations(c, id))
    }

    pub(crate) fn insert_entries(
        tx: &rusqlite::Transaction<'_>,
        pack: &ChunkId,
        entries: &[PackEntry],
        indexed: bool,
    ) -> rusqlite::Result<()> {
        // The same copy listed again (a pending entry now indexed, or a second index
        // object): one row, indexed once any index lists it.
        let mut stmt = tx.prepare_cached(
            "INSERT INTO chunks (id, pack, offset, length, raw_len, indexed) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(id, pack) DO UPDATE SET offset = excluded.offset,
                 length = excluded.length, raw_len = excluded.raw_len,
                 indexed = max(chunks.indexed, excluded.indexed)",
        )?;
        for e in entries {
            stmt.execute(params![
                &e.id.0[..],
                &pack.0[..],
                e.offset as i64,
                e.length,
                e.raw_len,
                indexed as i64
            ])?;
        }
        Ok(())
    }

    /// Records a pack this host has just uploaded but not yet indexed.
    pub fn add_pending_pack(&self, pack: &ChunkId, entries: &[PackEntry]) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            Self::insert_entries(&tx, pack, entries, false)?;
            tx.commit()
        })
    }

    /// Chunks in uploaded packs not yet covered by any index object, grouped by pack.
    pub fn pending_packs(&self) -> StoreResult<Vec<IndexedPack>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT pack, id, offset, length, raw_len FROM chunks WHERE indexed = 0 ORDER BY pack, offset",
            )?;
            let mut packs: Vec<IndexedPack> = Vec::new();
            let rows = stmt.query_map([], |r| {
                Ok((
                    blob_id(r.get(0)?)?,
                    PackEntry {
                        id: blob_id(r.get(1)?)?,
                        offset: r.get::<_, i64>(2)? as u64,
                        length: r.get(3)?,
                        raw_len: r.get(4)?,
                    },
                ))
            })?;
            for row in rows {
                let (pack, entry) = row?;
                match packs.last_mut() {
                    Some(p) if p.pack == pack => p.entries.push(entry),
                    _ => packs.push(IndexedPack {
                        pack,
                        entries: vec![entry],
                    }),
                }
            }
            Ok(packs)
        })
    }

    /// Records the contents of an index object (written by us or found in the repository).
    /// Packs a sweep has deleted are skipped: an old index object that Object Lock kept
    /// from being replaced still lists them, and a copy in a deleted pack is no copy.
    pub fn add_index_object(&self, name: &str, packs: &[IndexedPack]) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut live_packs = Vec::with_capacity(packs.len());
            {
                let mut deleted = tx.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM gc_condemned WHERE pack = ?1 AND deleted = 1)",
                )?;
                for p in packs {
                    if !deleted.query_row([&p.pack.0[..]], |r| r.get::<_, bool>(0))? {
                        live_packs.push(p);
                    }
                }
            }
            // In id order, B-tree inserts touch each page once instead of at random.
            let mut rows: Vec<(&ChunkId, &PackEntry)> = live_packs
                .iter()
                .flat_map(|p| p.entries.iter().map(move |e| (&p.pack, e)))
                .collect();
            rows.sort_unstable_by_key(|r| r.1.id.0);
            for (pack, entry) in rows {
                Self::insert_entries(&tx, pack, std::slice::from_ref(entry), true)?;
            }
            tx.execute(
                "INSERT OR IGNORE INTO index_objects (id) VALUES (?1)",
                [name],
            )?;
            tx.commit()
        })
    }

    /// Forgets index objects that were deleted (their entries stay if still listed
    /// by other index objects: prune writes the replacements first).
    pub fn remove_index_objects(&self, names: &[String]) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            for name in names {
                tx.execute("DELETE FROM index_objects WHERE id = ?1", [name])?;
            }
            tx.commit()
        })
    }

    pub fn index_objects(&self) -> StoreResult<Vec<String>> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT id FROM index_objects")?;
            stmt.query_map([], |r| r.get(0))?.collect()
        })
    }

    /// Forgets every indexed chunk and index object, keeping pending (unindexed) entries;
    /// used when index objects vanished from the repository (prune, repair).
    pub fn reset_index(&self) -> StoreResult<()> {
        self.with(|c| {
            c.execute_batch("DELETE FROM chunks WHERE indexed = 1; DELETE FROM index_objects;")
        })
    }

    /// Drops every entry, pending ones included (after `repair index` or verify found
    /// the catalog trusted packs that are gone).
    pub fn reset_all(&self) -> StoreResult<()> {
        self.with(|c| {
            c.execute_batch(
                "DELETE FROM chunks; DELETE FROM index_objects; DELETE FROM snapshots;
                 DELETE FROM gc_plans; DELETE FROM gc_condemned;",
            )
        })
    }

    /// Forgets every chunk stored in `packs` (found missing or damaged), so the next
    /// backup uploads those chunks again instead of deduplicating against lost data.
    pub fn forget_packs(&self, packs: &[ChunkId]) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            for p in packs {
                tx.execute("DELETE FROM chunks WHERE pack = ?1", [&p.0[..]])?;
            }
            tx.commit()
        })
    }

    /// Forgets individual stored copies `(chunk, pack)` that failed verification;
    /// other copies of the same chunk stay usable.
    pub fn forget_chunks(&self, copies: &[(ChunkId, ChunkId)]) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            for (id, pack) in copies {
                tx.execute(
                    "DELETE FROM chunks WHERE id = ?1 AND pack = ?2",
                    [&id.0[..], &pack.0[..]],
                )?;
            }
            tx.commit()
        })
    }

    /// Distinct chunks the catalog knows (a chunk stored twice counts once).
    pub fn chunk_count(&self) -> StoreResult<u64> {
        self.with(|c| {
            c.query_row("SELECT count(DISTINCT id) FROM chunks", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map(|n| n as u64)
    }

    pub fn add_snapshot(
        &self,
        id: &str,
        vm: &str,
        disk: &str,
        time: &str,
        meta_json: &str,
    ) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO snapshots (id, vm, disk, time, meta) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, vm, disk, time, meta_json],
            )
            .map(|_| ())
        })
    }

    pub fn remove_snapshot(&self, id: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute("DELETE FROM snapshots WHERE id = ?1", [id])
                .map(|_| ())
        })
    }

    /// `(id, meta_json)` of every known snapshot, oldest first.
    pub fn snapshots(&self) -> StoreResult<Vec<(String, String)>> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT id, meta FROM snapshots ORDER BY time, id")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }
}

fn location_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChunkLocation> {
    Ok(ChunkLocation {
        pack: blob_id(r.get(0)?)?,
        offset: r.get::<_, i64>(1)? as u64,
        length: r.get(2)?,
        raw_len: r.get(3)?,
        indexed: r.get::<_, i64>(4)? != 0,
    })
}

/// One copy of `id`, an indexed one if there is any (every host can find it).
fn locate(c: &Connection, id: &ChunkId) -> rusqlite::Result<Option<ChunkLocation>> {
    c.prepare_cached(
        "SELECT pack, offset, length, raw_len, indexed FROM chunks WHERE id = ?1
         ORDER BY indexed DESC LIMIT 1",
    )?
    .query_row([&id.0[..]], location_row)
    .optional()
}

/// Every known copy of `id`, indexed ones first.
fn locations(c: &Connection, id: &ChunkId) -> rusqlite::Result<Vec<ChunkLocation>> {
    c.prepare_cached(
        "SELECT pack, offset, length, raw_len, indexed FROM chunks WHERE id = ?1
         ORDER BY indexed DESC",
    )?
    .query_map([&id.0[..]], location_row)?
    .collect()
}

/// Brings a catalog written by an older Lifeboat to [`SCHEMA_VERSION`], keeping its
/// pending entries (they are the only record of uploads no index lists yet); the next
/// sync re-reads every index object.
fn migrate(c: &mut Connection) -> rusqlite::Result<()> {
    // Immediate: two processes opening an old catalog at once migrate it once.
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let has_chunks: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chunks')",
        [],
        |r| r.get(0),
    )?;
    if version >= SCHEMA_VERSION || !has_chunks {
        return Ok(());
    }
    if version < 2 {
        // Version 1 kept one row per chunk id (PRIMARY KEY (id)).
        tx.execute_batch(
            "DROP INDEX IF EXISTS chunks_by_pack_v2; ALTER TABLE chunks RENAME TO chunks_v1;",
        )?;
        tx.execute_batch(CHUNKS_TABLE)?;
        tx.execute_batch(
            "INSERT INTO chunks (id, pack, offset, length, raw_len, indexed)
                 SELECT id, pack, offset, length, raw_len, indexed FROM chunks_v1;
             DROP TABLE chunks_v1;",
        )?;
    }
    // Only pending rows survive. Indexed rows written before version 3 can be
    // incomplete (a chunk's second copy was overwritten by the first; version 2 kept
    // such rows when it migrated), so every index object is read afresh.
    tx.execute_batch("DELETE FROM chunks WHERE indexed = 1; DROP TABLE IF EXISTS index_objects;")?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

/// A per-thread read connection for dedup lookups.
pub struct ChunkLookup {
    conn: Connection,
}

impl ChunkLookup {
    pub fn contains(&self, id: &ChunkId) -> rusqlite::Result<bool> {
        Ok(locate(&self.conn, id)?.is_some())
    }
}

#[cfg(test)]
mod tests;
