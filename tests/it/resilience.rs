//! Failure, on purpose: the directory killed, frozen or replaced by its fallback, the daemon
//! killed and restarted under load or during an outage, a config reloaded. Every test is
//! bounded in time and uses loopback servers of its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use toolforge_nss_protocol::frame::FLAG_STALE;
use toolforge_nss_protocol::{Request, Response};
use toolforge_nss_tests::client::{query, query_with_header};
use toolforge_nss_tests::daemon::Daemon;
use toolforge_nss_tests::fixture::{Fixture, Schema, Shape};
use toolforge_nss_tests::nss::Nss;
use toolforge_nss_tests::process::signal;
use toolforge_nss_tests::slapd::Slapd;

/// Short TTLs so entries expire during the outage; small stale wait; short timeouts.
const DEGRADED: &str = "[cache]\npositive_ttl_secs = 1\nnegative_ttl_secs = 1\nstale_wait_ms = 100\npersist_interval_secs = 1\n";

fn requests(f: &Fixture) -> Vec<Request> {
    let mut v = Vec::new();
    for u in f.developers().take(20) {
        v.push(Request::GetPwNam(u.name.clone()));
        v.push(Request::GetPwUid(u.uid));
        v.push(Request::InitGroups(u.name.clone()));
    }
    for g in f.groups.values().take(10) {
        v.push(Request::GetGrNam(g.name.clone()));
        v.push(Request::GetGrGid(g.gid));
    }
    v.push(Request::GetPwNam("nosuch-resilience".into()));
    v
}

fn answered(r: &Response) -> bool {
    matches!(
        r,
        Response::Passwd(_) | Response::Group(_) | Response::GroupIds(_) | Response::NotFound
    )
}

#[test]
fn slapd_killed_under_load_every_cached_key_keeps_answering() {
    let f = Fixture::generate(Schema::Rfc2307, Shape::small());
    let mut slapd = Slapd::start(&f);
    let d = Daemon::start(&[slapd.uri()], Schema::Rfc2307, DEGRADED);
    let reqs = Arc::new(requests(&f));
    let want: Vec<Response> = reqs.iter().map(|r| query(&d.socket(), r)).collect();
    assert!(want.iter().all(answered), "warm-up answered everything");

    let stop = Arc::new(AtomicBool::new(false));
    let (failures, stale, total) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let clients: Vec<_> = (0..8)
        .map(|t| {
            let (reqs, want, sock) = (reqs.clone(), want.clone(), d.socket());
            let (stop, failures, stale, total) =
                (stop.clone(), failures.clone(), stale.clone(), total.clone());
            std::thread::spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let k = i % reqs.len();
                    let (h, got) = query_with_header(&sock, &reqs[k]);
                    total.fetch_add(1, Ordering::Relaxed);
                    if got != want[k] {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    if h.flags & FLAG_STALE != 0 {
                        stale.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 7;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    slapd.stop();
    // Entries expire (TTL 1 s) during the outage: they must be served stale, not fail.
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "every cached key answered, exactly as before"
    );
    assert!(
        total.load(Ordering::Relaxed) > 1000,
        "the clients were busy: {total:?}"
    );
    assert!(
        stale.load(Ordering::Relaxed) > 0,
        "answers past their TTL were flagged stale"
    );
    // A key never cached cannot be answered, and says so at once.
    let start = Instant::now();
    assert_eq!(
        query(&d.socket(), &Request::GetPwNam(f.tool().name.clone())),
        Response::Unavailable
    );
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "every server in backoff: no wait"
    );

    // The directory returns: answers are fresh again within the backoff.
    slapd.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (h, got) = query_with_header(&d.socket(), &reqs[0]);
        if h.flags & FLAG_STALE == 0 && got == want[0] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never refreshed after the directory came back:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(matches!(
        query(&d.socket(), &Request::GetPwNam(f.tool().name.clone())),
        Response::Passwd(_)
    ));
}

#[test]
fn a_frozen_directory_never_makes_a_lookup_hang() {
    let f = Fixture::generate(Schema::Rfc2307, Shape::small());
    let slapd = Slapd::start(&f);
    let d = Daemon::start_tuned(
        &[slapd.uri()],
        Schema::Rfc2307,
        "search_timeout_ms = 600\n",
        DEGRADED,
    );
    let cached = f.developer(true);
    query(&d.socket(), &Request::GetPwNam(cached.name.clone()));
    std::thread::sleep(Duration::from_millis(1100)); // now expired
    slapd.freeze();
    let start = Instant::now();
    let (h, got) = query_with_header(&d.socket(), &Request::GetPwNam(cached.name.clone()));
    assert!(matches!(got, Response::Passwd(_)), "{got:?}");
    assert_ne!(h.flags & FLAG_STALE, 0);
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "stale after stale_wait: {:?}",
        start.elapsed()
    );
    // Uncached keys fail within the search timeout, then at once (the server is in backoff).
    let start = Instant::now();
    assert_eq!(
        query(&d.socket(), &Request::GetPwNam(f.tool().name.clone())),
        Response::Unavailable
    );
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    let start = Instant::now();
    assert_eq!(
        query(&d.socket(), &Request::GetGrNam("project-p001".into())),
        Response::Unavailable
    );
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    // Through the module: within its budget.
    let nss = Nss::new(&d.runtime_dir(), "files toolforge");
    let run = nss.run_env(
        &["getent", "passwd", "nosuch-frozen"],
        &[("TOOLFORGE_NSS_TIMEOUT_MS", "300")],
    );
    assert_eq!(run.code, Some(2));
    assert!(
        run.elapsed < Duration::from_millis(1000),
        "{:?}",
        run.elapsed
    );
    slapd.thaw();
}

#[test]
fn failover_to_the_second_server_and_back_to_the_first() {
    let f = Fixture::generate(Schema::Rfc2307, Shape::small());
    let mut first = Slapd::start(&f);
    let second = Slapd::start(&f);
    first.stop();
    let d = Daemon::start_tuned(
        &[first.uri(), second.uri()],
        Schema::Rfc2307,
        "failback_interval_secs = 1\nreconnect_max_ms = 500\n",
        "[cache]\npersist_interval_secs = 0\n",
    );
    let user = f.developer(true);
    assert!(matches!(
        query(&d.socket(), &Request::GetPwNam(user.name.clone())),
        Response::Passwd(_)
    ));
    let needle = format!("(uid={})", user.name);
    assert!(
        second.searches_containing(&needle) > 0,
        "answered by the second"
    );
    first.restart();
    assert_eq!(first.searches_containing(&needle), 0);
    // Within a fail-back interval or two, the first server is preferred again. Each probe is
    // a new absent name, so every one reaches the directory.
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 0.. {
        let probe = format!("nosuch-failback-{n}");
        query(&d.socket(), &Request::GetPwNam(probe.clone()));
        if first.searches_containing(&format!("(uid={probe})")) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never failed back:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(d
        .log()
        .contains("failed back to a preferred directory server"));
}

#[test]
fn restarted_during_an_outage_the_daemon_answers_from_its_persisted_cache() {
    let f = Fixture::generate(Schema::Rfc2307, Shape::small());
    let mut slapd = Slapd::start(&f);
    let mut d = Daemon::start(&[slapd.uri()], Schema::Rfc2307, DEGRADED);
    let reqs = requests(&f);
    let want: Vec<Response> = reqs.iter().map(|r| query(&d.socket(), r)).collect();
    slapd.stop();
    assert!(d.stop(), "SIGTERM saves the cache");
    assert!(d.cache_dir().join("cache").exists());
    d.restart();
    assert!(
        d.log().contains("loaded the persisted cache"),
        "{}",
        d.log()
    );
    for (r, w) in reqs.iter().zip(&want) {
        assert_eq!(&query(&d.socket(), r), w, "{r:?} from the persisted cache");
    }
    assert_eq!(
        query(&d.socket(), &Request::GetPwNam(f.tool().name.clone())),
        Response::Unavailable
    );

    // A corrupted file is set aside; the daemon starts anyway.
    assert!(d.stop());
    let path = d.cache_dir().join("cache");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    d.restart();
    assert!(d.log().contains("checksum mismatch"), "{}", d.log());
    assert!(d.cache_dir().join("cache.corrupt").exists());
    assert_eq!(
        query(&d.socket(), &reqs[0]),
        Response::Unavailable,
        "nothing half-loaded"
    );
}

#[test]
fn sighup_applies_a_good_config_and_keeps_the_old_one_on_a_bad_one() {
    let env = crate::env::shared(Schema::Rfc2307);
    let d = Daemon::start(&[env.slapd.uri()], Schema::Rfc2307, "");
    let (a, b) = (env.fixture.developer(true), env.fixture.developer(false));
    assert!(matches!(
        query(&d.socket(), &Request::GetPwNam(a.name.clone())),
        Response::Passwd(_)
    ));
    d.rewrite_config(|c| format!("{c}[policy]\nfilter_users = [\"root\", {:?}]\n", a.name));
    signal(d.pid().unwrap(), libc::SIGHUP);
    assert!(
        d.wait_for_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    assert_eq!(
        query(&d.socket(), &Request::GetPwNam(a.name.clone())),
        Response::NotFound,
        "new filter applied"
    );
    d.rewrite_config(|c| format!("{c}[nonsense]\nx = 1\n"));
    signal(d.pid().unwrap(), libc::SIGHUP);
    assert!(
        d.wait_for_log("reload refused", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    assert!(d.log().contains("nonsense"), "the reason names the key");
    assert_eq!(
        query(&d.socket(), &Request::GetPwNam(a.name.clone())),
        Response::NotFound,
        "old config kept"
    );
    assert!(matches!(
        query(&d.socket(), &Request::GetPwNam(b.name.clone())),
        Response::Passwd(_)
    ));
    // A setting that applies only after a restart is said so at every reload until then
    // (the running configuration keeps it as it runs).
    d.rewrite_config(|c| {
        c.replace("[nonsense]\nx = 1\n", "")
            .replace("[daemon]\n", "[daemon]\nmax_connections = 5000\n")
    });
    let said = || d.log().matches("apply after a restart").count();
    for n in 1..=2 {
        signal(d.pid().unwrap(), libc::SIGHUP);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while said() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(said(), n, "reload {n}:\n{}", d.log());
    }
}
