//! The daemon under test: writes a config into a temp dir (runtime and cache dirs inside it),
//! runs `toolforge-nssd --config` with its log in a file, waits for the socket.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use toolforge_nss_protocol::mapfile::{MapView, Table};

use crate::fixture::{Schema, BASE};
use crate::paths::daemon_bin;
use crate::process::{signal, spawn_tied};

/// Builds a config for `uris` and `schema`; `extra` is appended verbatim (more sections).
/// (`ldap_extra` goes into the `[ldap]` section.)
pub fn config(
    uris: &[String],
    schema: Schema,
    runtime_dir: &Path,
    cache_dir: &Path,
    ldap_extra: &str,
    extra: &str,
) -> String {
    let uris: Vec<String> = uris.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[ldap]\nuri = [{}]\nbase = \"{BASE}\"\nschema = \"{}\"\n{ldap_extra}\
         [ldap.users]\nbases = [\"ou=people,{BASE}\", \"ou=people,ou=servicegroups,{BASE}\"]\nfilter = \"(objectClass=posixAccount)\"\n\
         [ldap.groups]\nbases = [\"ou=groups,{BASE}\", \"ou=servicegroups,{BASE}\"]\nfilter = \"(objectClass=posixGroup)\"\n\
         [daemon]\nruntime_dir = {:?}\ncache_dir = {:?}\nadmin_dir = {:?}\n{extra}",
        uris.join(", "),
        schema.config_name(),
        runtime_dir.display().to_string(),
        cache_dir.display().to_string(),
        runtime_dir.with_file_name("admin").display().to_string(),
    )
}

pub struct Daemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
    log_filter: String,
    /// Where the runtime, cache and admin directories are (`dir` unless this daemon was
    /// started beside another one on the same directories, see [`Daemon::successor`]).
    home: Option<PathBuf>,
    /// Command-line arguments after `--config FILE`.
    args: Vec<String>,
}

impl Daemon {
    /// Starts a daemon against `uris` with `extra` config appended.
    pub fn start(uris: &[String], schema: Schema, extra: &str) -> Daemon {
        Daemon::start_tuned(uris, schema, "", extra)
    }

    /// As [`Daemon::start`], with `ldap_extra` keys in the `[ldap]` section.
    pub fn start_tuned(uris: &[String], schema: Schema, ldap_extra: &str, extra: &str) -> Daemon {
        Daemon::start_with(|run, cache| config(uris, schema, run, cache, ldap_extra, extra))
    }

    /// Starts a daemon with the config `make(runtime_dir, cache_dir)` returns.
    pub fn start_with(make: impl FnOnce(&Path, &Path) -> String) -> Daemon {
        Daemon::start_logged(make, "info,toolforge_nssd=debug")
    }

    /// As [`Daemon::start_with`], logging with the `RUST_LOG` filter `log_filter`.
    pub fn start_logged(make: impl FnOnce(&Path, &Path) -> String, log_filter: &str) -> Daemon {
        Daemon::start_args(make, log_filter, &[])
    }

    /// As [`Daemon::start_logged`], with more command-line arguments.
    pub fn start_args(
        make: impl FnOnce(&Path, &Path) -> String,
        log_filter: &str,
        args: &[&str],
    ) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("tf-daemon-")
            .tempdir()
            .expect("tempdir");
        // Directories that the module (running as any user) can reach.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let cfg = make(&dir.path().join("run"), &dir.path().join("cache"));
        std::fs::write(dir.path().join("config.toml"), cfg).expect("write config");
        let mut d = Daemon {
            dir,
            child: None,
            log_filter: log_filter.to_owned(),
            home: None,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        d.launch();
        d
    }

    /// Starts a second daemon on this one's runtime, cache and admin directories, with this
    /// one's config as `edit` changes it (a takeover, or a start that must fail). Its own
    /// config and log live in a directory of its own. Does not wait for anything.
    pub fn successor(&self, edit: impl FnOnce(&str) -> String) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("tf-daemon-next-")
            .tempdir()
            .expect("tempdir");
        let text = std::fs::read_to_string(self.config_path()).expect("read config");
        std::fs::write(dir.path().join("config.toml"), edit(&text)).expect("write config");
        let mut d = Daemon {
            dir,
            child: None,
            log_filter: self.log_filter.clone(),
            home: Some(self.home().to_owned()),
            args: Vec::new(),
        };
        d.spawn();
        d
    }

    fn home(&self) -> &Path {
        self.home.as_deref().unwrap_or(self.dir.path())
    }

    /// Waits up to `timeout` for the daemon to exit; its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("daemon log");
        let child = spawn_tied(
            Command::new(daemon_bin())
                .arg("--config")
                .arg(self.config_path())
                .args(&self.args)
                .env("RUST_LOG", &self.log_filter)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        )
        .expect("start toolforge-nssd");
        self.child = Some(child);
    }

    fn launch(&mut self) {
        self.spawn();
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(self.socket()).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("toolforge-nssd exited with {status}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "toolforge-nssd did not listen; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs the daemon on a config it must refuse; returns its exit status and output.
    pub fn refuses(
        uris: &[String],
        schema: Schema,
        ldap_extra: &str,
    ) -> (std::process::ExitStatus, String) {
        let dir = tempfile::Builder::new()
            .prefix("tf-daemon-")
            .tempdir()
            .expect("tempdir");
        let cfg = config(
            uris,
            schema,
            &dir.path().join("run"),
            &dir.path().join("cache"),
            ldap_extra,
            "",
        );
        std::fs::write(dir.path().join("config.toml"), cfg).expect("write config");
        let out = Command::new(daemon_bin())
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .env("RUST_LOG", "trace")
            .output()
            .expect("run toolforge-nssd");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status, text)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.home().join("run")
    }

    /// The admin socket (root only).
    pub fn admin_socket(&self) -> PathBuf {
        self.home().join("admin").join("admin.socket")
    }

    pub fn socket(&self) -> PathBuf {
        self.runtime_dir().join("socket")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Replaces the config file (for reload tests) and returns the old text.
    pub fn rewrite_config(&self, edit: impl FnOnce(&str) -> String) -> String {
        let old = std::fs::read_to_string(self.config_path()).expect("read config");
        std::fs::write(self.config_path(), edit(&old)).expect("write config");
        old
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.home().join("cache")
    }

    /// Waits until the log contains `needle` (up to `timeout`).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The shared cache file's path.
    pub fn map_file(&self) -> PathBuf {
        self.runtime_dir().join("cache.map")
    }

    /// Waits (up to 5 s) until the shared cache file holds `key` in `table`; its generation.
    pub fn wait_for_cache_file(&self, table: Table, key: &[u8]) -> Option<u64> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(bytes) = std::fs::read(self.map_file()) {
                if let Some(v) = MapView::new(&bytes) {
                    if v.get(table, key).is_some() {
                        return Some(v.generation());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM and wait; returns whether it exited within 5 s.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        signal(c.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// SIGKILL (leaves a stale socket behind).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again with the same config and directories.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
