//! The [`Backend`] trait every storage target implements — a flat key → bytes store
//! with exactly the operations the repository needs — and the types it speaks.

use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::error::{BackendError, BackendResult};

/// One object as reported by [`Backend::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the repository root, e.g. `index/0a1b…`.
    pub key: String,
    pub size: u64,
    /// When the object was written (S3 LastModified, file mtime); `None` if the store
    /// did not say. Garbage collection never touches objects younger than its grace
    /// period, and treats an unknown age as young.
    pub modified: Option<SystemTime>,
}

/// S3 Object Lock retention modes. Under `Compliance` nobody, not even the bucket
/// owner, can delete a locked object version early; under `Governance` a principal
/// with `s3:BypassGovernanceRetention` can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    Governance,
    Compliance,
}

/// A retention lock to put on an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: LockMode,
    pub retain_until: SystemTime,
}

/// A flat object store. Implementations must make `put` atomic: a reader sees either
/// no object or the whole object, never a partial one — the crash-safety of the whole
/// repository rests on that.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Human-readable location, e.g. `s3://bucket/prefix` (never contains credentials).
    fn location(&self) -> String;

    /// Checks that the repository root is reachable (bucket exists, directory exists).
    async fn check_reachable(&self) -> BackendResult<()>;

    /// Creates the container (bucket or directory) if missing. Used by `init --create-bucket`.
    async fn create_container(&self) -> BackendResult<()>;

    /// Stores `data` under `key`, replacing any object there.
    async fn put(&self, key: &str, data: Bytes) -> BackendResult<()>;

    /// Stores `data` under `key` only if no object exists there yet
    /// (`AlreadyExists` otherwise). Used for objects that must never be overwritten.
    /// An existing object with exactly these bytes counts as success: a retried request
    /// whose first attempt was stored but whose answer was lost must not fail. Callers
    /// that need "I created it" must therefore write content nobody else would (all
    /// callers do: sealed objects carry a random nonce, key slots a random salt).
    async fn put_if_absent(&self, key: &str, data: Bytes) -> BackendResult<()>;

    /// Reads a whole object.
    async fn get(&self, key: &str) -> BackendResult<Bytes>;

    /// Reads `len` bytes at `offset`. Returns fewer bytes only if the object is shorter.
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> BackendResult<Bytes>;

    /// Size of an object, or `None` when it does not exist.
    async fn size(&self, key: &str) -> BackendResult<Option<u64>>;

    /// All objects whose key starts with `prefix` (e.g. `index/`), in any order.
    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>>;

    /// Deletes an object; deleting a missing object is not an error. An object under
    /// an unexpired retention lock is not touched: `Locked` says until when. In a
    /// versioned bucket (Object Lock implies one) the current version itself is
    /// deleted, so the space is really freed rather than hidden behind a delete marker.
    async fn delete(&self, key: &str) -> BackendResult<()>;

    /// Like `put` / `put_if_absent`, but the object is also locked (S3 Object Lock)
    /// as `lock` says. Only S3 buckets created with Object Lock support this.
    async fn put_locked(
        &self,
        key: &str,
        _data: Bytes,
        _if_absent: bool,
        _lock: ObjectLock,
    ) -> BackendResult<()> {
        Err(BackendError::Unsupported {
            what: format!("locking {key}"),
            detail: format!(
                "{} does not support Object Lock; immutable repositories need an S3 bucket                  created with Object Lock enabled",
                self.location()
            ),
        })
    }

    /// Until when an object is locked, if it is (and exists).
    async fn retain_until(&self, _key: &str) -> BackendResult<Option<SystemTime>> {
        Ok(None)
    }

    /// Extends an object's lock (locks can only ever be extended).
    async fn extend_retention(&self, key: &str, _lock: ObjectLock) -> BackendResult<()> {
        Err(BackendError::Unsupported {
            what: format!("extending the lock of {key}"),
            detail: format!("{} does not support Object Lock", self.location()),
        })
    }

    /// Creates the container with Object Lock enabled (`init --create-bucket --immutable`).
    async fn create_locked_container(&self) -> BackendResult<()> {
        Err(BackendError::Unsupported {
            what: "creating a bucket with Object Lock".into(),
            detail: format!("{} does not support Object Lock", self.location()),
        })
    }

    /// Whether the container has Object Lock enabled (checked by `init --immutable`).
    async fn object_lock_enabled(&self) -> BackendResult<bool> {
        Ok(false)
    }
}
