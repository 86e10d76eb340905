//! Patching the published mirror is publishing it whole: after random changes (users and
//! groups added, renamed, renumbered, made ambiguous, removed; members and nested groups;
//! a policy that filters), the keys `records_for` gives, patched into the last publication,
//! leave exactly the records a whole publication of the state holds, in both schemas.

use std::collections::{BTreeMap, HashMap};

use toolforge_nss_config::{AttributeMap, PolicyConfig, Schema};
use toolforge_nss_protocol::mapfile::{MapBuilder, MapView, PatchError, Patcher, Table};

use super::*;
use crate::mapping::{Mapper, RawEntry};
use crate::mirror::state::Kind;

const UNTIL: u64 = 2_000_000_000;

fn entry(dn: &str, kv: &[(&str, Vec<String>)]) -> RawEntry {
    RawEntry::new(
        dn.into(),
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<HashMap<_, _>>(),
    )
}

/// A whole publication of `s`, in a half with room to patch.
fn whole(s: &State, policy: &Policy) -> Vec<u8> {
    let mut b = MapBuilder::new(1, 42).complete(Some(UNTIL));
    let mut added = 0;
    assert!(add_all(s, policy, &mut b, UNTIL, usize::MAX, &mut added));
    let mut half = b.build();
    let room = half.len() + (64 << 10);
    half.resize(room, 0);
    half
}

type Contents = BTreeMap<(usize, Vec<u8>), (u16, Vec<u8>, u64)>;

/// Every record of a publication, by table and key.
fn contents(half: &[u8]) -> Contents {
    let v = MapView::publication(half).expect("a publication");
    let mut out = BTreeMap::new();
    for t in Table::ALL {
        for k in v.stored_keys(t) {
            let hit = v.get(t, k).expect("a stored key is found");
            let old = out.insert(
                (t as usize, k.to_vec()),
                (hit.kind, hit.body.to_vec(), hit.expires_unix_secs),
            );
            assert!(old.is_none(), "one record per key");
        }
    }
    out
}

/// Patches `delta` into `half`: `Err` when there is no room (the caller publishes whole).
fn patch(half: &mut Vec<u8>, delta: &[Delta], generation: u64) -> Result<(), PatchError> {
    let mut p = Patcher::open(half)?;
    let until = p.complete_until().expect("complete");
    for d in delta {
        match &d.value {
            Some((kind, body)) => p.put(d.table, &d.key, until, *kind, body)?,
            None => p.remove(d.table, &d.key)?,
        };
    }
    p.finish(generation)?;
    Ok(())
}

fn run(schema: Schema, nesting: u32, seed: u64) {
    run_with(schema, nesting, seed, false)
}

/// `hard`: also DNs that do not hold the name (a rename keeps the DN), DNs and member DNs in
/// another case, entries the mapping refuses (the one held under the key goes), no policy
/// besides the defaults every other seed, and longer runs of changes between patches.
fn run_with(schema: Schema, nesting: u32, seed: u64, hard: bool) {
    let mapper = Mapper::new(schema, &AttributeMap::default());
    let policy = if hard && seed.is_multiple_of(2) {
        Policy::new(&PolicyConfig::default())
    } else {
        Policy::new(&PolicyConfig {
            filter_users: vec!["n3".into()],
            filter_groups: vec!["gr2".into()],
            min_id: 5002,
            ..PolicyConfig::default()
        })
    };
    let mut s = State::new(schema, nesting);
    let mut seed = seed;
    let mut rnd = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    // Hard: a third of the DNs are "entry=<key>" (a rename keeps them), some in upper case.
    let udn = move |name: &str, key: &str, r: u64| match (hard, r % 6) {
        (true, 0 | 1) => format!("entry={key},dc=x"),
        (true, 2) => format!("ENTRY={key},DC=X"),
        (true, 3) => format!("UID={name},OU={key},DC=X"),
        _ => format!("uid={name},ou={key},dc=x"),
    };
    let gdn = move |name: &str, key: &str, r: u64| match (hard, r % 6) {
        (true, 0 | 1) => format!("entry={key},dc=x"),
        (true, 2) => format!("Entry={key},dc=X"),
        (true, 3) => format!("CN={name},OU={key},DC=X"),
        _ => format!("cn={name},ou={key},dc=x"),
    };
    let member_attr = match schema {
        Schema::Rfc2307 => "memberUid",
        Schema::Rfc2307bis => "member",
    };
    let change = |s: &mut State, rnd: &mut dyn FnMut(u64) -> u64| {
        let op = rnd(10);
        if op < 4 {
            // Mostly the name member DNs expect (keys 30 to 39 share names with 0 to 9),
            // sometimes another (a rename, or an ambiguity).
            let k = rnd(40);
            let key = format!("u{k}");
            let name = match rnd(4) {
                0 => format!("n{}", rnd(30)),
                _ => format!("n{}", k % 30),
            };
            let uid = match hard && rnd(15) == 0 {
                true => "not a number".to_string(), // refused: the user held goes
                false => (5000 + rnd(30)).to_string(),
            };
            let gecos = format!("gecos {}", rnd(3));
            let e = entry(
                &udn(&name, &key, if hard { rnd(6) } else { 5 }),
                &[
                    ("uid", vec![name.clone()]),
                    ("uidNumber", vec![uid.clone()]),
                    ("gidNumber", vec![uid]),
                    ("gecos", vec![gecos]),
                    ("homeDirectory", vec![format!("/home/{name}")]),
                ],
            );
            let done = s.upsert(&mapper, Kind::User, &key, e);
            assert!(hard || done.is_ok(), "{done:?}");
        } else if op < 7 {
            let k = rnd(20);
            let key = format!("g{k}");
            let name = match rnd(4) {
                0 => format!("gr{}", rnd(15)),
                _ => format!("gr{}", k % 15),
            };
            let gid = match rnd(4) {
                0 => 7000 + rnd(15),
                _ => 7000 + k % 15,
            }
            .to_string();
            let gid = match hard && rnd(20) == 0 {
                true => "-".to_string(), // refused
                false => gid,
            };
            let mut members = Vec::new();
            for _ in 0..rnd(6) {
                let (u, g) = (rnd(40), rnd(20));
                let user = format!("n{}", u % 30);
                members.push(match schema {
                    Schema::Rfc2307 => user,
                    Schema::Rfc2307bis if rnd(3) == 0 => {
                        let r = if hard { rnd(6) } else { 5 };
                        gdn(&format!("gr{}", g % 15), &format!("g{g}"), r)
                    }
                    Schema::Rfc2307bis => {
                        let r = if hard { rnd(6) } else { 5 };
                        udn(&user, &format!("u{u}"), r)
                    }
                });
            }
            let e = entry(
                &gdn(&name, &key, if hard { rnd(6) } else { 5 }),
                &[
                    ("cn", vec![name]),
                    ("gidNumber", vec![gid]),
                    (member_attr, members),
                ],
            );
            let done = s.upsert(&mapper, Kind::Group, &key, e);
            assert!(hard || done.is_ok(), "{done:?}");
        } else if op < 9 {
            s.remove(Kind::User, &format!("u{}", rnd(40)));
        } else {
            s.remove(Kind::Group, &format!("g{}", rnd(20)));
        }
    };
    for _ in 0..200 {
        change(&mut s, &mut rnd);
    }
    assert!(s.take_changes().full, "a new state is published whole");
    let mut half = whole(&s, &policy);
    let (mut patches, mut rebuilds) = (0, 0);
    for round in 0..400u64 {
        for _ in 0..=rnd(if hard { 20 } else { 8 }) {
            change(&mut s, &mut rnd);
        }
        let changes = s.take_changes();
        assert!(
            !changes.full,
            "a few changes are noted, not a full publication"
        );
        let delta = records_for(&s, &policy, &changes);
        match patch(&mut half, &delta, round + 2) {
            Ok(()) => patches += 1,
            Err(PatchError::NoRoom) => {
                rebuilds += 1;
                half = whole(&s, &policy);
            }
            Err(e) => panic!("round {round}: {e}"),
        }
        assert_eq!(
            contents(&half),
            contents(&whole(&s, &policy)),
            "{schema:?} nesting {nesting}, round {round}"
        );
    }
    let least = if hard { 150 } else { 300 };
    assert!(patches > least, "{patches} patches, {rebuilds} rebuilds");
}

#[test]
fn patched_publications_equal_whole_ones_rfc2307() {
    run(Schema::Rfc2307, 0, 1);
    run(Schema::Rfc2307, 0, 2);
}

#[test]
fn patched_publications_equal_whole_ones_rfc2307bis() {
    run(Schema::Rfc2307bis, 1, 3);
    run(Schema::Rfc2307bis, 2, 4);
    run(Schema::Rfc2307bis, 0, 5);
}

#[test]
fn a_change_is_noted_by_the_keys_it_affects_only() {
    let mapper = Mapper::new(Schema::Rfc2307bis, &AttributeMap::default());
    let mut s = State::new(Schema::Rfc2307bis, 1);
    for i in 0..100 {
        let name = format!("user{i}");
        let e = entry(
            &format!("uid={name},ou=people,dc=x"),
            &[
                ("uid", vec![name.clone()]),
                ("uidNumber", vec![(6000 + i).to_string()]),
                ("gidNumber", vec![(6000 + i).to_string()]),
                ("homeDirectory", vec!["/h".into()]),
            ],
        );
        s.upsert(&mapper, Kind::User, &format!("k{i}"), e).unwrap();
    }
    let group = |members: Vec<String>| {
        entry(
            "cn=tools.a,ou=groups,dc=x",
            &[
                ("cn", vec!["tools.a".into()]),
                ("gidNumber", vec!["9000".into()]),
                ("member", members),
            ],
        )
    };
    let dn = |i: u32| format!("uid=user{i},ou=people,dc=x");
    s.upsert(&mapper, Kind::Group, "g", group(vec![dn(1), dn(2)]))
        .unwrap();
    s.take_changes();
    // A member added: the group, and the initgroups of that member only.
    s.upsert(&mapper, Kind::Group, "g", group(vec![dn(1), dn(2), dn(3)]))
        .unwrap();
    let changes = s.take_changes();
    let keys = s.changed_keys(&changes);
    assert_eq!(keys.groups, vec!["tools.a"]);
    assert_eq!(keys.gids, vec![9000]);
    assert_eq!(keys.users, vec!["user3"]);
    // Renumbered: every member's initgroups.
    let mut renumbered = group(vec![dn(1), dn(3)]);
    renumbered
        .attrs
        .insert("gidnumber".into(), vec!["9001".into()]);
    s.upsert(&mapper, Kind::Group, "g", renumbered).unwrap();
    let changes = s.take_changes();
    let keys = s.changed_keys(&changes);
    assert_eq!(keys.gids, vec![9000, 9001]);
    assert_eq!(keys.users, vec!["user1", "user2", "user3"]);
    // A user's gecos: that user, and the group whose member list shows it.
    let e = entry(
        &dn(50),
        &[
            ("uid", vec!["user50".into()]),
            ("uidNumber", vec!["6050".into()]),
            ("gidNumber", vec!["6050".into()]),
            ("gecos", vec!["new".into()]),
            ("homeDirectory", vec!["/h".into()]),
        ],
    );
    s.upsert(&mapper, Kind::User, "k50", e).unwrap();
    let changes = s.take_changes();
    let keys = s.changed_keys(&changes);
    assert_eq!(keys.users, vec!["user50"]);
    assert_eq!(keys.uids, vec![6050]);
    assert!(keys.groups.is_empty(), "{keys:?}");
}

#[test]
fn patched_publications_equal_whole_ones_with_stable_dns_case_and_refusals() {
    for seed in 10..14 {
        run_with(Schema::Rfc2307, 0, seed, true);
    }
    for (nesting, seed) in [(0, 20), (1, 21), (2, 22), (3, 23), (3, 24), (5, 25)] {
        run_with(Schema::Rfc2307bis, nesting, seed, true);
    }
}
