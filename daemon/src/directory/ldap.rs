//! [`Directory`] over LDAP with ldap3: one multiplexed connection, opened lazily on the first
//! server of `[ldap] uri` that answers (in order), re-opened when it closes; anonymous or
//! simple bind; searches over every configured base at once. A search is complete or an
//! error ([`crate::directory::paging`]): listings are paged, and any other search the server
//! cuts at its size limit is run again paged. RFC 2307bis members and nested groups are
//! resolved in batches ([`crate::directory::members`]). Two entries with one name are both
//! refused. Every value put into a filter goes through [`crate::filter`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::try_join_all;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError};
use tracing::{debug, info, warn};

use toolforge_nss_config::{LdapConfig, Schema};

use crate::directory::members::{self, Plan, Searcher};
use crate::directory::paging::{self, Mode, ReferenceLog};
use crate::directory::servers::{ServerHealth, Servers};
use crate::directory::{DirError, DirResult, Directory};
use crate::filter;
use crate::histogram::Histogram;
use crate::mapping::{Mapper, RawEntry};
use crate::records::{GroupRecord, Membership, UserRecord};

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

/// The system CA bundle, used when `tls_ca_file` is not set.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A TLS client config trusting exactly the certificates of `path` (verification is never
/// turned off). Built once at start so a bad file refuses the start, not every connection.
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

struct Connection {
    ldap: Ldap,
    index: usize,
    uri: String,
}

pub struct LdapDirectory {
    cfg: LdapConfig,
    mapper: Mapper,
    user_bases: Vec<String>,
    group_bases: Vec<String>,
    bind_password: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    servers: Servers,
    current: Mutex<Option<Arc<Connection>>>,
    connecting: tokio::sync::Mutex<()>,
    /// OpenLDAP keeps one paged-results state per connection: paged searches take turns.
    paging: tokio::sync::Mutex<()>,
    searches: AtomicU64,
    /// Bases whose search references were logged.
    references: ReferenceLog,
    /// Latency of searches that got an answer.
    pub search_times: Histogram,
    /// Whether a server has ever answered (readiness), and since when the directory is
    /// reachable (`true`) or not.
    connected_once: AtomicBool,
    state: Mutex<(bool, SystemTime)>,
}

fn is_connection_error(e: &LdapError) -> bool {
    matches!(
        e,
        LdapError::Io { .. }
            | LdapError::OpSend { .. }
            | LdapError::ResultRecv { .. }
            | LdapError::EndOfStream
            | LdapError::Timeout { .. }
    )
}

impl LdapDirectory {
    pub fn new(cfg: &LdapConfig) -> Result<LdapDirectory, String> {
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
        Ok(LdapDirectory {
            tls,
            mapper: Mapper::new(cfg.schema, &cfg.attributes),
            user_bases: cfg.user_bases(),
            group_bases: cfg.group_bases(),
            bind_password,
            servers: Servers::new(cfg.uri.clone(), Duration::from_millis(cfg.reconnect_max_ms)),
            cfg: cfg.clone(),
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            paging: tokio::sync::Mutex::new(()),
            searches: AtomicU64::new(0),
            references: ReferenceLog::default(),
            search_times: Histogram::default(),
            connected_once: AtomicBool::new(false),
            state: Mutex::new((false, SystemTime::now())),
        })
    }

    /// Searches sent to the directory since start.
    pub fn search_count(&self) -> u64 {
        self.searches.load(Ordering::Relaxed)
    }

    /// The server in use, if connected.
    pub fn server_in_use(&self) -> Option<String> {
        self.cached_connection().map(|c| c.uri.clone())
    }

    /// The searches a request makes (base and filter), for `toolforge-nssctl lookup --explain`.
    /// `user_dn` is the user's DN for RFC 2307bis initgroups, when known.
    pub fn describe(
        &self,
        req: &toolforge_nss_protocol::Request,
        user_dn: Option<&str>,
    ) -> Vec<String> {
        use toolforge_nss_protocol::Request as R;
        let a = self.mapper.attributes();
        let (bases, map_filter, attr, value) = match req {
            R::GetPwNam(n) => (
                &self.user_bases,
                &self.cfg.users.filter,
                &a.user_name,
                n.clone(),
            ),
            R::GetPwUid(u) => (
                &self.user_bases,
                &self.cfg.users.filter,
                &a.uid_number,
                u.to_string(),
            ),
            R::GetGrNam(n) => (
                &self.group_bases,
                &self.cfg.groups.filter,
                &a.group_name,
                n.clone(),
            ),
            R::GetGrGid(g) => (
                &self.group_bases,
                &self.cfg.groups.filter,
                &a.group_gid_number,
                g.to_string(),
            ),
            R::InitGroups(n) => {
                let value = match self.mapper.schema() {
                    Schema::Rfc2307 => n.clone(),
                    Schema::Rfc2307bis => {
                        user_dn.map_or_else(|| format!("<DN of {n}>"), str::to_owned)
                    }
                };
                let attr = self.mapper.membership_attr().to_owned();
                let f = filter::equality(&self.cfg.groups.filter, &attr, &value);
                return self
                    .group_bases
                    .iter()
                    .map(|b| format!("base={b} scope=sub filter={f}"))
                    .collect();
            }
            R::PwEnt { .. } => (
                &self.user_bases,
                &self.cfg.users.filter,
                &a.user_name,
                "*".into(),
            ),
            R::GrEnt { .. } => (
                &self.group_bases,
                &self.cfg.groups.filter,
                &a.group_name,
                "*".into(),
            ),
        };
        let f = filter::equality(map_filter, attr, &value);
        bases
            .iter()
            .map(|b| format!("base={b} scope=sub filter={f}"))
            .collect()
    }

    /// Connects now rather than on the first lookup, so readiness and status are true from
    /// the start.
    pub async fn warm_up(&self) {
        if let Err(e) = self.connection().await {
            warn!(error = %e, "no directory server reachable at start; serving from cache until one is");
        }
    }

    /// Whether any server has answered since start.
    pub fn ever_connected(&self) -> bool {
        self.connected_once.load(Ordering::Relaxed)
    }

    /// Whether the directory is reachable now, and since when.
    pub fn reachable_since(&self) -> (bool, SystemTime) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_reachable(&self, up: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 != up {
            *s = (up, SystemTime::now());
        }
        if up {
            self.connected_once.store(true, Ordering::Relaxed);
        }
    }

    /// Health of every configured server.
    pub fn health(&self) -> Vec<ServerHealth> {
        self.servers.health(Instant::now())
    }

    fn search_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.search_timeout_ms)
    }

    fn cached_connection(&self) -> Option<Arc<Connection>> {
        let guard = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let conn = guard.as_ref()?.clone();
        let mut probe = conn.ldap.clone();
        (!probe.is_closed()).then_some(conn)
    }

    /// Marks the connection's server failed (it enters backoff) and drops the connection.
    fn connection_failed(&self, conn: &Arc<Connection>, error: &str) {
        self.set_reachable(false);
        let backoff = self.servers.failed(conn.index, error, Instant::now());
        warn!(server = %conn.uri, error, retry_in = ?backoff, "directory connection failed");
        let mut guard = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *guard = None;
        }
    }

    async fn open(&self, uri: &str) -> Result<Ldap, String> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(Duration::from_millis(self.cfg.connect_timeout_ms))
            .set_starttls(self.cfg.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, uri)
            .await
            .map_err(|e| e.to_string())?;
        ldap3::drive!(conn);
        if let (Some(dn), Some(pw)) = (&self.cfg.bind_dn, &self.bind_password) {
            ldap.with_timeout(Duration::from_millis(self.cfg.bind_timeout_ms))
                .simple_bind(dn, pw)
                .await
                .and_then(|r| r.success())
                .map_err(|e| format!("bind as {dn} failed: {e}"))?;
        }
        Ok(ldap)
    }

    /// Opens a connection to the first server, in preference order, that is not in backoff
    /// and answers; only servers before `before` when given (fail-back).
    async fn connect_first(&self, before: Option<usize>) -> DirResult<Arc<Connection>> {
        let now = Instant::now();
        let candidates: Vec<usize> = self
            .servers
            .available(now)
            .into_iter()
            .filter(|&i| before.is_none_or(|b| i < b))
            .collect();
        if candidates.is_empty() {
            self.set_reachable(false);
            return Err(DirError::Unreachable(format!(
                "every server is in backoff; next attempt in {:?}",
                self.servers.next_retry(now)
            )));
        }
        let mut errors = Vec::new();
        for i in candidates {
            let uri = self.servers.uri(i).to_owned();
            match self.open(&uri).await {
                Ok(ldap) => {
                    self.servers.succeeded(i);
                    self.set_reachable(true);
                    info!(server = %uri, "connected to directory");
                    let conn = Arc::new(Connection {
                        ldap,
                        index: i,
                        uri,
                    });
                    *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
                    return Ok(conn);
                }
                Err(e) => {
                    let backoff = self.servers.failed(i, &e, Instant::now());
                    warn!(server = %uri, error = %e, retry_in = ?backoff, "directory server unusable");
                    errors.push(format!("{uri}: {e}"));
                }
            }
        }
        self.set_reachable(false);
        Err(DirError::Unreachable(errors.join("; ")))
    }

    /// The live connection, opening one if needed.
    async fn connection(&self) -> DirResult<Arc<Connection>> {
        if let Some(c) = self.cached_connection() {
            return Ok(c);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = self.cached_connection() {
            return Ok(c);
        }
        self.connect_first(None).await
    }

    /// While on a fallback server, tries the preferred ones (those not in backoff) and moves
    /// back to the first that answers. Called every `failback_interval_secs`.
    pub async fn fail_back(&self) {
        let Some(conn) = self.cached_connection() else {
            return;
        };
        if conn.index == 0 {
            return;
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Ok(better) = self.connect_first(Some(conn.index)).await {
            info!(from = %conn.uri, to = %better.uri, "failed back to a preferred directory server");
        }
    }

    /// The configured fail-back interval.
    pub fn failback_interval(&self) -> Duration {
        Duration::from_secs(self.cfg.failback_interval_secs)
    }

    /// One subtree search under `base`, retried once on a fresh connection after an I/O error.
    async fn search(
        &self,
        base: &str,
        filter: &str,
        attrs: &[String],
        paged: bool,
    ) -> DirResult<Vec<RawEntry>> {
        for attempt in 0..2 {
            let conn = self.connection().await?;
            self.searches.fetch_add(1, Ordering::Relaxed);
            debug!(server = %conn.uri, base, filter, "search");
            let started = Instant::now();
            match self.search_on(&conn, base, filter, attrs, paged).await {
                Ok(entries) => {
                    self.search_times.record(started.elapsed());
                    return Ok(entries);
                }
                Err(e) if is_connection_error(&e) => {
                    self.connection_failed(&conn, &e.to_string());
                    if attempt == 1 {
                        return Err(DirError::Unreachable(format!("{}: {e}", conn.uri)));
                    }
                }
                Err(e) if paging::is_limit(&e) => {
                    // The message starts with the limit's name (see `search_base`).
                    return Err(DirError::Limit(format!(
                        "{} from {} (base {base})",
                        paging::limit_name_of(&e),
                        conn.uri
                    )));
                }
                Err(e) => return Err(DirError::Failed(format!("{}: {e}", conn.uri))),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    async fn search_on(
        &self,
        conn: &Connection,
        base: &str,
        filter: &str,
        attrs: &[String],
        paged: bool,
    ) -> Result<Vec<RawEntry>, LdapError> {
        let mode = if paged {
            Mode::Paged(self.cfg.page_size)
        } else {
            Mode::Plain
        };
        paging::search_complete(
            &conn.ldap,
            self.search_timeout(),
            mode,
            &self.references,
            base,
            filter,
            attrs,
        )
        .await
    }

    /// One base: plain, and paged again when the server says the answer is over its size
    /// limit (paged searches take turns: OpenLDAP keeps one paged state per connection).
    async fn search_base(
        &self,
        base: &str,
        filter: &str,
        attrs: &[String],
        paged: bool,
    ) -> DirResult<Vec<RawEntry>> {
        if !paged {
            match self.search(base, filter, attrs, false).await {
                Err(DirError::Limit(why)) if why.starts_with(paging::SIZE_LIMIT) => {
                    debug!(
                        base,
                        filter, "over the server's size limit; searching again paged"
                    );
                }
                other => return other,
            }
        }
        let _turn = self.paging.lock().await;
        self.search(base, filter, attrs, true).await
    }

    /// Searches every base and merges by DN: lookups search all bases at once (one round trip
    /// of latency); paged listings one base after the other, one listing at a time.
    async fn search_bases(
        &self,
        bases: &[String],
        filter: &str,
        attrs: &[String],
        paged: bool,
    ) -> DirResult<Vec<RawEntry>> {
        let results = if paged {
            let mut all = Vec::with_capacity(bases.len());
            for b in bases {
                all.push(self.search_base(b, filter, attrs, true).await?);
            }
            all
        } else {
            try_join_all(
                bases
                    .iter()
                    .map(|b| self.search_base(b, filter, attrs, false)),
            )
            .await?
        };
        let mut seen = HashSet::new();
        Ok(results
            .into_iter()
            .flatten()
            .filter(|e| seen.insert(e.dn.to_ascii_lowercase()))
            .collect())
    }

    fn users_from(&self, entries: Vec<RawEntry>, wanted: Option<&str>) -> Vec<UserRecord> {
        entries
            .into_iter()
            .filter_map(|e| match self.mapper.user(&e, wanted) {
                Ok(u) => Some(u),
                Err(why) => {
                    if wanted.is_none() || !why.contains("exactly") {
                        warn!(dn = %e.dn, reason = %why, "skipped user entry");
                    }
                    None
                }
            })
            .collect()
    }

    async fn one_user(
        &self,
        filter: String,
        wanted: Option<&str>,
        what: &str,
    ) -> DirResult<Option<UserRecord>> {
        let entries = self
            .search_bases(&self.user_bases, &filter, &self.mapper.user_attrs(), false)
            .await?;
        let mut users = self.users_from(entries, wanted);
        if users.len() > 1 {
            // Two entries with one name: serving either could hand one the other's identity.
            let dns: Vec<_> = users.iter().map(|u| u.dn.as_str()).collect();
            warn!(
                name = what,
                ?dns,
                "several users have this name; serving none"
            );
            return Ok(None);
        }
        Ok(users.pop())
    }

    fn plan(&self) -> Plan<'_> {
        Plan {
            mapper: &self.mapper,
            user_bases: &self.user_bases,
            group_bases: &self.group_bases,
            user_filter: &self.cfg.users.filter,
            group_filter: &self.cfg.groups.filter,
            nesting: self.cfg.group_nesting_level,
        }
    }

    /// Maps group entries; RFC 2307bis member DNs are resolved (all groups' at once, in
    /// batches). A failed resolution fails the whole answer, logged with the groups' DNs.
    async fn groups_from(
        &self,
        entries: Vec<RawEntry>,
        wanted: Option<&str>,
    ) -> DirResult<Vec<GroupRecord>> {
        let mut mapped = Vec::new();
        for e in entries {
            match self.mapper.group(&e, wanted) {
                Ok(g) => mapped.push(g),
                Err(why) => {
                    if wanted.is_none() || !why.contains("exactly") {
                        warn!(dn = %e.dn, reason = %why, "skipped group entry");
                    }
                }
            }
        }
        if self.mapper.schema() == Schema::Rfc2307bis {
            let dns: Vec<Vec<String>> = mapped
                .iter_mut()
                .map(|g| std::mem::take(&mut g.member_dns))
                .collect();
            let names = members::member_names(self, &self.plan(), &dns)
                .await
                .inspect_err(|e| {
                    let groups: Vec<&str> = mapped
                        .iter()
                        .take(5)
                        .map(|g| g.record.dn.as_str())
                        .collect();
                    warn!(dns = ?groups, count = mapped.len(), error = %e,
                        "members could not all be resolved; not serving the group");
                })?;
            for (g, members) in mapped.iter_mut().zip(names) {
                g.record.group.members = members;
            }
        }
        Ok(mapped.into_iter().map(|g| g.record).collect())
    }

    async fn one_group(
        &self,
        filter: String,
        wanted: Option<&str>,
        what: &str,
    ) -> DirResult<Option<GroupRecord>> {
        let entries = self
            .search_bases(
                &self.group_bases,
                &filter,
                &self.mapper.group_attrs(true),
                false,
            )
            .await?;
        let mut groups = self.groups_from(entries, wanted).await?;
        if groups.len() > 1 {
            let dns: Vec<_> = groups.iter().map(|g| g.dn.as_str()).collect();
            warn!(
                name = what,
                ?dns,
                "several groups have this name; serving none"
            );
            return Ok(None);
        }
        Ok(groups.pop())
    }
}

impl Searcher for LdapDirectory {
    async fn search_all(
        &self,
        bases: &[String],
        filter: &str,
        attrs: &[String],
        listing: bool,
    ) -> DirResult<Vec<RawEntry>> {
        self.search_bases(bases, filter, attrs, listing).await
    }
}

impl Directory for LdapDirectory {
    async fn user_by_name(&self, name: &str) -> DirResult<Option<UserRecord>> {
        let f = filter::equality(
            &self.cfg.users.filter,
            &self.mapper.attributes().user_name,
            name,
        );
        self.one_user(f, Some(name), name).await
    }

    async fn user_by_uid(&self, uid: u32) -> DirResult<Option<UserRecord>> {
        let f = filter::equality(
            &self.cfg.users.filter,
            &self.mapper.attributes().uid_number,
            &uid.to_string(),
        );
        let entries = self
            .search_bases(&self.user_bases, &f, &self.mapper.user_attrs(), false)
            .await?;
        let mut users: Vec<UserRecord> = self
            .users_from(entries, None)
            .into_iter()
            .filter(|u| u.passwd.uid == uid)
            .collect();
        users.dedup_by(|a, b| a.passwd.name == b.passwd.name);
        if users.len() > 1 {
            // Two accounts claiming one uid: answering either would hand one the other's files.
            let dns: Vec<_> = users.iter().map(|u| u.dn.as_str()).collect();
            warn!(uid, ?dns, "several users claim this uid; serving none");
            return Ok(None);
        }
        Ok(users.pop())
    }

    async fn group_by_name(&self, name: &str) -> DirResult<Option<GroupRecord>> {
        let f = filter::equality(
            &self.cfg.groups.filter,
            &self.mapper.attributes().group_name,
            name,
        );
        self.one_group(f, Some(name), name).await
    }

    async fn group_by_gid(&self, gid: u32) -> DirResult<Option<GroupRecord>> {
        let f = filter::equality(
            &self.cfg.groups.filter,
            &self.mapper.attributes().group_gid_number,
            &gid.to_string(),
        );
        let entries = self
            .search_bases(&self.group_bases, &f, &self.mapper.group_attrs(true), false)
            .await?;
        let entries: Vec<RawEntry> = entries
            .into_iter()
            .filter(|e| self.mapper.membership(e).is_ok_and(|m| m.gid == gid))
            .collect();
        let mut groups: Vec<GroupRecord> = self
            .groups_from(entries, None)
            .await?
            .into_iter()
            .filter(|g| g.group.gid == gid)
            .collect();
        if groups.len() > 1 {
            let dns: Vec<_> = groups.iter().map(|g| g.dn.as_str()).collect();
            warn!(gid, ?dns, "several groups claim this gid; serving none");
            return Ok(None);
        }
        Ok(groups.pop())
    }

    async fn memberships(
        &self,
        user_name: &str,
        user_dn: Option<&str>,
    ) -> DirResult<Vec<Membership>> {
        let value = match (self.mapper.schema(), user_dn) {
            (Schema::Rfc2307, _) => user_name,
            (Schema::Rfc2307bis, Some(dn)) => {
                return members::memberships_of(self, &self.plan(), dn).await
            }
            (Schema::Rfc2307bis, None) => return Ok(Vec::new()),
        };
        let f = filter::equality(
            &self.cfg.groups.filter,
            self.mapper.membership_attr(),
            value,
        );
        let entries = self
            .search_bases(
                &self.group_bases,
                &f,
                &self.mapper.group_attrs(false),
                false,
            )
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|e| match self.mapper.membership(&e) {
                Ok(m) => Some(m),
                Err(why) => {
                    warn!(dn = %e.dn, reason = %why, "skipped group entry");
                    None
                }
            })
            .collect())
    }

    async fn all_users(&self) -> DirResult<Vec<UserRecord>> {
        let entries = self
            .search_bases(
                &self.user_bases,
                &self.cfg.users.filter,
                &self.mapper.user_attrs(),
                true,
            )
            .await?;
        Ok(self.users_from(entries, None))
    }

    async fn all_groups(&self) -> DirResult<Vec<GroupRecord>> {
        let entries = self
            .search_bases(
                &self.group_bases,
                &self.cfg.groups.filter,
                &self.mapper.group_attrs(true),
                true,
            )
            .await?;
        self.groups_from(entries, None).await
    }

    fn memberships_need_dn(&self) -> bool {
        self.mapper.schema() == Schema::Rfc2307bis
    }
}
