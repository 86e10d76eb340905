//! The cache's policies: TTLs per map (`user_ttl_secs`, `group_ttl_secs`; initgroups follows
//! groups), misses in their own LRU (a flood of misses never evicts found entries), and
//! `cache invalidate --user/--group` reaching entries cached only by id.

use std::time::Duration;

use toolforge_nss_protocol::admin::{AdminRequest, AdminResponse, Scope};
use toolforge_nss_protocol::{Request, Response};
use toolforge_nss_tests::client::{admin, query};
use toolforge_nss_tests::daemon::Daemon;
use toolforge_nss_tests::fixture::Schema;

use crate::env::shared;

#[test]
fn users_and_groups_keep_their_own_ttls() {
    let env = shared(Schema::Rfc2307);
    let d = Daemon::start(
        &[env.slapd.uri()],
        Schema::Rfc2307,
        "[cache]\nuser_ttl_secs = 600\ngroup_ttl_secs = 1\nrefresh_ahead_percent = 0\npersist_interval_secs = 0\nmap_file_max_mib = 0\n",
    );
    let sock = d.socket();
    // Keys no other test asks the shared server for (its search log is shared).
    let user = env.fixture.users.values().nth(2_001).unwrap().name.clone();
    let group = "project-p007".to_string();
    let count = |needle: &str| env.slapd.searches_containing(needle);
    let (u0, g0, i0) = (
        count(&format!("(uid={user})")),
        count(&format!("(cn={group})")),
        count(&format!("(memberuid={user})")),
    );
    for _ in 0..2 {
        assert!(matches!(
            query(&sock, &Request::GetPwNam(user.clone())),
            Response::Passwd(_)
        ));
        assert!(matches!(
            query(&sock, &Request::GetGrNam(group.clone())),
            Response::Group(_)
        ));
        assert!(matches!(
            query(&sock, &Request::InitGroups(user.clone())),
            Response::GroupIds(_)
        ));
        std::thread::sleep(Duration::from_millis(1_600));
    }
    // One lookup is one search per base; the test config has two bases per map.
    assert_eq!(
        count(&format!("(uid={user})")) - u0,
        2,
        "the user lives 600 s"
    );
    assert_eq!(
        count(&format!("(cn={group})")) - g0,
        4,
        "the group lives 1 s"
    );
    assert_eq!(
        count(&format!("(memberuid={user})")) - i0,
        4,
        "initgroups follows the group TTL"
    );
}

#[test]
fn misses_never_evict_found_entries() {
    let env = shared(Schema::Rfc2307);
    let d = Daemon::start(
        &[env.slapd.uri()],
        Schema::Rfc2307,
        "miss_queries_per_uid_per_sec = 0\n[cache]\nmax_entries = 100\nmax_negative_entries = 20\npersist_interval_secs = 0\n",
    );
    let sock = d.socket();
    let users: Vec<String> = env
        .fixture
        .users
        .values()
        .filter(|u| u.home.starts_with("/home/") && u.name != "evil-dupuid")
        .skip(3_000)
        .take(50)
        .map(|u| u.name.clone())
        .collect();
    for u in &users {
        assert!(matches!(
            query(&sock, &Request::GetPwNam(u.clone())),
            Response::Passwd(_)
        ));
    }
    let before: usize = users
        .iter()
        .map(|u| env.slapd.searches_containing(&format!("(uid={u})")))
        .sum();
    for i in 0..1_000 {
        assert_eq!(
            query(&sock, &Request::GetPwNam(format!("nosuch{i}x"))),
            Response::NotFound
        );
    }
    for u in &users {
        assert!(matches!(
            query(&sock, &Request::GetPwNam(u.clone())),
            Response::Passwd(_)
        ));
    }
    let after: usize = users
        .iter()
        .map(|u| env.slapd.searches_containing(&format!("(uid={u})")))
        .sum();
    assert_eq!(after, before, "every found user was still cached");
}

#[test]
fn invalidating_a_name_drops_entries_cached_only_by_id() {
    let env = shared(Schema::Rfc2307);
    let d = Daemon::start(
        &[env.slapd.uri()],
        Schema::Rfc2307,
        "[cache]\npersist_interval_secs = 0\n",
    );
    let (sock, adm) = (d.socket(), d.admin_socket());
    let user = env.fixture.users.values().nth(2_501).unwrap().clone();
    let group = env.fixture.groups["project-p009"].clone();
    assert!(matches!(
        query(&sock, &Request::GetPwUid(user.uid)),
        Response::Passwd(_)
    ));
    assert!(matches!(
        query(&sock, &Request::GetGrGid(group.gid)),
        Response::Group(_)
    ));
    let by_uid = format!("(uidnumber={})", user.uid);
    let by_gid = format!("(gidnumber={})", group.gid);
    let (u0, g0) = (
        env.slapd.searches_containing(&by_uid),
        env.slapd.searches_containing(&by_gid),
    );
    for scope in [
        Scope::User(user.name.clone()),
        Scope::Group(group.name.clone()),
    ] {
        match admin(&adm, &AdminRequest::Invalidate(scope.clone())) {
            Ok(AdminResponse::Done(n)) => assert!(n >= 1, "{scope:?}: {n}"),
            other => panic!("{scope:?}: {other:?}"),
        }
    }
    assert!(matches!(
        query(&sock, &Request::GetPwUid(user.uid)),
        Response::Passwd(_)
    ));
    assert!(matches!(
        query(&sock, &Request::GetGrGid(group.gid)),
        Response::Group(_)
    ));
    // One lookup is one search per base; the test config has two bases per map.
    assert_eq!(
        env.slapd.searches_containing(&by_uid),
        u0 + 2,
        "asked again by uid"
    );
    assert_eq!(
        env.slapd.searches_containing(&by_gid),
        g0 + 2,
        "asked again by gid"
    );
}
