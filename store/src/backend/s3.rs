//! S3-compatible object storage (AWS S3, MinIO, Ceph RGW, moto) as a repository backend.
//!
//! Repository keys become object keys under the address's prefix. Transient trouble
//! (5xx, throttling, dropped connections) is retried inside the SDK with backoff; what
//! still fails is mapped onto [`BackendError`] in one place, [`S3Backend::error`], so the
//! layers above can tell "missing", "denied", "unreachable" and "try later" apart.

use std::fmt::{self, Write as _};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
};
use aws_smithy_types::retry::ErrorKind;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::address::{BackendOptions, S3Address};
use super::error::{BackendError, BackendResult};
use super::object_store::{Backend, ObjectInfo, ObjectLock};
use super::s3_client;
use super::s3_text::{clean_endpoint, describe, io, status};

/// Larger bodies go multipart: a single PUT must be resent whole after any failure, and
/// one slow 64 MiB request already needs most of the attempt timeout on a modest uplink.
const SINGLE_PUT_MAX: usize = 64 << 20;
const PART_SIZE: usize = 16 << 20;
/// Enough parallelism to fill a long fat pipe; more would split a modest uplink so thinly
/// that each part risks running into the attempt timeout.
const PARTS_IN_FLIGHT: usize = 4;

/// `check_reachable` is what a user with a mistyped or firewalled endpoint hits first;
/// bound it even when every attempt burns the full connect timeout.
const REACHABILITY_DEADLINE: Duration = Duration::from_secs(30);

const DEFAULT_REGION: &str = "us-east-1";

/// Error codes meaning "your credentials are not good enough", whatever the status says.
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
];
/// Error codes worth another try later, on top of 429 and 5xx.
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
    // The multipart upload vanished under us (aborted elsewhere); a fresh put can succeed.
    "NoSuchUpload",
];

/// A repository stored in an S3 bucket, under an optional key prefix.
pub struct S3Backend {
    pub(super) client: Client,
    pub(super) bucket: String,
    /// Without leading or trailing `/`; empty means the bucket root.
    prefix: String,
    /// Custom endpoint with any user:password removed; `None` means AWS itself.
    endpoint: Option<String>,
    region: String,
}

// Hand-written so that neither the client nor anything credential-bearing is printed.
impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Backend")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl S3Backend {
    /// Builds a client from the address and the standard AWS configuration chain (or the
    /// explicit keys in `options`).
    /// Makes no request to the bucket; see [`Backend::check_reachable`].
    pub async fn connect(
        addr: &S3Address,
        options: &BackendOptions,
    ) -> Result<S3Backend, BackendError> {
        let setup_error =
            |detail: String| io(format!("connecting to s3://{}", addr.bucket), detail, false);
        let mut region_chain = RegionProviderChain::first_try(addr.region.clone().map(Region::new));
        if let Some(name) = &addr.profile {
            region_chain = region_chain.or_else(
                aws_config::profile::ProfileFileRegionProvider::builder()
                    .profile_name(name)
                    .build(),
            );
        }
        let region_chain = region_chain
            .or_default_provider()
            .or_else(Region::from_static(DEFAULT_REGION));
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region_chain)
            .retry_config(s3_client::retry_config())
            .timeout_config(s3_client::timeout_config().map_err(setup_error)?);
        if options.insecure_tls {
            // The caller warns the user, loudly: see `BackendOptions::insecure_tls`.
            tracing::debug!(
                "TLS certificate verification is off for s3://{}",
                addr.bucket
            );
            loader = loader.http_client(s3_client::insecure_http_client());
        }
        // Explicit keys (the caller's own configuration) first, then the address's
        // profile: a profile named for one repository must beat AWS_ACCESS_KEY_ID, which
        // the environment gives every repository of the command alike.
        if let Some(keys) = &options.credentials {
            let (id, secret) = (&keys.access_key_id, &keys.secret_access_key);
            loader =
                loader.credentials_provider(Credentials::new(id, secret, None, None, "lifeboat"));
        } else if let Some(name) = &addr.profile {
            loader = loader.credentials_provider(s3_client::profile_credentials(name).await?);
        }
        let sdk_config = loader.load().await;

        // Resolved here rather than left to the SDK because a custom endpoint also decides
        // the addressing style below. AWS_ENDPOINT_URL_S3 beats AWS_ENDPOINT_URL as in the SDK.
        let endpoint = addr
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
            .filter(|e| !e.is_empty())
            .or_else(|| sdk_config.endpoint_url().map(str::to_owned))
            .map(|raw| clean_endpoint(&raw).map_err(setup_error))
            .transpose()?;
        let region = sdk_config
            .region()
            .map_or_else(|| DEFAULT_REGION.to_string(), ToString::to_string);

        let mut s3_config = aws_sdk_s3::config::Builder::from(&sdk_config);
        if let Some(url) = &endpoint {
            // MinIO, Ceph and moto serve buckets as paths; virtual-host style would need
            // wildcard DNS for `bucket.host`, which such deployments rarely have.
            s3_config = s3_config.endpoint_url(url).force_path_style(true);
        }
        s3_config = s3_config.retry_classifier(s3_client::NoRetryOnBadCertificate);
        Ok(S3Backend {
            client: Client::from_conf(s3_config.build()),
            bucket: addr.bucket.clone(),
            prefix: addr.prefix.clone(),
            endpoint,
            region,
        })
    }

    pub(super) fn object_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    pub(super) fn what(&self, op: &str, key: &str) -> String {
        let parts = [self.bucket.as_str(), self.prefix.as_str(), key];
        let path: Vec<&str> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        format!("S3 {op} s3://{}", path.join("/"))
    }

    fn endpoint_label(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("AWS S3 ({})", self.region))
    }

    /// Classifies a failed SDK call. Only the error code, message and HTTP status reach
    /// the result: never request headers, where the signature and token live.
    pub(super) fn error<E>(
        &self,
        err: SdkError<E, HttpResponse>,
        op: &str,
        key: &str,
    ) -> BackendError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let what = self.what(op, key);
        let detail = describe(&err);
        let network = match &err {
            SdkError::TimeoutError(_) => true,
            SdkError::DispatchFailure(f) => {
                f.is_io() || f.is_timeout() || f.as_other() == Some(ErrorKind::TransientError)
            }
            _ => false,
        };
        match &err {
            _ if s3_client::is_certificate_error(&detail) => {
                let advice = s3_client::certificate_advice(&detail, &self.endpoint_label());
                return io(what, advice, false);
            }
            _ if network => return BackendError::Unreachable { what, detail },
            SdkError::ServiceError(_) => {}
            // An answer that could not be read or parsed, e.g. cut off mid-body.
            SdkError::ResponseError(_) => return io(what, detail, true),
            // Never sent: the request could not be built, or no credentials were found
            // (which the SDK reports as a dispatch failure). Repeating it cannot help.
            _ => return io(what, detail, false),
        }

        let status = status(&err).unwrap_or(0);
        let code = err.code().unwrap_or_default();
        // HEAD responses have no body, hence often no code or message.
        let mut detail = match (err.code(), err.message()) {
            (Some(c), Some(m)) => format!("{c}: {m} (HTTP {status})"),
            (Some(c), None) => format!("{c} (HTTP {status})"),
            _ => format!("HTTP {status}"),
        };
        if code == "NoSuchBucket" {
            return self.no_such_bucket();
        }
        // Other 404 codes (NoSuchUpload, …) are about something else than the object.
        if code == "NoSuchKey" || (status == 404 && matches!(code, "" | "NotFound")) {
            return BackendError::NotFound { key: key.into() };
        }
        if DENIED_CODES.contains(&code) || matches!(status, 401 | 403) {
            return BackendError::AccessDenied { what, detail };
        }
        // AWS names a bucket's real region in a header but does not follow it for us.
        let raw = err.raw_response();
        let real_region = raw.and_then(|r| r.headers().get("x-amz-bucket-region"));
        if let Some(r) = real_region.filter(|r| *r != self.region) {
            let _ = write!(detail, "; the bucket is in region {r}: add ?region={r}");
        }
        let retryable = TRANSIENT_CODES.contains(&code) || status == 429 || status >= 500;
        io(what, detail, retryable)
    }

    /// Like [`Self::error`], but a failed `If-None-Match: *` means someone got there first.
    pub(super) fn put_error<E>(
        &self,
        err: SdkError<E, HttpResponse>,
        op: &str,
        key: &str,
        if_absent: bool,
    ) -> BackendError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        // 412 PreconditionFailed: the object exists. 409: a concurrent conditional write to
        // the same key is in flight, and whichever wins, ours will not be the one stored.
        let lost_race =
            status(&err) == Some(412) || err.code() == Some("ConditionalRequestConflict");
        if if_absent && lost_race {
            return BackendError::AlreadyExists { key: key.into() };
        }
        self.error(err, op, key)
    }

    /// Creates the bucket, with Object Lock (and so versioning) if asked.
    async fn create_bucket(&self, object_lock: bool) -> BackendResult<()> {
        let mut request = self.client.create_bucket().bucket(&self.bucket);
        // us-east-1 is the one region that rejects its own name as a location constraint.
        if self.region != DEFAULT_REGION {
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        if object_lock {
            request = request.object_lock_enabled_for_bucket(true);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) => Err(self.error(e, "CreateBucket", "")),
        }
    }

    pub(super) fn no_such_bucket(&self) -> BackendError {
        BackendError::NoSuchBucket {
            bucket: self.bucket.clone(),
            endpoint: self.endpoint_label(),
        }
    }

    pub(super) async fn upload(
        &self,
        key: &str,
        data: Bytes,
        if_absent: bool,
    ) -> BackendResult<()> {
        if data.len() > SINGLE_PUT_MAX {
            return self.upload_multipart(key, data, if_absent).await;
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .set_if_none_match(if_absent.then(|| "*".to_string()))
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.put_error(e, "PutObject", key, if_absent))?;
        Ok(())
    }

    async fn upload_multipart(&self, key: &str, data: Bytes, if_absent: bool) -> BackendResult<()> {
        let object_key = self.object_key(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&object_key)
            .send()
            .await
            .map_err(|e| self.error(e, "CreateMultipartUpload", key))?;
        let Some(upload_id) = created.upload_id() else {
            let what = self.what("CreateMultipartUpload", key);
            return Err(io(what, "the response carried no upload id", false));
        };
        let result = self
            .upload_parts(key, &object_key, upload_id, data, if_absent)
            .await;
        if result.is_err() {
            // Uploaded parts are stored (and billed) invisibly until the upload is aborted.
            let abort = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&object_key)
                .upload_id(upload_id)
                .send()
                .await;
            if let Err(e) = abort {
                tracing::warn!(
                    object = %object_key,
                    error = %describe(&e),
                    "could not abort a failed multipart upload; its parts stay in the bucket \
                     until a lifecycle rule for incomplete uploads removes them"
                );
            }
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        object_key: &str,
        upload_id: &str,
        data: Bytes,
        if_absent: bool,
    ) -> BackendResult<()> {
        // `Bytes::slice` shares the buffer, so splitting copies nothing.
        let chunks = (0..data.len())
            .step_by(PART_SIZE)
            .map(|start| data.slice(start..(start + PART_SIZE).min(data.len())));
        let mut parts: Vec<CompletedPart> = futures::stream::iter((1_i32..).zip(chunks))
            .map(|(number, chunk)| async move {
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(object_key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(ByteStream::from(chunk))
                    .send()
                    .await
                    .map_err(|e| self.error(e, "UploadPart", key))?;
                Ok::<_, BackendError>(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag)
                        .build(),
                )
            })
            .buffer_unordered(PARTS_IN_FLIGHT)
            .try_collect()
            .await?;
        // S3 rejects a completion whose part list is not in ascending order.
        parts.sort_by_key(CompletedPart::part_number);
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(object_key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .set_if_none_match(if_absent.then(|| "*".to_string()))
            .send()
            .await;
        match completed {
            Ok(_) => Ok(()),
            // A 200 the SDK cannot parse that is not an <Error> either: moto names the root
            // element `…Response` instead of `…Result`. Believe it only if the object is there.
            Err(e) if status(&e) == Some(200) && e.code().is_none() => {
                match self.size(key).await? {
                    Some(size) if size == data.len() as u64 => Ok(()),
                    _ => Err(self.error(e, "CompleteMultipartUpload", key)),
                }
            }
            Err(e) => Err(self.put_error(e, "CompleteMultipartUpload", key, if_absent)),
        }
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn location(&self) -> String {
        let mut location = format!("s3://{}", self.bucket);
        if !self.prefix.is_empty() {
            location.push('/');
            location.push_str(&self.prefix);
        }
        if let Some(endpoint) = &self.endpoint {
            location.push_str("?endpoint=");
            location.push_str(endpoint);
        }
        location
    }

    async fn check_reachable(&self) -> BackendResult<()> {
        let head = self.client.head_bucket().bucket(&self.bucket).send();
        match tokio::time::timeout(REACHABILITY_DEADLINE, head).await {
            Ok(Ok(_)) => Ok(()),
            // HEAD has no body to carry a NoSuchBucket code: a 404 is all there is.
            Ok(Err(e)) if status(&e) == Some(404) => Err(self.no_such_bucket()),
            Ok(Err(e)) => Err(self.error(e, "HeadBucket", "")),
            Err(_) => Err(BackendError::Unreachable {
                what: self.what("HeadBucket", ""),
                detail: format!(
                    "no answer from {} within {} s",
                    self.endpoint_label(),
                    REACHABILITY_DEADLINE.as_secs()
                ),
            }),
        }
    }

    async fn create_container(&self) -> BackendResult<()> {
        self.create_bucket(false).await
    }

    async fn create_locked_container(&self) -> BackendResult<()> {
        self.create_bucket(true).await
    }

    async fn put(&self, key: &str, data: Bytes) -> BackendResult<()> {
        self.upload(key, data, false).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> BackendResult<()> {
        let result = self.upload(key, data.clone(), true).await;
        self.unless_own_write(key, &data, result).await
    }

    async fn get(&self, key: &str) -> BackendResult<Bytes> {
        Ok(self
            .get_object(key, None)
            .await?
            .map_or_else(Bytes::new, |(data, _)| data))
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> BackendResult<Bytes> {
        // `bytes=off-(off-1)` is not a valid range, so answer an empty read locally.
        if len == 0 {
            return Ok(Bytes::new());
        }
        let last = offset.saturating_add(len - 1);
        let range = format!("bytes={offset}-{last}");
        // `None`: 416, the range starts at or beyond the end, so nothing of it exists.
        let Some((data, ranged)) = self.get_object(key, Some(range)).await? else {
            return Ok(Bytes::new());
        };
        if ranged {
            return Ok(data);
        }
        // A server that ignores Range answers 200 with the whole object; cut it ourselves.
        let clamp = |n: u64| usize::try_from(n).unwrap_or(usize::MAX).min(data.len());
        Ok(data.slice(clamp(offset)..clamp(last.saturating_add(1))))
    }

    async fn size(&self, key: &str) -> BackendResult<Option<u64>> {
        let result = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .send()
            .await;
        match result {
            Ok(out) => match out.content_length().and_then(|n| u64::try_from(n).ok()) {
                Some(size) => Ok(Some(size)),
                None => Err(io(
                    self.what("HeadObject", key),
                    "no valid Content-Length",
                    false,
                )),
            },
            Err(e) => match self.error(e, "HeadObject", key) {
                BackendError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        let root = self.object_key("");
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.object_key(prefix))
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error(e, "ListObjectsV2", prefix))?;
            for object in page.contents() {
                let Some(relative) = object.key().and_then(|k| k.strip_prefix(&root)) else {
                    continue;
                };
                objects.push(ObjectInfo {
                    key: relative.to_string(),
                    size: object.size().map_or(0, |s| u64::try_from(s).unwrap_or(0)),
                    modified: object
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok()),
                });
            }
        }
        Ok(objects)
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        self.delete_unlocked(key).await
    }

    async fn put_locked(
        &self,
        key: &str,
        data: Bytes,
        if_absent: bool,
        lock: ObjectLock,
    ) -> BackendResult<()> {
        let result = self.upload_locked(key, data.clone(), if_absent, lock).await;
        self.unless_own_write(key, &data, result).await
    }

    async fn retain_until(&self, key: &str) -> BackendResult<Option<SystemTime>> {
        Ok(self.lock_state(key).await?.and_then(|s| s.retain_until))
    }

    async fn extend_retention(&self, key: &str, lock: ObjectLock) -> BackendResult<()> {
        self.put_retention(key, lock).await
    }

    async fn object_lock_enabled(&self) -> BackendResult<bool> {
        self.bucket_lock_enabled().await
    }
}
