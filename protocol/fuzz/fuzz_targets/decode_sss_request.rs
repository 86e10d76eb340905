//! The daemon's SSSD-compatible decoder: a header and a request body from an untrusted container.
#![no_main]
use libfuzzer_sys::fuzz_target;
use toolforge_nss_protocol::sss::{SssHeader, SssRequest, SSS_HEADER_LEN, SSS_MAX_REQUEST_BODY};

fuzz_target!(|data: &[u8]| {
    let Ok(h) = SssHeader::decode(data, SSS_MAX_REQUEST_BODY) else {
        return;
    };
    let end = (SSS_HEADER_LEN + h.body_len()).min(data.len());
    if let Ok(req) = SssRequest::decode(h.command, &data[SSS_HEADER_LEN..end]) {
        // Whatever decodes re-encodes to the same request.
        let frame = req.encode();
        assert_eq!(SssRequest::decode(h.command, &frame[SSS_HEADER_LEN..]), Ok(req));
    }
});
