//! Pack trailers and headers: the parser of an opened header (the first 8 input bytes
//! give the blob-area length it checks entries against), and the whole-pack path with
//! a fixed key (trailer and lengths; the tag check stops forged headers).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_store::crypto::{MasterKey, RepoKeys};
use lifeboat_store::format::pack::{decode_pack, header_len_from_trailer, parse_header};

fuzz_target!(|data: &[u8]| {
    if let Some((area, plain)) = data.split_first_chunk::<8>() {
        let blob_area = u64::from_le_bytes(*area);
        if let Ok(entries) = parse_header(plain, blob_area) {
            for e in entries {
                assert!(e.offset + u64::from(e.length) <= blob_area);
            }
        }
    }
    if data.len() >= 8 {
        let _ = header_len_from_trailer(&data[data.len() - 8..]);
    }
    let keys = RepoKeys::derive(&MasterKey::from_bytes([7; 32]));
    let _ = decode_pack(&keys, data);
});
