//! The frame header decoder, on both sides.
#![no_main]
use libfuzzer_sys::fuzz_target;
use toolforge_nss_protocol::{Header, MAX_REQUEST_BODY, MAX_RESPONSE_BODY};

fuzz_target!(|data: &[u8]| {
    for limit in [MAX_REQUEST_BODY, MAX_RESPONSE_BODY] {
        if let Ok(h) = Header::decode(data, limit) {
            assert!(h.body_len <= limit);
            assert_eq!(Header::decode(&h.encode(), limit), Ok(h));
        }
    }
});
