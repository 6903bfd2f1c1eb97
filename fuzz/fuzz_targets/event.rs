//! AWS event decoding on arbitrary text: no panic, and every decoded change carries a valid
//! region and parameter name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssm_resync::event::{Decoded, decode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(Decoded::Changes(changes)) = decode(text) {
        for c in changes {
            assert!(!c.name.is_empty() && c.name.len() <= 2048);
            assert!(c.region.contains('-'));
        }
    }
});
