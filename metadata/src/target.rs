//! Where metadata points are kept: any Lifeboat storage backend (S3 bucket/prefix or
//! local directory — normally not at the protected site), under `metadata/`, one
//! object per point named `<UTC time>-<random>.age`, so names sort by time.
//! Points are written create-only and never modified.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use lifeboat_store::Backend;
use lifeboat_store::backend::{LockMode, ObjectLock};
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

    /// Stores a sealed point; returns its name, and until when it is locked. With
    /// `lock`, a bucket that has S3 Object Lock gets the point locked for the period
    /// (retention's `keep_within`, so a point is deletable when retention lets it
    /// go); elsewhere `lock` changes nothing.
    pub async fn put(
        &self,
        sealed: Vec<u8>,
        now: time::OffsetDateTime,
        lock: Option<(LockMode, std::time::Duration)>,
    ) -> Result<(String, Option<SystemTime>), MetadataError> {
        let stamp = now
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .expect("a UTC time formats");
        let mut random = [0u8; 4];
        rand::thread_rng().fill_bytes(&mut random);
        let name = format!("{stamp}-{}", hex(&random));
        let key = format!("{PREFIX}{name}{SUFFIX}");
        let lock = match lock {
            Some((mode, period)) if self.backend.object_lock_enabled().await? => Some(ObjectLock {
                mode,
                retain_until: SystemTime::from(now) + period,
            }),
            _ => None,
        };
        match lock {
            Some(l) => {
                self.backend
                    .put_locked(&key, Bytes::from(sealed), true, l)
                    .await?
            }
            None => {
                self.backend
                    .put_if_absent(&key, Bytes::from(sealed))
                    .await?
            }
        }
        Ok((name, lock.map(|l| l.retain_until)))
    }

    /// Until when a point is locked, if it is.
    pub async fn retain_until(&self, name: &str) -> Result<Option<SystemTime>, MetadataError> {
        Ok(self
            .backend
            .retain_until(&format!("{PREFIX}{name}{SUFFIX}"))
            .await?)
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

impl MetadataTarget {
    /// Deletes a point (an Object-Locked one stays, and the error says until when).
    pub async fn delete(&self, name: &str) -> Result<(), MetadataError> {
        Ok(self
            .backend
            .delete(&format!("{PREFIX}{name}{SUFFIX}"))
            .await?)
    }
}

/// When a point was written, from its name.
pub fn point_time(name: &str) -> Option<time::OffsetDateTime> {
    let stamp = name.split('-').next()?;
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(stamp, format)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

/// The points retention lets go at `now`: those older than `keep_within`, except
/// the newest `keep_last` (so a site that stopped writing points keeps its last
/// ones however old). Names that carry no time are never let go.
pub fn expired(
    points: &[String],
    now: time::OffsetDateTime,
    keep_within: time::Duration,
    keep_last: usize,
) -> Vec<String> {
    let mut dated: Vec<(time::OffsetDateTime, &String)> = points
        .iter()
        .filter_map(|p| point_time(p).map(|t| (t, p)))
        .collect();
    dated.sort();
    let protected = dated.len().saturating_sub(keep_last);
    dated[..protected]
        .iter()
        .filter(|(t, _)| now - *t > keep_within)
        .map(|(_, p)| (*p).clone())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> time::OffsetDateTime {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    }

    #[test]
    fn retention_keeps_a_week_of_twelve_hourly_points_and_the_last_ones() {
        // Twelve-hourly points for 10 days: 20 points, newest at day 10 12:00.
        let points: Vec<String> = (0..20)
            .map(|i| {
                format!(
                    "202612{:02}T{:02}0000Z-0000000{}",
                    1 + i / 2,
                    (i % 2) * 12,
                    i % 10
                )
            })
            .collect();
        let now = at("2026-12-10T13:00:00Z");
        let table: [(i64, usize, usize); 4] = [
            // (keep within days, keep last, points let go)
            (7, 3, 6),  // older than 2026-12-03T13:00: Dec 1-3 00:00 and 12:00 = 6
            (7, 0, 6),  // keep-last does not matter when the week holds more
            (0, 3, 17), // everything but the last three
            (30, 3, 0), // nothing is a month old
        ];
        for (days, keep_last, gone) in table {
            let out = expired(&points, now, time::Duration::days(days), keep_last);
            assert_eq!(
                out.len(),
                gone,
                "within {days} d, last {keep_last}: {out:?}"
            );
            for p in &out {
                assert!(now - point_time(p).unwrap() > time::Duration::days(days));
            }
        }
        // A site that stopped writing a year ago keeps its last points.
        let later = at("2027-12-10T00:00:00Z");
        assert_eq!(
            expired(&points, later, time::Duration::days(7), 3).len(),
            17
        );
        assert!(expired(&["garbage".to_string()], later, time::Duration::ZERO, 0).is_empty());
    }
}
