//! A backend decorator that puts an S3 Object Lock on every pack, index object and
//! manifest as it is written: the repository's immutability period.
//!
//! It sits between the repository and the real backend, so no code that writes
//! objects has to remember to lock them. Key slots, the config and garbage-collection
//! bookkeeping (`gc/`, `locks/`) stay unlocked: they must be replaceable, and losing
//! them loses no backup (key slots are the owner's to manage).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use super::error::BackendResult;
use super::object_store::{Backend, LockMode, ObjectInfo, ObjectLock};
use crate::format::{DATA_PREFIX, INDEX_PREFIX, SNAPSHOTS_PREFIX};

/// Which keys carry history and so get locked.
pub fn is_locked_kind(key: &str) -> bool {
    [DATA_PREFIX, INDEX_PREFIX, SNAPSHOTS_PREFIX]
        .iter()
        .any(|p| key.starts_with(p))
}

#[derive(Debug)]
pub struct LockingBackend {
    inner: Arc<dyn Backend>,
    mode: LockMode,
    period: Duration,
}

impl LockingBackend {
    pub fn new(inner: Arc<dyn Backend>, mode: LockMode, period: Duration) -> Self {
        Self {
            inner,
            mode,
            period,
        }
    }

    /// The lock a new object gets now.
    pub fn lock_from_now(&self) -> ObjectLock {
        ObjectLock {
            mode: self.mode,
            retain_until: SystemTime::now() + self.period,
        }
    }
}

#[async_trait]
impl Backend for LockingBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn check_reachable(&self) -> BackendResult<()> {
        self.inner.check_reachable().await
    }

    async fn create_container(&self) -> BackendResult<()> {
        self.inner.create_locked_container().await
    }

    async fn put(&self, key: &str, data: Bytes) -> BackendResult<()> {
        if is_locked_kind(key) {
            self.inner
                .put_locked(key, data, false, self.lock_from_now())
                .await
        } else {
            self.inner.put(key, data).await
        }
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> BackendResult<()> {
        if is_locked_kind(key) {
            self.inner
                .put_locked(key, data, true, self.lock_from_now())
                .await
        } else {
            self.inner.put_if_absent(key, data).await
        }
    }

    async fn get(&self, key: &str) -> BackendResult<Bytes> {
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> BackendResult<Bytes> {
        self.inner.get_range(key, offset, len).await
    }

    async fn size(&self, key: &str) -> BackendResult<Option<u64>> {
        self.inner.size(key).await
    }

    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        self.inner.delete(key).await
    }

    async fn put_locked(
        &self,
        key: &str,
        data: Bytes,
        if_absent: bool,
        lock: ObjectLock,
    ) -> BackendResult<()> {
        self.inner.put_locked(key, data, if_absent, lock).await
    }

    async fn retain_until(&self, key: &str) -> BackendResult<Option<SystemTime>> {
        self.inner.retain_until(key).await
    }

    async fn extend_retention(&self, key: &str, lock: ObjectLock) -> BackendResult<()> {
        self.inner.extend_retention(key, lock).await
    }

    async fn create_locked_container(&self) -> BackendResult<()> {
        self.inner.create_locked_container().await
    }

    async fn object_lock_enabled(&self) -> BackendResult<bool> {
        self.inner.object_lock_enabled().await
    }
}
