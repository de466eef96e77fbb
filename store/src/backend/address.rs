//! Parsing repository addresses (`/path`, `file:///path`,
//! `s3://bucket/prefix?endpoint=…&region=…&profile=…`), and the options network backends
//! take.

use std::path::PathBuf;

/// Where a repository lives, parsed from `-r/--repo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoAddress {
    Local(PathBuf),
    S3(S3Address),
}

/// An S3-compatible location. Credentials are never part of the address: they come
/// from the standard AWS chain (environment, profile, instance metadata), or from the
/// named profile `?profile=NAME` points to. Naming the profile in the address is what
/// lets one command use different keys per repository: `replicate` pulling with a
/// read-only key for the primary's bucket and a read-write one for its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Address {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// Custom endpoint (MinIO, Ceph, moto); `None` means AWS or `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// Region; `None` means the AWS chain's region, else `us-east-1`.
    pub region: Option<String>,
    /// `?profile=NAME`: a named profile of the AWS shared files (`AWS_SHARED_CREDENTIALS_FILE`,
    /// `AWS_CONFIG_FILE`, default `~/.aws/`) supplying this repository's credentials (and
    /// region, unless `region=` is given), ahead of `AWS_ACCESS_KEY_ID` in the environment.
    /// `None`: the standard chain.
    pub profile: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid repository address {address:?}: {reason}")]
pub struct AddressError {
    pub address: String,
    pub reason: String,
}

impl RepoAddress {
    pub fn parse(address: &str) -> Result<Self, AddressError> {
        let bad = |reason: &str| AddressError {
            address: address.to_string(),
            reason: reason.to_string(),
        };
        if address.is_empty() {
            return Err(bad(
                "empty; pass -r /path, -r file:///path or -r s3://bucket/prefix",
            ));
        }
        if let Some(rest) = address.strip_prefix("file://") {
            if rest.is_empty() || !rest.starts_with('/') {
                return Err(bad(
                    "file:// addresses need an absolute path, e.g. file:///srv/lifeboat",
                ));
            }
            return Ok(RepoAddress::Local(PathBuf::from(rest)));
        }
        if address.starts_with("s3://") {
            let url = url::Url::parse(address).map_err(|e| bad(&e.to_string()))?;
            let bucket = url.host_str().unwrap_or_default().to_string();
            if bucket.is_empty() {
                return Err(bad("missing bucket name, e.g. s3://backups/lifeboat"));
            }
            let prefix = url.path().trim_matches('/').to_string();
            let mut endpoint = None;
            let (mut region, mut profile) = (None, None);
            for (k, v) in url.query_pairs() {
                match k.as_ref() {
                    "endpoint" => endpoint = Some(v.into_owned()),
                    "region" => region = Some(v.into_owned()),
                    "profile" if v.trim().is_empty() => {
                        return Err(bad(
                            "profile= needs the name of a profile in the AWS credentials file, e.g. profile=replica-pull",
                        ));
                    }
                    "profile" => profile = Some(v.into_owned()),
                    other => {
                        return Err(bad(&format!(
                            "unknown option {other:?}; supported: endpoint, region, profile"
                        )));
                    }
                }
            }
            return Ok(RepoAddress::S3(S3Address {
                bucket,
                prefix,
                endpoint,
                region,
                profile,
            }));
        }
        if address.contains("://") {
            return Err(bad("unsupported scheme; use a path, file:// or s3://"));
        }
        Ok(RepoAddress::Local(PathBuf::from(address)))
    }
}

/// Options that apply to network backends.
#[derive(Clone, Default)]
pub struct BackendOptions {
    /// Accept any TLS certificate (explicit `--insecure-tls` only). The backend does not
    /// warn: the caller must tell the user, on every run, that nothing is authenticated.
    pub insecure_tls: bool,
    /// Explicit S3 credentials; `None` uses the standard AWS chain (environment,
    /// profile, instance metadata). For callers that read credentials from their own
    /// configuration rather than the process environment.
    pub credentials: Option<StaticCredentials>,
}

/// An access key pair. `Debug` never shows the secret.
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StaticCredentials({}, <secret>)", self.access_key_id)
    }
}

impl std::fmt::Debug for BackendOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendOptions")
            .field("insecure_tls", &self.insecure_tls)
            .field("credentials", &self.credentials)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        let table: &[(&str, Option<RepoAddress>)] = &[
            ("/srv/repo", Some(RepoAddress::Local("/srv/repo".into()))),
            (
                "relative/repo",
                Some(RepoAddress::Local("relative/repo".into())),
            ),
            (
                "file:///srv/repo",
                Some(RepoAddress::Local("/srv/repo".into())),
            ),
            ("file://srv", None),
            ("", None),
            ("ftp://x", None),
            ("s3://", None),
            (
                "s3://bkt/a/b/?endpoint=http://127.0.0.1:9000&region=eu-west-1",
                Some(RepoAddress::S3(S3Address {
                    bucket: "bkt".into(),
                    prefix: "a/b".into(),
                    endpoint: Some("http://127.0.0.1:9000".into()),
                    region: Some("eu-west-1".into()),
                    profile: None,
                })),
            ),
            (
                "s3://bkt",
                Some(RepoAddress::S3(S3Address {
                    bucket: "bkt".into(),
                    prefix: String::new(),
                    endpoint: None,
                    region: None,
                    profile: None,
                })),
            ),
            (
                "s3://bkt/p?profile=replica-pull&endpoint=http://h:1",
                Some(RepoAddress::S3(S3Address {
                    bucket: "bkt".into(),
                    prefix: "p".into(),
                    endpoint: Some("http://h:1".into()),
                    region: None,
                    profile: Some("replica-pull".into()),
                })),
            ),
            ("s3://bkt?profile=", None),
            ("s3://bkt?color=red", None),
        ];
        for (input, want) in table {
            let got = RepoAddress::parse(input).ok();
            assert_eq!(&got, want, "address {input:?}");
        }
    }
}
