//! [`Directory`] over LDAP with ldap3: searches over every configured base at once on the
//! connection pool ([`crate::directory::pool`]). A search is complete or an error
//! ([`crate::directory::paging`]): listings are paged, and any other search the server cuts
//! at its size limit is run again paged. RFC 2307bis members and nested groups are resolved
//! in batches ([`crate::directory::members`]). Two entries with one name are both refused.
//! Every value put into a filter goes through [`crate::filter`].

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::try_join_all;
use ldap3::{Ldap, Scope};
use tracing::{debug, warn};

use toolforge_nss_config::{LdapConfig, Schema};

pub use crate::directory::connect::{read_bind_password, tls_config};
use crate::directory::members::{self, Plan, Searcher};
use crate::directory::op::{self, OpError};
use crate::directory::paging::{self, ReferenceLog};
use crate::directory::pool::{Pool, PoolStats};
use crate::directory::servers::ServerHealth;
use crate::directory::{DirError, DirResult, Directory};
use crate::filter;
use crate::histogram::Histogram;
use crate::mapping::{Mapper, RawEntry};
use crate::records::{GroupRecord, Membership, UserRecord};

pub struct LdapDirectory {
    cfg: LdapConfig,
    mapper: Mapper,
    user_bases: Vec<String>,
    group_bases: Vec<String>,
    pool: Arc<Pool>,
    /// OpenLDAP keeps one paged-results state per connection: paged searches take turns.
    paging: tokio::sync::Mutex<()>,
    searches: AtomicU64,
    /// Bases under which the server sent search references (logged once each).
    references: ReferenceLog,
    /// Latency of searches that got an answer.
    pub search_times: Histogram,
}

impl LdapDirectory {
    pub fn new(cfg: &LdapConfig) -> Result<LdapDirectory, String> {
        Ok(LdapDirectory {
            pool: Pool::new(cfg)?,
            mapper: Mapper::new(cfg.schema, &cfg.attributes),
            user_bases: cfg.user_bases(),
            group_bases: cfg.group_bases(),
            cfg: cfg.clone(),
            paging: tokio::sync::Mutex::new(()),
            searches: AtomicU64::new(0),
            references: ReferenceLog::default(),
            search_times: Histogram::default(),
        })
    }

    /// Searches sent to the directory since start.
    pub fn search_count(&self) -> u64 {
        self.searches.load(Ordering::Relaxed)
    }

    /// The server in use, if connected.
    pub fn server_in_use(&self) -> Option<String> {
        self.pool.server_in_use()
    }

    /// The pool's counters (connections opened, retired, timeouts, failovers).
    pub fn pool_stats(&self) -> &PoolStats {
        &self.pool.stats
    }

    /// Pooled connections open now and operations in flight on them.
    pub fn pool_load(&self) -> (usize, usize) {
        self.pool.load()
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
        if let Err(e) = self.pool.warm_up().await {
            warn!(error = %e, "no directory server reachable at start; serving from cache until one is");
        }
    }

    /// Whether any server has answered since start.
    pub fn ever_connected(&self) -> bool {
        self.pool.ever_connected()
    }

    /// Whether the directory is reachable now, and since when.
    pub fn reachable_since(&self) -> (bool, SystemTime) {
        self.pool.reachable_since()
    }

    /// Health of every configured server.
    pub fn health(&self) -> Vec<ServerHealth> {
        self.pool.health()
    }

    fn search_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.search_timeout_ms)
    }

    /// While on a fallback server, tries the preferred ones again (every
    /// `failback_interval_secs`).
    pub async fn fail_back(&self) {
        self.pool.fail_back().await;
    }

    /// The configured fail-back interval.
    pub fn failback_interval(&self) -> Duration {
        self.pool.failback_interval()
    }

    /// SIGHUP: re-reads `bind_password_file` and `tls_ca_file` and reconnects with them.
    pub fn reload_credentials(&self) -> Result<(), String> {
        self.pool.reload_credentials()
    }

    /// The seam for every directory operation: runs `op` with a connection handle from the
    /// pool, once a slot of the fair queue is free in the current caller's turn, with the
    /// pool's failover, timeout and retry rules (see [`crate::directory::pool`]). `op` may
    /// run more than once.
    pub async fn with_connection<T, F, Fut>(&self, op: F) -> DirResult<T>
    where
        F: FnMut(Ldap) -> Fut,
        Fut: Future<Output = Result<T, OpError>>,
    {
        // Boxed: a lookup's future nests deeply (resolver, single-flight, members, paging);
        // the pool's part is laid out on its own, well within the compiler's depth limit.
        Box::pin(self.pool.with_connection(op)).await
    }

    /// One subtree search under `base` on the pool: complete or an error (a server limit is
    /// `DirError::Limit`, never a truncated answer); paged when `paged`.
    async fn search(
        &self,
        base: &str,
        filter: &str,
        attrs: &[String],
        paged: bool,
    ) -> DirResult<Vec<RawEntry>> {
        let page_size = if paged { self.cfg.page_size } else { 0 };
        let timeout = self.search_timeout();
        let started = Instant::now();
        let entries = self
            .with_connection(|ldap| {
                self.searches.fetch_add(1, Ordering::Relaxed);
                debug!(base, filter, "search");
                op::search_on(
                    ldap,
                    base,
                    Scope::Subtree,
                    filter,
                    attrs,
                    page_size,
                    timeout,
                    &self.references,
                )
            })
            .await?;
        self.search_times.record(started.elapsed());
        Ok(entries)
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

    fn attach_admission(&self, admission: &Arc<crate::admission::Admission>) {
        self.pool.attach_admission(admission);
    }
}
