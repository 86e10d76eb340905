//! `toolforge-nss-flood [--threads 300] [--seconds 20] [--servers 1] [--budget 0]`: issue 10's
//! flood, as a benchmark. One uid (65534, a child process of this binary) runs `--threads`
//! threads asking for distinct names that do not exist, for `--seconds`, against a stock slapd
//! (`--servers` of them); meanwhile and after, root makes 200 cold lookups of real users.
//! `--budget N` sets `miss_queries_per_uid_per_sec` (0, the default here: no budget, so every
//! miss reaches the pool). Prints the counts at the end: lookups, directory searches,
//! connections opened, failures. Run as root (it switches the child to uid 65534).

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use toolforge_nss_protocol::admin::{AdminRequest, AdminResponse};
use toolforge_nss_protocol::{Request, Response};
use toolforge_nss_tests::client::{admin, query, Session};
use toolforge_nss_tests::daemon::{config, Daemon};
use toolforge_nss_tests::fixture::{Fixture, Schema, Shape};
use toolforge_nss_tests::slapd::Slapd;

const NOBODY: u32 = 65534;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The flooding uid: prints `lookups notfound unavailable errors`.
fn child(socket: &str, threads: u64, seconds: u64) {
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (counts, sock) = (counts.clone(), std::path::PathBuf::from(socket));
            std::thread::spawn(move || {
                let mut session = None;
                let mut i = 0u64;
                while start.elapsed() < Duration::from_secs(seconds) {
                    if session.is_none() {
                        session = Session::connect(&sock).ok();
                    }
                    let Some(s) = session.as_mut() else {
                        counts[3].fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    i += 1;
                    let k = match s.ask(&Request::GetPwNam(format!("nosuch{t}x{i}"))) {
                        Ok((_, Response::NotFound)) => 1,
                        Ok((_, Response::Unavailable)) => 2,
                        Ok((_, Response::Passwd(_))) => 0,
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
        let _ = w.join();
    }
    let c: Vec<u64> = counts.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    println!("{} {} {} {}", c.iter().sum::<u64>(), c[1], c[2], c[3]);
}

fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or("?")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (threads, seconds) = (arg(&args, "--threads", 300), arg(&args, "--seconds", 20));
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1], threads, seconds);
        return;
    }
    let servers = arg(&args, "--servers", 1).max(1) as usize;
    let budget = arg(&args, "--budget", 0);
    let f = Fixture::generate(
        Schema::Rfc2307,
        Shape {
            developers: 400,
            ..Shape::small()
        },
    );
    let slapds: Vec<Slapd> = (0..servers).map(|_| Slapd::start(&f)).collect();
    let uris: Vec<String> = slapds.iter().map(Slapd::uri).collect();
    let extra =
        format!("max_connections_per_uid = 1024\nmiss_queries_per_uid_per_sec = {budget}\n");
    let d = Daemon::start_logged(
        |run, cache| config(&uris, Schema::Rfc2307, run, cache, "", &extra),
        "warn",
    );
    let users: Vec<String> = f.developers().map(|u| u.name.clone()).take(200).collect();
    eprintln!(
        "flood: {threads} threads of uid {NOBODY} for {seconds} s against {servers} stock slapd; budget {}",
        if budget == 0 { "off".to_owned() } else { format!("{budget}/s") }
    );
    let flooder = Command::new(std::env::current_exe().unwrap())
        .args(["--child", &d.socket().display().to_string()])
        .args([
            "--threads",
            &threads.to_string(),
            "--seconds",
            &seconds.to_string(),
        ])
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the flooding child");
    std::thread::sleep(Duration::from_secs(1));
    // 3/4 of root's lookups during the flood, spread over it; the rest after.
    let during = users.len() * 3 / 4;
    let gap = Duration::from_millis(seconds.saturating_sub(2) * 1000 / during as u64);
    let mut lat = Vec::new();
    let mut failed = 0;
    let mut ask = |name: &String| {
        let t = Instant::now();
        let ok = matches!(query(&d.socket(), &Request::GetPwNam(name.clone())), Response::Passwd(p) if &p.name == name);
        lat.push(t.elapsed());
        failed += u32::from(!ok);
    };
    for name in &users[..during] {
        ask(name);
        std::thread::sleep(gap);
    }
    let out = flooder.wait_with_output().expect("flooding child");
    for name in &users[during..] {
        ask(name);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let c: Vec<u64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let status = match admin(&d.admin_socket(), &AdminRequest::Status) {
        Ok(AdminResponse::Text(t)) => t,
        other => panic!("status: {other:?}"),
    };
    let failures: u64 = status
        .lines()
        .filter(|l| l.starts_with("server: "))
        .map(|l| status_field(l, "errors_total").parse::<u64>().unwrap_or(0))
        .sum();
    lat.sort();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    let searches = status
        .lines()
        .find_map(|l| l.strip_prefix("directory_searches: "))
        .unwrap_or("?");
    println!(
        "flood uid {NOBODY}: lookups={} notfound={} unavailable={} errors={} ({:.0}/s)",
        c.first().unwrap_or(&0),
        c.get(1).unwrap_or(&0),
        c.get(2).unwrap_or(&0),
        c.get(3).unwrap_or(&0),
        *c.first().unwrap_or(&0) as f64 / seconds as f64
    );
    println!(
        "root: cold lookups={} failed={failed} p50={:.1}ms p99={:.1}ms max={:.1}ms",
        lat.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
    let pool = status
        .lines()
        .find(|l| l.starts_with("directory_pool:"))
        .unwrap_or("");
    let adm = status
        .lines()
        .find(|l| l.starts_with("admission:"))
        .unwrap_or("");
    println!(
        "directory: searches={searches} connections_opened={} server_failures={failures} timeouts={} queue_timeouts={} over_budget={}",
        status_field(pool, "opened_total"),
        status_field(pool, "timeouts_total"),
        status_field(adm, "queue_timeouts_total"),
        status_field(adm, "over_budget_total"),
    );
}
