//! Operating the daemon: `toolforge-nssctl` (status as a readiness probe, explained lookups,
//! invalidation, dump), the Prometheus endpoint, prefetch, and JSON logs.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use toolforge_nss_protocol::mapfile::Table;
use toolforge_nss_tests::daemon::Daemon;
use toolforge_nss_tests::fixture::Schema;
use toolforge_nss_tests::paths::ctl_bin;
use toolforge_nss_tests::process::free_port;

use crate::env::shared;

fn ctl(d: &Daemon, args: &[&str]) -> (i32, String) {
    let out = Command::new(ctl_bin())
        .arg("--admin-socket")
        .arg(d.admin_socket())
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn nssctl_status_lookup_explain_invalidate_and_dump() {
    let env = shared(Schema::Rfc2307);
    let f = &env.fixture;
    let (pre, user) = (f.developer(true), f.developer(false));
    let port = free_port();
    let d = Daemon::start(
        &[env.slapd.uri()],
        Schema::Rfc2307,
        &format!(
            "prefetch_users = [{:?}]\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            pre.name
        ),
    );
    assert!(
        d.wait_for_log("prefetch done", Duration::from_secs(5)),
        "{}",
        d.log()
    );

    let (code, out) = ctl(&d, &["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ready: true")
            && out.contains("directory: online")
            && out.contains("hit_ratio:"),
        "{out}"
    );

    // First lookup: from the directory, with the filter and server it used.
    let (code, out) = ctl(&d, &["lookup", "passwd", &user.name, "--explain"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("answer: {}", user.passwd_line())),
        "{out}"
    );
    assert!(
        out.contains("source: directory") && out.contains("cache_state_before: miss"),
        "{out}"
    );
    assert!(out.contains(&format!("query: base=ou=people,dc=wikimedia,dc=org scope=sub filter=(&(objectClass=posixAccount)(uid={}))", user.name)), "{out}");
    assert!(
        out.contains(&format!("server: {}", env.slapd.uri())),
        "{out}"
    );
    // Again: from the daemon's cache, with its age; once published, processes read it from
    // the cache file.
    let (_, out) = ctl(&d, &["lookup", "passwd", &user.name, "--explain"]);
    assert!(
        out.contains("daemon cache (fresh)")
            && out.contains("age_secs: ")
            && out.contains("directory_searches: 0"),
        "{out}"
    );
    assert!(d
        .wait_for_cache_file(Table::PasswdByName, user.name.as_bytes())
        .is_some());
    let (_, out) = ctl(&d, &["lookup", "passwd", &user.name, "--explain"]);
    assert!(
        out.contains("cache_file: hit (generation ")
            && out.contains("source: cache file (processes read it without asking the daemon); the daemon answered from: daemon cache (fresh)"),
        "{out}"
    );
    // The prefetched user was cached at start.
    let (_, out) = ctl(&d, &["lookup", "passwd", &pre.name, "--explain"]);
    assert!(out.contains("daemon cache (fresh)"), "{out}");
    // Plain lookups print the getent line; absent ones exit 1.
    assert_eq!(
        ctl(&d, &["lookup", "passwd", &user.uid.to_string()]),
        (0, format!("{}\n", user.passwd_line()))
    );
    assert_eq!(ctl(&d, &["lookup", "group", "nosuch-ctl"]).0, 1);
    let (code, out) = ctl(&d, &["lookup", "initgroups", &pre.name]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("gids ["), "{out}");
    // Dump and invalidate.
    let (_, dump) = ctl(&d, &["cache", "dump"]);
    assert!(
        dump.contains(&format!("passwd name={} uid={}", user.name, user.uid)),
        "{dump}"
    );
    let (code, out) = ctl(&d, &["cache", "invalidate", "--user", &user.name]);
    assert_eq!(code, 0);
    assert!(out.starts_with("invalidated "), "{out}");
    let (_, out) = ctl(&d, &["lookup", "passwd", &user.name, "--explain"]);
    assert!(
        out.contains("cache_file: miss") && out.contains("source: directory"),
        "invalidated in the daemon and in the file, asked again: {out}"
    );
    assert_eq!(
        ctl(&d, &["cache", "invalidate"]).0,
        2,
        "a scope is required"
    );

    // Metrics.
    let m = http_get(port, "/metrics");
    assert!(m.starts_with("HTTP/1.1 200 OK"), "{m}");
    for needle in [
        "toolforge_nss_lookups_total{map=\"passwd\",result=\"found\"} ",
        "toolforge_nss_lookups_total{map=\"group\",result=\"notfound\"} 1",
        "toolforge_nss_directory_search_seconds_bucket{le=\"+Inf\"} ",
        &format!(
            "toolforge_nss_directory_errors_total{{server=\"{}\"}} 0",
            env.slapd.uri()
        ),
        "toolforge_nss_directory_up 1",
        "toolforge_nss_ready 1",
        "toolforge_nss_cache_entries{map=\"passwd_by_name\"} ",
    ] {
        assert!(m.contains(needle), "{needle} in\n{m}");
    }
    assert!(http_get(port, "/").starts_with("HTTP/1.1 404"));
    // Connections are counted while open.
    let _open = toolforge_nss_tests::client::Session::connect(&d.socket()).unwrap();
    let _also = toolforge_nss_tests::client::Session::connect(&d.socket()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        ctl(&d, &["status"]).1.contains("connections: 2"),
        "{}",
        ctl(&d, &["status"]).1
    );
    assert!(http_get(port, "/metrics").contains("toolforge_nss_connections 2"));
}

#[test]
fn status_says_not_ready_until_the_directory_answered_or_a_cache_was_loaded() {
    let dead = format!("ldap://127.0.0.1:{}", free_port());
    let d = Daemon::start(&[dead], Schema::Rfc2307, "");
    let (code, out) = ctl(&d, &["status"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ready: false") && out.contains("directory: offline"),
        "{out}"
    );
    drop(d);
    let (code, out) = {
        let out = Command::new(ctl_bin())
            .args(["--admin-socket", "/nonexistent/admin.socket", "status"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(2));
    assert!(out.contains("cannot reach the daemon"), "{out}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let env = shared(Schema::Rfc2307);
    let d = Daemon::start(
        &[env.slapd.uri()],
        Schema::Rfc2307,
        "log_format = \"json\"\n",
    );
    toolforge_nss_tests::client::query(
        &d.socket(),
        &toolforge_nss_protocol::Request::GetGrNam("wikidev".into()),
    );
    let log = d.log();
    assert!(!log.is_empty());
    for line in log.lines() {
        assert!(
            line.starts_with('{') && line.ends_with('}') && line.contains("\"level\":"),
            "{line}"
        );
    }
}
