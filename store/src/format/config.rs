//! The repository configuration object: parameters fixed at `init`.

use serde::{Deserialize, Serialize};

use super::wire::DecodeError;

/// Sealed as JSON under the key `config`. Changing the chunker parameters after data
/// was written would only cost deduplication, but they are fixed so that every host
/// backing up into one repository cuts identical chunks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepoConfig {
    pub version: u32,
    /// Random repository id (hex), names the local catalog cache.
    pub id: String,
    pub created: String,
    pub chunker: ChunkerParams,
    /// Fixed-size chunking: disks are cut into aligned chunks of exactly this many
    /// bytes (the last one shorter) instead of content-defined ones, and `chunker` is
    /// `{size, size, size}`. Meant for repositories of changed-block-tracked VM disks:
    /// with chunks as small as the dirty bitmap's granules, an incremental backup reads
    /// and stores about what changed. Absent (content-defined) unless `init
    /// --fixed-chunks` chose it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_chunk_size: Option<u32>,
    /// All-zero runs at least this long (aligned to 4 KiB) are stored as zero extents.
    pub zero_run_min: u32,
    pub compression_level: i32,
    /// Packs are closed once they reach this many bytes.
    pub pack_size: u32,
    /// Immutable backups: every pack, index object and manifest is locked (S3 Object
    /// Lock) for this long after it is written, and prune extends the locks of data
    /// still in use. Absent in repositories made without `--immutable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutability: Option<Immutability>,
    /// Set when this repository is a replica (`init --replica-of`, FORMAT.md §15):
    /// chunk ids are computed with the source's id key, so equal chunks have equal
    /// ids on both sides and replication copies only what the destination lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_of: Option<ReplicaOf>,
}

/// What a replica records about its source. Lives only inside the sealed config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicaOf {
    /// The source repository's id (`config.id`).
    pub repository: String,
    /// Where the source was when the replica was made (for messages; not secret).
    pub location: String,
    /// The source's chunk-id key (secret: it would let the bucket's owner test
    /// for known content, so it never leaves the sealed config).
    pub chunk_id_key: ChunkIdKey,
}

/// A chunk-id key, hex in the sealed config; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ChunkIdKey(pub [u8; 32]);

impl std::fmt::Debug for ChunkIdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkIdKey(<redacted>)")
    }
}

impl Serialize for ChunkIdKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for ChunkIdKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(&text, &mut key)
            .map_err(|_| serde::de::Error::custom("chunk_id_key is not 64 hex digits"))?;
        Ok(Self(key))
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Immutability {
    pub period_secs: u64,
    pub mode: crate::backend::LockMode,
}

/// FastCDC (2020) sizes in bytes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        Self {
            min: 256 * 1024,
            avg: 1024 * 1024,
            max: 4 * 1024 * 1024,
        }
    }
}

/// Fixed chunk sizes `init --fixed-chunks` accepts: whole 4 KiB blocks (the unit of
/// zero detection and of every dirty bitmap), at most 4 MiB.
pub const FIXED_CHUNK_RANGE: (u32, u32) = (4096, 4 * 1024 * 1024);

/// Checks a fixed chunk size; the error says what is allowed.
pub fn validate_fixed_chunk_size(size: u32) -> Result<(), String> {
    let (lo, hi) = FIXED_CHUNK_RANGE;
    if !(lo..=hi).contains(&size) || !size.is_multiple_of(4096) {
        return Err(format!(
            "fixed chunk size {size} must be a multiple of 4096 bytes between {lo} and {hi}"
        ));
    }
    Ok(())
}

/// Limits fastcdc's v2020 chunker accepts (its constructor panics outside them).
pub const CHUNK_MIN_RANGE: (u32, u32) = (64, 1024 * 1024);
pub const CHUNK_AVG_RANGE: (u32, u32) = (256, 4 * 1024 * 1024);
pub const CHUNK_MAX_RANGE: (u32, u32) = (1024, 16 * 1024 * 1024);

impl ChunkerParams {
    /// Derives min = avg/4 and max = avg*4 from an average, the ratios fastcdc recommends.
    pub fn from_avg(avg: u32) -> Self {
        Self {
            min: avg / 4,
            avg,
            max: avg.saturating_mul(4),
        }
    }

    /// The parameters recorded alongside [`RepoConfig::fixed_chunk_size`]: every chunk
    /// is at most (and, the disk's end aside, exactly) `size` bytes.
    pub fn fixed(size: u32) -> Self {
        Self {
            min: size,
            avg: size,
            max: size,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let in_range = |v: u32, (lo, hi): (u32, u32), name: &str| {
            if v < lo || v > hi {
                Err(format!(
                    "chunk {name} size {v} is outside {lo}..={hi} bytes"
                ))
            } else {
                Ok(())
            }
        };
        in_range(self.min, CHUNK_MIN_RANGE, "minimum")?;
        in_range(self.avg, CHUNK_AVG_RANGE, "average")?;
        in_range(self.max, CHUNK_MAX_RANGE, "maximum")?;
        if !(self.min <= self.avg && self.avg <= self.max) {
            return Err(format!(
                "chunk sizes must satisfy min <= avg <= max (got {}/{}/{})",
                self.min, self.avg, self.max
            ));
        }
        Ok(())
    }
}

impl RepoConfig {
    /// Parses and checks an opened `config` object. Values a writer would act on
    /// (chunk sizes, pack size: backups allocate a pack buffer of that size) must be in
    /// range, so a damaged or hostile config fails here rather than later.
    pub fn decode(plain: &[u8]) -> Result<Self, DecodeError> {
        let invalid = |detail: String| DecodeError::Invalid {
            what: "config",
            detail,
        };
        let config: RepoConfig =
            serde_json::from_slice(plain).map_err(|e| invalid(e.to_string()))?;
        if config.version == 0 || config.version > crate::format::FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                what: "repository",
                found: config.version,
                supported: crate::format::FORMAT_VERSION,
            });
        }
        if config.version != crate::format::format_version(config.replica_of.is_some()) {
            return Err(invalid(format!(
                "format version {} does not match {}",
                config.version,
                if config.replica_of.is_some() {
                    "a replica"
                } else {
                    "a repository that is not a replica"
                }
            )));
        }
        match config.fixed_chunk_size {
            None => config.chunker.validate().map_err(invalid)?,
            Some(size) => {
                validate_fixed_chunk_size(size).map_err(invalid)?;
                if config.chunker != ChunkerParams::fixed(size) {
                    return Err(invalid(format!(
                        "fixed chunk size {size} disagrees with chunker {:?}",
                        config.chunker
                    )));
                }
            }
        }
        if !(1..=22).contains(&config.compression_level) {
            return Err(invalid(format!(
                "compression level {} is outside zstd's 1..=22",
                config.compression_level
            )));
        }
        if !(MIN_PACK_SIZE..=MAX_PACK_SIZE).contains(&config.pack_size) {
            return Err(invalid(format!(
                "pack size {} is outside {MIN_PACK_SIZE}..={MAX_PACK_SIZE} bytes",
                config.pack_size
            )));
        }
        Ok(config)
    }
}

pub const DEFAULT_ZERO_RUN_MIN: u32 = 64 * 1024;
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;
/// Packs smaller than this make too many requests; larger ones cost memory per upload.
pub const MIN_PACK_SIZE: u32 = 512 * 1024;
pub const MAX_PACK_SIZE: u32 = 256 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunker_validation() {
        assert!(ChunkerParams::default().validate().is_ok());
        assert!(ChunkerParams::from_avg(64 * 1024).validate().is_ok());
        assert!(ChunkerParams::from_avg(8 * 1024 * 1024).validate().is_err());
        assert!(ChunkerParams::from_avg(100).validate().is_err());
        let backwards = ChunkerParams {
            min: 4096,
            avg: 2048,
            max: 8192,
        };
        assert!(backwards.validate().is_err());
    }

    #[test]
    fn fixed_chunk_sizes() {
        for ok in [4096, 64 * 1024, 4 * 1024 * 1024] {
            assert!(validate_fixed_chunk_size(ok).is_ok(), "{ok}");
        }
        for bad in [0, 2048, 4097, 65 * 1000, 8 * 1024 * 1024] {
            assert!(validate_fixed_chunk_size(bad).is_err(), "{bad}");
        }
    }
}
