//! A metadata target opened from its address (`s3://…` or a directory), with the
//! same credentials and options as a repository address.

use anyhow::{Context, Result};
use lifeboat_metadata::MetadataTarget;

use crate::args::GlobalArgs;
use crate::repository::backend_at;

pub(crate) async fn target(g: &GlobalArgs, address: &str) -> Result<MetadataTarget> {
    let (backend, _) = backend_at(g, address)
        .await
        .with_context(|| format!("metadata target {address}"))?;
    Ok(MetadataTarget::new(backend))
}
