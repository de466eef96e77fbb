//! S3 Object Lock for [`S3Backend`]: locked uploads, reading and extending a lock, and
//! deletes that respect locks.
//!
//! A bucket with Object Lock is always versioned. Deleting by key alone there only
//! adds a delete marker — the data stays and keeps costing — so deletes here name the
//! current version. A version under an unexpired lock is never sent a delete at all:
//! the lock is read first and reported as [`BackendError::Locked`], which is how prune
//! "skips and says so" instead of collecting AccessDenied errors.

use std::time::SystemTime;

use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::ObjectLockRetentionMode;
use aws_sdk_s3::types::{ObjectLockEnabled, ObjectLockMode, ObjectLockRetention};
use bytes::Bytes;

use super::error::{BackendError, BackendResult};
use super::object_store::{LockMode, ObjectLock};
use super::s3::S3Backend;
use super::s3_text::status;

/// What HEAD says about an object's version and lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LockState {
    pub version_id: Option<String>,
    pub retain_until: Option<SystemTime>,
}

/// Objects up to this size are uploaded with the lock in the same PUT; bigger ones
/// (multipart) get the lock right after the upload completes.
const LOCKED_SINGLE_PUT_MAX: usize = 64 * 1024 * 1024;

fn put_mode(mode: LockMode) -> ObjectLockMode {
    match mode {
        LockMode::Governance => ObjectLockMode::Governance,
        LockMode::Compliance => ObjectLockMode::Compliance,
    }
}

fn retention_mode(mode: LockMode) -> ObjectLockRetentionMode {
    match mode {
        LockMode::Governance => ObjectLockRetentionMode::Governance,
        LockMode::Compliance => ObjectLockRetentionMode::Compliance,
    }
}

/// RFC 3339 for messages (`Locked { until }`).
pub(crate) fn describe_time(t: SystemTime) -> String {
    DateTime::from(t)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| format!("{t:?}"))
}

impl S3Backend {
    pub(super) async fn upload_locked(
        &self,
        key: &str,
        data: Bytes,
        if_absent: bool,
        lock: ObjectLock,
    ) -> BackendResult<()> {
        if data.len() > LOCKED_SINGLE_PUT_MAX {
            self.upload(key, data, if_absent).await?;
            return self.put_retention(key, lock).await;
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .set_if_none_match(if_absent.then(|| "*".to_string()))
            .object_lock_mode(put_mode(lock.mode))
            .object_lock_retain_until_date(DateTime::from(lock.retain_until))
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.put_error(e, "PutObject (locked)", key, if_absent))?;
        Ok(())
    }

    /// Version and lock of an object; `None` when it does not exist.
    pub(super) async fn lock_state(&self, key: &str) -> BackendResult<Option<LockState>> {
        let result = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(LockState {
                version_id: out.version_id().map(str::to_owned),
                retain_until: out
                    .object_lock_retain_until_date()
                    .and_then(|d| SystemTime::try_from(*d).ok()),
            })),
            Err(e) => match self.error(e, "HeadObject", key) {
                BackendError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    pub(super) async fn put_retention(&self, key: &str, lock: ObjectLock) -> BackendResult<()> {
        let retention = ObjectLockRetention::builder()
            .mode(retention_mode(lock.mode))
            .retain_until_date(DateTime::from(lock.retain_until))
            .build();
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .retention(retention)
            .send()
            .await
            .map_err(|e| self.error(e, "PutObjectRetention", key))?;
        Ok(())
    }

    pub(super) async fn bucket_lock_enabled(&self) -> BackendResult<bool> {
        let result = self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await;
        match result {
            Ok(out) => Ok(out
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                == Some(&ObjectLockEnabled::Enabled)),
            // No configuration at all: a plain bucket.
            Err(e)
                if status(&e) == Some(404)
                    || e.as_service_error().is_some_and(|s| {
                        aws_sdk_s3::error::ProvideErrorMetadata::code(s)
                            == Some("ObjectLockConfigurationNotFoundError")
                    }) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.error(e, "GetObjectLockConfiguration", "")),
        }
    }

    /// Deletes the current version of `key` unless it is locked (see the module doc).
    pub(super) async fn delete_unlocked(&self, key: &str) -> BackendResult<()> {
        let Some(state) = self.lock_state(key).await? else {
            return Ok(());
        };
        if let Some(until) = state.retain_until.filter(|u| *u > SystemTime::now()) {
            return Err(BackendError::Locked {
                key: key.to_string(),
                until: describe_time(until),
            });
        }
        // Unversioned buckets report no version (or "null"); delete by key there.
        let version = state.version_id.filter(|v| v != "null");
        let result = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .set_version_id(version)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // S3 itself answers 204 for a missing key, but some compatible stores say 404.
            Err(e) => match self.error(e, "DeleteObject", key) {
                BackendError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}
