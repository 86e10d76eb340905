//! A throwaway OpenLDAP server: a temp dir, a config with the RFC 2307 schemas, the fixture
//! loaded with `slapadd`, and `slapd -d 256` in the foreground on a loopback port, its stats
//! log (one line per search, with the filter) kept so tests can count queries.
//!
//! The server enforces a size limit of 1000 entries on plain searches (paged searches may
//! return everything), so a listing that is not paged shows up as truncated.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixture::{Fixture, BASE};
use crate::process::{free_port, signal, spawn_tied};

/// The directory's administrator (rootdn) and its password: distinctive, so a test can prove
/// it never appears in a log.
pub const ADMIN_DN: &str = "cn=admin,dc=wikimedia,dc=org";
pub const ADMIN_PASSWORD: &str = "Zq7-never-log-this-bind-password";

pub struct Slapd {
    pub port: u16,
    /// The `ldaps://` port, when started with a certificate.
    pub tls_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// Server options beyond the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Load the `syncprov` overlay (RFC 4533 Content Synchronization provider), with a
    /// session log so that deletions reach a resuming consumer without a present phase.
    pub syncprov: bool,
    /// With `syncprov`: `syncprov-nopresent TRUE` and a session log of 50 changes, so that a
    /// consumer resuming from a cookie older than the log gets `e-syncRefreshRequired`.
    pub nopresent: bool,
    /// With `syncprov`: `syncprov-reloadhint TRUE`, so that a consumer whose cookie the server
    /// cannot serve as a delta (no entry left as old as its cookie, say after the database
    /// was reloaded: [`Slapd::reload`]) gets `e-syncRefreshRequired` (4096) instead of the
    /// whole content in the sync search's refresh.
    pub reloadhint: bool,
}

/// The size limits of [`Slapd::start`]: 1000 entries per plain search, paged unlimited.
pub const DEFAULT_LIMITS: &str = "size.soft=1000 size.hard=1000 size.prtotal=unlimited";

fn config(dir: &Path, tls: Option<(&Path, &Path, &Path)>, limits: &str, opts: Options) -> String {
    let (module, overlay) = match (opts.syncprov, opts.nopresent) {
        (true, false) => (
            "moduleload syncprov\n",
            "index entryUUID,entryCSN eq\noverlay syncprov\nsyncprov-checkpoint 10 1\nsyncprov-sessionlog 200\n",
        ),
        (true, true) => (
            "moduleload syncprov\n",
            "index entryUUID,entryCSN eq\noverlay syncprov\nsyncprov-checkpoint 10 1\nsyncprov-sessionlog 50\nsyncprov-nopresent TRUE\n",
        ),
        (false, _) => ("", ""),
    };
    let overlay = if opts.syncprov && opts.reloadhint {
        format!("{overlay}syncprov-reloadhint TRUE\n")
    } else {
        overlay.to_owned()
    };
    let tls = tls
        .map(|(ca, cert, key)| {
            format!(
                "TLSCACertificateFile {}\nTLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                ca.display(),
                cert.display(),
                key.display()
            )
        })
        .unwrap_or_default();
    format!(
        "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
{module}pidfile {d}/slapd.pid
argsfile {d}/slapd.args
sizelimit {limits}
{tls}database mdb
maxsize 268435456
suffix \"{BASE}\"
rootdn \"cn=admin,{BASE}\"
rootpw {ADMIN_PASSWORD}
directory {d}/db
index objectClass eq
index uid,uidNumber,gidNumber,memberUid,member,cn eq
{overlay}",
        d = dir.display()
    )
}

impl Slapd {
    /// Loads `fixture` and starts serving it on a free port.
    pub fn start(fixture: &Fixture) -> Slapd {
        Slapd::start_tls(fixture, None)
    }

    /// As [`Slapd::start`]; with `(ca, cert, key)` it also serves `ldaps://` on `tls_port`
    /// and offers StartTLS on the plain port.
    pub fn start_tls(fixture: &Fixture, tls: Option<(&Path, &Path, &Path)>) -> Slapd {
        Slapd::start_full(fixture, tls, DEFAULT_LIMITS, Options::default())
    }

    /// As [`Slapd::start_tls`], with [`Options`].
    pub fn start_opts(
        fixture: &Fixture,
        tls: Option<(&Path, &Path, &Path)>,
        opts: Options,
    ) -> Slapd {
        Slapd::start_full(fixture, tls, DEFAULT_LIMITS, opts)
    }

    /// As [`Slapd::start`] with slapd's `sizelimit` directive set to `limits` (e.g.
    /// `size.hard=500 size.prtotal=unlimited`; `size.prtotal=disabled` refuses paging).
    pub fn start_limited(fixture: &Fixture, limits: &str) -> Slapd {
        Slapd::start_full(fixture, None, limits, Options::default())
    }

    fn start_full(
        fixture: &Fixture,
        tls: Option<(&Path, &Path, &Path)>,
        limits: &str,
        opts: Options,
    ) -> Slapd {
        let dir = tempfile::Builder::new()
            .prefix("tf-slapd-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("db")).expect("db dir");
        std::fs::write(
            dir.path().join("slapd.conf"),
            config(dir.path(), tls, limits, opts),
        )
        .expect("write slapd.conf");
        let tls_port = if tls.is_some() { free_port() } else { 0 };
        let mut s = Slapd {
            port: 0,
            tls_port,
            dir,
            child: None,
        };
        s.load(&fixture.ldif);
        s.launch();
        s
    }

    /// Replaces the database with `ldif` (in `slapadd` form), as an operator restoring or
    /// rebuilding a server from an export would: the server is stopped, its database emptied
    /// and loaded again (every entry gets a new entryUUID and entryCSN), then it serves on the
    /// same port.
    pub fn reload(&mut self, ldif: &str) {
        self.stop();
        let db = self.dir.path().join("db");
        std::fs::remove_dir_all(&db).expect("remove the database");
        std::fs::create_dir_all(&db).expect("db dir");
        self.load(ldif);
        self.launch();
    }

    fn load(&self, ldif: &str) {
        let path = self.dir.path().join("data.ldif");
        std::fs::write(&path, ldif).expect("write ldif");
        let out = Command::new("slapadd")
            .args(["-q", "-f"])
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-l")
            .arg(&path)
            .output()
            .expect("run slapadd (apt-get install slapd ldap-utils)");
        assert!(
            out.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn launch(&mut self) {
        let port = if self.port == 0 {
            free_port()
        } else {
            self.port
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("slapd log");
        let child = spawn_tied(
            Command::new("slapd")
                .args(["-d", "256", "-f"])
                .arg(self.dir.path().join("slapd.conf"))
                .arg("-h")
                .arg(self.listen_urls(port))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        )
        .expect("start slapd");
        self.port = port;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "slapd did not listen on {port}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn listen_urls(&self, port: u16) -> String {
        let mut urls = format!("ldap://127.0.0.1:{port}/");
        if self.tls_port != 0 {
            urls.push_str(&format!(" ldaps://127.0.0.1:{}/", self.tls_port));
        }
        urls
    }

    /// `ldaps://127.0.0.1:PORT` (servers started with a certificate).
    pub fn ldaps_uri(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port)
    }

    pub fn uri(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Runs an OpenLDAP client `tool` (`ldapadd`, `ldapmodify`) as the directory's
    /// administrator with `ldif` on its standard input; panics with its stderr on failure.
    pub fn apply(&self, tool: &str, ldif: &str) {
        use std::io::Write;
        let mut child = Command::new(tool)
            .args([
                "-x",
                "-H",
                &self.uri(),
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PASSWORD,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(ldif.as_bytes())
            .expect("write the LDIF");
        let out = child.wait_with_output().expect("wait for the tool");
        assert!(
            out.status.success(),
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("slapd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Filters of every search received so far.
    pub fn search_filters(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" SRCH base="))
            .filter_map(|l| {
                l.split_once("filter=\"")
                    .map(|(_, f)| f.trim_end_matches('"').to_owned())
            })
            .collect()
    }

    /// Searches whose filter contains `needle` (case-insensitive: slapd normalises filters).
    pub fn searches_containing(&self, needle: &str) -> usize {
        let n = needle.to_ascii_lowercase();
        self.search_filters()
            .iter()
            .filter(|f| f.to_ascii_lowercase().contains(&n))
            .count()
    }

    /// Stops the server (the data stays; [`Slapd::restart`] serves it again on the same port).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGKILL);
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Stops the server with SIGSTOP (it keeps its sockets but answers nothing); returns once
    /// it is stopped (see [`crate::process::freeze`]).
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            crate::process::freeze(pid);
        }
    }

    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            crate::process::thaw(pid);
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        // SIGKILL works on a frozen server too.
        self.stop();
    }
}
