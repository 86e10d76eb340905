//! `toolforge-nss-load [--threads N] [--seconds S] [--developers N]`: a load run against the
//! daemon's socket, then the same run with the directory killed halfway through.
//!
//! Each client thread keeps one connection (as a long-running process keeps its cached one)
//! and looks up warmed keys (users by name and uid, groups, initgroups) as fast as it can.
//! TTLs are short (5 s) so that, once the directory is gone, entries expire and must be
//! served stale. Prints lookups per second, p50/p99 latency and failed lookups per run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use toolforge_nss_protocol::frame::FLAG_STALE;
use toolforge_nss_protocol::{Request, Response};
use toolforge_nss_tests::client::{query, Session};
use toolforge_nss_tests::daemon::Daemon;
use toolforge_nss_tests::fixture::{Fixture, Schema, Shape};
use toolforge_nss_tests::slapd::Slapd;

struct Totals {
    latencies: Vec<u32>,
    failed: u64,
    stale: u64,
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(
    sock: &std::path::Path,
    keys: &Arc<Vec<(Request, Response)>>,
    threads: u64,
    seconds: u64,
    kill: Option<&mut Slapd>,
) -> Totals {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (keys, stop, sock) = (keys.clone(), stop.clone(), sock.to_owned());
            std::thread::spawn(move || {
                let mut s = Session::connect(&sock).expect("connect");
                let mut lat = Vec::with_capacity(1 << 16);
                let (mut failed, mut stale) = (0u64, 0u64);
                let mut i = (t as usize).wrapping_mul(7919);
                while !stop.load(Ordering::Relaxed) {
                    let (req, want) = &keys[i % keys.len()];
                    i = i.wrapping_add(104_729);
                    let t0 = Instant::now();
                    match s.ask(req) {
                        Ok((h, got)) => {
                            lat.push(t0.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                            if &got != want {
                                failed += 1;
                            }
                            if h.flags & FLAG_STALE != 0 {
                                stale += 1;
                            }
                        }
                        Err(_) => {
                            failed += 1;
                            s = Session::connect(&sock).expect("reconnect");
                        }
                    }
                }
                (lat, failed, stale)
            })
        })
        .collect();
    match kill {
        Some(slapd) => {
            std::thread::sleep(Duration::from_secs(seconds / 2));
            slapd.stop();
            eprintln!("  slapd killed at {} s", seconds / 2);
            std::thread::sleep(Duration::from_secs(seconds - seconds / 2));
        }
        None => std::thread::sleep(Duration::from_secs(seconds)),
    }
    stop.store(true, Ordering::Relaxed);
    let mut t = Totals {
        latencies: Vec::new(),
        failed: 0,
        stale: 0,
    };
    for h in handles {
        let (lat, failed, stale) = h.join().expect("client thread");
        t.latencies.extend(lat);
        t.failed += failed;
        t.stale += stale;
    }
    t.latencies.sort_unstable();
    t
}

fn report(label: &str, t: &Totals, seconds: u64) {
    let n = t.latencies.len();
    let pct = |p: f64| {
        t.latencies
            .get(((n as f64 * p) as usize).min(n.saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{label:<28} lookups={n:>9} per_s={:>8.0} p50_us={:>7.1} p99_us={:>8.1} max_ms={:>7.1} failed={} stale_served={}",
        n as f64 / seconds as f64,
        pct(0.50) as f64 / 1e3,
        pct(0.99) as f64 / 1e3,
        t.latencies.last().copied().unwrap_or(0) as f64 / 1e6,
        t.failed,
        t.stale
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads = arg(&args, "--threads", 200);
    let seconds = arg(&args, "--seconds", 30);
    let developers = arg(&args, "--developers", 20_000) as usize;
    let fixture = Fixture::generate(
        Schema::Rfc2307,
        Shape {
            developers,
            ..Shape::default()
        },
    );
    eprintln!(
        "directory: {} users, {} groups; {threads} client threads, {seconds} s per run",
        fixture.users.len(),
        fixture.groups.len()
    );
    let mut slapd = Slapd::start(&fixture);
    let d = Daemon::start(&[slapd.uri()], Schema::Rfc2307, "[cache]\npositive_ttl_secs = 5\nnegative_ttl_secs = 5\nstale_wait_ms = 100\npersist_interval_secs = 0\n");
    let mut reqs = Vec::new();
    for u in fixture
        .users
        .values()
        .filter(|u| u.uid != fixture.ambiguous_uid())
        .take(2000)
    {
        reqs.push(Request::GetPwNam(u.name.clone()));
        reqs.push(Request::GetPwUid(u.uid));
        reqs.push(Request::InitGroups(u.name.clone()));
    }
    for g in fixture
        .groups
        .values()
        .filter(|g| g.members.len() < 1000)
        .take(200)
    {
        reqs.push(Request::GetGrNam(g.name.clone()));
    }
    let keys: Arc<Vec<(Request, Response)>> = Arc::new(
        reqs.into_iter()
            .map(|r| {
                let want = query(&d.socket(), &r);
                (r, want)
            })
            .collect(),
    );
    eprintln!("warmed {} keys", keys.len());
    let normal = run(&d.socket(), &keys, threads, seconds, None);
    report("directory up", &normal, seconds);
    let outage = run(&d.socket(), &keys, threads, seconds, Some(&mut slapd));
    report("directory killed mid-run", &outage, seconds);
    let rss = std::fs::read_to_string(format!("/proc/{}/status", d.pid().unwrap_or(0)))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .unwrap_or_default();
    println!("daemon rss_kb={rss}");
}
