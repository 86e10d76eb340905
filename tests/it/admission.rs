//! One tenant flooding the directory with misses (issues 10 and 11): the pool and the fair
//! queue keep every other uid served and the server healthy (budget off, so the flood reaches
//! the pool); the per-uid budget keeps the flood's directory queries within it and every
//! other uid's cache intact. The flood runs as uid 65534 in a child process (this binary,
//! re-run on an ignored test); the other uid is root, this process.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use toolforge_nss_protocol::mapfile::{MapView, Table};
use toolforge_nss_protocol::{Request, Response};
use toolforge_nss_tests::client::{query, Session};
use toolforge_nss_tests::daemon::Daemon;
use toolforge_nss_tests::fixture::{Fixture, Schema, Shape};
use toolforge_nss_tests::slapd::Slapd;

use crate::directory_pool::{server_line, status};
use crate::env::shared;

const NOBODY: u32 = 65534;

/// Starts the flood as uid 65534: `threads` threads, each asking for distinct missing user
/// names starting with `prefix`, for `secs` seconds or `total` lookups in all, whichever first.
fn start_flood(
    socket: &std::path::Path,
    prefix: &str,
    threads: u32,
    secs: u64,
    total: u64,
) -> std::process::Child {
    start_flood_of("passwd", socket, prefix, threads, secs, total)
}

/// As [`start_flood`], of missing names in `map` (`passwd` or `group`).
fn start_flood_of(
    map: &str,
    socket: &std::path::Path,
    prefix: &str,
    threads: u32,
    secs: u64,
    total: u64,
) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "admission::child_miss_flood",
            "--test-threads=1",
            "--nocapture",
        ])
        .env("TF_SOCKET", socket)
        .env("TF_FLOOD_PREFIX", prefix)
        .env("TF_FLOOD_THREADS", threads.to_string())
        .env("TF_FLOOD_SECS", secs.to_string())
        .env("TF_FLOOD_TOTAL", total.to_string())
        .env("TF_FLOOD_MAP", map)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the flood; its summary line (`flood lookups=... notfound=... unavailable=...`).
fn finish_flood(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "flooder:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The harness may print "test ... " on the same line first.
    stdout
        .lines()
        .find_map(|l| l.find("flood lookups=").map(|i| l[i..].to_owned()))
        .unwrap_or_default()
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
#[ignore = "runs as uid 65534 in a child process started by the flood tests"]
fn child_miss_flood() {
    assert_eq!(unsafe { libc::geteuid() }, NOBODY);
    let sock = std::path::PathBuf::from(std::env::var("TF_SOCKET").unwrap());
    let prefix = std::env::var("TF_FLOOD_PREFIX").unwrap();
    let groups = std::env::var("TF_FLOOD_MAP").is_ok_and(|m| m == "group");
    let var = |k: &str| -> u64 { std::env::var(k).unwrap().parse().unwrap() };
    let (threads, secs, total) = (
        var("TF_FLOOD_THREADS"),
        var("TF_FLOOD_SECS"),
        var("TF_FLOOD_TOTAL"),
    );
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (sock, prefix, counts, issued) =
                (sock.clone(), prefix.clone(), counts.clone(), issued.clone());
            std::thread::spawn(move || {
                let mut session = None;
                let mut i = 0u64;
                while start.elapsed() < Duration::from_secs(secs)
                    && issued.fetch_add(1, Ordering::Relaxed) < total
                {
                    if session.is_none() {
                        session = Session::connect(&sock).ok();
                    }
                    let Some(s) = session.as_mut() else {
                        counts[3].fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let name = format!("{prefix}{t}n{i}");
                    i += 1;
                    let req = if groups {
                        Request::GetGrNam(name)
                    } else {
                        Request::GetPwNam(name)
                    };
                    let k = match s.ask(&req) {
                        Ok((_, Response::NotFound)) => 1,
                        Ok((_, Response::Unavailable)) => 2,
                        Ok((_, Response::Passwd(_) | Response::Group(_))) => 0,
                        _ => {
                            session = None;
                            3
                        }
                    };
                    counts[k].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let c: Vec<u64> = counts.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    println!(
        "flood lookups={} found={} notfound={} unavailable={} errors={} secs={:.1}",
        c.iter().sum::<u64>(),
        c[0],
        c[1],
        c[2],
        c[3],
        start.elapsed().as_secs_f64()
    );
    assert_eq!(c[0], 0, "no made-up name was found");
}

/// Issue 10's flood: 300 threads of one uid, distinct missing names, 20 s, against a stock
/// slapd (no conn_max_pending override), with the budget off so that every miss reaches the
/// pool. Meanwhile and after, root's 200 cold lookups of real users all succeed and no server
/// is ever marked failed.
fn flood_against(servers: usize) {
    let f = Fixture::generate(
        Schema::Rfc2307,
        Shape {
            developers: 400,
            ..Shape::small()
        },
    );
    let slapds: Vec<Slapd> = (0..servers).map(|_| Slapd::start(&f)).collect();
    let uris: Vec<String> = slapds.iter().map(Slapd::uri).collect();
    let d = Daemon::start_logged(
        |run, cache| {
            toolforge_nss_tests::daemon::config(
                &uris,
                Schema::Rfc2307,
                run,
                cache,
                "",
                "max_connections_per_uid = 400\nmiss_queries_per_uid_per_sec = 0\n",
            )
        },
        "info",
    );
    let users: Vec<String> = f.developers().map(|u| u.name.clone()).take(200).collect();
    assert_eq!(users.len(), 200);
    let secs = 20;
    let flood = start_flood(&d.socket(), &format!("fl{servers}x"), 300, secs, u64::MAX);
    std::thread::sleep(Duration::from_secs(1));
    // 150 during the flood, spread over it; 50 after.
    let mut worst = Duration::ZERO;
    for (i, name) in users.iter().enumerate().take(150) {
        let t = Instant::now();
        let got = query(&d.socket(), &Request::GetPwNam(name.clone()));
        worst = worst.max(t.elapsed());
        assert!(
            matches!(&got, Response::Passwd(p) if &p.name == name),
            "cold lookup {i} of {name} during the flood: {got:?}\n{}\n{}",
            status(&d),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(110));
    }
    let summary = finish_flood(flood);
    for name in &users[150..] {
        let got = query(&d.socket(), &Request::GetPwNam(name.clone()));
        assert!(
            matches!(&got, Response::Passwd(p) if &p.name == name),
            "cold lookup of {name} after the flood: {got:?}\n{}\n{}",
            status(&d),
            d.log()
        );
    }
    let st = status(&d);
    for uri in &uris {
        let line = server_line(&st, uri);
        assert!(
            line.contains("failures=0") && line.contains("errors_total=0"),
            "the server was never marked failed: {line}\n{st}"
        );
    }
    let lookups = field(&summary, "lookups");
    assert!(lookups > 1000, "the flood was a flood: {summary}");
    println!(
        "servers={servers} {summary} root_worst_ms={}",
        worst.as_millis()
    );
    println!("{st}");
}

#[test]
fn a_flood_of_misses_starves_no_other_uid_and_fails_no_server() {
    flood_against(1);
}

#[test]
fn a_flood_of_misses_against_two_servers_starves_no_other_uid() {
    flood_against(2);
}

/// Issue 11's flood: one uid asks for 50,000 distinct missing names; root's 1,000 cached
/// users are all still in the shared cache file afterwards, and the flood's directory queries
/// stay within its budget (burst + rate x duration).
#[test]
fn a_uid_over_its_miss_budget_gets_unavailable_and_evicts_no_one() {
    let env = shared(Schema::Rfc2307);
    let (rate, burst) = (50u64, 200u64);
    let users: Vec<String> = env
        .fixture
        .developers()
        .map(|u| u.name.clone())
        .take(1000)
        .collect();
    assert_eq!(users.len(), 1000);
    // Root's 1,000 users are cached by the daemon's own prefetch (not charged to anyone).
    let list: Vec<String> = users.iter().map(|n| format!("{n:?}")).collect();
    let d = Daemon::start(
        &[env.slapd.uri()],
        Schema::Rfc2307,
        &format!(
            "max_connections_per_uid = 64\nmiss_queries_per_uid_per_sec = {rate}\nmiss_query_burst_per_uid = {burst}\nprefetch_users = [{}]\n[cache]\nmax_entries = 5000\n",
            list.join(", ")
        ),
    );
    assert!(
        d.wait_for_log("prefetch done", Duration::from_secs(60)),
        "{}",
        d.log()
    );
    for name in users.iter().take(10) {
        assert!(matches!(
            query(&d.socket(), &Request::GetPwNam(name.clone())),
            Response::Passwd(_)
        ));
    }
    assert!(d
        .wait_for_cache_file(Table::PasswdByName, users[999].as_bytes())
        .is_some());
    let prefix = "budgetfl";
    let start = Instant::now();
    let flood = start_flood(&d.socket(), prefix, 16, 120, 50_000);
    let summary = finish_flood(flood);
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(field(&summary, "lookups"), 50_000, "{summary}");
    assert!(
        field(&summary, "unavailable") > 40_000,
        "most of the flood was refused: {summary}"
    );
    // Each miss searches both user bases: two searches per query admitted.
    let searches = env.slapd.searches_containing(prefix) as f64;
    let budget = (burst as f64 + rate as f64 * elapsed) * 2.0;
    assert!(
        searches <= budget * 1.1 + 10.0,
        "the flood's directory searches ({searches}) stay within its budget ({budget:.0} in {elapsed:.1} s)"
    );
    // Root is unaffected: its cached users are all in the shared file, and still answered.
    std::thread::sleep(Duration::from_millis(500));
    let bytes = std::fs::read(d.map_file()).unwrap();
    let view = MapView::new(&bytes).expect("a valid cache file");
    let missing: Vec<&String> = users
        .iter()
        .filter(|n| view.get(Table::PasswdByName, n.as_bytes()).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "{} cached users gone from the file",
        missing.len()
    );
    let before = env.slapd.searches_containing(&users[0]);
    for name in users.iter().take(100) {
        assert!(matches!(
            query(&d.socket(), &Request::GetPwNam(name.clone())),
            Response::Passwd(_)
        ));
    }
    assert_eq!(
        env.slapd.searches_containing(&users[0]),
        before,
        "answered from cache"
    );
    let st = status(&d);
    assert!(
        st.contains(&format!("admission_over_budget_by_uid: {NOBODY}=")),
        "{st}"
    );
    println!("{summary} searches={searches} budget={budget:.0}");
}

/// The fair queue holds per directory operation and the caller reaches the pool: with two
/// operation slots in all (one connection, two operations on it), uid 65534's flood of group
/// misses (two searches each, one per group base, each queued in that uid's turn) and root's
/// cold lookups (users: two searches; initgroups: the user, then the memberships; groups:
/// member DNs resolved in batches) share them round-robin, so every one of root's lookups
/// is answered within the queue timeout, and the server is never marked failed. Were the
/// operations queued in one FIFO (the caller lost on its way to the pool, or admission per
/// lookup only), root's operations would wait behind hundreds of the flood's.
#[test]
fn with_two_operation_slots_a_flood_of_group_misses_starves_no_other_uid() {
    let f = Fixture::generate(Schema::Rfc2307bis, Shape::small());
    let slapd = Slapd::start(&f);
    let uris = [slapd.uri()];
    let d = Daemon::start_logged(
        |run, cache| {
            toolforge_nss_tests::daemon::config(
                &uris,
                Schema::Rfc2307bis,
                run,
                cache,
                "connections_per_server = 1\nmax_ops_per_connection = 2\n",
                "max_connections_per_uid = 400\nmiss_queries_per_uid_per_sec = 0\n",
            )
        },
        "info",
    );
    let users: Vec<String> = f.developers().map(|u| u.name.clone()).take(40).collect();
    let groups: Vec<String> = f.groups.keys().take(20).cloned().collect();
    assert_eq!(users.len(), 40);
    let flood = start_flood_of("group", &d.socket(), "grfl", 300, 12, u64::MAX);
    std::thread::sleep(Duration::from_secs(1));
    // Each request with the answer the fixture says it has.
    let mut asked: Vec<(Request, Response)> = Vec::new();
    for u in &users {
        let want = &f.users[u];
        asked.push((
            Request::GetPwNam(u.clone()),
            Response::Passwd(toolforge_nss_protocol::Passwd {
                name: want.name.clone(),
                passwd: "x".into(),
                uid: want.uid,
                gid: want.gid,
                gecos: want.gecos.clone(),
                dir: want.home.clone(),
                shell: want.shell.clone(),
            }),
        ));
    }
    let members: Vec<&String> = f.groups.values().flat_map(|g| &g.members).collect();
    for u in members.iter().step_by(7).take(20) {
        let gids = f.supplementary_gids(u);
        assert!(!gids.is_empty());
        asked.push((Request::InitGroups((*u).clone()), Response::GroupIds(gids)));
    }
    for g in &groups {
        let want = &f.groups[g];
        asked.push((
            Request::GetGrNam(g.clone()),
            Response::Group(toolforge_nss_protocol::Group {
                name: g.clone(),
                passwd: "x".into(),
                gid: want.gid,
                members: want.members.clone(),
            }),
        ));
    }
    let mut worst = Duration::ZERO;
    for (req, want) in &asked {
        let t = Instant::now();
        let got = query(&d.socket(), req);
        worst = worst.max(t.elapsed());
        assert_eq!(
            &got,
            want,
            "root's cold {req:?} during the flood\n{}",
            status(&d)
        );
        std::thread::sleep(Duration::from_millis(60));
    }
    let summary = finish_flood(flood);
    let st = status(&d);
    let line = server_line(&st, &uris[0]);
    assert!(
        line.contains("failures=0") && line.contains("errors_total=0"),
        "the server was never marked failed: {line}\n{st}"
    );
    assert!(
        field(&summary, "lookups") > 1000,
        "the flood was a flood: {summary}"
    );
    let admission = st
        .lines()
        .find(|l| l.starts_with("admission:"))
        .unwrap_or_default();
    assert!(
        field(admission, "queued_total") > 1000,
        "the flood's operations queued for the two slots: {admission}"
    );
    println!(
        "{summary} root_lookups={} root_worst_ms={}\n{admission}",
        asked.len(),
        worst.as_millis()
    );
}
