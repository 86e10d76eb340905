//! The cache and single-flight, proved by counting the searches slapd received: 100 concurrent
//! misses for one key make one LDAP query (found or absent), a hit makes none, and entries
//! expire after their TTL (positive and negative).

use std::sync::{Arc, Barrier};
use std::time::Duration;

use toolforge_nss_protocol::{Request, Response};
use toolforge_nss_tests::client::query;
use toolforge_nss_tests::daemon::Daemon;
use toolforge_nss_tests::fixture::Schema;

use crate::env::shared;

/// A daemon with the default search base only (one lookup is exactly one search) and short TTLs.
fn single_base_daemon(uri: String) -> Daemon {
    Daemon::start_with(|run, cache| {
        format!(
            "[ldap]\nuri = [{uri:?}]\nbase = \"dc=wikimedia,dc=org\"\n\
             [daemon]\nruntime_dir = {:?}\ncache_dir = {:?}\nadmin_dir = {:?}\n\
             [cache]\npositive_ttl_secs = 2\nnegative_ttl_secs = 1\n",
            run.display().to_string(),
            cache.display().to_string(),
            run.with_file_name("admin").display().to_string()
        )
    })
}

fn burst(sock: &std::path::Path, req: Request, n: usize) -> Vec<Response> {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (sock, req, barrier) = (sock.to_owned(), req.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                query(&sock, &req)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn hundred_concurrent_misses_make_one_query_and_ttls_expire() {
    let env = shared(Schema::Rfc2307);
    let d = single_base_daemon(env.slapd.uri());
    let sock = d.socket();
    // A user no other test looks up.
    let user = env
        .fixture
        .users
        .values()
        .filter(|u| u.home.starts_with("/home/"))
        .nth(4321)
        .unwrap();
    let needle = format!("(uid={})", user.name);
    let before = env.slapd.searches_containing(&needle);

    let answers = burst(&sock, Request::GetPwNam(user.name.clone()), 100);
    assert!(answers
        .iter()
        .all(|a| matches!(a, Response::Passwd(p) if p.name == user.name)));
    assert_eq!(
        env.slapd.searches_containing(&needle) - before,
        1,
        "one LDAP search for 100 concurrent misses"
    );

    // A hit asks nothing.
    query(&sock, &Request::GetPwNam(user.name.clone()));
    assert_eq!(env.slapd.searches_containing(&needle) - before, 1);

    // Absent names: one search for the burst, none while the negative entry lives, one after.
    let absent = "nosuch-singleflight";
    let answers = burst(&sock, Request::GetPwNam(absent.into()), 100);
    assert!(answers.iter().all(|a| *a == Response::NotFound));
    let absent_needle = format!("(uid={absent})");
    assert_eq!(env.slapd.searches_containing(&absent_needle), 1);
    query(&sock, &Request::GetPwNam(absent.into()));
    assert_eq!(
        env.slapd.searches_containing(&absent_needle),
        1,
        "negative entry cached"
    );
    std::thread::sleep(Duration::from_millis(1200));
    query(&sock, &Request::GetPwNam(absent.into()));
    assert_eq!(
        env.slapd.searches_containing(&absent_needle),
        2,
        "negative TTL expired"
    );

    // The positive entry expires after its 2 s TTL.
    std::thread::sleep(Duration::from_millis(1000));
    query(&sock, &Request::GetPwNam(user.name.clone()));
    assert_eq!(
        env.slapd.searches_containing(&needle) - before,
        2,
        "positive TTL expired"
    );
}
