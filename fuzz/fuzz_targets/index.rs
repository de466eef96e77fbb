//! Index objects (opened plaintext): decode must never panic, and what it accepts
//! must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_store::format::index::{decode_index, encode_index};

fuzz_target!(|data: &[u8]| {
    if let Ok(packs) = decode_index(data) {
        assert_eq!(encode_index(&packs), data);
    }
});
