//! Enumeration: with `enumerate = true` a paged listing of the whole directory (more entries
//! than the server's 1,000-entry size limit, so paging is proved), with `enumerate = false`
//! (the default, as SSSD) exactly what is cached.

use std::collections::BTreeSet;

use toolforge_nss_protocol::{Request, Response};
use toolforge_nss_tests::client::{enumerate, query};
use toolforge_nss_tests::daemon::Daemon;
use toolforge_nss_tests::fixture::Schema;

use crate::env::shared;

fn names(entries: &[Response]) -> BTreeSet<String> {
    entries
        .iter()
        .map(|e| match e {
            Response::Passwd(p) => p.name.clone(),
            Response::Group(g) => g.name.clone(),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn full_listing(schema: Schema) {
    let env = shared(schema);
    let d = Daemon::start(&[env.slapd.uri()], schema, "[cache]\nenumerate = true\n");
    let users = std::panic::catch_unwind(|| enumerate(&d.socket(), true))
        .unwrap_or_else(|_| panic!("enumeration failed; daemon log:\n{}", d.log()));
    assert!(
        users.len() > 1000,
        "more than the server's size limit: paged"
    );
    assert_eq!(names(&users), env.fixture.users.keys().cloned().collect());
    assert_eq!(users.len(), env.fixture.users.len(), "no duplicates");
    let groups = enumerate(&d.socket(), false);
    assert_eq!(names(&groups), env.fixture.groups.keys().cloned().collect());
    // Every listed entry is exactly what a lookup answers.
    for e in users.iter().step_by(97) {
        let Response::Passwd(p) = e else {
            unreachable!()
        };
        assert_eq!(&query(&d.socket(), &Request::GetPwNam(p.name.clone())), e);
    }
}

#[test]
fn full_paged_listing_rfc2307() {
    full_listing(Schema::Rfc2307);
}

#[test]
fn full_paged_listing_rfc2307bis() {
    full_listing(Schema::Rfc2307bis);
}

#[test]
fn without_enumerate_the_listing_is_the_cache() {
    let env = shared(Schema::Rfc2307);
    let d = Daemon::start(&[env.slapd.uri()], Schema::Rfc2307, "");
    let sock = d.socket();
    assert!(enumerate(&sock, true).is_empty());
    let picked: Vec<_> = env.fixture.users.values().step_by(500).take(3).collect();
    for u in &picked {
        query(&sock, &Request::GetPwNam(u.name.clone()));
    }
    query(&sock, &Request::GetGrNam("wikidev".into()));
    assert_eq!(
        names(&enumerate(&sock, true)),
        picked.iter().map(|u| u.name.clone()).collect()
    );
    assert_eq!(
        names(&enumerate(&sock, false)),
        BTreeSet::from(["wikidev".to_string()])
    );
}
