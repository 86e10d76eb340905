//! Tenants share a node: what another uid can do in or around the runtime directory cannot
//! forge identity or kill a reader, the shared cache data pinned by many idle processes stays
//! bounded, it does not list other tenants' misses, and the module survives thread
//! cancellation and forks; its connection to the daemon is retried when the daemon is busy
//! or its listen backlog full, and closed before the daemon's idle timeout; another uid
//! filling the runtime directory's file system faults no reader and leaves answers right.
//! Real programs (`getent`, a small C helper) run with the module in a
//! private mount namespace; files and sockets of "another uid" are made with chown and by a
//! child process that drops to that uid.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use toolforge_nss_protocol::mapfile::{round_up_page, single_file, MapBuilder, MapView, Table};
use toolforge_nss_protocol::{
    Capabilities, Header, Passwd, Response, ResponseKind, HEADER_LEN, MAX_REQUEST_BODY,
};
use toolforge_nss_tests::daemon::Daemon;
use toolforge_nss_tests::fixture::Schema;
use toolforge_nss_tests::nss::Nss;
use toolforge_nss_tests::paths::target_dir;
use toolforge_nss_tests::process::{freeze, signal};

use crate::env::shared;
use crate::module_abi::child;

/// A uid that is neither root nor the daemon's.
const OTHER_UID: u32 = 12_345;
const FORGED: &str = "forged";

/// The C helper (tests/it/c/tenancy.c), built once per test run.
fn helper() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("it/c/tenancy.c");
        let out = target_dir().join(format!("tenancy-helper-{}", std::process::id()));
        let st = std::process::Command::new("cc")
            .args(["-O1", "-pthread", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("cc (scripts/install-deps.sh installs gcc)");
        assert!(st.success(), "cannot build {}", src.display());
        out
    })
}

fn forged_passwd() -> Passwd {
    Passwd {
        name: FORGED.into(),
        passwd: "x".into(),
        uid: 4242,
        gid: 0,
        gecos: "forged".into(),
        dir: "/root".into(),
        shell: "/bin/sh".into(),
    }
}

/// A cache file that says `forged` is uid 4242.
fn forged_file() -> Vec<u8> {
    let mut body = Vec::new();
    Response::Passwd(forged_passwd()).encode_body(&mut body);
    let mut b = MapBuilder::new(1, 7);
    b.add(
        Table::PasswdByName,
        FORGED.as_bytes(),
        u64::MAX / 2,
        ResponseKind::Passwd,
        &body,
    );
    single_file(&b.build())
}

/// A runtime directory of `mode` owned by `uid`.
fn runtime_dir(parent: &Path, uid: u32, mode: u32) -> PathBuf {
    let dir = parent.join("run");
    let _ = std::fs::create_dir(&dir);
    std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

/// Whether `getent passwd forged` believes the forgery (and `root` still comes from files).
fn believes_forgery(dir: &Path) -> bool {
    let nss = Nss::new(dir, "files toolforge");
    let root = nss.run(&["getent", "passwd", "root"]);
    assert_eq!(root.code, Some(0), "files keeps working: {root:?}");
    let r = nss.run_env(
        &["getent", "passwd", FORGED],
        &[("TOOLFORGE_NSS_TIMEOUT_MS", "300")],
    );
    match r.code {
        Some(0) => {
            assert!(r.stdout.starts_with("forged:x:4242:"), "{r:?}");
            true
        }
        Some(2) => false,
        _ => panic!("getent died: {r:?}"),
    }
}

#[test]
fn forged_cache_data_is_not_believed() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = runtime_dir(tmp.path(), 0, 0o755);
    let file = dir.join("cache.map");
    std::fs::write(&file, forged_file()).unwrap();
    // Control: root's file in root's directory is what a daemon running as root publishes.
    assert!(believes_forgery(&dir), "the control case must be believed");

    std::os::unix::fs::chown(&file, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    assert!(!believes_forgery(&dir), "a file another uid owns");
    std::os::unix::fs::chown(&file, Some(0), Some(0)).unwrap();

    let dir = runtime_dir(tmp.path(), 0, 0o775);
    assert!(!believes_forgery(&dir), "a group-writable directory");
    let dir = runtime_dir(tmp.path(), OTHER_UID, 0o755);
    assert!(!believes_forgery(&dir), "a directory another uid owns");
    let dir = runtime_dir(tmp.path(), 65_534, 0o755);
    assert!(!believes_forgery(&dir), "a directory nobody owns");

    let dir = runtime_dir(tmp.path(), 0, 0o755);
    let elsewhere = tmp.path().join("elsewhere.map");
    std::fs::rename(&file, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
    assert!(!believes_forgery(&dir), "a symlink");
}

/// A process serving forged answers on `socket`, as `uid` (`None`: root).
fn forger(socket: &Path, uid: Option<u32>) -> Child {
    let mut env = vec![("TF_FORGER_SOCKET", socket.display().to_string())];
    if let Some(u) = uid {
        env.push(("TF_FORGER_UID", u.to_string()));
    }
    let c = child("tenancy::child_forger", &env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        socket.exists(),
        "the forger did not bind {}",
        socket.display()
    );
    c
}

#[test]
#[ignore = "runs in a child process started by forged_sockets_are_not_believed"]
fn child_forger() {
    let path = PathBuf::from(std::env::var("TF_FORGER_SOCKET").unwrap());
    if let Ok(uid) = std::env::var("TF_FORGER_UID") {
        let uid: u32 = uid.parse().unwrap();
        // SAFETY: plain calls; this process only serves the socket afterwards.
        unsafe {
            assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
            assert_eq!(libc::setgid(uid), 0);
            assert_eq!(libc::setuid(uid), 0);
        }
    }
    let l = UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    for s in l.incoming() {
        let Ok(s) = s else { continue };
        std::thread::spawn(move || answer_forged(s));
    }
}

#[test]
fn forged_sockets_are_not_believed() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The other uid binds in a directory of its own; the socket is then moved into the
    // runtime directory (a listener keeps its inode), as a tenant could if it could write there.
    let own = tmp.path().join("own");
    std::fs::create_dir(&own).unwrap();
    std::os::unix::fs::chown(&own, Some(OTHER_UID), Some(OTHER_UID)).unwrap();

    let dir = runtime_dir(tmp.path(), 0, 0o755);
    let socket = dir.join("socket");
    let mut root = forger(&socket, None);
    assert!(believes_forgery(&dir), "control: a root peer is believed");
    root.kill().unwrap();
    let _ = root.wait();
    std::fs::remove_file(&socket).unwrap();

    let mut other = forger(&own.join("s"), Some(OTHER_UID));
    std::fs::rename(own.join("s"), &socket).unwrap();
    assert!(!believes_forgery(&dir), "a peer of another uid");
    let dir = runtime_dir(tmp.path(), 0, 0o775);
    assert!(!believes_forgery(&dir), "a group-writable directory");
    other.kill().unwrap();
    let _ = other.wait();

    let mut root = forger(&own.join("r"), None);
    std::fs::rename(own.join("r"), dir.join("socket.tmp")).unwrap();
    std::fs::rename(dir.join("socket.tmp"), &socket).unwrap();
    assert!(
        !believes_forgery(&dir),
        "a root peer, but a directory others may write"
    );
    root.kill().unwrap();
    let _ = root.wait();
}

#[test]
fn a_thread_cancelled_inside_the_module_does_not_abort() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = runtime_dir(tmp.path(), 0, 0o755);
    // A hung daemon: connections are queued and never answered.
    let _hung = UnixListener::bind(dir.join("socket")).unwrap();
    let nss = Nss::new(&dir, "toolforge");
    let r = nss.run_env(
        &[helper().to_str().unwrap(), "cancel", "someone"],
        &[("TOOLFORGE_NSS_TIMEOUT_MS", "1000")],
    );
    assert_eq!(r.code, Some(0), "the process died: {r:?}");
    assert_eq!(r.stdout.trim(), "cleanup ran", "{r:?}");
}

/// Bytes of shared cache data the processes `pids` map: distinct files (by inode) and the
/// bytes the file system holds for them (holes cost nothing).
fn mapped_cache_data(pids: &[u32]) -> (usize, u64) {
    let mut files = std::collections::BTreeMap::new();
    for pid in pids {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        for line in maps.lines().filter(|l| l.contains("cache.map")) {
            let range = line.split_whitespace().next().unwrap();
            if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/map_files/{range}")) {
                files.insert((m.dev(), m.ino()), m.blocks() * 512);
            }
        }
    }
    (files.len(), files.values().sum())
}

fn generation(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    MapView::new(&bytes).unwrap().generation()
}

#[test]
fn pinned_shared_memory_stays_bounded_with_500_idle_processes() {
    let env = shared(Schema::Rfc2307);
    // Every idle process keeps its connection until the daemon's idle timeout: room for all.
    let mut d = Daemon::start(
        &[env.slapd.uri()],
        Schema::Rfc2307,
        "max_connections = 2048\nmax_connections_per_uid = 1024\n",
    );
    let users: Vec<&str> = env
        .fixture
        .users
        .keys()
        .take(250)
        .map(String::as_str)
        .collect();
    let misses: Vec<String> = (0..250)
        .map(|i| format!("nosuch{i}x{}", std::process::id()))
        .collect();
    let mut names = Vec::new();
    for (u, m) in users.iter().zip(&misses) {
        names.push(*u);
        names.push(m.as_str());
    }
    let nss = Nss::new(&d.runtime_dir(), "files toolforge");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read(d.map_file())
        .ok()
        .and_then(|b| MapView::new(&b).map(|_| ()))
        .is_none()
    {
        assert!(Instant::now() < deadline, "no cache file published");
        std::thread::sleep(Duration::from_millis(20));
    }
    let g0 = generation(&d.map_file());
    let mut args = vec![helper().to_str().unwrap(), "idle", "30"];
    args.extend(names.iter().copied());
    // Each process looks one name up (a new entry in the daemon's cache, so a publication
    // follows within map_publish_delay_ms), then idles while the next ones run.
    let c = nss
        .command(&args)
        // A loaded machine's slapd may take a while: lookups are not what is measured here.
        .env("TOOLFORGE_NSS_TIMEOUT_MS", "10000")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut c = Reaped(c);
    let mut out = BufReader::new(c.0.stdout.take().unwrap());
    let mut pids = Vec::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 && line.trim() != "ready" {
        let mut f = line.split_whitespace();
        let pid: u32 = f.next().unwrap().parse().unwrap();
        let found = f.next() == Some("y");
        if found != (pids.len() % 2 == 0) {
            let log = d.log();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!("{}: {line}\n{}", names[pids.len()], tail.join("\n"));
        }
        pids.push(pid);
        line.clear();
    }
    assert_eq!(pids.len(), 500);
    std::thread::sleep(Duration::from_millis(300));
    let g1 = generation(&d.map_file());
    let (files, pinned) = mapped_cache_data(&pids);
    let bytes = std::fs::read(d.map_file()).unwrap();
    let current = round_up_page(MapView::new(&bytes).unwrap().len()) as u64;
    // The bound: the current file holds two publications (neither larger than the current
    // one, which only grew here) and its header page; each older file still mapped keeps
    // its header page only.
    let bound = 2 * current + 4096 * files as u64 + 8192;
    eprintln!(
        "500 processes, {} publications: {files} file(s) mapped, {pinned} bytes pinned, bound {bound}",
        g1 - g0
    );
    assert!(g1 - g0 >= 100, "only {} publications: not a test", g1 - g0);
    assert!(files <= 3, "{files} distinct files mapped");
    assert!(pinned <= bound, "{pinned} bytes pinned, bound {bound}");
    drop(c);
    assert!(d.stop());
}

/// A child process killed (with its own children, which die with it) when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn misses_are_not_listed_in_the_shared_data() {
    let env = shared(Schema::Rfc2307);
    let mut d = Daemon::start(&[env.slapd.uri()], Schema::Rfc2307, "");
    let user = env.fixture.developer(false).name.clone();
    let misses: Vec<String> = (0..100)
        .map(|i| format!("secret{i}typo{}", std::process::id()))
        .collect();
    let nss = Nss::new(&d.runtime_dir(), "files toolforge");
    let mut args = vec!["getent", "passwd", user.as_str()];
    args.extend(misses.iter().map(String::as_str));
    let r = nss.run(&args);
    assert_eq!(r.lines().len(), 1, "{r:?}");
    let last = misses.last().unwrap();
    d.wait_for_cache_file(Table::PasswdByName, last.as_bytes())
        .expect("the misses are published (under their digest)");
    d.wait_for_cache_file(Table::PasswdByName, user.as_bytes())
        .unwrap();
    let bytes = std::fs::read(d.map_file()).unwrap();
    let contains = |s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(contains(&user), "found names are listed");
    for m in &misses {
        assert!(!contains(m), "{m} is listed in the shared data");
        assert!(!contains(&m[..10]), "{m} is listed in part");
    }
    // Still answered from the file: with the daemon frozen, a miss is NOTFOUND at once.
    let pid = d.pid().unwrap();
    freeze(pid);
    let t = Instant::now();
    let r = nss.run_env(
        &["getent", "passwd", misses[3].as_str()],
        &[("TOOLFORGE_NSS_TIMEOUT_MS", "3000")],
    );
    let took = t.elapsed();
    signal(pid, libc::SIGCONT);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        took < Duration::from_millis(2500),
        "asked the frozen daemon: {took:?}"
    );
    assert!(d.stop());
}

/// Runs the helper's fork mode (`fork USER N [ent]`) with the module pointed at `d`, and
/// asserts that every child was fully usable and the parent's threads never failed. A failure
/// names the child, the lookup and how it failed (see tests/it/c/tenancy.c).
fn forked_children_are_usable(d: &Daemon, user: &str, forks: &str, mode: &[&str]) {
    let nss = Nss::new(&d.runtime_dir(), "toolforge");
    let mut args = vec![helper().to_str().unwrap(), "fork", user, forks];
    args.extend(mode);
    // A generous budget: a loaded machine's slow answer is not what is tested here (a timeout
    // would open the breaker, and children inherit it).
    let r = nss.run_env(&args, &[("TOOLFORGE_NSS_TIMEOUT_MS", "5000")]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stdout.trim(), "failures=0", "{r:?}");
    assert!(!r.stderr.contains("parent"), "{r:?}");
}

#[test]
fn a_fork_while_other_threads_read_leaves_the_child_usable() {
    // A daemon of its own: the shared daemon's entries may be past their refresh point by the
    // time this runs (then every lookup asks the daemon), and other tests spend uid 0's budget.
    let env = shared(Schema::Rfc2307);
    let user = env.fixture.developer(false).name.clone();
    let mut d = Daemon::start(&[env.slapd.uri()], Schema::Rfc2307, "");
    let nss = Nss::new(&d.runtime_dir(), "toolforge");
    assert_eq!(nss.run(&["getent", "passwd", &user]).code, Some(0));
    d.wait_for_cache_file(Table::PasswdByName, user.as_bytes())
        .unwrap();
    // The parent's threads read the shared mapping (reader counts, seqlock) when it forks.
    forked_children_are_usable(&d, &user, "300", &[]);
    assert!(d.stop());
}

#[test]
fn a_fork_while_other_threads_hold_connections_leaves_the_child_usable() {
    // No cache file: every lookup of the parent's threads holds a connection, and one of
    // them enumerates (the module's enumeration lock) when it forks. A child closes its
    // copies of the parent's sockets, frees that lock, and makes connections of its own.
    let env = shared(Schema::Rfc2307);
    let user = env.fixture.developer(false).name.clone();
    let mut d = Daemon::start(
        &[env.slapd.uri()],
        Schema::Rfc2307,
        "[cache]\nmap_file_max_mib = 0\n",
    );
    let nss = Nss::new(&d.runtime_dir(), "toolforge");
    assert_eq!(nss.run(&["getent", "passwd", &user]).code, Some(0));
    forked_children_are_usable(&d, &user, "200", &["ent"]);
    assert!(d.stop());
}

#[test]
fn a_busy_daemon_is_asked_again_within_the_budget() {
    let env = shared(Schema::Rfc2307);
    let d = Daemon::start(
        &[env.slapd.uri()],
        Schema::Rfc2307,
        "max_connections_per_uid = 1\n",
    );
    let user = env.fixture.developer(false).name.clone();
    // This process (root) holds root's only connection: the module's gets `Busy`.
    // A real answer on it proves the daemon counts it (a start-up probe may still hold the
    // slot for a moment: then it is refused, and tried again).
    let req = toolforge_nss_protocol::Request::GetPwNam("nosuchuser".into());
    let deadline = Instant::now() + Duration::from_secs(5);
    // A refused connection is answered `Busy` and closed at once, so the request's write may
    // already meet a closed socket (EPIPE): that is a refusal too.
    let ask = || -> std::io::Result<Option<std::os::unix::net::UnixStream>> {
        let mut s = std::os::unix::net::UnixStream::connect(d.socket())?;
        s.write_all(&req.encode(1, Capabilities::ALL))?;
        let mut head = [0u8; 24];
        s.read_exact(&mut head)?;
        let header = toolforge_nss_protocol::Header::decode(&head, u32::MAX).unwrap();
        let mut body = vec![0u8; header.body_len as usize];
        s.read_exact(&mut body)?;
        Ok((header.kind != ResponseKind::Error as u16).then_some(s))
    };
    let held = loop {
        match ask() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("asking the daemon: {e}"),
        }
        assert!(Instant::now() < deadline, "never admitted");
        std::thread::sleep(Duration::from_millis(20));
    };
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
    });
    let nss = Nss::new(&d.runtime_dir(), "files toolforge");
    let r = nss.run_env(
        &["getent", "passwd", &user],
        &[("TOOLFORGE_NSS_TIMEOUT_MS", "3000")],
    );
    release.join().unwrap();
    assert_eq!(r.code, Some(0), "not asked again: {r:?}");
    assert!(
        r.elapsed >= Duration::from_millis(200),
        "answered before the slot was free: {:?}\n{}",
        r.elapsed,
        d.log()
    );
}

/// A listening socket at `path` with a listen backlog of 0 (one pending connection fills it).
fn listener_with_no_backlog(path: &Path) -> UnixListener {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a fresh fd, which the listener then owns.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr
            .sun_path
            .iter_mut()
            .zip(path.as_os_str().as_encoded_bytes())
        {
            *d = *s as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        assert_eq!(libc::bind(fd, std::ptr::addr_of!(addr).cast(), len), 0);
        assert_eq!(libc::listen(fd, 0), 0);
        UnixListener::from_raw_fd(fd)
    }
}

/// Whether a non-blocking connect to `path` fails with EAGAIN (the backlog is full).
fn backlog_full(path: &Path) -> bool {
    // SAFETY: as above; the fd is closed before returning.
    unsafe {
        let fd = libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        );
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr
            .sun_path
            .iter_mut()
            .zip(path.as_os_str().as_encoded_bytes())
        {
            *d = *s as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        let rc = libc::connect(fd, std::ptr::addr_of!(addr).cast(), len);
        let err = std::io::Error::last_os_error().raw_os_error();
        libc::close(fd);
        rc != 0 && err == Some(libc::EAGAIN)
    }
}

/// Answers every request on `s` with the forged user (a stand-in daemon, running as root).
fn answer_forged(mut s: std::os::unix::net::UnixStream) {
    loop {
        let mut head = [0u8; HEADER_LEN];
        if s.read_exact(&mut head).is_err() {
            return;
        }
        let Ok(header) = Header::decode(&head, MAX_REQUEST_BODY) else {
            return;
        };
        let mut body = vec![0u8; header.body_len as usize];
        if s.read_exact(&mut body).is_err() {
            return;
        }
        let reply =
            Response::Passwd(forged_passwd()).encode(header.request_id, 0, Capabilities::ALL);
        if s.write_all(&reply).is_err() {
            return;
        }
    }
}

#[test]
fn a_full_listen_backlog_is_retried_within_the_budget() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = runtime_dir(tmp.path(), 0, 0o755);
    let path = dir.join("socket");
    let listener = listener_with_no_backlog(&path);
    // One connection waits in the backlog: every further connect gets EAGAIN until the
    // daemon (this test) starts accepting, 400 ms later.
    let filler = std::os::unix::net::UnixStream::connect(&path).unwrap();
    assert!(backlog_full(&path), "the backlog is not full: not a test");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            listener.set_nonblocking(true).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        std::thread::spawn(move || answer_forged(s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    };
    let nss = Nss::new(&dir, "toolforge");
    let r = nss.run_env(
        &["getent", "passwd", FORGED],
        &[("TOOLFORGE_NSS_TIMEOUT_MS", "5000")],
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().unwrap();
    drop(filler);
    assert_eq!(r.code, Some(0), "not tried again: {r:?}");
    assert!(r.stdout.starts_with("forged:x:4242:"), "{r:?}");
    assert!(
        r.elapsed >= Duration::from_millis(350),
        "answered before the backlog had room: {r:?}"
    );
}

#[test]
fn the_idle_connection_is_closed_before_the_daemon_would() {
    let env = shared(Schema::Rfc2307);
    // The daemon's default idle timeout (30 s) is what the module must stay under.
    let mut d = Daemon::start(&[env.slapd.uri()], Schema::Rfc2307, "");
    let user = env.fixture.developer(true).name.clone();
    let nss = Nss::new(&d.runtime_dir(), "toolforge");
    // One lookup a second for 27 s: the first asks the daemon (a new entry for this daemon)
    // and keeps the connection; the others are answered from the cache file.
    let c = nss
        .command(&[helper().to_str().unwrap(), "every", &user, "1000", "28"])
        .env("TOOLFORGE_NSS_TIMEOUT_MS", "5000")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut c = Reaped(c);
    let out = BufReader::new(c.0.stdout.take().unwrap());
    let mut held = Vec::new();
    for line in out.lines().skip(1) {
        let line = line.unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[0], "ok", "{line}");
        held.push((f[2].parse::<u64>().unwrap(), f[1].parse::<u32>().unwrap()));
    }
    let _ = c.0.wait();
    let idle_close = 20_000; // nss-module's connection::IDLE_CLOSE_MS
    assert_eq!(held.len(), 28, "{held:?}");
    assert_eq!(
        held[0].1, 1,
        "the first lookup keeps its connection: {held:?}"
    );
    // Kept while it is worth reusing; gone once idle for the module's limit (plus the
    // once-a-second check and a loaded machine's margin), long before the daemon's 30 s.
    for &(ms, n) in &held {
        if ms < idle_close - 2_000 {
            assert_eq!(n, 1, "closed early, at {ms} ms: {held:?}");
        }
        if ms > idle_close + 4_000 {
            assert_eq!(n, 0, "still open at {ms} ms: {held:?}");
        }
    }
    assert!(
        held.iter().any(|&(ms, n)| n == 0 && ms < 29_000),
        "not closed before the daemon's idle timeout: {held:?}"
    );
    assert!(d.stop());
}

/// Another uid fills the file system that holds the runtime directory (on a node, `/run` is
/// one tmpfs that many write to). No reader faults, answers stay right (the daemon cannot
/// publish, so readers ask it instead of reading data that no longer holds: a complete
/// mirror's misses are authoritative), and publication resumes once there is room. Runs in a
/// private mount namespace with an 8 MiB tmpfs of its own (see
/// [`child_full_file_system`]).
#[test]
fn a_full_file_system_faults_no_reader_and_keeps_answers_right() {
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "tenancy::child_full_file_system",
            "--test-threads=1",
            "--nocapture",
        ])
        .output()
        .expect("unshare (util-linux)");
    crate::module_abi::check_child("child_full_file_system", out);
}

#[test]
#[ignore = "runs in a private mount namespace started by a_full_file_system_faults_no_reader_and_keeps_answers_right"]
fn child_full_file_system() {
    use toolforge_nss_tests::fixture::{Fixture, Shape, BASE};
    use toolforge_nss_tests::slapd::{Options, Slapd};
    let fixture = Fixture::generate(Schema::Rfc2307bis, Shape::small());
    let slapd = Slapd::start_opts(
        &fixture,
        None,
        Options {
            syncprov: true,
            ..Options::default()
        },
    );
    let uri = slapd.uri();
    let mut top = PathBuf::new();
    let d = Daemon::start_with(|run, cache| {
        // The runtime directory is a small tmpfs of this namespace, with a world-writable
        // directory on it (as `/run/lock` is on a node's `/run`).
        top = run.to_owned();
        std::fs::create_dir(&top).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m,mode=755", "tmpfs"])
            .arg(&top)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        toolforge_nss_tests::daemon::config(
            std::slice::from_ref(&uri),
            Schema::Rfc2307bis,
            run,
            cache,
            "",
            "[mirror]\nenabled = true\nmode = \"auto\"\n",
        )
    });
    let status = |key: &str| -> String {
        match toolforge_nss_tests::client::admin(
            &d.admin_socket(),
            &toolforge_nss_protocol::admin::AdminRequest::Status,
        ) {
            Ok(toolforge_nss_protocol::admin::AdminResponse::Text(t)) => t
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_owned))
                .unwrap_or_default(),
            other => panic!("status: {other:?}"),
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while status("mirror_state") != "complete" {
        assert!(Instant::now() < deadline, "mirror: {}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let users: Vec<_> = fixture
        .users
        .values()
        .filter(|u| u.dn.starts_with("uid=") && u.dn.ends_with(&format!(",ou=people,{BASE}")))
        .take(20)
        .cloned()
        .collect();
    assert!(d
        .wait_for_cache_file(Table::PasswdByName, users[0].name.as_bytes())
        .is_some());
    let nss = Nss::new(&d.runtime_dir(), "files toolforge");
    let shared = top.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();

    // Readers loop while another uid fills the file system.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, nss_dir, names) = (
            stop.clone(),
            d.runtime_dir(),
            users.iter().map(|u| u.name.clone()).collect::<Vec<_>>(),
        );
        std::thread::spawn(move || {
            let nss = Nss::new(&nss_dir, "files toolforge");
            let mut runs = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut args = vec!["getent", "passwd"];
                args.extend(names.iter().map(String::as_str));
                runs.push(nss.run(&args));
            }
            runs
        })
    };
    let fill = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={OTHER_UID}"),
            &format!("--regid={OTHER_UID}"),
            "--clear-groups",
            "dd",
            "if=/dev/zero",
            "bs=64k",
        ])
        .arg(format!("of={}", shared.join("filler").display()))
        .output()
        .expect("setpriv (util-linux)");
    let why = String::from_utf8_lossy(&fill.stderr);
    assert!(why.contains("No space left"), "not full: {why}");

    // A change while full: the daemon cannot publish it, and readers still see it.
    let user = &users[0];
    slapd.apply(
        "ldapmodify",
        &format!(
            "dn: {}\nchangetype: modify\nreplace: gecos\ngecos: while full\n",
            user.dn
        ),
    );
    let seen = |gecos: &str, within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            let r = nss.run(&["getent", "passwd", &user.name]);
            assert_eq!(r.code, Some(0), "{r:?}");
            if r.stdout.contains(&format!(":{gecos}:")) {
                return;
            }
            assert!(Instant::now() < deadline, "{r:?}\n{}", d.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    seen("while full", Duration::from_secs(5));
    // 200 users added while full: the publication outgrows the pages the file holds and
    // cannot be written; every new user is found all the same (the complete mirror's file
    // would answer NOTFOUND for them: readers ask the daemon instead).
    let mut ldif = String::new();
    for i in 0..200 {
        ldif.push_str(&format!(
            "dn: uid=fullnew{i},ou=people,{BASE}\nchangetype: add\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n\
             uid: fullnew{i}\ncn: fullnew{i}\nsn: fullnew{i}\nuidNumber: {}\ngidNumber: 500\nhomeDirectory: /home/fullnew{i}\n\n",
            61_900 + i
        ));
    }
    slapd.apply("ldapmodify", &ldif);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = nss.run(&["getent", "passwd", "fullnew0", "fullnew99", "fullnew199"]);
        if r.code == Some(0) && r.lines().len() == 3 {
            break;
        }
        assert!(
            matches!(r.code, Some(0) | Some(2)),
            "a reader failed or died: {r:?}"
        );
        assert!(Instant::now() < deadline, "{r:?}\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        d.log().contains("cannot publish the cache file"),
        "the publication did not fail: {}",
        d.log()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = reader.join().unwrap();
    assert!(!runs.is_empty());
    for r in &runs {
        assert_eq!(r.code, Some(0), "a reader failed or died: {r:?}");
        assert_eq!(r.lines().len(), users.len(), "{r:?}");
    }

    // Room again: the next change is published and readers use the file again.
    std::fs::remove_file(shared.join("filler")).unwrap();
    slapd.apply(
        "ldapmodify",
        &format!(
            "dn: {}\nchangetype: modify\nreplace: gecos\ngecos: room again\n",
            user.dn
        ),
    );
    seen("room again", Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let bytes = std::fs::read(d.map_file()).unwrap();
        let published = MapView::new(&bytes).and_then(|v| {
            v.get(Table::PasswdByName, b"fullnew199")?;
            let hit = v.get(Table::PasswdByName, user.name.as_bytes())?;
            Some(String::from_utf8_lossy(hit.body).contains("room again"))
        });
        if published == Some(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not published again:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(nss);
    drop(d);
    // The daemon's directory could not be removed while the tmpfs was mounted on it.
    let _ = std::process::Command::new("umount").arg(&top).status();
    let _ = std::fs::remove_dir_all(top.parent().unwrap());
}
