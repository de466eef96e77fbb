//! Reading objects back for [`S3Backend`]: GETs whose bodies are re-fetched when they
//! break off mid-transfer, and recognising a conditional PUT that already landed.

use std::time::Duration;

use aws_sdk_s3::primitives::{AggregatedBytes, ByteStream};
use bytes::Bytes;

use super::error::{BackendError, BackendResult};
use super::s3::S3Backend;
use super::s3_text::{describe, io, status};

/// Reads of a GET body that broke off mid-transfer, in all (see `get_object`).
const BODY_ATTEMPTS: u32 = 4;
const BODY_RETRY_PAUSE: Duration = Duration::from_millis(200);

impl S3Backend {
    pub(super) async fn read_body(
        &self,
        body: ByteStream,
        op: &str,
        key: &str,
    ) -> BackendResult<Bytes> {
        // The SDK checks the length against Content-Length, so a cut-off transfer is an
        // error here rather than a short object handed to the decryption layer.
        body.collect()
            .await
            .map(AggregatedBytes::into_bytes)
            .map_err(|e| {
                let detail = format!("reading the body failed: {}", describe(&e));
                io(self.what(op, key), detail, true)
            })
    }

    /// A GET whose body is read in full; `None` for a 416 to a ranged request. Returns
    /// whether the server honoured the range.
    pub(super) async fn get_object(
        &self,
        key: &str,
        range: Option<String>,
    ) -> BackendResult<Option<(Bytes, bool)>> {
        let mut attempt = 1;
        loop {
            let result = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(self.object_key(key))
                .set_range(range.clone())
                .send()
                .await;
            let out = match result {
                Ok(out) => out,
                Err(e) if range.is_some() && status(&e) == Some(416) => return Ok(None),
                Err(e) => return Err(self.error(e, "GetObject", key)),
            };
            let ranged = out.content_range().is_some();
            match self.read_body(out.body, "GetObject", key).await {
                Ok(data) => return Ok(Some((data, ranged))),
                // The SDK retries requests that fail before an answer starts, not bodies
                // that break off after it: a reset or stall mid-transfer lands here.
                Err(e) if attempt < BODY_ATTEMPTS => {
                    tracing::debug!(key, attempt, error = %e, "GET body failed; retrying");
                    tokio::time::sleep(BODY_RETRY_PAUSE * attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `result` of a conditional PUT of `data`, except that meeting an object with exactly
    /// these bytes is success. The SDK retries a PUT whose answer was lost (connection
    /// dropped, timeout) even when the server had already stored it; the retry then meets
    /// our own object and fails its If-None-Match. Identical bytes mean our write landed
    /// (everything written conditionally carries a random nonce or salt).
    pub(super) async fn unless_own_write(
        &self,
        key: &str,
        data: &Bytes,
        result: BackendResult<()>,
    ) -> BackendResult<()> {
        match result {
            Err(BackendError::AlreadyExists { .. }) if self.holds(key, data).await? => {
                tracing::debug!(key, "conditional PUT was stored by an earlier attempt");
                Ok(())
            }
            other => other,
        }
    }

    /// Whether the object at `key` holds exactly `data`.
    async fn holds(&self, key: &str, data: &Bytes) -> BackendResult<bool> {
        match self.get_object(key, None).await {
            Ok(stored) => Ok(stored.is_some_and(|(stored, _)| stored == *data)),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}
