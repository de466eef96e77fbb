//! Making a replica: a new repository that shares its source's chunk-id key and
//! chunker settings (so equal data has equal ids on both sides), and nothing else —
//! its master key, passphrase, key slots, retention and Object Lock are its own.
//! FORMAT.md §15 is the record of what a replica learns about its source.

use lifeboat_store::format::config::{ChunkIdKey, ReplicaOf};
use lifeboat_store::{InitOptions, Repository};

/// `base` (the destination's own pack size, compression, Object Lock, KDF…) with the
/// settings a replica of `source` must share: chunker, fixed chunk size, zero-run
/// threshold and the chunk-id key.
pub fn replica_options(source: &Repository, base: InitOptions) -> InitOptions {
    let config = source.config();
    InitOptions {
        chunker: config.chunker,
        fixed_chunk_size: config.fixed_chunk_size,
        zero_run_min: config.zero_run_min,
        replica_of: Some(ReplicaOf {
            repository: config.id.clone(),
            location: source.location(),
            chunk_id_key: ChunkIdKey(*source.keys().id_key()),
        }),
        ..base
    }
}
