//! Properties of the shared cache file: whatever is built is found exactly; arbitrary bytes,
//! truncations and corruptions of a valid file never panic and never read out of bounds.

use proptest::prelude::*;
use toolforge_nss_protocol::mapfile::{single_file, MapBuilder, MapView, Table};
use toolforge_nss_protocol::ResponseKind;

fn entries() -> impl Strategy<Value = Vec<(usize, Vec<u8>, u64, Vec<u8>)>> {
    prop::collection::vec(
        (
            0usize..5,
            prop::collection::vec(any::<u8>(), 1..20),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..64),
        ),
        0..200,
    )
}

/// Found by the property below: the builder's duplicate check read the key length from the
/// body-length field, so a key equal to the first bytes of a colliding record was dropped as
/// a "duplicate".
#[test]
fn a_key_that_prefixes_a_colliding_record_is_still_written() {
    let seed = 7_804_933_801_272_121_198;
    let keys: [&[u8]; 3] = [
        &[
            108, 87, 237, 55, 179, 23, 61, 84, 171, 75, 186, 237, 53, 21, 13,
        ],
        &[29, 79, 37, 239, 36, 114, 213, 83, 74, 164, 86],
        &[29],
    ];
    let bodies: [&[u8]; 3] = [&[], &[0], &[]];
    let mut b = MapBuilder::new(0, seed);
    for (k, body) in keys.iter().zip(bodies) {
        b.add(Table::GroupByGid, k, 0, ResponseKind::Group, body);
    }
    let bytes = single_file(&b.build());
    let v = MapView::new(&bytes).expect("a built file is valid");
    for (k, body) in keys.iter().zip(bodies) {
        assert_eq!(v.get(Table::GroupByGid, k).expect("written").body, body);
    }
}

proptest! {
    #[test]
    fn built_files_answer_exactly_what_was_added(es in entries(), seed in any::<u64>(), generation in any::<u64>()) {
        let mut b = MapBuilder::new(generation, seed);
        let mut first = std::collections::HashMap::new();
        for (t, k, exp, body) in &es {
            b.add(Table::ALL[*t], k, *exp, ResponseKind::Passwd, body);
            first.entry((*t, k.clone())).or_insert((*exp, body.clone()));
        }
        let bytes = single_file(&b.build());
        let v = MapView::new(&bytes).expect("a built file is valid");
        prop_assert_eq!(v.generation(), generation);
        for ((t, k), (exp, body)) in &first {
            let hit = v.get(Table::ALL[*t], k).expect("added keys are found");
            prop_assert_eq!(hit.expires_unix_secs, *exp);
            prop_assert_eq!(hit.body, body.as_slice());
        }
        prop_assert!(v.get(Table::PasswdByName, b"never-added-key-with-a-long-name").is_none()
            || first.contains_key(&(0, b"never-added-key-with-a-long-name".to_vec())));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), key in prop::collection::vec(any::<u8>(), 0..16)) {
        if let Some(v) = MapView::new(&bytes) {
            for t in Table::ALL {
                let _ = v.get(t, &key);
            }
        }
    }

    #[test]
    fn corrupted_valid_files_never_panic(es in entries(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16), cut in any::<prop::sample::Index>()) {
        let mut b = MapBuilder::new(1, 42);
        for (t, k, exp, body) in &es {
            b.add(Table::ALL[*t], k, *exp, ResponseKind::Group, body);
        }
        let mut bytes = single_file(&b.build());
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= v;
        }
        for len in [bytes.len(), cut.index(bytes.len() + 1)] {
            if let Some(v) = MapView::new(&bytes[..len]) {
                for (t, k, _, _) in &es {
                    let _ = v.get(Table::ALL[*t], k);
                }
            }
        }
    }
}

/// 300 random publications mixing positive, negative and duplicate keys over the five
/// tables: every positive key reads back (the first one added), a negative one reads back as
/// `NotFound` or not at all (left out is always safe), and every record is 8-aligned.
#[test]
fn negatives_duplicates_and_alignment() {
    use std::collections::HashMap;
    use toolforge_nss_protocol::mapfile::{single_file, MapBuilder, MapView, Table, REGION_HEADER};
    use toolforge_nss_protocol::ResponseKind;
    let mut seed: u64 = 99;
    let mut rnd = |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    for round in 0..300u64 {
        let mut b = MapBuilder::new(round, rnd(u64::MAX >> 1)).miss_key([round as u8; 16]);
        let mut want: HashMap<(usize, Vec<u8>), (u16, Vec<u8>)> = HashMap::new();
        let mut negatives: Vec<(usize, Vec<u8>)> = Vec::new();
        for _ in 0..rnd(400) {
            let t = rnd(5) as usize;
            let key: Vec<u8> = (0..rnd(20)).map(|_| b'a' + rnd(3) as u8).collect();
            if rnd(3) == 0 {
                b.add(Table::ALL[t], &key, 7, ResponseKind::NotFound, &[]);
                negatives.push((t, key));
            } else {
                let body: Vec<u8> = (0..rnd(13)).map(|_| rnd(256) as u8).collect();
                b.add(Table::ALL[t], &key, 7, ResponseKind::Passwd, &body);
                want.entry((t, key))
                    .or_insert((ResponseKind::Passwd as u16, body));
            }
        }
        for (t, k) in negatives {
            want.entry((t, k))
                .or_insert((ResponseKind::NotFound as u16, vec![]));
        }
        let publication = b.build();
        let file = single_file(&publication);
        let v = MapView::new(&file).unwrap();
        for ((t, k), (kind, body)) in &want {
            match v.get(Table::ALL[*t], k) {
                Some(h) => {
                    assert_eq!(h.kind, *kind, "round {round}");
                    assert_eq!(h.body, &body[..], "round {round}");
                }
                None => assert_eq!(
                    *kind,
                    ResponseKind::NotFound as u16,
                    "a positive key lost: round {round} table {t} {k:?}"
                ),
            }
        }
        // Records start 8-aligned within the publication (a stored key is 16 bytes in).
        for t in Table::ALL {
            for k in v.stored_keys(t) {
                let at = k.as_ptr() as usize - file.as_ptr() as usize - REGION_HEADER - 16;
                assert_eq!(at % 8, 0, "round {round}");
            }
        }
    }
}
