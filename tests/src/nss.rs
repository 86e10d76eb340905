//! Runs real programs (`getent`, `id`) with the module, as a container process would, in a
//! private mount namespace where `/etc/nsswitch.conf` is a bind-mounted file saying
//! `files toolforge`. The machine's own nsswitch.conf is never touched.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::paths::module_so;

pub struct Nss {
    dir: tempfile::TempDir,
    runtime_dir: PathBuf,
}

/// What a command printed, its exit code and how long it took.
#[derive(Debug)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: Option<i32>,
    pub elapsed: Duration,
}

impl Run {
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Nss {
    /// The module, installed as `libnss_toolforge.so.2` in a private lib dir, pointed at
    /// `runtime_dir`; `sources` is the nsswitch source list (e.g. `files toolforge`).
    pub fn new(runtime_dir: &Path, sources: &str) -> Nss {
        let dir = tempfile::Builder::new()
            .prefix("tf-nss-")
            .tempdir()
            .expect("tempdir");
        std::fs::copy(module_so(), dir.path().join("libnss_toolforge.so.2")).expect("copy module");
        std::fs::write(
            dir.path().join("nsswitch.conf"),
            format!("passwd: {sources}\ngroup: {sources}\nshadow: files\nhosts: files\n"),
        )
        .expect("write nsswitch.conf");
        Nss {
            dir,
            runtime_dir: runtime_dir.to_owned(),
        }
    }

    /// The command that runs `args` in the namespace (for a process the caller drives).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("unshare");
        if !is_root() {
            cmd.args(["--user", "--map-root-user"]);
        }
        cmd.args([
            "--mount",
            "--",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/nsswitch.conf && exec \"$@\"",
        ])
        .arg(self.dir.path().join("nsswitch.conf"))
        .args(args)
        .env("LD_LIBRARY_PATH", self.dir.path())
        .env("TOOLFORGE_NSS_DIR", &self.runtime_dir)
        .env_remove("TOOLFORGE_NSS_DISABLE")
        .env_remove("TOOLFORGE_NSS_TIMEOUT_MS");
        cmd
    }

    /// Runs `args` in the namespace, with extra environment `env`.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
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

    /// Starts `args` in the namespace without waiting (a long-running process); tied to the
    /// test process, so it dies with it.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        crate::process::spawn_tied(&mut self.command(args)).expect("spawn unshare")
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// How long the namespace setup alone takes (`true`), to subtract from timings.
    pub fn baseline(&self) -> Duration {
        (0..3)
            .map(|_| self.run(&["true"]).elapsed)
            .min()
            .unwrap_or_default()
    }
}
