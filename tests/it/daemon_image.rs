//! The daemon's container image (deploy/Containerfile, built by `scripts/build-image.sh`):
//! its daemon starts, drops privileges and answers. The image named by
//! `$TOOLFORGE_NSS_IMAGE` is tested (`make package-test` builds it and sets it; without it
//! the test says so and does nothing). No container runtime can run here (crun refuses this
//! machine's hybrid cgroups), so the image's root filesystem (`podman image mount`) is run the
//! same way as the base images: as the DaemonSet would, read-only root, private mount and pid
//! namespaces, the config, runtime, cache and admin directories mounted at their places.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use toolforge_nss_tests::fixture::{Fixture, Schema, Shape};
use toolforge_nss_tests::nss::Nss;
use toolforge_nss_tests::process::spawn_tied;
use toolforge_nss_tests::slapd::Slapd;

/// `podman image mount` of an image, unmounted on drop.
struct Mounted {
    image: String,
    root: PathBuf,
}

impl Mounted {
    fn new(image: &str) -> Mounted {
        let out = Command::new("podman")
            .args(["image", "mount", image])
            .output()
            .expect("run podman");
        assert!(
            out.status.success(),
            "podman image mount {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Mounted {
            image: image.into(),
            root,
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["image", "unmount", &self.image])
            .output();
    }
}

fn peer_pid(socket: &Path) -> u32 {
    let s = UnixStream::connect(socket).expect("connect to the daemon");
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for getsockopt's writes.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "SO_PEERCRED");
    cred.pid as u32
}

#[test]
fn the_daemon_image_starts_drops_privileges_and_answers() {
    let Ok(image) = std::env::var("TOOLFORGE_NSS_IMAGE") else {
        eprintln!(
            "SKIPPED: no TOOLFORGE_NSS_IMAGE (`make package-test` builds the image and tests it)"
        );
        return;
    };
    let mounted = Mounted::new(&image);
    let root = &mounted.root;
    for f in [
        "usr/sbin/toolforge-nssd",
        "usr/bin/toolforge-nssctl",
        "etc/toolforge-nss/config.toml",
    ] {
        assert!(root.join(f).exists(), "{image} has no /{f}");
    }
    let f = Fixture::generate(Schema::Rfc2307bis, Shape::small());
    let slapd = Slapd::start(&f);
    let dir = tempfile::Builder::new()
        .prefix("tf-image-run-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let (config, runtime, cache, admin, rootmnt) = (
        dir.path().join("config"),
        dir.path().join("runtime"),
        dir.path().join("cache"),
        dir.path().join("admin"),
        dir.path().join("root"),
    );
    for d in [&config, &runtime, &cache, &admin, &rootmnt] {
        std::fs::create_dir(d).expect("mkdir");
    }
    std::fs::set_permissions(&admin, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    // The DaemonSet's ConfigMap, pointed at the test directory.
    let text = toolforge_nss_tests::daemon::config(
        &[slapd.uri()],
        Schema::Rfc2307bis,
        Path::new("/run/toolforge-nss"),
        Path::new("/var/cache/toolforge-nss"),
        "",
        "run_as_uid = 64100\nrun_as_gid = 64100\n",
    )
    // The harness puts the admin directory beside the runtime one; the DaemonSet's place:
    .replace("\"/run/admin\"", "\"/run/toolforge-nss-admin\"");
    assert!(text.contains("/run/toolforge-nss-admin"), "{text}");
    std::fs::write(config.join("config.toml"), text).expect("write config");
    let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log");
    let mut child = spawn_tied(
        Command::new("unshare")
            .args([
                "--mount",
                "--pid",
                "--fork",
                "--kill-child",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                "set -e; r=$1; mount --bind \"$0\" \"$r\"; mount -o remount,bind,ro \"$r\"; \
                 mount -t proc proc \"$r/proc\"; mount --rbind /dev \"$r/dev\"; \
                 mount -t tmpfs tmpfs \"$r/tmp\"; \
                 mount -o bind,ro \"$2\" \"$r/etc/toolforge-nss\"; \
                 mkdir -p \"$r/run\" 2>/dev/null || true; mount -t tmpfs tmpfs \"$r/run\"; \
                 mkdir \"$r/run/toolforge-nss\" \"$r/run/toolforge-nss-admin\"; \
                 mount --bind \"$3\" \"$r/run/toolforge-nss\"; \
                 mount --bind \"$5\" \"$r/run/toolforge-nss-admin\"; \
                 mount --bind \"$4\" \"$r/var/cache\"; mkdir -p \"$4/toolforge-nss\"; \
                 exec chroot \"$r\" /usr/bin/env -i TOOLFORGE_NSS_DISABLE=1 RUST_LOG=info \
                   /usr/sbin/toolforge-nssd --config /etc/toolforge-nss/config.toml",
            ])
            .arg(root)
            .arg(&rootmnt)
            .arg(&config)
            .arg(&runtime)
            .arg(&cache)
            .arg(&admin)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log),
    )
    .expect("start the image's daemon");
    let socket = runtime.join("socket");
    let read_log = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(15);
    while UnixStream::connect(&socket).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the image's daemon exited with {st}:\n{}", read_log());
        }
        assert!(
            Instant::now() < deadline,
            "no socket after 15 s:\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // It dropped privileges: every uid and gid of the process is 64100 (the daemon uid the module trusts), no supplementary groups.
    let pid = peer_pid(&socket);
    // The daemon dropped its privileges, which clears the parent-death signal that
    // `unshare --kill-child` set: it must be stopped by its own pid, whatever happens below.
    let _stop = StopOnDrop(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), "64100 64100 64100 64100", "{status}");
    assert_eq!(field("Gid:"), "64100 64100 64100 64100", "{status}");
    assert_eq!(field("Groups:"), "", "{status}");
    assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
    // And it answers, through the module, as a pod's process would.
    let nss = Nss::new(&runtime, "files toolforge");
    let tool = f.tool();
    let run = nss.run(&["getent", "passwd", &tool.name]);
    assert_eq!(
        run.stdout.trim_end(),
        tool.passwd_line(),
        "{run:?}\n{}",
        read_log()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Stops a process by pid when dropped (SIGTERM, then SIGKILL if it is still there).
struct StopOnDrop(u32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let pid = self.0 as libc::pid_t;
        // SAFETY: kill(2) with a pid and a signal number; no memory is passed.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}
