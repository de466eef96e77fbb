//! Prune's working set, kept in SQLite TEMP tables on a private catalog connection so
//! memory stays flat however many chunks the repository has (a HashSet of 10 million
//! chunk ids would alone cost about a gigabyte).
//!
//! | table          | rows                                          |
//! |----------------|-----------------------------------------------|
//! | `temp.live`    | every chunk id some manifest references       |
//! | `temp.packs`   | every object under `data/`: size and age      |
//! | `main.chunks`  | the catalog: every stored copy of each chunk  |

use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use crate::catalog::{Catalog, blob_id};
use crate::crypto::ChunkId;
use crate::error::{StoreError, StoreResult};
use crate::format::pack::PackEntry;

const TEMP_SCHEMA: &str = "
CREATE TEMP TABLE IF NOT EXISTS live (id BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS packs (
    pack  BLOB PRIMARY KEY,
    size  INTEGER NOT NULL,
    mtime INTEGER
) WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS pack_use (
    pack        BLOB PRIMARY KEY,
    live_chunks INTEGER NOT NULL,
    live_bytes  INTEGER NOT NULL
) WITHOUT ROWID;
DELETE FROM temp.live;
DELETE FROM temp.packs;
DELETE FROM temp.pack_use;
";

/// Page cache of prune's connection, KiB: the live set and the per-pack table of a
/// 10-million-chunk repository are a few hundred MiB; this keeps most of their
/// upper B-tree levels in memory while staying well inside prune's memory budget.
const WORK_CACHE_KIB: i64 = 256 * 1024;

/// One indexed pack as prune sees it.
#[derive(Debug, Clone, Copy)]
pub struct PackUse {
    pub pack: ChunkId,
    /// `None`: listed in the index but not in the bucket.
    pub size: Option<u64>,
    /// Unix seconds the pack was written, if the store said.
    pub mtime: Option<u64>,
    pub live_chunks: u64,
    pub live_bytes: u64,
}

/// An object under `data/` that no catalog entry mentions.
#[derive(Debug, Clone, Copy)]
pub struct Orphan {
    pub pack: ChunkId,
    pub size: u64,
    pub mtime: Option<u64>,
}

#[derive(Clone)]
pub struct WorkSet {
    conn: Arc<Mutex<Connection>>,
    path: String,
}

impl WorkSet {
    pub fn open(catalog: &Catalog) -> StoreResult<Self> {
        let conn = catalog.connection()?;
        let set = Self {
            conn: Arc::new(Mutex::new(conn)),
            path: catalog.path().display().to_string(),
        };
        set.with(|c| {
            // Spill to disk rather than grow: the point of this module.
            c.pragma_update(None, "temp_store", "FILE")?;
            c.pragma_update(None, "cache_size", -WORK_CACHE_KIB)?;
            c.execute_batch(TEMP_SCHEMA)
        })?;
        Ok(set)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let mut conn = self.conn.lock().expect("work set mutex poisoned");
        f(&mut conn).map_err(|source| StoreError::Catalog {
            path: self.path.clone(),
            source,
        })
    }

    /// Runs `f` on the blocking pool: these queries take seconds on big repositories.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WorkSet) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let set = self.clone();
        tokio::task::spawn_blocking(move || f(&set))
            .await
            .expect("prune work set task panicked")
    }

    pub fn add_live(&self, ids: &[ChunkId]) -> StoreResult<()> {
        let mut ids = ids.to_vec();
        // In key order each B-tree page is touched once per batch, not once per id.
        ids.sort_unstable_by_key(|id| id.0);
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut stmt =
                    tx.prepare_cached("INSERT OR IGNORE INTO temp.live (id) VALUES (?1)")?;
                for id in ids {
                    stmt.execute([&id.0[..]])?;
                }
            }
            tx.commit()
        })
    }

    pub fn live_count(&self) -> StoreResult<u64> {
        self.with(|c| c.query_row("SELECT count(*) FROM temp.live", [], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
    }

    pub fn is_live(&self, id: &ChunkId) -> StoreResult<bool> {
        self.with(|c| {
            c.prepare_cached("SELECT EXISTS (SELECT 1 FROM temp.live WHERE id = ?1)")?
                .query_row([&id.0[..]], |r| r.get(0))
        })
    }

    pub fn add_packs(&self, packs: &[(ChunkId, u64, Option<u64>)]) -> StoreResult<()> {
        let mut packs = packs.to_vec();
        packs.sort_unstable_by_key(|p| p.0.0);
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO temp.packs (pack, size, mtime) VALUES (?1, ?2, ?3)",
                )?;
                for (pack, size, mtime) in &packs {
                    stmt.execute(params![&pack.0[..], *size as i64, mtime.map(|m| m as i64)])?;
                }
            }
            tx.commit()
        })
    }

    /// Calls `f` for every indexed pack with its live share, streaming.
    pub fn for_each_pack_use(&self, mut f: impl FnMut(PackUse)) -> StoreResult<()> {
        self.with(|c| {
            // One pass over the chunks in id order (which is also the live set's
            // order), summed into a small per-pack table; then one pass over that.
            c.execute(
                "INSERT INTO temp.pack_use (pack, live_chunks, live_bytes)
                 SELECT c.pack, l.id IS NOT NULL, CASE WHEN l.id IS NULL THEN 0 ELSE c.length END
                 FROM main.chunks c LEFT JOIN temp.live l ON l.id = c.id
                 WHERE c.indexed = 1
                 ON CONFLICT(pack) DO UPDATE SET
                     live_chunks = live_chunks + excluded.live_chunks,
                     live_bytes = live_bytes + excluded.live_bytes",
                [],
            )?;
            let mut stmt = c.prepare(
                "SELECT u.pack, p.size, p.mtime, u.live_chunks, u.live_bytes
                 FROM temp.pack_use u LEFT JOIN temp.packs p ON p.pack = u.pack",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                f(PackUse {
                    pack: blob_id(r.get(0)?)?,
                    size: r.get::<_, Option<i64>>(1)?.map(|s| s as u64),
                    mtime: r.get::<_, Option<i64>>(2)?.map(|s| s as u64),
                    live_chunks: r.get::<_, i64>(3)? as u64,
                    live_bytes: r.get::<_, i64>(4)? as u64,
                });
            }
            Ok(())
        })
    }

    /// Packs in the bucket that no catalog entry (indexed or pending) mentions and no
    /// unswept plan condemns already (its sweep decides about them).
    pub fn orphans(&self) -> StoreResult<Vec<Orphan>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT p.pack, p.size, p.mtime FROM temp.packs p
                 WHERE NOT EXISTS (SELECT 1 FROM main.chunks c WHERE c.pack = p.pack)
                   AND NOT EXISTS (SELECT 1 FROM main.gc_condemned g
                                   JOIN main.gc_plans pl ON pl.key = g.plan
                                   WHERE g.pack = p.pack AND pl.done = 0)",
            )?;
            stmt.query_map([], |r| {
                Ok(Orphan {
                    pack: blob_id(r.get(0)?)?,
                    size: r.get::<_, i64>(1)? as u64,
                    mtime: r.get::<_, Option<i64>>(2)?.map(|s| s as u64),
                })
            })?
            .collect()
        })
    }

    /// The catalog's entries for one pack; with `live_only`, just the chunks some
    /// manifest references.
    pub fn pack_entries(&self, pack: &ChunkId, live_only: bool) -> StoreResult<Vec<PackEntry>> {
        self.with(|c| {
            let sql = if live_only {
                "SELECT c.id, c.offset, c.length, c.raw_len FROM main.chunks c
                 JOIN temp.live l ON l.id = c.id WHERE c.pack = ?1 ORDER BY c.offset"
            } else {
                "SELECT id, offset, length, raw_len FROM main.chunks WHERE pack = ?1 ORDER BY offset"
            };
            let mut stmt = c.prepare_cached(sql)?;
            stmt.query_map([&pack.0[..]], |r| {
                Ok(PackEntry {
                    id: blob_id(r.get(0)?)?,
                    offset: r.get::<_, i64>(1)? as u64,
                    length: r.get(2)?,
                    raw_len: r.get(3)?,
                })
            })?
            .collect()
        })
    }

    /// Whether any indexed catalog entry points into `pack`.
    pub fn pack_indexed(&self, pack: &ChunkId) -> StoreResult<bool> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM main.chunks WHERE pack = ?1 AND indexed = 1)",
            )?
            .query_row([&pack.0[..]], |r| r.get(0))
        })
    }

    /// Whether an index lists a copy of `id` outside condemned packs (which the
    /// catalog has already forgotten), in a pack the bucket listing has. A copy only
    /// this host knows (pending) does not count: other hosts could not find it.
    pub fn chunk_located(&self, id: &ChunkId) -> StoreResult<bool> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM main.chunks c JOIN temp.packs p ON p.pack = c.pack
                 WHERE c.id = ?1 AND c.indexed = 1)",
            )?
            .query_row([&id.0[..]], |r| r.get(0))
        })
    }

    /// Referenced chunks the catalog has no location for: data that is really gone.
    pub fn missing_live(&self) -> StoreResult<u64> {
        self.with(|c| {
            c.query_row(
                "SELECT count(*) FROM temp.live l
                 WHERE NOT EXISTS (SELECT 1 FROM main.chunks c WHERE c.id = l.id)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
        })
    }

    /// Streams every indexed entry outside `skip` packs, grouped by pack, for the
    /// index rewrite. `f` gets one pack at a time.
    pub fn for_each_indexed_pack(
        &self,
        mut f: impl FnMut(ChunkId, Vec<PackEntry>) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let mut result = Ok(());
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT pack, id, offset, length, raw_len FROM main.chunks
                 WHERE indexed = 1 ORDER BY pack, offset",
            )?;
            let mut rows = stmt.query([])?;
            let mut current: Option<(ChunkId, Vec<PackEntry>)> = None;
            while let Some(r) = rows.next()? {
                let pack = blob_id(r.get(0)?)?;
                let entry = PackEntry {
                    id: blob_id(r.get(1)?)?,
                    offset: r.get::<_, i64>(2)? as u64,
                    length: r.get(3)?,
                    raw_len: r.get(4)?,
                };
                match &mut current {
                    Some((p, entries)) if *p == pack => entries.push(entry),
                    _ => {
                        if let Some((p, entries)) = current.take()
                            && let Err(e) = f(p, entries)
                        {
                            result = Err(e);
                            return Ok(());
                        }
                        current = Some((pack, vec![entry]));
                    }
                }
            }
            if let Some((p, entries)) = current.take() {
                result = f(p, entries);
            }
            Ok(())
        })?;
        result
    }

    pub fn pack_size(&self, pack: &ChunkId) -> StoreResult<Option<u64>> {
        self.with(|c| {
            c.prepare_cached("SELECT size FROM temp.packs WHERE pack = ?1")?
                .query_row([&pack.0[..]], |r| r.get::<_, i64>(0))
                .optional()
                .map(|s| s.map(|s| s as u64))
        })
    }

    /// Forgets packs the sweep deleted, so the mark does not see them as orphans.
    pub fn remove_packs(&self, packs: &[ChunkId]) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            for p in packs {
                tx.execute("DELETE FROM temp.packs WHERE pack = ?1", [&p.0[..]])?;
            }
            tx.commit()
        })
    }

    /// Live packs (some chunk referenced) with their write time, for lock extension.
    pub fn live_packs(&self) -> StoreResult<Vec<(ChunkId, Option<u64>)>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT DISTINCT c.pack, p.mtime FROM main.chunks c
                 JOIN temp.live l ON l.id = c.id
                 JOIN temp.packs p ON p.pack = c.pack",
            )?;
            stmt.query_map([], |r| {
                Ok((
                    blob_id(r.get(0)?)?,
                    r.get::<_, Option<i64>>(1)?.map(|s| s as u64),
                ))
            })?
            .collect()
        })
    }
}
