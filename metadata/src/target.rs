//! Where metadata points are kept: any Lifeboat storage backend (S3 bucket/prefix or
//! local directory — normally not at the protected site), under `metadata/`, one
//! object per point named `<UTC time>-<random>.age`, so names sort by time.
//! Points are written create-only and never modified.

use std::sync::Arc;

use bytes::Bytes;
use lifeboat_store::Backend;
use rand::RngCore;

use super::error::MetadataError;

const PREFIX: &str = "metadata/";
const SUFFIX: &str = ".age";

/// The metadata points of one target.
pub struct MetadataTarget {
    backend: Arc<dyn Backend>,
}

impl MetadataTarget {
    pub fn new(backend: Arc<dyn Backend>) -> MetadataTarget {
        MetadataTarget { backend }
    }

    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// Stores a sealed point; returns its name.
    pub async fn put(
        &self,
        sealed: Vec<u8>,
        now: time::OffsetDateTime,
    ) -> Result<String, MetadataError> {
        let stamp = now
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .expect("a UTC time formats");
        let mut random = [0u8; 4];
        rand::thread_rng().fill_bytes(&mut random);
        let name = format!("{stamp}-{}", hex(&random));
        self.backend
            .put_if_absent(&format!("{PREFIX}{name}{SUFFIX}"), Bytes::from(sealed))
            .await?;
        Ok(name)
    }

    /// Every point's name, oldest first.
    pub async fn points(&self) -> Result<Vec<String>, MetadataError> {
        let mut names: Vec<String> = self
            .backend
            .list(PREFIX)
            .await?
            .into_iter()
            .filter_map(|o| {
                o.key
                    .strip_prefix(PREFIX)
                    .and_then(|k| k.strip_suffix(SUFFIX))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// A point by name, or `latest`; returns its name and sealed bytes.
    pub async fn get(&self, point: &str) -> Result<(String, Vec<u8>), MetadataError> {
        let points = self.points().await?;
        let name = if point == "latest" {
            points.last().cloned().ok_or_else(|| MetadataError::Empty {
                location: self.location(),
            })?
        } else {
            points
                .iter()
                .find(|p| p.starts_with(point))
                .cloned()
                .ok_or_else(|| MetadataError::NoSuchPoint {
                    point: point.to_string(),
                    location: self.location(),
                })?
        };
        let bytes = self.backend.get(&format!("{PREFIX}{name}{SUFFIX}")).await?;
        Ok((name, bytes.to_vec()))
    }

    /// The point just older than `name`, if any.
    pub async fn older_than(&self, name: &str) -> Result<Option<String>, MetadataError> {
        Ok(self
            .points()
            .await?
            .into_iter()
            .rfind(|p| p.as_str() < name))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
