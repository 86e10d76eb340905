//! The daemon's side of the directory (issue 10, items 1-3): result codes that fail over, a
//! slow search that is abandoned without backing its server off, a frozen connection detected
//! and failed over, keepalive on every LDAP socket, expired connections replaced, a rotated
//! bind password and CA file picked up on SIGHUP, invalidCredentials logged once. A fake LDAP
//! server (tests/src/fakeldap.rs) plays the server that says no. The flood is in `admission`.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use toolforge_nss_protocol::admin::{AdminRequest, AdminResponse};
use toolforge_nss_protocol::{Request, Response};
use toolforge_nss_tests::client::{admin, query};
use toolforge_nss_tests::daemon::{config, Daemon};
use toolforge_nss_tests::fakeldap::{contains, Answer, FakeLdap};
use toolforge_nss_tests::fixture::{Fixture, Schema, Shape, BASE};
use toolforge_nss_tests::process::signal;
use toolforge_nss_tests::slapd::{Slapd, ADMIN_DN};

use crate::env::shared;

pub fn status(d: &Daemon) -> String {
    match admin(&d.admin_socket(), &AdminRequest::Status) {
        Ok(AdminResponse::Text(t)) => t,
        other => panic!("status: {other:?}"),
    }
}

/// The `server:` line of `uri` in the status.
pub fn server_line(status: &str, uri: &str) -> String {
    status
        .lines()
        .find(|l| l.starts_with(&format!("server: {uri} ")))
        .unwrap_or_else(|| panic!("no server line for {uri} in\n{status}"))
        .to_owned()
}

#[test]
fn each_failover_result_code_moves_the_lookup_to_the_next_server() {
    let env = shared(Schema::Rfc2307);
    for code in [51u8, 52, 53, 80] {
        let fake = FakeLdap::start(move |_, _| Answer::Code(code));
        let d = Daemon::start(&[fake.uri(), env.slapd.uri()], Schema::Rfc2307, "");
        let user = env.fixture.developer(false);
        let got = query(&d.socket(), &Request::GetPwNam(user.name.clone()));
        assert!(
            matches!(&got, Response::Passwd(p) if p.name == user.name),
            "code {code}: {got:?}\n{}",
            d.log()
        );
        assert!(fake.counters.searches.load(Ordering::Relaxed) >= 1);
        let st = status(&d);
        let line = server_line(&st, &fake.uri());
        assert!(
            line.contains(&format!("result code {code}")) && !line.contains("failures=0"),
            "code {code}: the first server is backed off: {line}"
        );
        assert_eq!(
            server_line(&st, &env.slapd.uri()).split_whitespace().nth(2),
            Some("failures=0")
        );
        assert!(
            st.contains(&format!("server_in_use: {}", env.slapd.uri())),
            "{st}"
        );
    }
}

#[test]
fn a_slow_search_is_abandoned_and_never_backs_the_only_server_off() {
    // Never answers searches for "slowpoke"; answers everything else (root DSE included).
    let fake = FakeLdap::start(|_, filter| {
        if contains(filter, "slowpoke") {
            Answer::Silent
        } else {
            Answer::Code(0)
        }
    });
    let d = Daemon::start_tuned(
        &[fake.uri()],
        Schema::Rfc2307,
        "search_timeout_ms = 400\nconnect_timeout_ms = 500\n",
        "",
    );
    let start = Instant::now();
    assert_eq!(
        query(&d.socket(), &Request::GetPwNam("slowpoke".into())),
        Response::Unavailable
    );
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "timed out, retried once, gave up: {took:?}"
    );
    // Abandoned on the server, not left running there.
    let deadline = Instant::now() + Duration::from_secs(2);
    while fake.counters.abandons.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(fake.counters.abandons.load(Ordering::Relaxed) >= 1);
    let st = status(&d);
    let line = server_line(&st, &fake.uri());
    assert!(
        line.contains("failures=0") && line.contains("retry_in_ms=0"),
        "a slow search is not a failed server: {line}\n{}",
        d.log()
    );
    // The next lookup is served at once.
    let start = Instant::now();
    assert_eq!(
        query(&d.socket(), &Request::GetPwNam("quickly".into())),
        Response::NotFound
    );
    assert!(start.elapsed() < Duration::from_millis(300));
}

#[test]
fn a_frozen_server_is_detected_and_failed_over() {
    let f = Fixture::generate(Schema::Rfc2307, Shape::small());
    let (a, b) = (Slapd::start(&f), Slapd::start(&f));
    let d = Daemon::start_tuned(
        &[a.uri(), b.uri()],
        Schema::Rfc2307,
        "search_timeout_ms = 800\nconnect_timeout_ms = 500\n",
        "",
    );
    let users: Vec<_> = f
        .users
        .values()
        .filter(|u| u.home.starts_with("/home/"))
        .collect();
    // Connected to the first server.
    assert!(matches!(
        query(&d.socket(), &Request::GetPwNam(users[0].name.clone())),
        Response::Passwd(_)
    ));
    let st = status(&d);
    assert!(
        st.contains(&format!("server_in_use: {}", a.uri())),
        "{st}\n{}",
        d.log()
    );
    a.freeze();
    let start = Instant::now();
    let got = query(&d.socket(), &Request::GetPwNam(users[1].name.clone()));
    let took = start.elapsed();
    a.thaw();
    assert!(
        matches!(&got, Response::Passwd(p) if p.name == users[1].name),
        "{got:?}\n{}",
        d.log()
    );
    // Detected within search_timeout_ms (the watchdog probe), then the second server; with a
    // margin for a loaded machine.
    assert!(took < Duration::from_millis(800 + 1200), "{took:?}");
    let st = status(&d);
    assert!(
        st.contains(&format!("server_in_use: {}", b.uri())),
        "{st}\n{}",
        d.log()
    );
    assert!(
        !server_line(&st, &a.uri()).contains("failures=0"),
        "the frozen server is backed off:\n{st}\n{}",
        d.log()
    );
}

#[test]
fn every_directory_socket_has_tcp_keepalive() {
    let f = Fixture::generate(Schema::Rfc2307, Shape::small());
    let slapd = Slapd::start(&f);
    let d = Daemon::start(&[slapd.uri()], Schema::Rfc2307, "");
    let user = f.developer(false);
    assert!(matches!(
        query(&d.socket(), &Request::GetPwNam(user.name.clone())),
        Response::Passwd(_)
    ));
    // `ss -o` shows a keepalive timer on sockets that have SO_KEEPALIVE.
    let out = Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .arg(format!("dport = :{}", slapd.port))
        .output()
        .expect("run ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no connection to slapd seen:\n{text}");
    assert!(
        lines.iter().all(|l| l.contains("keepalive")),
        "every connection to the directory has keepalive on:\n{text}"
    );
}

fn ldap_tool(tool: &str, slapd: &Slapd, ldif: &str) {
    slapd.apply(tool, ldif);
}

#[test]
fn sighup_rereads_a_rotated_bind_password_and_keeps_the_cache() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::generate(Schema::Rfc2307, Shape::small());
    let slapd = Slapd::start(&f);
    let proxy = format!("cn=proxyagent,{BASE}");
    ldap_tool(
        "ldapadd",
        &slapd,
        &format!("dn: {proxy}\nobjectClass: person\ncn: proxyagent\nsn: proxy\nuserPassword: first-Secret\n"),
    );
    let dir = tempfile::tempdir().unwrap();
    let pwfile = dir.path().join("bindpw");
    let write_pw = |pw: &str| {
        std::fs::write(&pwfile, format!("{pw}\n")).unwrap();
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    write_pw("first-Secret");
    let extra = format!(
        "bind_dn = {proxy:?}\nbind_password_file = {:?}\n",
        pwfile.display().to_string()
    );
    let uri = [slapd.uri()];
    let d = Daemon::start_with(|run, cache| config(&uri, Schema::Rfc2307, run, cache, &extra, ""));
    let users: Vec<_> = f
        .users
        .values()
        .filter(|u| u.home.starts_with("/home/"))
        .collect();
    assert!(matches!(
        query(&d.socket(), &Request::GetPwNam(users[0].name.clone())),
        Response::Passwd(_)
    ));
    let binds_before = slapd.log().matches(&format!("BIND dn=\"{proxy}\"")).count();
    assert!(binds_before >= 1);

    // Rotate: the directory first, then the file, then SIGHUP.
    ldap_tool(
        "ldapmodify",
        &slapd,
        &format!(
            "dn: {proxy}\nchangetype: modify\nreplace: userPassword\nuserPassword: second-Secret\n"
        ),
    );
    write_pw("second-Secret");
    signal(d.pid().unwrap(), libc::SIGHUP);
    assert!(
        d.wait_for_log("directory credentials re-read", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    // The next connection binds with the new password and serves a cold lookup.
    let got = query(&d.socket(), &Request::GetPwNam(users[1].name.clone()));
    assert!(matches!(got, Response::Passwd(_)), "{got:?}\n{}", d.log());
    let log = slapd.log();
    assert!(
        log.matches(&format!("BIND dn=\"{proxy}\"")).count() > binds_before,
        "a new bind happened"
    );
    assert!(!log.contains("err=49"), "no bind was refused:\n{log}");
    // The cache survived: the first user is a hit (no new search for it).
    let searches = slapd.searches_containing(&users[0].name);
    assert!(matches!(
        query(&d.socket(), &Request::GetPwNam(users[0].name.clone())),
        Response::Passwd(_)
    ));
    assert_eq!(slapd.searches_containing(&users[0].name), searches);
    assert!(!d.log().contains("second-Secret") && !d.log().contains("first-Secret"));
}

/// `status` field `key=N` on the `directory_pool:` line.
fn pool_field(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with("directory_pool:"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in\n{status}"))
}

#[test]
fn expired_connections_are_replaced_without_failing_a_lookup() {
    let f = Fixture::generate(Schema::Rfc2307, Shape::small());
    let slapd = Slapd::start(&f);
    let d = Daemon::start_tuned(
        &[slapd.uri()],
        Schema::Rfc2307,
        "connection_expire_secs = 1\n",
        "[cache]\npositive_ttl_secs = 1\nnegative_ttl_secs = 1\n",
    );
    let users: Vec<_> = f
        .users
        .values()
        .filter(|u| u.home.starts_with("/home/"))
        .take(40)
        .collect();
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_millis(3500) {
        let u = users[n % users.len()];
        let got = query(&d.socket(), &Request::GetPwNam(u.name.clone()));
        assert!(
            matches!(&got, Response::Passwd(p) if p.name == u.name),
            "lookup {n}: {got:?}\n{}",
            d.log()
        );
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = status(&d);
    assert!(pool_field(&st, "retired_total") >= 2, "{st}");
    assert!(pool_field(&st, "opened_total") >= 3, "{st}");
    assert!(
        pool_field(&st, "connections") <= 2,
        "never more than connections_per_server kept: {st}"
    );
    assert!(
        server_line(&st, &slapd.uri()).contains("failures=0"),
        "{st}"
    );
}

#[test]
fn invalid_credentials_are_a_configuration_error_logged_once() {
    use std::os::unix::fs::PermissionsExt;
    let env = shared(Schema::Rfc2307);
    let dir = tempfile::tempdir().unwrap();
    let pwfile = dir.path().join("bindpw");
    std::fs::write(&pwfile, "Not-the-password\n").unwrap();
    std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let extra = format!(
        "bind_dn = {ADMIN_DN:?}\nbind_password_file = {:?}\nreconnect_max_ms = 300\n",
        pwfile.display().to_string()
    );
    let uri = [env.slapd.uri()];
    let d = Daemon::start_with(|run, cache| config(&uri, Schema::Rfc2307, run, cache, &extra, ""));
    // Several lookups, each after the backoff: several refused binds, one loud line.
    for i in 0..3 {
        assert_eq!(
            query(&d.socket(), &Request::GetPwNam(format!("nobody-{i}"))),
            Response::Unavailable
        );
        std::thread::sleep(Duration::from_millis(450));
    }
    let log = d.log();
    let refused = log.matches("invalidCredentials").count();
    assert!(refused >= 3, "every attempt says why:\n{log}");
    assert_eq!(
        log.matches("CONFIGURATION ERROR").count(),
        1,
        "logged once, loudly:\n{log}"
    );
    assert!(!log.contains("Not-the-password"));
}

#[test]
fn sighup_rereads_the_ca_file_and_reconnects_with_it() {
    use toolforge_nss_tests::tls::TlsFiles;
    let tls = TlsFiles::generate();
    let f = Fixture::generate(Schema::Rfc2307, Shape::small());
    let (cert, key) = tls.server();
    let slapd = Slapd::start_tls(&f, Some((&tls.ca(), &cert, &key)));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::copy(tls.ca(), &ca).unwrap();
    let d = Daemon::start_tuned(
        &[slapd.ldaps_uri()],
        Schema::Rfc2307,
        &format!(
            "tls_ca_file = {:?}\nreconnect_max_ms = 200\n",
            ca.display().to_string()
        ),
        "",
    );
    let users: Vec<_> = f
        .users
        .values()
        .filter(|u| u.home.starts_with("/home/"))
        .collect();
    assert!(matches!(
        query(&d.socket(), &Request::GetPwNam(users[0].name.clone())),
        Response::Passwd(_)
    ));
    // The CA file now names another CA: after SIGHUP, new connections refuse the server.
    std::fs::copy(tls.other_ca(), &ca).unwrap();
    signal(d.pid().unwrap(), libc::SIGHUP);
    assert!(d.wait_for_log("directory credentials re-read", Duration::from_secs(5)));
    assert_eq!(
        query(&d.socket(), &Request::GetPwNam(users[1].name.clone())),
        Response::Unavailable,
        "{}",
        d.log()
    );
    assert!(d.log().contains("UnknownIssuer"));
    // The right CA back: served again, and the first answer is still cached.
    std::fs::copy(tls.ca(), &ca).unwrap();
    signal(d.pid().unwrap(), libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = query(&d.socket(), &Request::GetPwNam(users[2].name.clone()));
        if matches!(got, Response::Passwd(_)) {
            break;
        }
        assert!(Instant::now() < deadline, "{got:?}\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let searches = slapd.searches_containing(&users[0].name);
    assert!(matches!(
        query(&d.socket(), &Request::GetPwNam(users[0].name.clone())),
        Response::Passwd(_)
    ));
    assert_eq!(slapd.searches_containing(&users[0].name), searches);
}
