//! Opening one LDAP connection: the URI's host name is resolved at every connect and every
//! address it resolves to is tried in turn (load-balanced names such as `ldap-ro`); the socket
//! gets TCP keepalive; then TLS (ldaps:// or StartTLS, verified against the CA file) and the
//! simple bind. The credentials (bind password, TLS roots) are read at start and again on
//! SIGHUP ([`Credentials::load`]).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, StdStream};

use toolforge_nss_config::LdapConfig;

/// The system CA bundle, used when `tls_ca_file` is not set.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// TCP keepalive: first probe after this much idleness, then every `KEEPALIVE_INTERVAL`, and
/// the connection is dropped after `KEEPALIVE_COUNT` unanswered probes (about 60 s in all).
const KEEPALIVE_IDLE_SECS: libc::c_int = 30;
const KEEPALIVE_INTERVAL_SECS: libc::c_int = 10;
const KEEPALIVE_COUNT: libc::c_int = 3;

/// Reads the bind password: the first line of the file, which must not be readable by others.
pub fn read_bind_password(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(format!(
            "{}: readable by others; chmod o-r it",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text.lines().next().unwrap_or("").to_owned())
}

/// A TLS client config trusting exactly the certificates of `path` (verification is never
/// turned off). Built at start and on SIGHUP, so a bad file refuses the start (or the
/// reload), not every connection.
pub fn tls_config(path: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// What a connection authenticates with; replaced as a whole on SIGHUP.
pub struct Credentials {
    pub bind_dn: Option<String>,
    pub bind_password: Option<String>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Credentials {
    /// Reads `bind_password_file` and `tls_ca_file` (errors name the key and the file).
    pub fn load(cfg: &LdapConfig) -> Result<Credentials, String> {
        let bind_password = match &cfg.bind_password_file {
            Some(p) => {
                Some(read_bind_password(p).map_err(|e| format!("ldap.bind_password_file: {e}"))?)
            }
            None => None,
        };
        let uses_tls = cfg.starttls || cfg.uri.iter().any(|u| u.starts_with("ldaps://"));
        let tls = if uses_tls {
            let ca = cfg
                .tls_ca_file
                .clone()
                .unwrap_or_else(|| SYSTEM_CA_BUNDLE.into());
            Some(tls_config(&ca).map_err(|e| format!("ldap.tls_ca_file: {e}"))?)
        } else {
            None
        };
        Ok(Credentials {
            bind_dn: cfg.bind_dn.clone(),
            bind_password,
            tls,
        })
    }
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The server refused the bind credentials (invalidCredentials, 49): a configuration error.
    InvalidCredentials(String),
    /// Anything else (resolution, connect, TLS, bind): the server is unusable for now.
    Failed(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::InvalidCredentials(s) | OpenError::Failed(s) => f.write_str(s),
        }
    }
}

/// Host and port of an `ldap://` or `ldaps://` URI (validated at load time).
fn host_port(uri: &str) -> Result<(String, u16), String> {
    let (rest, default_port) = if let Some(r) = uri.strip_prefix("ldaps://") {
        (r, 636)
    } else if let Some(r) = uri.strip_prefix("ldap://") {
        (r, 389)
    } else {
        return Err(format!("{uri}: not an ldap:// or ldaps:// URI"));
    };
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{uri}: unterminated IPv6 address"))?;
        let port = after.strip_prefix(':').map(str::parse).transpose();
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p.parse()).transpose()),
            None => (authority.to_owned(), Ok(None)),
        }
    };
    let port = port.map_err(|_| format!("{uri}: invalid port"))?;
    Ok((host, port.unwrap_or(default_port)))
}

/// Turns TCP keepalive on with short timers, so a silently dead idle connection is noticed.
fn set_keepalive(stream: &tokio::net::TcpStream) {
    let fd = stream.as_raw_fd();
    let set = |level, name, value: libc::c_int| {
        // SAFETY: setsockopt on a socket we own, with a pointer to a c_int and its size.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE_SECS);
    set(
        libc::IPPROTO_TCP,
        libc::TCP_KEEPINTVL,
        KEEPALIVE_INTERVAL_SECS,
    );
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_COUNT);
}

/// Resolves the URI's host now and connects to the first of its addresses that accepts,
/// each within `timeout`.
async fn tcp_connect(uri: &str, timeout: Duration) -> Result<std::net::TcpStream, String> {
    let (host, port) = host_port(uri)?;
    let addrs: Vec<SocketAddr> =
        tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port)))
            .await
            .map_err(|_| format!("resolving {host} timed out"))?
            .map_err(|e| format!("resolving {host}: {e}"))?
            .collect();
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    connect_any(&addrs, timeout).await
}

/// Connects to the first of `addrs` that accepts, in order, each within `timeout`.
async fn connect_any(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<std::net::TcpStream, String> {
    let mut errors = Vec::new();
    for &addr in addrs {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                set_keepalive(&s);
                return s.into_std().map_err(|e| format!("{addr}: {e}"));
            }
            Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
            Err(_) => errors.push(format!("{addr}: connect timed out")),
        }
    }
    Err(errors.join(", "))
}

/// Opens one connection to `uri` and binds with `creds`.
pub async fn open(cfg: &LdapConfig, creds: &Credentials, uri: &str) -> Result<Ldap, OpenError> {
    let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms);
    let stream = tcp_connect(uri, connect_timeout)
        .await
        .map_err(OpenError::Failed)?;
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(connect_timeout)
        .set_starttls(cfg.starttls)
        .set_std_stream(StdStream::Tcp(stream));
    if let Some(tls) = &creds.tls {
        settings = settings.set_config(tls.clone());
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, uri)
        .await
        .map_err(|e| OpenError::Failed(e.to_string()))?;
    ldap3::drive!(conn);
    if let (Some(dn), Some(pw)) = (&creds.bind_dn, &creds.bind_password) {
        let bound = ldap
            .with_timeout(Duration::from_millis(cfg.bind_timeout_ms))
            .simple_bind(dn, pw)
            .await
            .and_then(|r| r.success());
        match bound {
            Ok(_) => {}
            Err(LdapError::LdapResult { result }) if result.rc == 49 => {
                let _ = ldap.unbind().await;
                return Err(OpenError::InvalidCredentials(format!(
                    "bind as {dn} refused: invalidCredentials (49); check ldap.bind_dn and ldap.bind_password_file"
                )));
            }
            Err(e) => {
                let _ = ldap.unbind().await;
                return Err(OpenError::Failed(format!("bind as {dn} failed: {e}")));
            }
        }
    }
    Ok(ldap)
}

#[cfg(test)]
mod tests {
    use super::{connect_any, host_port};
    use std::time::Duration;

    #[tokio::test]
    async fn every_address_is_tried_in_turn() {
        // A port nobody listens on (bound, then closed), then one that accepts.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = [dead, live.local_addr().unwrap()];
        let s = connect_any(&addrs, Duration::from_secs(2)).await.unwrap();
        assert_eq!(s.peer_addr().unwrap(), live.local_addr().unwrap());
        let err = connect_any(&[dead], Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(err.contains(&dead.to_string()), "{err}");
    }

    #[test]
    fn host_and_port_of_uris() {
        assert_eq!(
            host_port("ldap://ldap-ro.eqiad.wikimedia.org").unwrap(),
            ("ldap-ro.eqiad.wikimedia.org".into(), 389)
        );
        assert_eq!(host_port("ldaps://h:1636/").unwrap(), ("h".into(), 1636));
        assert_eq!(
            host_port("ldap://[::1]:3890").unwrap(),
            ("::1".into(), 3890)
        );
        assert_eq!(host_port("ldaps://[::1]").unwrap(), ("::1".into(), 636));
        assert!(host_port("ldap://h:x").is_err());
        assert!(host_port("http://h").is_err());
    }
}
