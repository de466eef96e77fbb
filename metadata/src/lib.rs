//! Cloud-recovery metadata: what Lifeboat needs besides the VM disks to rebuild its
//! protection after the site that ran it is lost — its configuration, the files the
//! configuration names (password and credential files, plan scripts), the daemon's
//! state database, and what each repository held (newest snapshot and VM definition
//! per disk).
//!
//! - [`keys`]: recovery keys, age X25519; the configuration holds only public
//!   recipients, the identity is kept offline.
//! - [`bundle`]: one metadata point, its manifest (size, mode, BLAKE3 per file),
//!   compressed and encrypted to the recipients; opening authenticates it.
//! - [`target`]: points as create-only objects under `metadata/` of any storage
//!   backend.
//!
//! The binary decides what goes into a point and where `recover` writes it; this
//! crate depends only on `store` (for the backends).

pub mod bundle;
mod error;
pub mod keys;
pub mod target;

pub use bundle::{Bundle, BundleFile, FileRole, NewestSnapshot, RepositorySummary};
pub use error::MetadataError;
pub use target::MetadataTarget;
