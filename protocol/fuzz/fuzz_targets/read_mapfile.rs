//! The module's cache file reader on hostile files: the input is applied as patches
//! (offset u16, byte) to a valid file, so the fuzzer reaches the slot and record checks
//! instead of stopping at the magic; the raw input is also read as a file of its own.
#![no_main]
use libfuzzer_sys::fuzz_target;
use toolforge_nss_protocol::mapfile::{single_file, MapBuilder, MapView, Table};
use toolforge_nss_protocol::ResponseKind;


fn read_all(bytes: &[u8]) {
    if let Some(v) = MapView::new(bytes) {
        for t in Table::ALL {
            for i in 0..40u32 {
                let name = format!("user{i}");
                let _ = v.get(t, name.as_bytes());
                let _ = v.get(t, &(1000 + i).to_le_bytes());
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    read_all(data);
    let mut b = MapBuilder::new(1, 42);
    for i in 0..40u32 {
        let name = format!("user{i}");
        let body = vec![b'x'; (i % 7) as usize * 9];
        b.add(Table::PasswdByName, name.as_bytes(), 9, ResponseKind::Passwd, &body);
        b.add(Table::PasswdByUid, &(1000 + i).to_le_bytes(), 9, ResponseKind::Passwd, &body);
        b.add(Table::InitGroups, name.as_bytes(), 9, ResponseKind::NotFound, b"");
    }
    let mut file = single_file(&b.build());
    let len = file.len();
    for patch in data.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([patch[0], patch[1]])) * 2 % len;
        file[at] = patch[2];
    }
    read_all(&file);
    // Truncated at a fuzz-chosen point too.
    let cut = data.first().map_or(len, |&c| len * usize::from(c) / 255);
    read_all(&file[..cut]);
});
