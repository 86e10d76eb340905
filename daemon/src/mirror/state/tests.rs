//! Unit tests of the mirror state: indexes, ambiguity, renames, deletes, membership.

use super::*;
use toolforge_nss_config::{AttributeMap, PolicyConfig};

fn user(name: &str, uid: &str) -> RawEntry {
    RawEntry::of(
        &format!("uid={name},ou=people,dc=x"),
        &[
            ("uid", &[name]),
            ("uidNumber", &[uid]),
            ("gidNumber", &[uid]),
            ("homeDirectory", &["/home/x"]),
        ],
    )
}

#[test]
fn bis_members_renames_and_reverse_index_stay_consistent() {
    let mapper = Mapper::new(Schema::Rfc2307bis, &AttributeMap::default());
    let policy = Policy::new(&PolicyConfig::default());
    let mut s = State::new(Schema::Rfc2307bis, 2);
    s.upsert(&mapper, Kind::User, "u1", user("alice", "5001"))
        .unwrap();
    s.upsert(&mapper, Kind::User, "u2", user("bob", "5002"))
        .unwrap();
    s.upsert(
        &mapper,
        Kind::Group,
        "g1",
        RawEntry::of(
            "cn=inner,ou=groups,dc=x",
            &[
                ("cn", &["inner"]),
                ("gidNumber", &["7001"]),
                ("member", &["uid=alice,ou=people,dc=x"]),
            ],
        ),
    )
    .unwrap();
    s.upsert(
        &mapper,
        Kind::Group,
        "g2",
        RawEntry::of(
            "cn=outer,ou=groups,dc=x",
            &[
                ("cn", &["outer"]),
                ("gidNumber", &["7002"]),
                (
                    "member",
                    &[
                        "cn=inner,ou=groups,dc=x",
                        "UID=bob,ou=people,dc=x",
                        "uid=ghost,ou=people,dc=x",
                    ],
                ),
            ],
        ),
    )
    .unwrap();
    let Answer::Group(g) = s.group_by_name("outer", &policy) else {
        panic!()
    };
    assert_eq!(g.group.members, vec!["alice", "bob"]);
    assert_eq!(s.groups_of("alice", &policy), Answer::Ids(vec![7001, 7002]));
    // alice renamed (same key, new DN): the old DN no longer resolves.
    s.upsert(&mapper, Kind::User, "u1", user("alicia", "5001"))
        .unwrap();
    let Answer::Group(g) = s.group_by_name("outer", &policy) else {
        panic!()
    };
    assert_eq!(g.group.members, vec!["bob"]);
    assert_eq!(s.user_by_name("alice", &policy), Answer::NotFound);
    assert!(matches!(s.user_by_uid(5001, &policy), Answer::User(u) if u.passwd.name == "alicia"));
    // A group deleted leaves no trace in the reverse index.
    assert!(s.remove(Kind::Group, "g2"));
    assert_eq!(s.groups_of("bob", &policy), Answer::NotFound);
    // Two users claiming one uid: neither is served by uid.
    s.upsert(&mapper, Kind::User, "u3", user("carol", "5002"))
        .unwrap();
    assert_eq!(s.user_by_uid(5002, &policy), Answer::NotFound);
    assert!(matches!(s.user_by_name("carol", &policy), Answer::User(_)));
}

fn group(dn: &str, name: &str, gid: &str, members: &[&str]) -> RawEntry {
    RawEntry::of(
        dn,
        &[("cn", &[name]), ("gidNumber", &[gid]), ("member", members)],
    )
}

fn names(a: Answer) -> Vec<String> {
    match a {
        Answer::Group(g) => g.group.members,
        other => panic!("not a group: {other:?}"),
    }
}

#[test]
fn uuid_keys_are_packed_and_any_other_key_stays_text() {
    for k in [
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "0F8FAD5B-D9CB-469F-A165-70867728950E",
        "0f8fad5b-d9cb-469f-a165-70867728950",
        "0f8fad5bxd9cb-469f-a165-70867728950e",
        "dn:uid=alice,ou=people,dc=x",
        "",
    ] {
        assert_eq!(Key::new(k).text(), k);
    }
    assert!(matches!(
        Key::new("0f8fad5b-d9cb-469f-a165-70867728950e"),
        Key::Uuid(_)
    ));
    assert!(matches!(
        Key::new("0F8FAD5B-D9CB-469F-A165-70867728950E"),
        Key::Text(_)
    ));
}

#[test]
fn a_member_dn_before_its_user_resolves_when_the_user_arrives() {
    let mapper = Mapper::new(Schema::Rfc2307bis, &AttributeMap::default());
    let policy = Policy::new(&PolicyConfig::default());
    let mut s = State::new(Schema::Rfc2307bis, 2);
    s.upsert(
        &mapper,
        Kind::Group,
        "g1",
        group(
            "cn=t,ou=groups,dc=x",
            "t",
            "7001",
            &["uid=alice,ou=people,dc=x"],
        ),
    )
    .unwrap();
    assert!(names(s.group_by_name("t", &policy)).is_empty());
    assert_eq!(s.groups_of("alice", &policy), Answer::NotFound);
    s.upsert(&mapper, Kind::User, "u1", user("alice", "5001"))
        .unwrap();
    assert_eq!(names(s.group_by_name("t", &policy)), vec!["alice"]);
    assert_eq!(s.groups_of("alice", &policy), Answer::Ids(vec![7001]));
    // Deleted again: the DN stays listed and resolves to nobody.
    assert!(s.remove(Kind::User, "u1"));
    assert!(names(s.group_by_name("t", &policy)).is_empty());
    assert_eq!(s.values.len, 2, "the member DN and the group's own DN");
    // The group gone too: nothing interned is left.
    assert!(s.remove(Kind::Group, "g1"));
    assert_eq!(s.values.len, 0);
    assert!(s.is_empty());
}

#[test]
fn an_id_reused_after_a_delete_carries_nothing_of_the_old_entry() {
    let mapper = Mapper::new(Schema::Rfc2307bis, &AttributeMap::default());
    let policy = Policy::new(&PolicyConfig::default());
    let mut s = State::new(Schema::Rfc2307bis, 2);
    s.upsert(&mapper, Kind::User, "u1", user("alice", "5001"))
        .unwrap();
    s.upsert(&mapper, Kind::User, "u2", user("bob", "5002"))
        .unwrap();
    s.upsert(
        &mapper,
        Kind::Group,
        "g1",
        group(
            "cn=t,ou=groups,dc=x",
            "t",
            "7001",
            &["uid=alice,ou=people,dc=x", "uid=bob,ou=people,dc=x"],
        ),
    )
    .unwrap();
    let alice_id = s.user_id(&Key::new("u1")).unwrap();
    assert!(s.remove(Kind::User, "u1"));
    s.upsert(&mapper, Kind::User, "u3", user("carol", "5001"))
        .unwrap();
    assert_eq!(s.user_id(&Key::new("u3")), Some(alice_id), "id reused");
    assert_eq!(s.user_by_name("alice", &policy), Answer::NotFound);
    assert!(matches!(s.user_by_uid(5001, &policy), Answer::User(u) if u.passwd.name == "carol"));
    assert_eq!(names(s.group_by_name("t", &policy)), vec!["bob"]);
    assert_eq!(s.groups_of("carol", &policy), Answer::NotFound);
    assert_eq!(s.dn_of(Kind::User, "u1"), None);
    assert_eq!(s.dn_of(Kind::User, "u3"), Some("uid=carol,ou=people,dc=x"));
    // A group's id reused: the reverse index of the old group's members is gone.
    assert!(s.remove(Kind::Group, "g1"));
    s.upsert(
        &mapper,
        Kind::Group,
        "g2",
        group(
            "cn=u,ou=groups,dc=x",
            "u",
            "7002",
            &["uid=carol,ou=people,dc=x"],
        ),
    )
    .unwrap();
    assert_eq!(s.groups_of("bob", &policy), Answer::NotFound);
    assert_eq!(s.groups_of("carol", &policy), Answer::Ids(vec![7002]));
    let mut keys = s.keys(Kind::User);
    keys.sort();
    assert_eq!(keys, vec!["u2", "u3"]);
}

#[test]
fn nesting_cycles_and_ambiguous_names_as_in_lookup_mode() {
    let mapper = Mapper::new(Schema::Rfc2307bis, &AttributeMap::default());
    let policy = Policy::new(&PolicyConfig::default());
    let mut s = State::new(Schema::Rfc2307bis, 1);
    s.upsert(&mapper, Kind::User, "u1", user("alice", "5001"))
        .unwrap();
    // a -> b -> c -> a (a cycle), alice in c.
    for (k, n, gid, m) in [
        ("ga", "a", "7001", "cn=b,dc=x"),
        ("gb", "b", "7002", "cn=c,dc=x"),
        ("gc", "c", "7003", "cn=a,dc=x"),
    ] {
        s.upsert(
            &mapper,
            Kind::Group,
            k,
            group(&format!("cn={n},dc=x"), n, gid, &[m]),
        )
        .unwrap();
    }
    s.upsert(
        &mapper,
        Kind::Group,
        "gc",
        group(
            "cn=c,dc=x",
            "c",
            "7003",
            &["cn=a,dc=x", "uid=alice,ou=people,dc=x"],
        ),
    )
    .unwrap();
    // Nesting 1: b expanded from a (level 1), c listed by b met at level 2: not expanded.
    assert!(names(s.group_by_name("a", &policy)).is_empty());
    assert_eq!(names(s.group_by_name("b", &policy)), vec!["alice"]);
    // initgroups climbs one level above the direct group.
    assert_eq!(s.groups_of("alice", &policy), Answer::Ids(vec![7002, 7003]));
    // A second group named b: neither is served by name (each still by its own gid).
    s.upsert(
        &mapper,
        Kind::Group,
        "gb2",
        group("cn=b2,dc=x", "b", "7004", &[]),
    )
    .unwrap();
    assert_eq!(s.group_by_name("b", &policy), Answer::NotFound);
    assert!(matches!(s.group_by_gid(7004, &policy), Answer::Group(_)));
    let served: Vec<String> = s
        .served_groups(&policy)
        .map(|(g, _)| g.group.name)
        .collect();
    assert_eq!(served.len(), 2);
    assert!(!served.iter().any(|n| n == "b"));
    assert!(s.remove(Kind::Group, "gb2"));
    assert!(matches!(s.group_by_name("b", &policy), Answer::Group(_)));
}

#[test]
fn compact_keeps_every_index() {
    let mapper = Mapper::new(Schema::Rfc2307, &AttributeMap::default());
    let policy = Policy::new(&PolicyConfig::default());
    let mut s = State::new(Schema::Rfc2307, 2);
    for i in 0..300u32 {
        s.upsert(
            &mapper,
            Kind::User,
            &format!("u{i}"),
            user(&format!("n{i}"), &(5000 + i).to_string()),
        )
        .unwrap();
    }
    for i in 0..290u32 {
        assert!(s.remove(Kind::User, &format!("u{i}")));
    }
    s.upsert(
        &mapper,
        Kind::Group,
        "g",
        RawEntry::of(
            "cn=g,dc=x",
            &[
                ("cn", &["g"]),
                ("gidNumber", &["7000"]),
                ("memberUid", &["n295", "n295", "ghost"]),
            ],
        ),
    )
    .unwrap();
    s.compact();
    assert_eq!(s.counts(), (10, 1));
    for i in 290..300u32 {
        assert!(
            matches!(s.user_by_uid(5000 + i, &policy), Answer::User(u) if u.passwd.name == format!("n{i}"))
        );
    }
    assert_eq!(names(s.group_by_gid(7000, &policy)), vec!["ghost", "n295"]);
    assert_eq!(s.groups_of("n295", &policy), Answer::Ids(vec![7000]));
    assert_eq!(s.groups_of("ghost", &policy), Answer::Ids(vec![7000]));
    let served: Vec<_> = s.served_users(&policy).collect();
    assert_eq!(served.len(), 10);
    assert!(served.iter().all(|(_, unique)| *unique));
    s.upsert(&mapper, Kind::User, "new", user("n0", "5000"))
        .unwrap();
    assert!(matches!(s.user_by_name("n0", &policy), Answer::User(_)));
}

#[test]
fn strings_of_removed_entries_are_repacked_away() {
    let mapper = Mapper::new(Schema::Rfc2307bis, &AttributeMap::default());
    let policy = Policy::new(&PolicyConfig::default());
    let mut s = State::new(Schema::Rfc2307bis, 2);
    let gecos = "g".repeat(1000);
    let with_gecos = |name: &str, uid: u32| {
        let mut e = user(name, &uid.to_string());
        e.attrs.insert("gecos".into(), vec![gecos.clone()]);
        e
    };
    for i in 0..3000u32 {
        s.upsert(
            &mapper,
            Kind::User,
            &format!("u{i}"),
            with_gecos(&format!("n{i}"), 5000 + i),
        )
        .unwrap();
    }
    s.upsert(
        &mapper,
        Kind::Group,
        "g",
        group("cn=g,dc=x", "g", "7000", &["uid=n2999,ou=people,dc=x"]),
    )
    .unwrap();
    let full = s.texts.buf.len();
    for i in 0..2900u32 {
        assert!(s.remove(Kind::User, &format!("u{i}")));
    }
    assert!(s.texts.buf.len() < full / 2, "repacked as it went");
    assert!(s.texts.dead * 2 <= s.texts.buf.len() + REPACK_MIN);
    s.compact();
    assert_eq!(s.texts.dead, 0);
    for i in 2900..3000u32 {
        let Answer::User(u) = s.user_by_uid(5000 + i, &policy) else {
            panic!("n{i} lost")
        };
        assert_eq!(u.passwd.name, format!("n{i}"));
        assert_eq!(u.passwd.gecos, gecos);
        assert_eq!(u.dn, format!("uid=n{i},ou=people,dc=x"));
    }
    assert_eq!(names(s.group_by_name("g", &policy)), vec!["n2999"]);
    assert_eq!(s.groups_of("n2999", &policy), Answer::Ids(vec![7000]));
    assert_eq!(s.dn_of(Kind::Group, "g"), Some("cn=g,dc=x"));
}

#[test]
fn a_toolforge_shaped_mirror_is_small() {
    // 10,000 users with entryUUID keys, 1,000 tool groups of 5 members and one group of
    // every user: about 250 bytes an entry held (the layout of hash maps of UUID strings
    // it replaced held about 1,200 on the Toolforge-shaped directory).
    let mapper = Mapper::new(Schema::Rfc2307bis, &AttributeMap::default());
    let mut s = State::new(Schema::Rfc2307bis, 2);
    let uuid = |i: u32| format!("{i:08x}-0000-4000-8000-{i:012x}");
    let dn = |i: u32| format!("uid=user{i},ou=people,dc=wikimedia,dc=org");
    for i in 0..10_000u32 {
        let mut e = user(&format!("user{i}"), &(10_000 + i).to_string());
        e.dn = dn(i);
        e.attrs
            .insert("loginShell".into(), vec!["/bin/bash".into()]);
        e.attrs
            .insert("homeDirectory".into(), vec![format!("/home/user{i}")]);
        s.upsert(&mapper, Kind::User, &uuid(i), e).unwrap();
    }
    for t in 0..1_000u32 {
        let members: Vec<String> = (0..5).map(|j| dn((t * 7 + j) % 10_000)).collect();
        let members: Vec<&str> = members.iter().map(String::as_str).collect();
        s.upsert(
            &mapper,
            Kind::Group,
            &uuid(100_000 + t),
            group(
                &format!("cn=tools.t{t},ou=servicegroups,dc=wikimedia,dc=org"),
                &format!("tools.t{t}"),
                &(50_000 + t).to_string(),
                &members,
            ),
        )
        .unwrap();
    }
    let all: Vec<String> = (0..10_000).map(dn).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    s.upsert(
        &mapper,
        Kind::Group,
        &uuid(200_000),
        group(
            "cn=project-tools,ou=groups,dc=wikimedia,dc=org",
            "project-tools",
            "40000",
            &all,
        ),
    )
    .unwrap();
    s.compact();
    let per_entry = s.heap_bytes() / s.len();
    assert!(
        (100..400).contains(&per_entry),
        "{per_entry} bytes an entry ({} in all)",
        s.heap_bytes()
    );
}

#[test]
fn policy_applies_to_mirror_answers() {
    let mapper = Mapper::new(Schema::Rfc2307, &AttributeMap::default());
    let policy = Policy::new(&PolicyConfig::default());
    let mut s = State::new(Schema::Rfc2307, 2);
    s.upsert(&mapper, Kind::User, "r", user("root", "0"))
        .unwrap();
    s.upsert(&mapper, Kind::User, "z", user("zero", "0"))
        .unwrap();
    s.upsert(
        &mapper,
        Kind::Group,
        "g",
        RawEntry::of(
            "cn=wheel,dc=x",
            &[
                ("cn", &["wheel"]),
                ("gidNumber", &["0"]),
                ("memberUid", &["zero"]),
            ],
        ),
    )
    .unwrap();
    assert_eq!(s.user_by_name("root", &policy), Answer::NotFound);
    assert_eq!(s.user_by_uid(0, &policy), Answer::NotFound);
    assert_eq!(s.group_by_gid(0, &policy), Answer::NotFound);
    assert_eq!(s.groups_of("zero", &policy), Answer::NotFound);
}

#[test]
/// 60,000 random upserts and removes of users and groups (RFC 2307bis, one nesting level,
/// long gecos so that the string buffer repacks again and again, occasional compaction),
/// checked against a naive model: names, uids, DNs and resolved members agree throughout.
fn random_changes_agree_with_a_naive_model() {
    use std::collections::{BTreeMap, BTreeSet};
    let mapper = Mapper::new(Schema::Rfc2307bis, &AttributeMap::default());
    let policy = Policy::new(&PolicyConfig::default());
    let mut s = State::new(Schema::Rfc2307bis, 1);
    let mut seed: u64 = 0x1234_5678;
    let mut rnd = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let gecos = "g".repeat(4000);
    // model: key -> (name, uid, dn)
    let mut users: BTreeMap<String, (String, u32, String)> = BTreeMap::new();
    // key -> (name, gid, dn, member dns)
    let mut groups: BTreeMap<String, (String, u32, String, Vec<String>)> = BTreeMap::new();
    let udn = |name: &str, key: &str| format!("uid={name},ou={key},dc=x");
    let gdn = |name: &str, key: &str| format!("cn={name},ou={key},dc=x");
    for step in 0..60000u32 {
        let op = rnd(10);
        if op < 4 {
            let key = format!("u{}", rnd(40));
            let name = format!("n{}", rnd(30));
            let uid = 5000 + rnd(30) as u32;
            let mut e = user(&name, &uid.to_string());
            e.dn = udn(&name, &key);
            e.attrs.insert(
                "gecos".into(),
                vec![gecos[..(rnd(4000) as usize)].to_string()],
            );
            s.upsert(&mapper, Kind::User, &key, e).unwrap();
            users.insert(key.clone(), (name.clone(), uid, udn(&name, &key)));
        } else if op < 6 {
            let key = format!("g{}", rnd(20));
            let name = format!("gr{}", rnd(15));
            let gid = 7000 + rnd(15) as u32;
            let mut members = Vec::new();
            for _ in 0..rnd(6) {
                if rnd(3) == 0 {
                    members.push(gdn(&format!("gr{}", rnd(15)), &format!("g{}", rnd(20))));
                } else {
                    members.push(udn(&format!("n{}", rnd(30)), &format!("u{}", rnd(40))));
                }
            }
            let refs: Vec<&str> = members.iter().map(String::as_str).collect();
            let e = group(&gdn(&name, &key), &name, &gid.to_string(), &refs);
            s.upsert(&mapper, Kind::Group, &key, e).unwrap();
            groups.insert(key.clone(), (name.clone(), gid, gdn(&name, &key), members));
        } else if op < 8 {
            let key = format!("u{}", rnd(40));
            assert_eq!(s.remove(Kind::User, &key), users.remove(&key).is_some());
        } else if op < 9 {
            let key = format!("g{}", rnd(20));
            assert_eq!(s.remove(Kind::Group, &key), groups.remove(&key).is_some());
        } else if rnd(50) == 0 {
            s.compact();
        }
        if step % 97 != 0 {
            continue;
        }
        // check users by name and uid
        for i in 0..30 {
            let name = format!("n{i}");
            let holders: Vec<_> = users.values().filter(|u| u.0 == name).collect();
            match s.user_by_name(&name, &policy) {
                Answer::User(u) => {
                    assert_eq!(holders.len(), 1, "step {step} {name}");
                    assert_eq!(u.passwd.uid, holders[0].1);
                    assert_eq!(u.dn, holders[0].2);
                }
                Answer::NotFound => assert_ne!(holders.len(), 1, "step {step} {name}"),
                _ => unreachable!(),
            }
        }
        // group members (users, one nested level)
        let user_by_dn = |dn: &str| users.values().find(|u| u.2 == dn).map(|u| u.0.clone());
        let group_by_dn = |dn: &str| groups.values().find(|g| g.2 == dn);
        for (_, (gname, _gid, _dn, members)) in groups.iter() {
            if groups.values().filter(|g| &g.0 == gname).count() != 1 {
                continue;
            }
            let mut want = BTreeSet::new();
            let mut seen = BTreeSet::new();
            fn walk(
                ms: &[String],
                level: u32,
                want: &mut BTreeSet<String>,
                seen: &mut BTreeSet<String>,
                u: &dyn Fn(&str) -> Option<String>,
                g: &dyn Fn(&str) -> Option<Vec<String>>,
            ) {
                for m in ms {
                    if let Some(n) = u(m) {
                        want.insert(n);
                    } else if let Some(sub) = g(m) {
                        if level <= 1 && seen.insert(m.clone()) {
                            walk(&sub, level + 1, want, seen, u, g);
                        }
                    }
                }
            }
            walk(members, 1, &mut want, &mut seen, &user_by_dn, &|d| {
                group_by_dn(d).map(|g| g.3.clone())
            });
            let got: BTreeSet<String> =
                names(s.group_by_name(gname, &policy)).into_iter().collect();
            assert_eq!(got, want, "step {step} group {gname}");
        }
    }
    s.compact();
}
