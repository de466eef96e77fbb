//! Lifeboat's repository: the on-storage format, encryption, storage backends and the
//! local SQLite catalog.
//!
//! This crate knows nothing about VMs or schedules. It stores chunks (deduplicated,
//! compressed, encrypted, packed) and snapshot manifests that list them, and reads them
//! back verified. `backup`, `restore` and the CLI are built on [`Repository`].
//!
//! Inside, modules depend only on the floors below them:
//!
//! | floor | modules |
//! |-------|---------|
//! | operations | `keys` (init, open, key slots), `commit`, `catalog_sync`, `gc` (prune), `repair` |
//! | the commit guard | `gc::guard` (what a commit checks against concurrent prunes) |
//! | packs in storage | `stored_packs` (listing, header reads) |
//! | an open repository | `repo` |
//! | building blocks | `format`, `crypto`, `backend`, `catalog`, `error`, `progress` |

pub mod backend;
pub mod catalog;
pub mod catalog_sync;
pub mod commit;
pub mod crypto;
pub mod error;
pub mod format;
pub mod gc;
pub mod keys;
pub mod progress;
pub mod repair;
pub mod repo;
pub mod stored_packs;

pub use backend::{Backend, BackendError, RepoAddress};
pub use catalog_sync::SyncReport;
pub use crypto::{ChunkId, RepoKeys};
pub use error::{StoreError, StoreResult};
pub use gc::{PruneOptions, PruneReport, prune};
pub use keys::{InitOptions, init_repository, open_repository};
pub use progress::Progress;
pub use repo::{Repository, SnapshotSummary, default_cache_dir};
