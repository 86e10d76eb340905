//! The daemon's decoder: a request body of any kind, from an untrusted container.
#![no_main]
use libfuzzer_sys::fuzz_target;
use toolforge_nss_protocol::{Capabilities, Request};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let kind = u16::from_le_bytes([data[0], data[1]]);
    if let Ok(req) = Request::decode(kind, &data[2..]) {
        // Whatever decodes re-encodes to the same body.
        let frame = req.encode(1, Capabilities::ALL);
        assert_eq!(Request::decode(kind, &frame[24..]), Ok(req));
    }
});
