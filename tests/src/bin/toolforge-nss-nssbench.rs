//! `toolforge-nss-nssbench OP KEYFILE COUNT [THREADS]`: times real glibc NSS calls as a
//! container process makes them, through whatever `/etc/nsswitch.conf` says (run it in a
//! mount namespace with the provider's nsswitch.conf; see bench/run.sh).
//!
//! OP: pwnam pwuid grnam grgid initgroups (through glibc); module-pwnam module-pwuid
//! module-grnam (the module's own exports, `dlopen`ed from `libnss_toolforge.so.2` on the
//! library path: what the module costs without glibc's NSS dispatch); nsswitch-stat (the
//! `stat` of /etc/nsswitch.conf that glibc makes on every NSS call since 2.33, the floor of
//! any NSS module). KEYFILE: one "NAME ID" per line.
//! Prints: `op=.. n=.. found=.. threads=.. p50_ns=.. p99_ns=.. max_ns=.. ops_per_s=..`

use std::ffi::CString;
use std::time::Instant;

type ByName = unsafe extern "C" fn(
    *const libc::c_char,
    *mut libc::c_void,
    *mut libc::c_char,
    usize,
    *mut libc::c_int,
) -> libc::c_int;
type ById = unsafe extern "C" fn(
    u32,
    *mut libc::c_void,
    *mut libc::c_char,
    usize,
    *mut libc::c_int,
) -> libc::c_int;

/// The module's exports, for the `module-*` ops.
struct Exports {
    pwnam: ByName,
    pwuid: ById,
    grnam: ByName,
}

fn load_module() -> Exports {
    // SAFETY: dlopen/dlsym with NUL-terminated names; the symbols have these C signatures.
    unsafe {
        let h = libc::dlopen(c"libnss_toolforge.so.2".as_ptr(), libc::RTLD_NOW);
        if h.is_null() {
            eprintln!("cannot dlopen libnss_toolforge.so.2 (set LD_LIBRARY_PATH)");
            std::process::exit(2);
        }
        let sym = |n: &std::ffi::CStr| {
            let p = libc::dlsym(h, n.as_ptr());
            if p.is_null() {
                eprintln!("missing {n:?}");
                std::process::exit(2);
            }
            p
        };
        Exports {
            pwnam: std::mem::transmute::<*mut libc::c_void, ByName>(sym(
                c"_nss_toolforge_getpwnam_r",
            )),
            pwuid: std::mem::transmute::<*mut libc::c_void, ById>(sym(
                c"_nss_toolforge_getpwuid_r",
            )),
            grnam: std::mem::transmute::<*mut libc::c_void, ByName>(sym(
                c"_nss_toolforge_getgrnam_r",
            )),
        }
    }
}

static MODULE: std::sync::OnceLock<Exports> = std::sync::OnceLock::new();

fn lookup(op: &str, name: &CString, id: u32, buf: &mut [libc::c_char]) -> bool {
    // SAFETY: every pointer is valid for the call; buffers are owned here.
    unsafe {
        if let Some(which) = op.strip_prefix("module-") {
            let m = MODULE.get_or_init(load_module);
            let mut out = [0u64; 16]; // room for a struct passwd or struct group
            let mut err = 0;
            let (p, n) = (out.as_mut_ptr().cast(), buf.len());
            let status = match which {
                "pwnam" => (m.pwnam)(name.as_ptr(), p, buf.as_mut_ptr(), n, &mut err),
                "pwuid" => (m.pwuid)(id, p, buf.as_mut_ptr(), n, &mut err),
                _ => (m.grnam)(name.as_ptr(), p, buf.as_mut_ptr(), n, &mut err),
            };
            return status == 1;
        }
        match op {
            "nsswitch-stat" => {
                let mut st: libc::stat = std::mem::zeroed();
                libc::stat(c"/etc/nsswitch.conf".as_ptr(), &mut st) == 0
            }
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
