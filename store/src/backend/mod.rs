//! Storage backends: where repository objects live.
//!
//! A backend is a flat key → bytes store with exactly the operations the repository
//! needs. Keys are `/`-separated relative paths such as `data/ab/ab12…`; a backend maps
//! them onto files (local directory) or object keys under a prefix (S3). Everything above
//! the [`Backend`] trait — encryption, packing, the catalog — is backend-agnostic, so a new target
//! only has to implement these few methods.

pub mod address;
mod error;
pub mod local;
pub mod locking;
mod object_store;
mod open;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(feature = "s3")]
pub mod s3_client;
#[cfg(feature = "s3")]
mod s3_lock;
#[cfg(feature = "s3")]
mod s3_read;
#[cfg(feature = "s3")]
mod s3_text;

pub use address::RepoAddress;
pub use error::{BackendError, BackendResult};
pub use object_store::{Backend, LockMode, ObjectInfo, ObjectLock};
pub use open::open_backend;
