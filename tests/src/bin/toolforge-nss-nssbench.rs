//! `toolforge-nss-nssbench OP KEYFILE COUNT [THREADS]`: times real glibc NSS calls as a
//! container process makes them, through whatever `/etc/nsswitch.conf` says (run it in a
//! mount namespace with the provider's nsswitch.conf; see bench/run.sh).
//!
//! OP: pwnam pwuid grnam grgid initgroups. KEYFILE: one "NAME ID" per line.
//! Prints: `op=.. n=.. found=.. threads=.. p50_ns=.. p99_ns=.. max_ns=.. ops_per_s=..`

use std::ffi::CString;
use std::time::Instant;

fn lookup(op: &str, name: &CString, id: u32, buf: &mut [libc::c_char]) -> bool {
    // SAFETY: every pointer is valid for the call; buffers are owned here.
    unsafe {
        match op {
            "pwnam" | "pwuid" => {
                let mut pw: libc::passwd = std::mem::zeroed();
                let mut out: *mut libc::passwd = std::ptr::null_mut();
                if op == "pwnam" {
                    libc::getpwnam_r(
                        name.as_ptr(),
                        &mut pw,
                        buf.as_mut_ptr(),
                        buf.len(),
                        &mut out,
                    );
                } else {
                    libc::getpwuid_r(id, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out);
                }
                !out.is_null()
            }
            "grnam" | "grgid" => {
                let mut gr: libc::group = std::mem::zeroed();
                let mut out: *mut libc::group = std::ptr::null_mut();
                if op == "grnam" {
                    libc::getgrnam_r(
                        name.as_ptr(),
                        &mut gr,
                        buf.as_mut_ptr(),
                        buf.len(),
                        &mut out,
                    );
                } else {
                    libc::getgrgid_r(id, &mut gr, buf.as_mut_ptr(), buf.len(), &mut out);
                }
                !out.is_null()
            }
            "initgroups" => {
                let mut groups = [0 as libc::gid_t; 4096];
                let mut n: libc::c_int = groups.len() as libc::c_int;
                libc::getgrouplist(name.as_ptr(), 500, groups.as_mut_ptr(), &mut n) >= 0 && n > 1
            }
            other => {
                eprintln!("unknown op {other}");
                std::process::exit(2)
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: toolforge-nss-nssbench OP KEYFILE COUNT [THREADS]");
        std::process::exit(2);
    }
    let op = args[1].clone();
    let keys: Vec<(CString, u32)> = std::fs::read_to_string(&args[2])
        .unwrap_or_else(|e| {
            eprintln!("{}: {e}", args[2]);
            std::process::exit(2)
        })
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let name = CString::new(w.next()?).ok()?;
            Some((
                name,
                w.next().and_then(|i| i.parse().ok()).unwrap_or(u32::MAX),
            ))
        })
        .collect();
    let count: usize = args[3].parse().unwrap_or(1000);
    let threads: usize = args.get(4).and_then(|t| t.parse().ok()).unwrap_or(1).max(1);
    let per_thread = count / threads;
    let keys = std::sync::Arc::new(keys);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (keys, op) = (keys.clone(), op.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0 as libc::c_char; 1 << 20];
                let mut lat = Vec::with_capacity(per_thread);
                let mut found = 0usize;
                for i in 0..per_thread {
                    let (name, id) = &keys[(t * 104_729 + i * 7_919) % keys.len()];
                    let t0 = Instant::now();
                    found += usize::from(lookup(&op, name, *id, &mut buf));
                    lat.push(t0.elapsed().as_nanos() as u64);
                }
                (lat, found)
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(count);
    let mut found = 0;
    for h in handles {
        let (l, f) = h.join().expect("bench thread");
        lat.extend(l);
        found += f;
    }
    let wall = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let n = lat.len().max(1);
    let pct = |p: f64| {
        lat.get(((n as f64 * p) as usize).min(n - 1))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "op={op} n={} found={found} threads={threads} p50_ns={} p99_ns={} max_ns={} ops_per_s={:.0}",
        lat.len(),
        pct(0.5),
        pct(0.99),
        lat.last().copied().unwrap_or(0),
        lat.len() as f64 / wall
    );
}
