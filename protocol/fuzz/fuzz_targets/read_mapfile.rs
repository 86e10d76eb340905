//! The module's cache file reader, on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use toolforge_nss_protocol::mapfile::{MapView, Table};

fuzz_target!(|data: &[u8]| {
    if let Some(v) = MapView::new(data) {
        for t in [Table::PasswdByName, Table::PasswdByUid, Table::GroupByName, Table::GroupByGid, Table::InitGroups] {
            for key in [&b"alice"[..], &1000u32.to_le_bytes(), b""] {
                let _ = v.get(t, key);
            }
        }
    }
});
