//! Runs real programs (`getent`, `id`) through SSSD's client library `libnss_sss.so.2`, as an
//! unchanged image would, against whatever serves the socket in `pipes_dir`: in a private
//! mount namespace where `pipes_dir` is bind-mounted over `/var/lib/sss/pipes` (the path is
//! compiled into the client), an empty directory over `/var/lib/sss/mc` (so a host SSSD's
//! memory cache can never answer) and `/etc/nsswitch.conf` is a bind-mounted file. The
//! machine's own files are never touched.
//!
//! Which client library: [`Client::Host`] (the one installed, found by the loader),
//! [`Client::Library`] (a `libnss_sss.so.2` taken from another release's package, loaded
//! through `LD_LIBRARY_PATH`), or [`Client::Rootfs`] (a Debian root filesystem with
//! `libnss-sss` installed, entered with `chroot`; the mounts are made inside it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::nss::Run;

/// The libnss_sss under test.
#[derive(Clone, Debug)]
pub enum Client {
    Host,
    /// A directory holding `libnss_sss.so.2`.
    Library(PathBuf),
    /// A root filesystem with `libnss-sss` installed.
    Rootfs(PathBuf),
}

pub struct SssNss {
    dir: tempfile::TempDir,
    pipes_dir: PathBuf,
    client: Client,
}

/// Where the client looks, inside the namespace.
const PIPES: &str = "/var/lib/sss/pipes";
const MC: &str = "/var/lib/sss/mc";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl SssNss {
    /// `sources` is the nsswitch source list (e.g. `files sss`).
    pub fn new(pipes_dir: &Path, sources: &str, client: Client) -> SssNss {
        let dir = tempfile::Builder::new()
            .prefix("tf-sss-")
            .tempdir()
            .expect("tempdir");
        std::fs::write(
            dir.path().join("nsswitch.conf"),
            format!("passwd: {sources}\ngroup: {sources}\nshadow: files\nhosts: files\n"),
        )
        .expect("write nsswitch.conf");
        std::fs::create_dir(dir.path().join("mc")).expect("mkdir mc");
        SssNss {
            dir,
            pipes_dir: pipes_dir.to_owned(),
            client,
        }
    }

    /// Whether this machine can run the client at all (the mount points exist: the project's
    /// install script creates them with `libnss-sss`).
    pub fn available(client: &Client) -> Result<(), String> {
        let root = match client {
            Client::Rootfs(r) => r.clone(),
            _ => PathBuf::from("/"),
        };
        for p in [PIPES, MC, "lib"] {
            let p = root.join(p.trim_start_matches('/'));
            if !p.exists() {
                return Err(format!("{} is missing", p.display()));
            }
        }
        Ok(())
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let root = match &self.client {
            Client::Rootfs(r) => r.display().to_string(),
            _ => String::new(),
        };
        // $1 nsswitch.conf, $2 pipes dir, $3 empty mc dir, $4 root ("" = /); then the command.
        let script = "set -e; r=\"$4\"; \
            mount --bind \"$1\" \"$r/etc/nsswitch.conf\"; \
            mount --bind \"$2\" \"$r/var/lib/sss/pipes\"; \
            mount --bind \"$3\" \"$r/var/lib/sss/mc\"; \
            shift 4; \
            if [ -n \"$r\" ]; then exec chroot \"$r\" \"$@\"; else exec \"$@\"; fi";
        let mut cmd = Command::new("unshare");
        if !is_root() {
            cmd.args(["--user", "--map-root-user"]);
        }
        cmd.args(["--mount", "--", "sh", "-c", script, "sh"])
            .arg(self.dir.path().join("nsswitch.conf"))
            .arg(&self.pipes_dir)
            .arg(self.dir.path().join("mc"))
            .arg(&root)
            .args(args)
            .env_remove("_SSS_LOOPS")
            .env_remove("SSS_NSS_USE_MEMCACHE");
        if let Client::Library(lib) = &self.client {
            cmd.env("LD_LIBRARY_PATH", lib);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let start = Instant::now();
        let out = cmd.output().expect("run unshare (util-linux)");
        let elapsed = start.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !stderr.contains("unshare failed") && !stderr.contains("mount:"),
            "cannot make a private mount namespace here: {stderr}"
        );
        Run {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
            code: out.status.code(),
            elapsed,
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }
}
