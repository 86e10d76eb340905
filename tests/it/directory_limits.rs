//! Server limits are errors, never answers. Against slapd with `size.hard=500` and with
//! `size.hard=2048` (paged results unlimited, as Wikimedia's replicas), a 10,000-member group,
//! a user in 300 groups and a listing of every user are complete. With paging refused and a
//! limit below those answers, they fail (`Unavailable`), are never served truncated, and
//! nothing partial is cached.

use std::collections::BTreeSet;

use toolforge_nss_protocol::{Request, Response};
use toolforge_nss_tests::client::{enumerate, query};
use toolforge_nss_tests::daemon::Daemon;
use toolforge_nss_tests::fixture::BIG_GROUP;
use toolforge_nss_tests::slapd::Slapd;
use toolforge_nss_tests::toolforge::MANY_GROUPS_USER;

use crate::toolforge_env::{config, fixture};

fn daemon(slapd: &Slapd) -> Daemon {
    let uri = slapd.uri();
    Daemon::start_with(|run, cache| {
        config(
            &uri,
            run,
            cache,
            "",
            "[cache]\nenumerate = true\npersist_interval_secs = 0\n",
        )
    })
}

#[test]
fn paged_answers_are_complete_under_server_size_limits() {
    let f = fixture();
    for hard in [500, 2048] {
        let slapd = Slapd::start_limited(
            f,
            &format!("size.soft={hard} size.hard={hard} size.prtotal=unlimited"),
        );
        let d = daemon(&slapd);
        let sock = d.socket();

        let big = &f.groups[BIG_GROUP];
        match query(&sock, &Request::GetGrNam(BIG_GROUP.into())) {
            Response::Group(g) => {
                assert_eq!(g.members.len(), 10_000, "size.hard={hard}");
                assert_eq!(g.members, big.members, "size.hard={hard}");
            }
            other => panic!("size.hard={hard}: {other:?}\n{}", d.log()),
        }
        // Batches, not a search per member.
        let searches = slapd.search_filters().len();
        assert!(
            searches < 10_000 / 200 * 2 + 10,
            "size.hard={hard}: {searches} searches for one group"
        );

        let want = f.supplementary_gids(MANY_GROUPS_USER);
        assert!(want.len() >= 300);
        assert_eq!(
            query(&sock, &Request::InitGroups(MANY_GROUPS_USER.into())),
            Response::GroupIds(want),
            "size.hard={hard}"
        );

        let listed: BTreeSet<String> = enumerate(&sock, true)
            .into_iter()
            .map(|r| match r {
                Response::Passwd(p) => p.name,
                other => panic!("{other:?}"),
            })
            .collect();
        let missing: Vec<&String> = f.users.keys().filter(|n| !listed.contains(*n)).collect();
        assert!(
            missing.is_empty() && listed.len() > 10_000,
            "size.hard={hard}: listing of {} misses {:?}",
            listed.len(),
            &missing[..missing.len().min(5)]
        );
    }
}

#[test]
fn without_paging_limits_fail_and_are_never_cached() {
    let f = fixture();
    // Below one member batch (100 DNs) and below the 300 groups of the busy maintainer.
    let slapd = Slapd::start_limited(f, "size.soft=50 size.hard=50 size.prtotal=disabled");
    let d = daemon(&slapd);
    let sock = d.socket();
    for _ in 0..2 {
        // The second round would find a truncated answer if one had been cached.
        for req in [
            Request::GetGrNam(BIG_GROUP.into()),
            Request::InitGroups(MANY_GROUPS_USER.into()),
        ] {
            assert_eq!(
                query(&sock, &req),
                Response::Unavailable,
                "{req:?}\n{}",
                d.log()
            );
        }
        assert_eq!(
            query(
                &sock,
                &Request::PwEnt {
                    generation: 0,
                    cursor: 0
                }
            ),
            Response::Unavailable
        );
    }
    // Small answers still work.
    let dev = f
        .users
        .values()
        .find(|u| u.home.starts_with("/home/"))
        .unwrap();
    assert!(matches!(
        query(&sock, &Request::GetPwNam(dev.name.clone())),
        Response::Passwd(_)
    ));
    let log = d.log();
    assert!(
        log.contains("sizeLimitExceeded"),
        "the limit is named:\n{log}"
    );
    assert!(
        log.contains("members could not all be resolved") && log.contains("cn=project-tools,"),
        "the group is named with its DN:\n{log}"
    );
}
