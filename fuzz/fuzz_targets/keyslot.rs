//! Stored key slots (JSON): everything checked before the KDF runs. A slot that
//! passes must carry parameters within the limits, so argon2 cannot be made to
//! allocate gigabytes by a hostile slot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_store::keys::slot::parse_slot;

fuzz_target!(|data: &[u8]| {
    if let Ok(slot) = parse_slot("00112233aabbccdd", data) {
        assert!(slot.params.m_cost_kib <= 4 * 1024 * 1024);
        assert!(slot.params.t_cost <= 64);
    }
});
