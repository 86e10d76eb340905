//! The daemon's life seen from clients: stopped (files still resolve, what was published
//! still answers, other directory users fail in under 100 ms), killed (stale socket refused
//! fast, replaced on restart), a second daemon on the same socket taking over (see
//! `takeover`), a frozen daemon bounded by the module's time budget.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use toolforge_nss_protocol::mapfile::Table;
use toolforge_nss_tests::daemon::Daemon;
use toolforge_nss_tests::fixture::Schema;
use toolforge_nss_tests::nss::Nss;
use toolforge_nss_tests::process::{freeze, signal};

use crate::env::shared;

#[test]
fn stopped_killed_restarted_and_duplicate_daemons() {
    let env = shared(Schema::Rfc2307);
    let user = env.fixture.developer(false);
    let mut d = Daemon::start(&[env.slapd.uri()], Schema::Rfc2307, "");
    let nss = Nss::new(&d.runtime_dir(), "files toolforge");
    assert_eq!(
        nss.run(&["getent", "passwd", &user.name]).lines(),
        [user.passwd_line()]
    );

    // A second daemon on the same runtime dir takes over (the first drains and exits 0).
    let mut second = d.successor(|c| c.to_string());
    assert!(
        second.wait_for_log("took over", Duration::from_secs(15)),
        "{}",
        second.log()
    );
    assert!(d
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    assert!(UnixStream::connect(d.socket()).is_ok());
    assert_eq!(
        nss.run(&["getent", "passwd", &user.name]).lines(),
        [user.passwd_line()]
    );
    // Back to one daemon of our own, as before.
    assert!(second.stop());
    d.restart();

    // SIGTERM: clean stop, socket removed; the published cache file stays valid.
    assert!(d.stop(), "stops within 5 s of SIGTERM");
    assert!(!d.socket().exists(), "socket removed on SIGTERM");
    let baseline = nss.baseline();
    let files = nss.run(&["getent", "passwd", "root"]);
    assert!(
        files.stdout.starts_with("root:x:0:0:"),
        "files keeps working: {files:?}"
    );
    assert_eq!(
        nss.run(&["getent", "passwd", &user.name]).lines(),
        [user.passwd_line()],
        "what was published answers after a clean stop"
    );
    let uncached = env.fixture.developer(true);
    let gone = nss.run(&["getent", "passwd", &uncached.name]);
    assert_eq!(gone.code, Some(2));
    assert!(
        gone.elapsed.saturating_sub(baseline) < Duration::from_millis(100),
        "{:?} over baseline {baseline:?}",
        gone.elapsed
    );
    let id = nss.run(&["id", &uncached.name]);
    assert_ne!(id.code, Some(0));

    // Restart, then SIGKILL: the stale socket refuses connections, quickly; what the daemon
    // had published in the shared cache file is still answered from it (as SSSD's memory
    // cache is) until it expires.
    d.restart();
    assert_eq!(
        nss.run(&["getent", "passwd", &user.name]).lines(),
        [user.passwd_line()]
    );
    assert!(d
        .wait_for_cache_file(Table::PasswdByName, user.name.as_bytes())
        .is_some());
    d.kill();
    assert!(d.socket().exists(), "SIGKILL leaves the socket");
    let cached = nss.run(&["getent", "passwd", &user.name]);
    assert_eq!(cached.lines(), [user.passwd_line()], "from the cache file");
    let other = env.fixture.developer(true);
    let refused = nss.run(&["getent", "passwd", &other.name]);
    assert_eq!(refused.code, Some(2));
    assert!(refused.elapsed.saturating_sub(baseline) < Duration::from_millis(100));
    // A new daemon replaces the stale socket.
    d.restart();
    assert_eq!(
        nss.run(&["getent", "passwd", &user.name]).lines(),
        [user.passwd_line()]
    );
}

#[test]
fn a_frozen_daemon_costs_at_most_the_budget() {
    let env = shared(Schema::Rfc2307);
    let user = env.fixture.developer(true);
    let d = Daemon::start(&[env.slapd.uri()], Schema::Rfc2307, "");
    let nss = Nss::new(&d.runtime_dir(), "files toolforge");
    let pid = d.pid().unwrap();
    freeze(pid);
    let run = nss.run_env(
        &["getent", "passwd", &user.name],
        &[("TOOLFORGE_NSS_TIMEOUT_MS", "200")],
    );
    signal(pid, libc::SIGCONT);
    assert_eq!(run.code, Some(2));
    assert!(
        run.elapsed < Duration::from_millis(1500),
        "bounded by the budget: {:?}",
        run.elapsed
    );
    // id makes several lookups; the breaker makes the later ones free.
    freeze(pid);
    let id = nss.run_env(&["id", &user.name], &[("TOOLFORGE_NSS_TIMEOUT_MS", "200")]);
    signal(pid, libc::SIGCONT);
    assert_ne!(id.code, Some(0));
    assert!(id.elapsed < Duration::from_millis(1500), "{:?}", id.elapsed);
}
