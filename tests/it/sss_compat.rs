//! SSSD compatibility (`[daemon] sss_compat_dir`): SSSD's own client, `libnss_sss.so.2`, run
//! by real `getent` and `id` against toolforge-nssd in a private mount namespace (the
//! daemon's directory bind-mounted over `/var/lib/sss/pipes`), compared with the fixture and
//! with our own module's answers on the same keys; plus the raw protocol's error paths.
//!
//! The client libraries: the host's (bookworm, 2.8.2) always, and every other release's
//! `libnss_sss.so.2` that `scripts/fetch-sss-clients.sh` put in
//! `/var/cache/toolforge-nss-tests/sss-clients/RELEASE/` (bullseye 2.4.1 and trixie 2.10.1:
//! both load on bookworm's glibc), or the directories `TOOLFORGE_NSS_SSS_CLIENTS` names
//! (colon-separated; a directory with `bin/` and `var/lib/sss` in it is used as a root
//! filesystem, entered with chroot, so the Debian rootfs harness plugs in without new code).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use toolforge_nss_protocol::sss::{
    reply, SssCommand, SssHeader, SssRequest, SSS_HEADER_LEN, SSS_MAX_REQUEST_BODY,
};
use toolforge_nss_tests::daemon::{config, Daemon};
use toolforge_nss_tests::fixture::{Fixture, Schema, Shape, BIG_GROUP};
use toolforge_nss_tests::nss::{Nss, Run};
use toolforge_nss_tests::process::on_keeper;
use toolforge_nss_tests::slapd::Slapd;
use toolforge_nss_tests::sss::{Client, SssNss};

/// A directory with a 10,000-member group, its slapd, and a daemon answering both protocols.
struct Env {
    fixture: Fixture,
    slapd: Slapd,
    daemon: Daemon,
}

extern "C" fn stop_env() {
    if let Some(env) = ENV.get() {
        // SAFETY: the Env is leaked and not used once exit has begun; dropping its contents
        // stops slapd and the daemon and removes their temp dirs.
        unsafe { std::ptr::drop_in_place(*env as *const Env as *mut Env) };
    }
}

static ENV: OnceLock<&'static Env> = OnceLock::new();

fn sss_dir(d: &Daemon) -> PathBuf {
    d.runtime_dir().with_file_name("sss")
}

/// A daemon against `uri` with the SSSD socket on, `extra` appended after `[daemon]` keys.
fn start_daemon(uri: &str, extra: &str) -> Daemon {
    Daemon::start_with(|run, cache| {
        let sss = run.with_file_name("sss");
        config(
            &[uri.to_string()],
            Schema::Rfc2307bis,
            run,
            cache,
            "",
            &format!("sss_compat_dir = {:?}\n{extra}", sss.display().to_string()),
        )
    })
}

fn env() -> &'static Env {
    ENV.get_or_init(|| {
        let env = on_keeper(|| {
            let fixture = Fixture::generate(
                Schema::Rfc2307bis,
                Shape {
                    developers: 10_100,
                    tools: 10,
                    projects: 4,
                    big_group: 10_000,
                },
            );
            let slapd = Slapd::start(&fixture);
            let daemon = start_daemon(&slapd.uri(), "");
            Box::leak(Box::new(Env {
                fixture,
                slapd,
                daemon,
            })) as &'static Env
        });
        // SAFETY: registering a plain extern "C" fn.
        unsafe { libc::atexit(stop_env) };
        env
    })
}

/// Where `scripts/fetch-sss-clients.sh` puts other releases' `libnss_sss.so.2`.
const FETCHED_CLIENTS: &str = "/var/cache/toolforge-nss-tests/sss-clients";

/// The client libraries under test: the host's, and those named in `TOOLFORGE_NSS_SSS_CLIENTS`
/// (default: every release fetched into [`FETCHED_CLIENTS`]).
fn clients() -> Vec<Client> {
    let mut v = vec![Client::Host];
    let dirs: Vec<PathBuf> = match std::env::var_os("TOOLFORGE_NSS_SSS_CLIENTS") {
        Some(list) => std::env::split_paths(&list).collect(),
        None => {
            let mut d: Vec<PathBuf> = std::fs::read_dir(FETCHED_CLIENTS)
                .map(|r| r.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            d.sort();
            d
        }
    };
    for p in dirs {
        if p.join("bin").is_dir() && p.join("var/lib/sss").is_dir() {
            v.push(Client::Rootfs(p));
        } else {
            assert!(
                p.join("libnss_sss.so.2").is_file(),
                "no libnss_sss.so.2 in {}",
                p.display()
            );
            v.push(Client::Library(p));
        }
    }
    for c in &v {
        if let Err(e) = SssNss::available(c) {
            panic!("{c:?} cannot run here ({e}); scripts/install-deps.sh installs libnss-sss");
        }
    }
    v
}

fn sorted_words(r: &Run) -> Vec<String> {
    let mut w: Vec<String> = r.stdout.split_whitespace().map(str::to_string).collect();
    w.sort();
    w
}

#[test]
fn lookups_through_libnss_sss_equal_the_fixture_and_our_module() {
    let env = env();
    let f = &env.fixture;
    let ours = Nss::new(&env.daemon.runtime_dir(), "files toolforge");
    for client in clients() {
        let sss = SssNss::new(&sss_dir(&env.daemon), "files sss", client.clone());
        let big = &f.groups[BIG_GROUP];
        assert_eq!(big.members.len(), 10_000);
        for u in [f.developer(false), f.developer(true), f.tool()] {
            for key in [u.name.clone(), u.uid.to_string()] {
                let run = sss.run(&["getent", "-s", "sss", "passwd", &key]);
                assert_eq!(
                    run.lines(),
                    [u.passwd_line()],
                    "{client:?} passwd {key}: {run:?}"
                );
                let mine = ours.run(&["getent", "-s", "toolforge", "passwd", &key]);
                assert_eq!(run.stdout, mine.stdout, "{client:?}: same as our module");
            }
            let init = sss.run(&["getent", "-s", "sss", "initgroups", &u.name]);
            let mine = ours.run(&["getent", "-s", "toolforge", "initgroups", &u.name]);
            let mut want: Vec<String> = f
                .supplementary_gids(&u.name)
                .iter()
                .map(u32::to_string)
                .collect();
            want.retain(|g| *g != u.gid.to_string());
            want.push(u.name.clone());
            want.sort();
            assert_eq!(
                sorted_words(&init),
                want,
                "{client:?} initgroups {}: {init:?}",
                u.name
            );
            assert_eq!(
                sorted_words(&init),
                sorted_words(&mine),
                "{client:?}: same as ours"
            );
            let id = sss.run(&["id", &u.name]);
            let my_id = ours.run(&["id", &u.name]);
            assert_eq!(id.code, Some(0), "{client:?} id {}: {id:?}", u.name);
            assert_eq!(id.stdout, my_id.stdout, "{client:?} id {}", u.name);
        }
        for g in [&f.groups["wikidev"], &f.groups[&f.tool().name], big] {
            for key in [g.name.clone(), g.gid.to_string()] {
                let run = sss.run(&["getent", "-s", "sss", "group", &key]);
                assert_eq!(run.lines(), [g.group_line()], "{client:?} group {key}");
                let mine = ours.run(&["getent", "-s", "toolforge", "group", &key]);
                assert_eq!(run.stdout, mine.stdout, "{client:?}: same as our module");
            }
        }
    }
}

#[test]
fn missing_and_hostile_names_are_not_found_and_files_still_answers() {
    let env = env();
    for client in clients() {
        let sss = SssNss::new(&sss_dir(&env.daemon), "files sss", client.clone());
        let run = sss.run(&["getent", "passwd", "nosuch-sss"]);
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (Some(2), ""),
            "{client:?} {run:?}"
        );
        assert_eq!(sss.run(&["getent", "group", "nosuch-sss"]).code, Some(2));
        assert_eq!(sss.run(&["getent", "passwd", "4000000000"]).code, Some(2));
        let names = env
            .fixture
            .hostile_users
            .iter()
            .chain(&env.fixture.hostile_groups);
        for name in names.chain([&"bad*name(".to_string(), &"é-\u{7f}".to_string()]) {
            for db in ["passwd", "group"] {
                let run = sss.run(&["getent", "-s", "sss", db, name]);
                assert_eq!(
                    (run.code, run.stdout.as_str()),
                    (Some(2), ""),
                    "{client:?} {db} {name:?}"
                );
            }
        }
        // uid/gid 0 come from files only.
        let root = sss.run(&["getent", "passwd", "root"]);
        assert!(root.stdout.starts_with("root:x:0:0:"), "{root:?}");
        assert_eq!(
            sss.run(&["getent", "-s", "sss", "passwd", "0"]).code,
            Some(2)
        );
        assert_eq!(
            sss.run(&["getent", "-s", "sss", "group", "root"]).code,
            Some(2)
        );
    }
}

#[test]
fn enumeration_follows_cache_enumerate() {
    let env = env();
    let f = &env.fixture;
    // Off (the default): what is cached, which a lookup puts there.
    let d = start_daemon(&env.slapd.uri(), "");
    let u = f.developer(false);
    let on = start_daemon(&env.slapd.uri(), "[cache]\nenumerate = true\n");
    let mut want: Vec<String> = f.users.values().map(|u| u.passwd_line()).collect();
    want.sort();
    for client in clients() {
        let sss = SssNss::new(&sss_dir(&d), "sss", client.clone());
        assert_eq!(sss.run(&["getent", "passwd", &u.name]).code, Some(0));
        let listing = sss.run(&["getent", "passwd"]);
        assert_eq!(listing.lines(), [u.passwd_line()], "{client:?} {listing:?}");
        // On: the whole directory, in more replies than one (256 entries each), no duplicates.
        let sss = SssNss::new(&sss_dir(&on), "sss", client.clone());
        let listing = sss.run(&["getent", "passwd"]);
        let mut got: Vec<&str> = listing.lines();
        got.sort_unstable();
        assert_eq!(got.len(), want.len(), "{client:?} {}", on.log());
        assert_eq!(got, want, "{client:?}");
        let groups = sss.run(&["getent", "group"]);
        assert_eq!(groups.lines().len(), f.groups.len(), "{client:?}");
        assert!(groups
            .lines()
            .contains(&f.groups[BIG_GROUP].group_line().as_str()));
    }
}

#[test]
fn a_stopped_daemon_is_a_fast_unavail_and_files_still_answers() {
    let env = env();
    let mut d = start_daemon(&env.slapd.uri(), "");
    let dir = sss_dir(&d);
    // SIGTERM before the handlers are installed would kill it without its clean-up.
    assert!(d.wait_for_log("serving SSSD's NSS protocol", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.stop(), "daemon stops");
    assert!(
        !dir.join("nss").exists(),
        "the socket is removed on shutdown"
    );
    for client in clients() {
        let sss = SssNss::new(&dir, "files sss", client.clone());
        let root = sss.run(&["getent", "passwd", "root"]);
        assert!(
            root.stdout.starts_with("root:x:0:0:"),
            "{client:?} {root:?}"
        );
        let run = sss.run(&["getent", "passwd", "nosuch"]);
        assert_eq!(run.code, Some(2));
        assert!(
            run.elapsed < Duration::from_secs(2),
            "{client:?} {:?}",
            run.elapsed
        );
        // With sss alone: a failure, quickly (no 300 s client timeout, no retry loop).
        let only = SssNss::new(&dir, "sss", client.clone());
        let id = only.run(&["id", "nosuch"]);
        assert_ne!(id.code, Some(0));
        assert!(
            id.elapsed < Duration::from_secs(2),
            "{client:?} {:?}",
            id.elapsed
        );
    }
}

#[test]
fn the_socket_is_world_usable_and_sss_loops_no_short_cuts_the_client() {
    let env = env();
    let dir = sss_dir(&env.daemon);
    let sock = std::fs::metadata(dir.join("nss")).unwrap();
    assert_eq!(sock.permissions().mode() & 0o777, 0o666);
    let d = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(
        d & 0o011,
        0o011,
        "the directory is searchable by all: {d:o}"
    );
    // What the daemon sets for itself at start, so that a lookup from inside it can never
    // come back to it through libnss_sss: the client answers NOTFOUND without asking.
    let sss = SssNss::new(&dir, "sss", Client::Host);
    let u = env.fixture.developer(false);
    let run = sss.run_env(&["getent", "passwd", &u.name], &[("_SSS_LOOPS", "NO")]);
    assert_eq!(run.code, Some(2), "{run:?}");
}

fn exchange(s: &mut UnixStream, frame: &[u8]) -> (SssHeader, Vec<u8>) {
    s.write_all(frame).unwrap();
    let mut h = [0u8; SSS_HEADER_LEN];
    s.read_exact(&mut h).unwrap();
    let h = SssHeader::decode(&h, 8 << 20).unwrap();
    let mut body = vec![0u8; h.body_len()];
    s.read_exact(&mut body).unwrap();
    (h, body)
}

fn connect(dir: &Path) -> UnixStream {
    let s = UnixStream::connect(dir.join("nss")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn unknown_commands_and_bad_bodies_get_an_error_and_the_connection_stays_usable() {
    let env = env();
    let dir = sss_dir(&env.daemon);
    let mut s = connect(&dir);
    let (h, body) = exchange(&mut s, &SssRequest::GetVersion(1).encode());
    assert_eq!((h.command, h.status), (SssCommand::GetVersion as u32, 0));
    assert_eq!(reply::version(&body), Ok(1));
    // GETPWNAM_EX (0x19), which libsss_nss_idmap sends: unknown here.
    let mut unknown = SssRequest::GetPwNam(b"x".to_vec()).encode();
    unknown[4..8].copy_from_slice(&0x19u32.to_ne_bytes());
    let (h, body) = exchange(&mut s, &unknown);
    assert_eq!(h.command, 0x19, "the reply echoes the command");
    assert_ne!(h.status, 0);
    assert!(body.is_empty());
    // A name without its NUL.
    let mut bad = SssRequest::GetPwNam(b"abc".to_vec()).encode();
    bad.pop();
    let len = bad.len() as u32;
    bad[0..4].copy_from_slice(&len.to_ne_bytes());
    let (h, _) = exchange(&mut s, &bad);
    assert_eq!(h.command, SssCommand::GetPwNam as u32);
    assert_ne!(h.status, 0);
    // Still usable: a lookup and a miss on the same connection.
    let u = env.fixture.developer(false);
    let (h, body) = exchange(&mut s, &SssRequest::GetPwUid(u.uid).encode());
    assert_eq!(h.status, 0);
    let users = reply::passwds(&body).unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].name, u.name.as_bytes());
    let (h, body) = exchange(&mut s, &SssRequest::GetGrNam(b"nosuch".to_vec()).encode());
    assert_eq!(
        (h.status, body.as_slice()),
        (0, &[0u8; 8][..]),
        "not found is count 0"
    );
    // Not UTF-8, far too long, filter syntax: not found, on the same connection.
    for name in [b"\xff\xfe".to_vec(), vec![b'a'; 1000], b"*)(uid=*".to_vec()] {
        for req in [SssRequest::GetPwNam(name.clone()), SssRequest::InitGr(name)] {
            let (h, body) = exchange(&mut s, &req.encode());
            assert_eq!((h.status, body.as_slice()), (0, &[0u8; 8][..]), "{req:?}");
        }
    }
}

#[test]
fn an_oversized_frame_is_answered_then_closed() {
    let env = env();
    let mut s = connect(&sss_dir(&env.daemon));
    let mut frame = SssRequest::GetPwNam(b"x".to_vec()).encode();
    frame[0..4].copy_from_slice(&(SSS_MAX_REQUEST_BODY + 64).to_ne_bytes());
    let (h, _) = exchange(&mut s, &frame[..SSS_HEADER_LEN]);
    assert_eq!(h.command, SssCommand::GetPwNam as u32);
    assert_ne!(h.status, 0);
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap(),
        0,
        "then the daemon hangs up"
    );
}

#[test]
fn beyond_the_per_uid_cap_a_client_gets_an_error_reply_not_a_hang() {
    let env = env();
    let d = start_daemon(&env.slapd.uri(), "max_connections_per_uid = 1\n");
    let dir = sss_dir(&d);
    // This process (root) holds root's only connection. The harness's readiness probe may
    // still hold the slot for a moment: then the connection is refused (an error reply, or a
    // write that meets the closed socket), and tried again.
    let deadline = Instant::now() + Duration::from_secs(5);
    let first = loop {
        let mut s = connect(&dir);
        let admitted = (|| -> std::io::Result<bool> {
            s.write_all(&SssRequest::GetVersion(1).encode())?;
            let mut h = [0u8; SSS_HEADER_LEN];
            s.read_exact(&mut h)?;
            let h = SssHeader::decode(&h, 8 << 20).unwrap();
            let mut body = vec![0u8; h.body_len()];
            s.read_exact(&mut body)?;
            Ok(h.status == 0)
        })();
        if matches!(admitted, Ok(true)) {
            break s;
        }
        assert!(Instant::now() < deadline, "never admitted: {admitted:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut second = connect(&dir);
    let (h, _) = exchange(&mut second, &SssRequest::GetVersion(1).encode());
    assert_eq!(
        h.command,
        SssCommand::GetVersion as u32,
        "echoes the command"
    );
    assert_ne!(h.status, 0, "refused with an error status");
    // The client sees UNAVAIL at once and `files` answers.
    let sss = SssNss::new(&dir, "files sss", Client::Host);
    let run = sss.run(&[
        "getent",
        "passwd",
        "root",
        &env.fixture.developer(false).name,
    ]);
    assert_eq!(run.lines().len(), 1, "{run:?}");
    assert!(run.elapsed < Duration::from_secs(2), "{:?}", run.elapsed);
    drop(first);
    // The slot is free again.
    std::thread::sleep(Duration::from_millis(200));
    let u = env.fixture.developer(false);
    let run = sss.run(&["getent", "passwd", &u.name]);
    assert_eq!(run.lines(), [u.passwd_line()]);
}

/// `deploy/daemonset-sss-compat.yaml` is `deploy/daemonset.yaml` (config, rollout, probes,
/// security context, mounts) plus SSSD's socket directory, on the nodes labelled for it: a
/// change to one that is not made to the other fails here.
#[test]
fn the_sss_compat_daemonset_keeps_in_step_with_the_plain_one() {
    let read = |name: &str| {
        std::fs::read_to_string(format!("{}/../deploy/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    let (plain, compat) = (read("daemonset.yaml"), read("daemonset-sss-compat.yaml"));
    // The manifests without their header comments, with the compat one's own names and
    // additions taken out: what is left must be the same, line for line.
    let body = |s: &str| -> Vec<String> {
        s.lines()
            .skip_while(|l| l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    let additions = [
        "    # SSSD's client has this path compiled in; the directory is given to run_as_uid.",
        "    sss_compat_dir = \"/var/lib/sss/pipes\"",
        "            - {name: sss-pipes, mountPath: /var/lib/sss/pipes}",
        "        # The directory the webhook mounts into tool pods (the directory, not the socket",
        "        # file: a restarted daemon makes a new socket inode). SSSD's memory cache",
        "        # (/var/lib/sss/mc) is not published.",
        "        - name: sss-pipes",
        "          hostPath: {path: /var/lib/sss/pipes, type: DirectoryOrCreate}",
        "      nodeSelector:",
        "        toolforge.org/nss-sss-compat: \"true\"",
    ];
    let compat_lines: Vec<String> = body(&compat)
        .into_iter()
        .filter(|l| !additions.contains(&l.as_str()))
        .map(|l| {
            l.replace("toolforge-nssd-sss-compat", "toolforge-nssd")
                .replace("toolforge-nss-sss-compat", "toolforge-nss")
        })
        .collect();
    let mut plain_lines = body(&plain);
    // The plain one keeps off the labelled nodes (its affinity block and comment).
    let start = plain_lines
        .iter()
        .position(|l| l.contains("Nodes switched from SSSD run daemonset-sss-compat.yaml"))
        .expect("the plain DaemonSet names the compat one");
    let end = plain_lines
        .iter()
        .position(|l| l.contains("key: toolforge.org/nss-sss-compat, operator: NotIn"))
        .expect("the plain DaemonSet keeps off the labelled nodes");
    plain_lines.drain(start..=end);
    assert_eq!(compat_lines, plain_lines);
    for addition in additions {
        assert!(compat.contains(addition), "missing: {addition}");
    }
}

/// Refused connections cost the daemon nothing it keeps: a uid that opens hundreds of idle
/// connections beyond its cap (and sends nothing) does not pile up descriptors in the daemon,
/// which would end in `accept` failing for every tenant.
#[test]
fn idle_connections_beyond_the_cap_hold_no_daemon_descriptors() {
    let env = env();
    let d = start_daemon(&env.slapd.uri(), "max_connections_per_uid = 4\n");
    let dir = sss_dir(&d);
    let pid = d.pid().expect("the daemon runs");
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = fds();
    let held: Vec<UnixStream> = (0..400).map(|_| connect(&dir)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let during = fds();
    assert!(
        during < before + 40,
        "{before} descriptors before, {during} with 400 idle connections held"
    );
    drop(held);
    // And the socket still serves, once the four admitted connections are seen closed.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = connect(&dir);
        let (h, _) = exchange(&mut c, &SssRequest::GetVersion(1).encode());
        if h.status == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still refused: {}",
            h.status
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A new daemon that refuses to start during a takeover refuses before it takes any socket
/// over: the old daemon keeps its SSSD socket (and the others) and serves on.
#[test]
fn a_successor_that_refuses_to_start_leaves_every_socket_to_the_old_daemon() {
    let env = env();
    let old = start_daemon(&env.slapd.uri(), "");
    let dir = sss_dir(&old);
    let admin = old.runtime_dir().with_file_name("admin");
    // An admin directory others can enter: the new daemon must refuse to start.
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut new = old.successor(|c| c.to_string());
    let exit = new.wait_exit(Duration::from_secs(20));
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(
        exit.is_some_and(|s| !s.success()),
        "{exit:?}\n{}",
        new.log()
    );
    assert!(new.log().contains("refusing to start"), "{}", new.log());
    assert!(
        !new.log().contains("taking over the socket"),
        "took a socket over before refusing:\n{}",
        new.log()
    );
    let mut c = connect(&dir);
    let (h, _) = exchange(&mut c, &SssRequest::GetVersion(1).encode());
    assert_eq!(
        h.status, 0,
        "the old daemon still answers on its SSSD socket"
    );
}
