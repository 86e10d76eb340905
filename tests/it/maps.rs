//! Every map through the daemon's socket, in both schemas, compared with the fixture: users by
//! name and uid (developers and tool accounts), groups by name and gid (the 5,000-member group
//! too), initgroups, absent keys, and the hostile entries that must never be served.

use toolforge_nss_protocol::{Group, Passwd, Request, Response};
use toolforge_nss_tests::client::query;
use toolforge_nss_tests::fixture::{self, Schema, BIG_GROUP};

use crate::env::shared;

fn passwd(u: &fixture::User) -> Response {
    Response::Passwd(Passwd {
        name: u.name.clone(),
        passwd: "x".into(),
        uid: u.uid,
        gid: u.gid,
        gecos: u.gecos.clone(),
        dir: u.home.clone(),
        shell: u.shell.clone(),
    })
}

fn group(g: &fixture::Group) -> Response {
    Response::Group(Group {
        name: g.name.clone(),
        passwd: "x".into(),
        gid: g.gid,
        members: g.members.clone(),
    })
}

fn every_map(schema: Schema) {
    let env = shared(schema);
    let (f, sock) = (&env.fixture, env.daemon.socket());
    for u in [f.developer(false), f.developer(true), f.tool()] {
        assert_eq!(
            query(&sock, &Request::GetPwNam(u.name.clone())),
            passwd(u),
            "{schema:?} pwnam {}",
            u.name
        );
        assert_eq!(
            query(&sock, &Request::GetPwUid(u.uid)),
            passwd(u),
            "{schema:?} pwuid {}",
            u.uid
        );
    }
    assert!(f.tool().home.starts_with("/data/project/"));
    let tool_group = &f.groups[&f.tool().name];
    for g in [
        &f.groups["wikidev"],
        &f.groups[BIG_GROUP],
        tool_group,
        &f.groups["project-p000"],
        &f.groups["claims-root"],
    ] {
        assert_eq!(
            query(&sock, &Request::GetGrNam(g.name.clone())),
            group(g),
            "{schema:?} grnam {}",
            g.name
        );
        assert_eq!(
            query(&sock, &Request::GetGrGid(g.gid)),
            group(g),
            "{schema:?} grgid {}",
            g.gid
        );
    }
    assert_eq!(f.groups[BIG_GROUP].members.len(), 5000);
    for u in [
        f.developer(true),
        f.developer(false),
        &f.users[&tool_group.members[0]],
    ] {
        let want = f.supplementary_gids(&u.name);
        let got = query(&sock, &Request::InitGroups(u.name.clone()));
        if want.is_empty() {
            assert_eq!(got, Response::NotFound, "{schema:?} initgroups {}", u.name);
        } else {
            assert_eq!(
                got,
                Response::GroupIds(want),
                "{schema:?} initgroups {}",
                u.name
            );
        }
    }
}

#[test]
fn every_map_rfc2307() {
    every_map(Schema::Rfc2307);
}

#[test]
fn every_map_rfc2307bis() {
    every_map(Schema::Rfc2307bis);
}

fn absent_and_hostile(schema: Schema) {
    let env = shared(schema);
    let (f, sock) = (&env.fixture, env.daemon.socket());
    for req in [
        Request::GetPwNam("nosuchuser".into()),
        Request::GetPwUid(999_999),
        Request::GetGrNam("nosuchgroup".into()),
        Request::GetGrGid(999_999),
        Request::InitGroups("nosuchuser".into()),
        // Never uid or gid 0, whatever the directory says.
        Request::GetPwUid(0),
        Request::GetGrGid(0),
        // Two entries claim this uid: neither is served by uid.
        Request::GetPwUid(f.ambiguous_uid()),
        // The uids of entries with a negative uid number, an invalid name, gid 0.
        Request::GetPwUid(4245),
        Request::GetPwUid(4243),
    ] {
        assert_eq!(query(&sock, &req), Response::NotFound, "{schema:?} {req:?}");
    }
    for name in &f.hostile_users {
        assert_eq!(
            query(&sock, &Request::GetPwNam(name.clone())),
            Response::NotFound,
            "{schema:?} user {name}"
        );
        assert_eq!(
            query(&sock, &Request::InitGroups(name.clone())),
            Response::NotFound,
            "{schema:?} initgroups {name}"
        );
    }
    for name in &f.hostile_groups {
        assert_eq!(
            query(&sock, &Request::GetGrNam(name.clone())),
            Response::NotFound,
            "{schema:?} group {name}"
        );
    }
    // The filtered root user is never even asked for (a group listing `uid=root,...` as a
    // member resolves that DN in a batch with the others, and policy then drops it).
    let asked_for_root = env
        .slapd
        .search_filters()
        .iter()
        .filter(|f| f.to_ascii_lowercase().contains("uid=root)") && !f.contains("(|"))
        .count();
    assert_eq!(asked_for_root, 0);
    let log = env.daemon.log();
    assert!(
        log.contains("not serving user") && log.contains("uid=evil-uid0,"),
        "refusals name the DN:\n{log}"
    );
    assert!(
        log.contains("skipped user entry") && log.contains("uid=bad*name,"),
        "malformed entries name the DN:\n{log}"
    );
    assert!(
        log.contains("several users claim this uid"),
        "duplicate uids are named:\n{log}"
    );
}

#[test]
fn absent_and_hostile_rfc2307() {
    absent_and_hostile(Schema::Rfc2307);
}

#[test]
fn absent_and_hostile_rfc2307bis() {
    absent_and_hostile(Schema::Rfc2307bis);
}
