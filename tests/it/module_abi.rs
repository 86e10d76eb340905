//! The module's C ABI, called directly through `dlopen` with tiny, exact and NULL buffers, as
//! glibc and odd callers would. The module reads its environment once per process, so each
//! scenario runs in a child process (this binary again, `--ignored --exact`), pointed at a
//! daemon of its own.

use std::ffi::{c_void, CStr, CString};
use std::os::raw::{c_char, c_int, c_long};
use std::process::Command;
use std::time::{Duration, Instant};

use toolforge_nss_tests::daemon::Daemon;
use toolforge_nss_tests::fixture::{Fixture, Schema, Shape, BIG_GROUP};
use toolforge_nss_tests::paths::module_so;

use crate::env::shared;

pub(crate) const SUCCESS: c_int = 1;
pub(crate) const NOTFOUND: c_int = 0;
pub(crate) const UNAVAIL: c_int = -1;
const TRYAGAIN: c_int = -2;

type PwNam =
    unsafe extern "C" fn(*const c_char, *mut libc::passwd, *mut c_char, usize, *mut c_int) -> c_int;
type PwUid =
    unsafe extern "C" fn(libc::uid_t, *mut libc::passwd, *mut c_char, usize, *mut c_int) -> c_int;
type GrNam =
    unsafe extern "C" fn(*const c_char, *mut libc::group, *mut c_char, usize, *mut c_int) -> c_int;
type InitGroups = unsafe extern "C" fn(
    *const c_char,
    libc::gid_t,
    *mut c_long,
    *mut c_long,
    *mut *mut libc::gid_t,
    c_long,
    *mut c_int,
) -> c_int;
type SetEnt = unsafe extern "C" fn(c_int) -> c_int;
type PwEnt = unsafe extern "C" fn(*mut libc::passwd, *mut c_char, usize, *mut c_int) -> c_int;

pub(crate) struct Module(*mut c_void);

impl Module {
    pub(crate) fn load() -> Module {
        let path = CString::new(module_so().to_str().unwrap()).unwrap();
        let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!h.is_null(), "dlopen {:?}", path);
        Module(h)
    }
    fn sym<T: Copy>(&self, name: &str) -> T {
        let n = CString::new(format!("_nss_toolforge_{name}")).unwrap();
        let p = unsafe { libc::dlsym(self.0, n.as_ptr()) };
        assert!(!p.is_null(), "missing export {name}");
        unsafe { std::mem::transmute_copy(&p) }
    }
}

fn cstr(p: *const c_char) -> String {
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

pub(crate) fn pwnam(
    m: &Module,
    name: &str,
    buflen: usize,
    null_buf: bool,
) -> (c_int, c_int, Option<String>) {
    let f: PwNam = m.sym("getpwnam_r");
    let name = CString::new(name).unwrap();
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as c_char; buflen.max(1)];
    let mut err = -1;
    let bp = if null_buf {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr()
    };
    let st = unsafe { f(name.as_ptr(), &mut pw, bp, buflen, &mut err) };
    let line = (st == SUCCESS).then(|| {
        format!(
            "{}:{}:{}:{}:{}:{}:{}",
            cstr(pw.pw_name),
            cstr(pw.pw_passwd),
            pw.pw_uid,
            pw.pw_gid,
            cstr(pw.pw_gecos),
            cstr(pw.pw_dir),
            cstr(pw.pw_shell)
        )
    });
    (st, err, line)
}

fn grnam(m: &Module, name: &str, buflen: usize) -> (c_int, c_int, Vec<String>) {
    let f: GrNam = m.sym("getgrnam_r");
    let name = CString::new(name).unwrap();
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as c_char; buflen.max(1)];
    let mut err = -1;
    let st = unsafe { f(name.as_ptr(), &mut gr, buf.as_mut_ptr(), buflen, &mut err) };
    let mut members = Vec::new();
    if st == SUCCESS {
        assert_eq!(
            gr.gr_mem as usize % std::mem::size_of::<*mut c_char>(),
            0,
            "aligned member array"
        );
        let mut i = 0;
        while !unsafe { *gr.gr_mem.add(i) }.is_null() {
            members.push(cstr(unsafe { *gr.gr_mem.add(i) }));
            i += 1;
        }
    }
    (st, err, members)
}

fn initgroups(m: &Module, user: &str, skip: u32, limit: c_long) -> (c_int, Vec<u32>) {
    let f: InitGroups = m.sym("initgroups_dyn");
    let name = CString::new(user).unwrap();
    let mut size: c_long = 1;
    let mut start: c_long = 1;
    let mut groups =
        unsafe { libc::malloc(std::mem::size_of::<libc::gid_t>()) } as *mut libc::gid_t;
    unsafe { *groups = 500 };
    let mut err = -1;
    let st = unsafe {
        f(
            name.as_ptr(),
            skip,
            &mut start,
            &mut size,
            &mut groups,
            limit,
            &mut err,
        )
    };
    assert!(start <= size);
    let got = unsafe { std::slice::from_raw_parts(groups, start as usize) }.to_vec();
    unsafe { libc::free(groups.cast()) };
    (st, got)
}

pub(crate) fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The command that runs the ignored test `name` (of this module, or a `module::test` path)
/// in a child process with `env`.
pub(crate) fn child(name: &str, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    let path = if name.contains("::") {
        name.to_owned()
    } else {
        format!("module_abi::{name}")
    };
    cmd.args([
        "--ignored",
        "--exact",
        &path,
        "--test-threads=1",
        "--nocapture",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs the ignored test `name` in a child process with `env`; it must pass.
fn in_child(name: &str, env: &[(&str, String)]) {
    check_child(name, child(name, env).output().unwrap());
}

pub(crate) fn check_child(name: &str, out: std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn status_discipline_buffers_and_fds() {
    let env = shared(Schema::Rfc2307);
    in_child(
        "child_lookups",
        &[(
            "TOOLFORGE_NSS_DIR",
            env.daemon.runtime_dir().display().to_string(),
        )],
    );
}

#[test]
fn erange_retry_needs_no_second_round_trip() {
    let env = shared(Schema::Rfc2307);
    let d = Daemon::start(&[env.slapd.uri()], Schema::Rfc2307, "");
    let pid = d.pid().unwrap();
    in_child(
        "child_erange",
        &[
            ("TOOLFORGE_NSS_DIR", d.runtime_dir().display().to_string()),
            ("TOOLFORGE_NSS_TIMEOUT_MS", "300".into()),
            ("TF_DAEMON_PID", pid.to_string()),
        ],
    );
    toolforge_nss_tests::process::signal(pid, libc::SIGCONT);
}

#[test]
fn daemon_killed_and_restarted_under_load_reconnects_without_leaking_fds() {
    let env = shared(Schema::Rfc2307);
    // No cache file: it would keep answering across the restarts, and this is about the socket.
    let mut d = Daemon::start(
        &[env.slapd.uri()],
        Schema::Rfc2307,
        "[cache]\nmap_file_max_mib = 0\n",
    );
    let running = child(
        "child_reconnect",
        &[("TOOLFORGE_NSS_DIR", d.runtime_dir().display().to_string())],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    d.kill(); // SIGKILL: stale socket, refused connections
    std::thread::sleep(Duration::from_millis(300));
    d.restart();
    std::thread::sleep(Duration::from_millis(700));
    assert!(d.stop()); // SIGTERM: socket removed
    std::thread::sleep(Duration::from_millis(300));
    d.restart();
    check_child("child_reconnect", running.wait_with_output().unwrap());
}

#[test]
#[ignore = "runs in a child process started by daemon_killed_and_restarted_under_load_reconnects_without_leaking_fds"]
fn child_reconnect() {
    let f = fixture();
    let m = Module::load();
    let u = f.developer(false);
    assert_eq!(pwnam(&m, &u.name, 1024, false).0, SUCCESS);
    let fds = open_fds();
    let (mut ok, mut unavailable, mut most_fds) = (0u32, 0u32, fds);
    let mut recent = std::collections::VecDeque::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3500) {
        let st = pwnam(&m, &u.name, 1024, false).0;
        match st {
            SUCCESS => ok += 1,
            UNAVAIL => unavailable += 1,
            other => panic!("unexpected status {other}"),
        }
        recent.push_back(st);
        if recent.len() > 50 {
            recent.pop_front();
        }
        most_fds = most_fds.max(open_fds());
        std::thread::sleep(Duration::from_millis(2));
    }
    println!("ok={ok} unavailable={unavailable} fds={fds} most={most_fds}");
    assert!(unavailable > 0, "the daemon really went away");
    assert!(
        recent.iter().all(|&s| s == SUCCESS),
        "reconnected after the restarts"
    );
    assert!(
        most_fds <= fds + 1,
        "no fd leak: {fds} -> at most {most_fds}"
    );
    assert!(open_fds() <= fds, "back to one cached connection");
}

fn fixture() -> Fixture {
    Fixture::generate(Schema::Rfc2307, Shape::default())
}

#[test]
#[ignore = "runs in a child process started by status_discipline_buffers_and_fds"]
fn child_lookups() {
    let f = fixture();
    let m = Module::load();
    let u = f.developer(true);
    let line = u.passwd_line();
    // The five strings and their NULs; uid and gid live in the struct, not the buffer.
    let exact = [u.name.len(), 1, u.gecos.len(), u.home.len(), u.shell.len()]
        .iter()
        .map(|n| n + 1)
        .sum::<usize>();
    // NULL or zero-size buffers: TRYAGAIN/ERANGE, never a crash.
    assert_eq!(pwnam(&m, &u.name, 0, true).0, TRYAGAIN);
    assert_eq!(pwnam(&m, &u.name, 0, false).1, libc::ERANGE);
    let needed = (1..4096)
        .find(|&n| pwnam(&m, &u.name, n, false).0 == SUCCESS)
        .unwrap();
    assert_eq!(needed, exact, "exactly the strings and their NULs");
    assert_eq!(pwnam(&m, &u.name, needed - 1, false).1, libc::ERANGE);
    assert_eq!(pwnam(&m, &u.name, needed, false).2, Some(line));
    let (st, e, _) = pwnam(&m, "nosuch-abi", 1024, false);
    assert_eq!((st, e), (NOTFOUND, libc::ENOENT));
    let (st, e, _) = pwnam(&m, "*)(uid=*", 1024, false);
    assert_eq!((st, e), (NOTFOUND, libc::EINVAL));
    let f_nam: PwNam = m.sym("getpwnam_r");
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut err = 0;
    let mut buf = [0 as c_char; 64];
    assert_eq!(
        unsafe { f_nam(std::ptr::null(), &mut pw, buf.as_mut_ptr(), 64, &mut err) },
        NOTFOUND
    );
    assert_eq!(err, libc::EINVAL);
    let f_uid: PwUid = m.sym("getpwuid_r");
    assert_eq!(
        unsafe { f_uid(0, &mut pw, buf.as_mut_ptr(), 64, &mut err) },
        NOTFOUND
    );

    // The 5,000-member group: ERANGE on a small buffer, everything on a big one.
    let (st, gr_err, _) = grnam(&m, BIG_GROUP, 64);
    assert_eq!((st, gr_err), (TRYAGAIN, libc::ERANGE));
    let (st, _, members) = grnam(&m, BIG_GROUP, 1 << 20);
    assert_eq!(st, SUCCESS);
    assert_eq!(members, f.groups[BIG_GROUP].members);
    for offset_len in [1usize, 3, 7] {
        // Odd buffer sizes still give an aligned array.
        assert_eq!(grnam(&m, "wikidev", 64 + offset_len).0, SUCCESS);
    }

    // initgroups_dyn: growth from one slot, skip, limit, duplicates.
    let want = f.supplementary_gids(&u.name);
    let (st, got) = initgroups(&m, &u.name, u32::MAX, -1);
    assert_eq!(st, SUCCESS);
    assert_eq!(got[0], 500);
    assert_eq!(got[1..], want[..]);
    let (_, got) = initgroups(&m, &u.name, want[0], -1);
    assert!(!got[1..].contains(&want[0]), "skip honoured");
    let (_, got) = initgroups(&m, &u.name, u32::MAX, 1);
    assert_eq!(got.len(), 1, "limit honoured");

    // Enumeration does not advance on ERANGE.
    let set: SetEnt = m.sym("setpwent");
    let ent: PwEnt = m.sym("getpwent_r");
    let mut big = vec![0 as c_char; 4096];
    unsafe { set(0) };
    assert_eq!(
        unsafe { ent(&mut pw, buf.as_mut_ptr(), 1, &mut err) },
        TRYAGAIN
    );
    assert_eq!(err, libc::ERANGE);
    assert_eq!(
        unsafe { ent(&mut pw, big.as_mut_ptr(), big.len(), &mut err) },
        SUCCESS
    );
    let first = cstr(pw.pw_name);
    unsafe { set(0) };
    assert_eq!(
        unsafe { ent(&mut pw, big.as_mut_ptr(), big.len(), &mut err) },
        SUCCESS
    );
    assert_eq!(cstr(pw.pw_name), first);
    let mut n = 1;
    while unsafe { ent(&mut pw, big.as_mut_ptr(), big.len(), &mut err) } == SUCCESS {
        assert!(f.users.contains_key(&cstr(pw.pw_name)));
        n += 1;
    }
    assert_eq!(err, libc::ENOENT);
    assert!(n >= 1);

    // No fd leak over many lookups: at most the one cached connection.
    let before = open_fds();
    for i in 0..500 {
        let _ = pwnam(
            &m,
            if i % 2 == 0 { &u.name } else { "nosuch-abi" },
            1024,
            false,
        );
    }
    assert!(open_fds() <= before + 1, "fds {before} -> {}", open_fds());

    // fork: the child must not share the parent's connection, and both keep working.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = pwnam(&m, &u.name, 1024, false).0 == SUCCESS
            && pwnam(&m, "nosuch-fork", 1024, false).0 == NOTFOUND;
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "lookups work in a forked child"
    );
    assert_eq!(
        pwnam(&m, &u.name, 1024, false).0,
        SUCCESS,
        "the parent's connection is intact"
    );
}

#[test]
#[ignore = "runs in a child process started by erange_retry_needs_no_second_round_trip"]
fn child_erange() {
    let f = fixture();
    let m = Module::load();
    let pid: i32 = std::env::var("TF_DAEMON_PID").unwrap().parse().unwrap();
    assert_eq!(grnam(&m, BIG_GROUP, 64).0, TRYAGAIN);
    // Freeze the daemon: a second round trip would now run out of budget.
    toolforge_nss_tests::process::freeze(pid as u32);
    let start = Instant::now();
    let (st, _, members) = grnam(&m, BIG_GROUP, 1 << 20);
    let served = start.elapsed();
    // Anything else does need the daemon: it fails within the budget.
    let start = Instant::now();
    let other = pwnam(&m, &f.developer(false).name, 1024, false).0;
    let failed = start.elapsed();
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_eq!(st, SUCCESS);
    assert_eq!(members.len(), 5000);
    assert!(
        served < Duration::from_millis(50),
        "answered from the saved reply in {served:?}"
    );
    assert_eq!(other, UNAVAIL);
    assert!(
        failed < Duration::from_millis(600),
        "bounded by the 300 ms budget: {failed:?}"
    );
}
