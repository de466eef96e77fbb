//! Lifeboat's repository: the on-storage format, encryption, storage backends and the
//! local SQLite catalog.
//!
//! This crate knows nothing about VMs or schedules. It stores chunks (deduplicated,
//! compressed, encrypted, packed) and snapshot manifests that list them, and reads them
//! back verified. `backup`, `restore` and the CLI are built on [`Repository`] and its
//! two shared paths: [`PackWriter`] (sealed blobs → packs → uploads → index) and
//! [`ReadPlan`] + [`ChunkReader`] (manifest → ranged GETs → verified chunks). Only this
//! crate encrypts, names objects and decides write order.
//!
//! Inside, modules depend only on the floors below them:
//!
//! | floor | modules |
//! |-------|---------|
//! | operations | `keys` (init, open, key slots), `commit`, `catalog_sync`, `gc` (prune), `repair` |
//! | shared paths | `pack_writer` (blobs → packs → index), `read_plan` + `chunk_reader` (manifest → verified chunks) |
//! | the commit guard | `gc::guard` (what a commit checks against concurrent prunes) |
//! | packs in storage | `stored_packs` (listing, header reads) |
//! | an open repository | `repo` |
//! | building blocks | `format`, `crypto`, `backend`, `catalog`, `error`, `progress` |

pub mod backend;
pub mod catalog;
pub mod catalog_sync;
pub mod chunk_reader;
pub mod commit;
pub mod crypto;
pub mod error;
pub mod format;
pub mod gc;
pub mod keys;
pub mod pack_writer;
pub mod progress;
pub mod read_plan;
pub mod repair;
pub mod repo;
pub mod stored_packs;

pub use backend::{Backend, BackendError, RepoAddress};
pub use catalog_sync::SyncReport;
pub use chunk_reader::{ChunkReader, Damage, FetchedRange, ReadFailure};
pub use crypto::{ChunkId, RepoKeys};
pub use error::{StoreError, StoreResult};
pub use gc::{PruneOptions, PruneReport, prune};
pub use keys::{InitOptions, init_repository, open_repository};
pub use pack_writer::{PackStats, PackWriter};
pub use progress::Progress;
pub use read_plan::ReadPlan;
pub use repo::{Repository, SnapshotSummary, default_cache_dir};
