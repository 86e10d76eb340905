//! The module's decoder: a response body of any kind, from a daemon that may be hostile.
#![no_main]
use libfuzzer_sys::fuzz_target;
use toolforge_nss_protocol::ResponseRef;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let kind = u16::from_le_bytes([data[0], data[1]]) | 0x80;
    if let Ok(resp) = ResponseRef::decode(kind, &data[2..]) {
        // Views of decoded entries must be walkable without panics and agree with their counts.
        match &resp {
            ResponseRef::Group(g) => assert_eq!(g.members().count(), g.member_count()),
            ResponseRef::GroupBatch { entries, .. } => {
                for g in entries {
                    assert_eq!(g.members().count(), g.member_count());
                }
            }
            _ => {}
        }
        let _ = resp.to_owned();
    }
});
