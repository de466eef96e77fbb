//! Lifeboat's repository: the on-storage format, encryption, storage backends and the
//! local SQLite catalog.
//!
//! This crate knows nothing about VMs or schedules. It stores chunks (deduplicated,
//! compressed, encrypted, packed) and snapshot manifests that list them, and reads them
//! back verified. `backup`, `restore` and the CLI are built on [`Repository`] and its
//! two shared paths: [`PackWriter`] (sealed blobs → packs → uploads → index) and
//! [`ReadPlan`] + [`ChunkReader`] (manifest → ranged GETs → verified chunks). Only this
//! crate encrypts, names objects and decides write order.

pub mod backend;
pub mod catalog;
pub mod chunk_reader;
pub mod crypto;
pub mod error;
pub mod format;
pub mod gc;
pub mod keycheck;
pub mod keys;
pub mod keyslot;
pub mod pack_writer;
pub mod progress;
pub mod read_plan;
pub mod repair;
pub mod repo;

pub use backend::{Backend, BackendError, RepoAddress};
pub use chunk_reader::{ChunkReader, Damage, FetchedRange, ReadFailure};
pub use crypto::{ChunkId, RepoKeys};
pub use error::{StoreError, StoreResult};
pub use gc::{PruneOptions, PruneReport, prune};
pub use keys::{InitOptions, init_repository, open_repository};
pub use pack_writer::{PackStats, PackWriter};
pub use progress::Progress;
pub use read_plan::ReadPlan;
pub use repo::{Repository, SnapshotSummary, SyncReport, default_cache_dir};
