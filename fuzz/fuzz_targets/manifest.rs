//! Snapshot manifests (opened plaintext): decode must never panic, and an accepted
//! manifest's extents must cover exactly the disk size it states.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_store::format::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data) {
        let covered: u64 = m.extents.iter().map(|e| e.len()).sum();
        assert_eq!(covered, m.meta.size);
        assert_eq!(m.extents_with_offsets().count(), m.extents.len());
    }
});
