//! The release module inside real Debian root filesystems (bullseye, bookworm, trixie:
//! `mmdebstrap --variant=minbase`, the base-image recipe applied as written), as a tool's
//! container runs it: the daemon on the host, its runtime directory bind-mounted read-only,
//! private mount and pid namespaces, the tool's uid. A suite this machine cannot make is
//! skipped with the reason; every other suite runs.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use toolforge_nss_protocol::{
    Capabilities, ErrorCode, Header, Passwd, Request, Response, HEADER_LEN, MAX_REQUEST_BODY,
    PROTOCOL_VERSION,
};
use toolforge_nss_tests::daemon::Daemon;
use toolforge_nss_tests::fixture::{Fixture, Schema, User};
use toolforge_nss_tests::paths::release_module_so;
use toolforge_nss_tests::rootfs::{rootfs, As, Image, SUITES};

use crate::env::shared;

/// The images this machine can make, built with the release module; prints why a suite is
/// skipped.
fn images() -> Vec<(&'static str, Image)> {
    let module = release_module_so();
    SUITES
        .iter()
        .filter_map(|suite| match rootfs(suite) {
            Ok(base) => Some((*suite, Image::build(&base, &module))),
            Err(why) => {
                eprintln!("SKIPPED {suite}: {why}");
                None
            }
        })
        .collect()
}

fn gid_of(u: &User) -> String {
    u.gid.to_string()
}

fn as_user(u: &User) -> As {
    As {
        uid: u.uid,
        gid: u.gid,
    }
}

/// A small group with members (the tool's maintainer group).
fn tool_group(f: &Fixture) -> &toolforge_nss_tests::fixture::Group {
    &f.groups[&f.tool().name]
}

#[test]
fn a_tool_resolves_directory_users_and_groups_in_every_image() {
    let env = shared(Schema::Rfc2307bis);
    let f = &env.fixture;
    let runtime = env.daemon.runtime_dir();
    let tool = f.tool();
    let dev = f.developer(false);
    let group = tool_group(f);
    for (suite, image) in images() {
        image.add_dir(&tool.home, as_user(tool), 0o750);
        image.add_file(
            "/srv/owned",
            "x\n",
            As {
                uid: dev.uid,
                gid: group.gid,
            },
        );
        let run = |args: &[&str]| {
            let r = image.run(Some(&runtime), as_user(tool), args);
            assert_eq!(r.code, Some(0), "{suite}: {args:?} as {}: {r:?}", tool.name);
            r.stdout.trim_end().to_owned()
        };
        let (uid, gid) = (tool.uid.to_string(), group.gid.to_string());
        assert_eq!(
            run(&["getent", "passwd", &tool.name]),
            tool.passwd_line(),
            "{suite}"
        );
        assert_eq!(
            run(&["getent", "passwd", &uid]),
            tool.passwd_line(),
            "{suite}"
        );
        assert_eq!(
            run(&["getent", "passwd", &dev.name]),
            dev.passwd_line(),
            "{suite}"
        );
        assert_eq!(
            run(&["getent", "group", &group.name]),
            group.group_line(),
            "{suite}"
        );
        assert_eq!(
            run(&["getent", "group", &gid]),
            group.group_line(),
            "{suite}"
        );
        for u in [tool, dev] {
            let out = run(&["getent", "initgroups", &u.name]);
            let words: Vec<&str> = out.split_whitespace().collect();
            let mut gids: Vec<u32> = words.iter().skip(1).map(|w| w.parse().unwrap()).collect();
            gids.sort_unstable();
            assert_eq!(words.first(), Some(&u.name.as_str()), "{suite}: {out}");
            assert_eq!(
                gids,
                f.supplementary_gids(&u.name),
                "{suite}: initgroups {}",
                u.name
            );
        }
        let primary = f.group_by_gid(tool.gid).expect("the tool's primary group");
        assert_eq!(
            run(&["id"]),
            format!(
                "uid={}({}) gid={}({}) groups={}({})",
                tool.uid, tool.name, tool.gid, primary.name, tool.gid, primary.name
            ),
            "{suite}"
        );
        assert_eq!(run(&["whoami"]), tool.name, "{suite}");
        let ls = run(&["ls", "-l", "/srv/owned"]);
        let cols: Vec<&str> = ls.split_whitespace().collect();
        assert_eq!(
            cols.get(2..4),
            Some(&[dev.name.as_str(), group.name.as_str()][..]),
            "{suite}: {ls}"
        );
        let ls = run(&["ls", "-ld", &tool.home]);
        assert_eq!(
            ls.split_whitespace().nth(2),
            Some(tool.name.as_str()),
            "{suite}: {ls}"
        );
        assert_eq!(
            run(&["stat", "-c", "%U:%G", "/srv/owned"]),
            format!("{}:{}", dev.name, group.name),
            "{suite}"
        );
        assert_eq!(
            run(&["bash", "-c", &format!("echo ~{}", tool.name)]),
            tool.home,
            "{suite}"
        );
        // HOME is unset (an empty environment): `~` comes from the passwd entry of the uid.
        assert_eq!(run(&["bash", "-c", "cd ~ && pwd"]), tool.home, "{suite}");
        assert_eq!(
            run(&["sh", "-c", &format!("cd ~{} && pwd", tool.name)]),
            tool.home,
            "{suite}"
        );
        // dash takes `~` from HOME only. An entrypoint that drops to the tool by name sets HOME
        // from the tool's passwd entry, which only the module knows (`su` cannot be used:
        // pam_unix refuses an account with no shadow entry, and the module serves none).
        let entry = image.run(
            Some(&runtime),
            As::ROOT,
            &[
                "setpriv",
                "--reuid",
                &tool.name,
                "--regid",
                &gid_of(tool),
                "--init-groups",
                "--reset-env",
                "sh",
                "-c",
                "cd ~ && pwd && id -u && id -G",
            ],
        );
        let mut groups: Vec<u32> = f.supplementary_gids(&tool.name);
        groups.push(tool.gid);
        groups.sort_unstable();
        let out: Vec<&str> = entry.stdout.lines().collect();
        assert_eq!(
            (entry.code, out.first().copied(), out.get(1).copied()),
            (Some(0), Some(tool.home.as_str()), Some(uid.as_str())),
            "{suite}: {entry:?}"
        );
        let mut got: Vec<u32> = out
            .get(2)
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|g| g.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        got.sort_unstable();
        assert_eq!(got, groups, "{suite}: setpriv --init-groups");
        // The README's checks of an image: the module's libraries all resolve, and the module
        // alone (`-s toolforge`, bypassing nsswitch.conf) answers.
        let ldd = run(&["ldd", "/usr/lib/x86_64-linux-gnu/libnss_toolforge.so.2"]);
        assert!(
            !ldd.contains("not found") && ldd.contains("libc.so.6"),
            "{suite}: {ldd}"
        );
        assert_eq!(
            run(&["getent", "-s", "toolforge", "passwd", &tool.name]),
            tool.passwd_line(),
            "{suite}"
        );
        // Local users still come from the image's files.
        assert_eq!(
            run(&["getent", "passwd", "root"]),
            "root:x:0:0:root:/root:/bin/bash",
            "{suite}"
        );
        assert_eq!(
            run(&["stat", "-c", "%U:%G", "/etc/passwd"]),
            "root:root",
            "{suite}"
        );
    }
}

/// `getent passwd NAME` in the image, timed by bash inside it (no namespace setup counted),
/// three times: (exit code, stdout, the fastest run in seconds). The fastest, because a loaded
/// machine can stall any one process; a lookup that waits on something never gets fast.
fn timed_getent(image: &Image, runtime: Option<&Path>, who: As, name: &str) -> (i32, String, f64) {
    let r = image.run(
        runtime,
        who,
        &[
            "bash",
            "-c",
            "TIMEFORMAT=%3R; for i in 1 2 3; do time getent passwd \"$0\"; echo \"rc=$?\" >&2; done",
            name,
        ],
    );
    let rcs: Vec<i32> = r
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("rc="))
        .filter_map(|v| v.parse().ok())
        .collect();
    assert_eq!(rcs.len(), 3, "{r:?}");
    assert!(rcs.iter().all(|&c| c == rcs[0]), "{r:?}");
    let secs = r
        .stderr
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .fold(f64::INFINITY, f64::min);
    assert!(secs.is_finite(), "no timing in {r:?}");
    (rcs[0], r.stdout, secs)
}

#[test]
fn without_the_runtime_directory_local_users_work_and_directory_users_fail_fast() {
    let env = shared(Schema::Rfc2307bis);
    let f = &env.fixture;
    let tool = f.tool();
    for (suite, image) in images() {
        let who = as_user(tool);
        let root = image.run(None, who, &["getent", "passwd", "root"]);
        assert_eq!(
            root.stdout.trim_end(),
            "root:x:0:0:root:/root:/bin/bash",
            "{suite}: {root:?}"
        );
        let ls = image.run(None, who, &["stat", "-c", "%U", "/etc/passwd"]);
        assert_eq!(ls.stdout.trim_end(), "root", "{suite}: {ls:?}");
        for name in [tool.name.as_str(), f.developer(true).name.as_str()] {
            let (rc, out, secs) = timed_getent(&image, None, who, name);
            eprintln!("{suite}: getent passwd {name} without a daemon: {secs} s");
            assert_eq!((rc, out.as_str()), (2, ""), "{suite}: getent passwd {name}");
            assert!(
                secs < 0.1,
                "{suite}: getent passwd {name} took {secs} s without a daemon"
            );
        }
        let id = image.run(None, who, &["id"]);
        assert!(
            id.stdout.starts_with(&format!("uid={} ", tool.uid)),
            "{suite}: {id:?}"
        );
    }
}

#[test]
fn a_long_running_process_resumes_after_the_daemon_restarts() {
    let env = shared(Schema::Rfc2307bis);
    let f = &env.fixture;
    let tool = f.tool();
    let mut daemon = Daemon::start(&[env.slapd.uri()], Schema::Rfc2307bis, "");
    let runtime = daemon.runtime_dir();
    // Developers never looked up by this daemon: each answer is a socket round trip.
    let mut names = f.developers().map(|u| (u.name.clone(), u.uid));
    // One process looks up every name it reads on stdin, in-process (glibc NSS), forever.
    let script = "$|=1; while (my $n = <STDIN>) { chomp $n; my @p = getpwnam($n); \
                  print @p ? \"$n $p[2]\\n\" : \"$n -\\n\"; }";
    for (suite, image) in images() {
        let mut child = image
            .command(Some(&runtime), as_user(tool), &["perl", "-e", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn perl in the image");
        let mut stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut ask = |name: &str| -> Option<u32> {
            writeln!(stdin, "{name}").expect("write to perl");
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read from perl");
            let (n, v) = line.trim_end().split_once(' ').expect("NAME ANSWER");
            assert_eq!(n, name, "{suite}");
            v.parse().ok()
        };
        // Every answer is right or absent. With `within`, absent ones are asked again (a cold
        // lookup on a loaded machine may run past the module's budget) until it has passed.
        let mut resolve = |n: &str, uid: u32, within: Option<Duration>, when: &str| {
            let deadline = within.map(|w| Instant::now() + w);
            loop {
                match (ask(n), deadline) {
                    (Some(got), _) => {
                        assert_eq!(got, uid, "{suite}: {n} {when}: a wrong answer");
                        return;
                    }
                    (None, None) => return,
                    (None, Some(d)) => assert!(
                        Instant::now() < d,
                        "{suite}: {n} {when}: no answer within {within:?}"
                    ),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        let patience = Some(Duration::from_secs(5));
        for _ in 0..5 {
            let (n, uid) = names.next().expect("enough developers");
            resolve(&n, uid, patience, "before the restart");
        }
        daemon.stop();
        for _ in 0..3 {
            let (n, uid) = names.next().expect("enough developers");
            resolve(&n, uid, None, "while down");
        }
        daemon.restart();
        // The same process, never restarted, resolves names it never asked before: through
        // the new daemon's socket.
        for _ in 0..6 {
            let (n, uid) = names.next().expect("enough developers");
            resolve(&n, uid, patience, "after the restart");
        }
        assert_eq!(
            child.try_wait().expect("try_wait"),
            None,
            "{suite}: perl exited"
        );
        drop(stdin);
        let status = child.wait().expect("wait perl");
        assert!(status.success(), "{suite}: perl {status}");
    }
}

/// How a fake daemon of another protocol version answers.
#[derive(Clone, Copy, Debug)]
enum Skew {
    /// Newer, still speaking the module's version: answers in it, with capability bits the
    /// module does not know.
    NewerCompatible,
    /// Newer, no longer speaking the module's version: `UnsupportedVersion` (v1 error layout).
    NewerRefuses,
    /// Newer, answering in its own version's frames (a bait answer inside).
    NewerFrames,
    /// Older than the module: refuses its version.
    OlderRefuses,
    /// Older than the module: answers in version 0 frames (a bait answer inside).
    OlderFrames,
}

const BAIT_UID: u32 = 4242;

fn bait(name: &str) -> Response {
    Response::Passwd(Passwd {
        name: name.into(),
        passwd: "x".into(),
        uid: BAIT_UID,
        gid: BAIT_UID,
        gecos: "bait".into(),
        dir: "/bait".into(),
        shell: "/bin/bait".into(),
    })
}

fn with_version(mut frame: Vec<u8>, version: u16) -> Vec<u8> {
    frame[4..6].copy_from_slice(&version.to_le_bytes());
    frame
}

fn answer(skew: Skew, users: &[User], id: u32, req: &Request) -> Vec<u8> {
    let user = |u: &User| {
        Response::Passwd(Passwd {
            name: u.name.clone(),
            passwd: "x".into(),
            uid: u.uid,
            gid: u.gid,
            gecos: u.gecos.clone(),
            dir: u.home.clone(),
            shell: u.shell.clone(),
        })
    };
    let found = match req {
        Request::GetPwNam(n) => users.iter().find(|u| &u.name == n),
        Request::GetPwUid(i) => users.iter().find(|u| u.uid == *i),
        _ => None,
    };
    let name = match req {
        Request::GetPwNam(n) => n.clone(),
        _ => "bait".into(),
    };
    let refuse = Response::Error {
        code: ErrorCode::UnsupportedVersion,
        message: "unsupported protocol version".into(),
    };
    match skew {
        Skew::NewerCompatible => {
            found
                .map(user)
                .unwrap_or(Response::NotFound)
                .encode(id, 0, Capabilities(u32::MAX))
        }
        Skew::NewerRefuses | Skew::OlderRefuses => refuse.encode(id, 0, Capabilities(0)),
        Skew::NewerFrames => with_version(
            bait(&name).encode(id, 0, Capabilities(u32::MAX)),
            PROTOCOL_VERSION + 1,
        ),
        Skew::OlderFrames => with_version(bait(&name).encode(id, 0, Capabilities(0)), 0),
    }
}

/// A daemon of another protocol version on a socket in a directory of its own.
struct FakeDaemon {
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
}

impl FakeDaemon {
    fn start(skew: Skew, users: Vec<User>) -> FakeDaemon {
        let dir = tempfile::Builder::new()
            .prefix("tf-fake-")
            .tempdir()
            .expect("tempdir");
        let perm = |p: &Path, m| {
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m))
                .expect("chmod")
        };
        perm(dir.path(), 0o755);
        let listener = UnixListener::bind(dir.path().join("socket")).expect("bind");
        perm(&dir.path().join("socket"), 0o666);
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let users = Arc::new(users);
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let users = users.clone();
                        std::thread::spawn(move || serve(conn, skew, &users));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeDaemon { dir, stop }
    }

    fn runtime_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut conn: UnixStream, skew: Skew, users: &[User]) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    loop {
        let mut head = [0u8; HEADER_LEN];
        if conn.read_exact(&mut head).is_err() {
            return;
        }
        let Ok(h) = Header::decode(&head, MAX_REQUEST_BODY) else {
            return;
        };
        let mut body = vec![0u8; h.body_len as usize];
        if conn.read_exact(&mut body).is_err() {
            return;
        }
        let Ok(req) = Request::decode(h.kind, &body) else {
            return;
        };
        if conn
            .write_all(&answer(skew, users, h.request_id, &req))
            .is_err()
        {
            return;
        }
    }
}

/// Looks up a developer by name and id in every image against fake daemons of each `skews`.
fn check_skews(skews: &[Skew]) {
    let env = shared(Schema::Rfc2307bis);
    let f = &env.fixture;
    let tool = f.tool();
    let dev = f.developer(false);
    let images = images();
    for &skew in skews {
        let fake = FakeDaemon::start(skew, vec![tool.clone(), dev.clone()]);
        let runtime = fake.runtime_dir();
        for (suite, image) in &images {
            for key in [dev.name.clone(), dev.uid.to_string()] {
                let r = image.run(Some(&runtime), as_user(tool), &["getent", "passwd", &key]);
                assert!(
                    !r.stdout.contains("bait") && !r.stdout.contains(&BAIT_UID.to_string()),
                    "{suite} {skew:?}: a wrong answer for {key}: {r:?}"
                );
                match skew {
                    Skew::NewerCompatible => assert_eq!(
                        (r.code, r.stdout.trim_end()),
                        (Some(0), dev.passwd_line().as_str()),
                        "{suite} {skew:?}: {key}"
                    ),
                    _ => assert_eq!(
                        (r.code, r.stdout.as_str()),
                        (Some(2), ""),
                        "{suite} {skew:?}: {key} must be UNAVAIL"
                    ),
                }
                assert!(
                    r.elapsed < Duration::from_secs(2),
                    "{suite} {skew:?}: {key} took {:?}",
                    r.elapsed
                );
            }
        }
    }
}

#[test]
fn a_daemon_of_another_protocol_version_gets_answers_or_unavail_never_wrong_ones() {
    check_skews(&[
        Skew::NewerCompatible,
        Skew::NewerRefuses,
        Skew::OlderRefuses,
    ]);
}

/// Frames of a version the module does not speak are refused, whatever their body (the
/// module once decoded the header without checking its version and served the bait).
#[test]
fn frames_of_another_protocol_version_are_refused() {
    check_skews(&[Skew::NewerFrames, Skew::OlderFrames]);
}
