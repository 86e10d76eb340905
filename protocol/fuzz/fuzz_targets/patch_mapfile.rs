//! The daemon's in-place patcher on hostile halves: the input's first part is applied as
//! patches (offset u16, byte) to a valid half with spare room, the rest as changes (put or
//! remove of a key of the pool); opening, patching, finishing and reading the result never
//! panic, and a patched half whose bytes were not altered answers every change made.
#![no_main]
use libfuzzer_sys::fuzz_target;
use toolforge_nss_protocol::mapfile::{MapBuilder, MapView, Patcher, Table};
use toolforge_nss_protocol::ResponseKind;

fn key(i: u8) -> Vec<u8> {
    format!("user{}", i % 48).into_bytes()
}

fuzz_target!(|data: &[u8]| {
    let (patches, changes) = data.split_at(
        data.first()
            .map_or(0, |&n| usize::from(n) * 3)
            .min(data.len()),
    );
    let mut b = MapBuilder::new(1, 42);
    for i in 0..24u8 {
        let body = vec![b'x'; usize::from(i % 7) * 9];
        b.add(Table::PasswdByName, &key(i), 9, ResponseKind::Passwd, &body);
        b.add(Table::InitGroups, &key(i), 9, ResponseKind::NotFound, b"");
    }
    let mut half = b.build();
    half.resize(half.len() + 2048, 0);
    let len = half.len();
    for patch in patches.chunks_exact(3).skip(1) {
        let at = usize::from(u16::from_le_bytes([patch[0], patch[1]])) % len;
        half[at] = patch[2];
    }
    let altered = patches.len() >= 6;
    let mut made = Vec::new();
    if let Ok(mut p) = Patcher::open(&mut half) {
        for c in changes.chunks_exact(3) {
            let table = Table::ALL[usize::from(c[0] % 5)];
            let k = key(c[1]);
            if c[0] & 0x80 != 0 {
                if p.remove(table, &k).is_ok() {
                    made.push((table, k, None));
                }
            } else {
                let body = vec![c[2]; usize::from(c[2] % 32)];
                if p.put(table, &k, u64::from(c[2]), ResponseKind::Group, &body)
                    .is_ok()
                {
                    made.push((table, k, Some(body)));
                }
            }
        }
        let _ = p.finish(2);
    }
    if let Some(v) = MapView::publication(&half) {
        let mut last = std::collections::HashMap::new();
        for (t, k, body) in made {
            last.insert((t as usize, k), body);
        }
        for ((t, k), body) in last {
            let hit = v.get(Table::ALL[t], &k);
            if !altered {
                assert_eq!(hit.map(|h| h.body.to_vec()), body);
            }
        }
    }
});
