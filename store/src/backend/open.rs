//! Opening the backend a repository address names.

use std::sync::Arc;

use super::address::{BackendOptions, RepoAddress};
use super::error::BackendError;
use super::local::LocalBackend;
use super::object_store::Backend;

/// The backend for `address`: a local directory, or an S3 client.
pub async fn open_backend(
    address: &RepoAddress,
    options: &BackendOptions,
) -> Result<Arc<dyn Backend>, BackendError> {
    Ok(match address {
        RepoAddress::Local(path) => Arc::new(LocalBackend::new(path.clone())),
        #[cfg(feature = "s3")]
        RepoAddress::S3(s3) => Arc::new(super::s3::S3Backend::connect(s3, options).await?),
        #[cfg(not(feature = "s3"))]
        RepoAddress::S3(_) => {
            let _ = options;
            return Err(BackendError::Io {
                what: "opening an S3 repository".into(),
                detail: "this build of the store has no S3 support (feature `s3`)".into(),
                retryable: false,
            });
        }
    })
}
