//! The repository config (opened plaintext JSON): an accepted config has chunker and
//! pack sizes a backup can use without panicking or allocating without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_store::format::config::RepoConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = RepoConfig::decode(data) {
        assert!(config.chunker.validate().is_ok());
        assert!(config.pack_size <= 256 * 1024 * 1024);
    }
});
