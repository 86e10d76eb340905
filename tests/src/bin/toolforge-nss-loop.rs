//! `toolforge-nss-loop WARM COLD STOP OUT`: a long-running process that looks users up through
//! glibc (`getpwnam_r`, so through the NSS module as any program would) until the file STOP
//! exists, then writes what it saw to OUT. STOP may hold `MIN_WARM MIN_COLD`: the loop then
//! goes on past STOP until it made that many lookups of each class (or ran out of cold names),
//! for at most 30 s more, so a slow machine still gives the test the lookups it counts on.
//!
//! WARM and COLD are files of `name uid` lines. Warm names (cached by the daemon beforehand)
//! are looked up round and round as fast as the loop goes; cold names (never looked up
//! before) one every 2 ms, each once, so every cold lookup reaches the daemon. A lookup fails
//! when it does not return the expected uid. OUT gets `key value` lines: per class the
//! lookups, failures, worst latency (µs), and the first and last failure (ms since start).

use std::ffi::CString;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Class {
    total: u64,
    failed: u64,
    max_us: u64,
    first_fail_ms: Option<u64>,
    last_fail_ms: Option<u64>,
}

impl Class {
    fn record(&mut self, ok: bool, took: Duration, since_start: Duration) {
        self.total += 1;
        self.max_us = self.max_us.max(took.as_micros() as u64);
        if !ok {
            self.failed += 1;
            let ms = since_start.as_millis() as u64;
            self.first_fail_ms.get_or_insert(ms);
            self.last_fail_ms = Some(ms);
        }
    }

    fn write(&self, prefix: &str, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "{prefix}_total {}", self.total);
        let _ = writeln!(out, "{prefix}_failed {}", self.failed);
        let _ = writeln!(out, "{prefix}_max_us {}", self.max_us);
        let window = match (self.first_fail_ms, self.last_fail_ms) {
            (Some(a), Some(b)) => b - a,
            _ => 0,
        };
        let _ = writeln!(out, "{prefix}_fail_window_ms {window}");
    }
}

fn read_names(path: &str) -> Vec<(CString, u32)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter_map(|l| {
            let (name, uid) = l.split_once(' ')?;
            Some((CString::new(name).ok()?, uid.parse().ok()?))
        })
        .collect()
}

/// Whether `name` resolves to `uid`.
fn lookup(name: &CString, uid: u32, buf: &mut [u8]) -> bool {
    // SAFETY: getpwnam_r writes into `pwd` and `buf` (of the length given) only.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        rc == 0 && !result.is_null() && (*result).pw_uid == uid
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: toolforge-nss-loop WARM COLD STOP OUT");
        std::process::exit(2);
    }
    let (warm_names, cold_names) = (read_names(&args[1]), read_names(&args[2]));
    let stop = std::path::Path::new(&args[3]);
    assert!(!warm_names.is_empty(), "no warm names");
    let mut buf = vec![0u8; 1 << 16];
    let (mut warm, mut cold) = (Class::default(), Class::default());
    let start = Instant::now();
    let mut next_cold = start;
    let (mut w, mut c) = (0usize, 0usize);
    let mut check = 0u32;
    // (minimum warm, minimum cold, give up at) once STOP exists.
    let mut stopping: Option<(u64, u64, Instant)> = None;
    loop {
        check += 1;
        if stopping.is_none() && check.is_multiple_of(64) && stop.exists() {
            let text = std::fs::read_to_string(stop).unwrap_or_default();
            let mut mins = text
                .split_whitespace()
                .map(|v| v.parse::<u64>().unwrap_or(0));
            let (min_warm, min_cold) = (mins.next().unwrap_or(0), mins.next().unwrap_or(0));
            stopping = Some((min_warm, min_cold, Instant::now() + Duration::from_secs(30)));
        }
        if let Some((min_warm, min_cold, give_up)) = stopping {
            let cold_done = cold.total >= min_cold || c >= cold_names.len();
            if (warm.total >= min_warm && cold_done) || Instant::now() >= give_up {
                break;
            }
        }
        let (name, uid) = &warm_names[w % warm_names.len()];
        w += 1;
        let t = Instant::now();
        let ok = lookup(name, *uid, &mut buf);
        warm.record(ok, t.elapsed(), t - start);
        if c < cold_names.len() && Instant::now() >= next_cold {
            let (name, uid) = &cold_names[c];
            c += 1;
            let t = Instant::now();
            let ok = lookup(name, *uid, &mut buf);
            cold.record(ok, t.elapsed(), t - start);
            next_cold = t + Duration::from_millis(2);
        }
    }
    let mut out = String::new();
    warm.write("warm", &mut out);
    cold.write("cold", &mut out);
    out.push_str(&format!("cold_exhausted {}\n", c >= cold_names.len()));
    out.push_str(&format!("seconds {:.3}\n", start.elapsed().as_secs_f64()));
    std::fs::write(&args[4], out).expect("write OUT");
}
