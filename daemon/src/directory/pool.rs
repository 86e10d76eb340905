//! The connection pool: up to `connections_per_server` connections to the server in use (the
//! first healthy one in `[ldap] uri` order), each carrying at most `max_ops_per_connection`
//! operations at once (a semaphore per connection), so a burst of lookups never makes a
//! server drop a connection for too many pending operations.
//!
//! What a failure means ([`Pool::with_connection`]):
//! * a broken connection (I/O, end of stream) is dropped and the operation retried on a fresh
//!   one; the server is marked failed only when no connection to it can be opened;
//! * result codes busy, unavailable, unwillingToPerform and other (51, 52, 53, 80) back the
//!   server off and move the operation to the next one, as nslcd does;
//! * an operation still running at half `search_timeout_ms` gets a watchdog: a root DSE read
//!   on the same connection, due by the search deadline. No answer means a frozen connection
//!   (a peer gone without a FIN, a stopped server): the server is marked failed within
//!   `search_timeout_ms` and the operation moves on. An answer means the search is just slow:
//!   when it then times out (it is abandoned on the server), nothing is marked failed and it is
//!   retried once, elsewhere;
//! * invalidCredentials at bind is a configuration error, logged once loudly.
//!
//! Admission: the pool's operation slots are the fair queue of [`crate::admission`]. Every
//! operation ([`Pool::with_connection`]) first takes a slot there, in the turn of the caller
//! it runs for ([`crate::admission::current_caller`], set by the resolver for each lookup),
//! waiting at most `queue_timeout_ms`, and for a client's lookup at most what is left of that
//! lookup's budget of queue waiting (`queue_timeout_ms` in total over all its operations,
//! [`crate::admission::WaitBudget`]); then it picks the least loaded connection, whose own
//! bound (`max_ops_per_connection`) the slot count guarantees. So the wait for a connection
//! *is* the fair queue, per operation: a lookup that fans out into several operations (one
//! per base, member batches, nested groups) queues each of them in its caller's turn, and
//! all of them together wait no longer than one operation may. No slot in time answers
//! `Overloaded` (that request only); overload is never a server failure. A retry of the
//! same operation (failover, a fresh connection) keeps its slot.
//!
//! Lifetime: connections older than `connection_expire_secs` are replaced gracefully (the new
//! one first, the old one drained, then unbound); on SIGHUP the credentials are re-read and
//! every connection is retired the same way; TCP keepalive is on (see `connect`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use ldap3::Ldap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, error, info, warn};

use toolforge_nss_config::LdapConfig;

use crate::admission::{self, Admission, Limits, Refused};
use crate::directory::connect::{self, Credentials, OpenError};
use crate::directory::op::{self, OpError};
use crate::directory::paging;
use crate::directory::servers::{ServerHealth, Servers};
use crate::directory::{DirError, DirResult};

struct Conn {
    id: u64,
    ldap: Ldap,
    server: usize,
    uri: String,
    opened: Instant,
    ops: Arc<Semaphore>,
    /// A replacement is being opened (expiry).
    replacing: AtomicBool,
}

impl Conn {
    fn is_closed(&self) -> bool {
        self.ldap.clone().is_closed()
    }
}

#[derive(Default)]
struct State {
    /// The server in use, once one answered.
    server: Option<usize>,
    conns: Vec<Arc<Conn>>,
}

/// An operation slot on one pooled connection; the slot is freed on drop.
pub struct Op {
    /// The connection handle for the operation (a clone of the pooled one).
    pub ldap: Ldap,
    conn: Arc<Conn>,
    _permit: OwnedSemaphorePermit,
}

impl Op {
    pub fn uri(&self) -> &str {
        &self.conn.uri
    }
}

/// Counters for status and metrics.
#[derive(Default, Debug)]
pub struct PoolStats {
    /// Connections opened since start.
    pub opened: AtomicU64,
    /// Connections retired (expiry, credentials reload, fail-back, failed server).
    pub retired: AtomicU64,
    /// Operations abandoned after their deadline.
    pub timeouts: AtomicU64,
    /// Operations moved to another server by a result code (51, 52, 53, 80).
    pub failovers: AtomicU64,
}

pub struct Pool {
    cfg: LdapConfig,
    servers: Servers,
    creds: RwLock<Arc<Credentials>>,
    state: Mutex<State>,
    connecting: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    pub stats: PoolStats,
    /// invalidCredentials is logged loudly once per credentials generation.
    bad_credentials_logged: AtomicBool,
    connected_once: AtomicBool,
    reachable: Mutex<(bool, SystemTime)>,
    /// The fair queue every operation waits in: the resolver's (see `attach_admission`), or
    /// the pool's own until one is attached.
    admission: RwLock<Arc<Admission>>,
}

impl Pool {
    pub fn new(cfg: &LdapConfig) -> Result<Arc<Pool>, String> {
        let creds = Credentials::load(cfg)?;
        Ok(Arc::new(Pool {
            servers: Servers::new(cfg.uri.clone(), Duration::from_millis(cfg.reconnect_max_ms)),
            cfg: cfg.clone(),
            creds: RwLock::new(Arc::new(creds)),
            state: Mutex::new(State::default()),
            connecting: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(0),
            stats: PoolStats::default(),
            bad_credentials_logged: AtomicBool::new(false),
            connected_once: AtomicBool::new(false),
            reachable: Mutex::new((false, SystemTime::now())),
            admission: RwLock::new(Admission::new(Limits::queue_only(cfg))),
        }))
    }

    /// Makes `admission`'s fair queue the one this pool's operations wait in (the resolver's,
    /// shared with its per-uid budget and kept across reloads).
    pub fn attach_admission(&self, admission: &Arc<Admission>) {
        *self.admission.write().unwrap_or_else(|e| e.into_inner()) = admission.clone();
    }

    fn admission(&self) -> Arc<Admission> {
        self.admission
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn max_ops(&self) -> usize {
        self.cfg.max_ops_per_connection
    }

    fn expire(&self) -> Duration {
        Duration::from_secs(self.cfg.connection_expire_secs)
    }

    fn search_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.search_timeout_ms)
    }

    // --- Reachability, for readiness and status. ---

    /// Whether any server has answered since start.
    pub fn ever_connected(&self) -> bool {
        self.connected_once.load(Ordering::Relaxed)
    }

    /// Whether the directory is reachable now, and since when.
    pub fn reachable_since(&self) -> (bool, SystemTime) {
        *self.reachable.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_reachable(&self, up: bool) {
        let mut s = self.reachable.lock().unwrap_or_else(|e| e.into_inner());
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

    /// The server in use, if connected.
    pub fn server_in_use(&self) -> Option<String> {
        let st = self.lock();
        st.server
            .filter(|_| !st.conns.is_empty())
            .map(|i| self.servers.uri(i).to_owned())
    }

    /// Connections open now and operations in flight on them.
    pub fn load(&self) -> (usize, usize) {
        let st = self.lock();
        let in_flight = st
            .conns
            .iter()
            .map(|c| self.max_ops() - c.ops.available_permits())
            .sum();
        (st.conns.len(), in_flight)
    }

    // --- Opening and retiring connections. ---

    async fn open_on(&self, i: usize) -> Result<Arc<Conn>, String> {
        let creds = self.creds.read().unwrap_or_else(|e| e.into_inner()).clone();
        let uri = self.servers.uri(i).to_owned();
        let seen = self.servers.failures_so_far(i);
        match connect::open(&self.cfg, &creds, &uri).await {
            Ok(mut ldap) => {
                if !self.servers.succeeded_unless_failed_since(i, seen) {
                    // The server failed (another operation's result code, a timeout) while
                    // this connection opened: its backoff stands, the connection goes.
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(1), ldap.unbind()).await;
                    });
                    return Err(format!("{uri}: failed while a connection to it opened"));
                }
                self.set_reachable(true);
                self.stats.opened.fetch_add(1, Ordering::Relaxed);
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                debug!(server = %uri, id, "directory connection opened");
                Ok(Arc::new(Conn {
                    id,
                    ldap,
                    server: i,
                    uri,
                    opened: Instant::now(),
                    ops: Arc::new(Semaphore::new(self.max_ops())),
                    replacing: AtomicBool::new(false),
                }))
            }
            Err(e) => {
                if let OpenError::InvalidCredentials(msg) = &e {
                    if !self.bad_credentials_logged.swap(true, Ordering::Relaxed) {
                        error!(server = %uri, "CONFIGURATION ERROR: {msg}; fix the bind DN or password file and send SIGHUP");
                    }
                }
                let backoff = self.servers.failed(i, &e.to_string(), Instant::now());
                warn!(server = %uri, error = %e, retry_in = ?backoff, "directory server unusable");
                Err(format!("{uri}: {e}"))
            }
        }
    }

    /// Drains a connection that left the pool (in-flight operations finish), then unbinds it.
    fn retire(&self, conn: Arc<Conn>) {
        self.stats.retired.fetch_add(1, Ordering::Relaxed);
        let (max, wait) = (self.max_ops() as u32, self.search_timeout() * 2);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(wait, conn.ops.acquire_many(max)).await;
            let mut ldap = conn.ldap.clone();
            let _ = tokio::time::timeout(Duration::from_secs(1), ldap.unbind()).await;
            debug!(server = %conn.uri, id = conn.id, "directory connection retired");
        });
    }

    /// Marks server `i` failed (it enters backoff) and retires its connections.
    fn fail_server(&self, i: usize, why: &str) {
        let backoff = self.servers.failed(i, why, Instant::now());
        warn!(server = %self.servers.uri(i), error = why, retry_in = ?backoff, "directory server failed");
        let gone = {
            let mut st = self.lock();
            if st.server == Some(i) {
                st.server = None;
            }
            let (gone, keep) = std::mem::take(&mut st.conns)
                .into_iter()
                .partition(|c| c.server == i);
            st.conns = keep;
            gone
        };
        let gone: Vec<Arc<Conn>> = gone;
        for c in gone {
            self.retire(c);
        }
        if self.servers.available(Instant::now()).is_empty() {
            self.set_reachable(false);
        }
    }

    /// Drops one broken connection (not its server).
    fn drop_conn(&self, conn: &Arc<Conn>) {
        let mut st = self.lock();
        st.conns.retain(|c| !Arc::ptr_eq(c, conn));
    }

    /// Opens one more connection: to the server in use, or to the first available one.
    async fn grow(&self) -> DirResult<()> {
        let _one_at_a_time = self.connecting.lock().await;
        {
            let st = self.lock();
            if st.conns.len() >= self.cfg.connections_per_server && st.server.is_some() {
                return Ok(());
            }
        }
        let now = Instant::now();
        let in_use = self.lock().server;
        let available = self.servers.available(now);
        let candidates: Vec<usize> = match in_use {
            Some(i) if available.contains(&i) => vec![i],
            _ => available,
        };
        if candidates.is_empty() {
            self.set_reachable(false);
            return Err(DirError::Unreachable(format!(
                "every server is in backoff; next attempt in {:?}",
                self.servers.next_retry(now)
            )));
        }
        let mut errors = Vec::new();
        for i in candidates {
            match self.open_on(i).await {
                Ok(conn) => {
                    let mut st = self.lock();
                    if st.server != Some(i) {
                        if st.server.is_none() {
                            info!(server = %conn.uri, "connected to directory");
                        }
                        st.server = Some(i);
                    }
                    st.conns.push(conn);
                    return Ok(());
                }
                Err(e) => errors.push(e),
            }
        }
        self.set_reachable(false);
        Err(DirError::Unreachable(errors.join("; ")))
    }

    /// Replaces an expired connection: the new one joins first, then the old one is drained.
    fn replace(self: &Arc<Self>, old: Arc<Conn>) {
        let pool = self.clone();
        tokio::spawn(async move {
            let _one_at_a_time = pool.connecting.lock().await;
            if pool.lock().server != Some(old.server) {
                return;
            }
            match pool.open_on(old.server).await {
                Ok(new) => {
                    let mut st = pool.lock();
                    st.conns.retain(|c| !Arc::ptr_eq(c, &old));
                    st.conns.push(new);
                    drop(st);
                    debug!(server = %old.uri, id = old.id, "expired directory connection replaced");
                    pool.retire(old);
                }
                Err(e) => {
                    debug!(error = %e, "cannot replace an expired connection yet");
                    old.replacing.store(false, Ordering::Relaxed);
                }
            }
        });
    }

    /// A place on a connection other than `avoid` when possible, for an operation that holds
    /// a slot of the fair queue.
    async fn connection(self: &Arc<Self>, avoid: Option<u64>) -> DirResult<Op> {
        for _ in 0..3 {
            let (pick, grow) = {
                let mut st = self.lock();
                st.conns.retain(|c| !c.is_closed());
                if st.conns.is_empty() {
                    st.server = None;
                }
                let expire = self.expire();
                for c in &st.conns {
                    if c.opened.elapsed() >= expire && !c.replacing.swap(true, Ordering::Relaxed) {
                        self.replace(c.clone());
                    }
                }
                let mut by_load: Vec<&Arc<Conn>> = st.conns.iter().collect();
                // Least loaded first; `avoid` last.
                by_load.sort_by_key(|c| {
                    (
                        Some(c.id) == avoid,
                        std::cmp::Reverse(c.ops.available_permits()),
                    )
                });
                let free = by_load
                    .iter()
                    .find(|c| Some(c.id) != avoid || by_load.len() == 1)
                    .and_then(|c| {
                        c.ops
                            .clone()
                            .try_acquire_owned()
                            .ok()
                            .map(|p| ((*c).clone(), p))
                    });
                let room = st.conns.len() < self.cfg.connections_per_server;
                match free {
                    Some((c, p)) if !(room && Some(c.id) == avoid) => {
                        return Ok(Op {
                            ldap: c.ldap.clone(),
                            conn: c,
                            _permit: p,
                        })
                    }
                    _ => (by_load.first().map(|c| (*c).clone()), room),
                }
            };
            if grow || pick.is_none() {
                self.grow().await?;
                continue;
            }
            // Every connection is at its bound and the pool is full although this operation
            // holds a slot: operations of retired connections or a just-lowered limit still
            // hold theirs. Wait as long as the fair queue would (`queue_timeout_ms`), so that
            // overload answers within the module's budget, not after a search timeout.
            let c = pick.expect("checked above");
            // A client's lookup counts this wait in its budget of queue waiting, as it does
            // the fair queue's.
            let wait = Duration::from_millis(self.cfg.queue_timeout_ms);
            let caller = admission::current_caller();
            match admission::queue_wait(caller, wait, c.ops.clone().acquire_owned()).await {
                Some(Ok(p)) => {
                    return Ok(Op {
                        ldap: c.ldap.clone(),
                        conn: c,
                        _permit: p,
                    })
                }
                _ => {
                    return Err(DirError::Overloaded(
                        "no free operation slot on any directory connection".into(),
                    ))
                }
            }
        }
        Err(DirError::Unreachable(
            "directory connections keep closing".into(),
        ))
    }

    /// Runs `op` on a pooled connection, handling failures as the module doc says.
    pub async fn with_connection<T, F, Fut>(self: &Arc<Self>, mut op: F) -> DirResult<T>
    where
        F: FnMut(Ldap) -> Fut,
        Fut: Future<Output = Result<T, OpError>>,
    {
        let caller = admission::current_caller();
        let _turn = self.admission().enter(caller).await.map_err(|r| {
            DirError::Overloaded(match r {
                Refused::QueueTimeout => {
                    "no directory operation slot within queue_timeout_ms".into()
                }
                Refused::OverBudget => "over its query budget".into(),
            })
        })?;
        let mut avoid = None;
        let mut timed_out = false;
        let mut last = String::from("no attempt");
        let attempts = self.servers.len() + 2;
        for _ in 0..attempts {
            let slot = self.connection(avoid).await?;
            let conn = slot.conn.clone();
            let (outcome, probed) = self.watched(slot.ldap.clone(), op(slot.ldap.clone())).await;
            let e = match outcome {
                Some(Ok(v)) => return Ok(v),
                Some(Err(e)) => e,
                None => {
                    // Frozen: the operation was dropped; the connection goes with its server.
                    self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    last = format!(
                        "{}: no answer to a root DSE read (frozen connection)",
                        conn.uri
                    );
                    self.fail_server(
                        conn.server,
                        "a search is pending and the connection does not answer a root DSE read",
                    );
                    continue;
                }
            };
            last = format!("{}: {e}", conn.uri);
            match e {
                OpError::TimedOut => {
                    self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    let healthy = probed
                        || op::probe(
                            slot.ldap.clone(),
                            Duration::from_millis(self.cfg.connect_timeout_ms),
                        )
                        .await;
                    if healthy {
                        debug!(server = %conn.uri, "slow operation on a healthy connection");
                    } else {
                        self.fail_server(
                            conn.server,
                            "an operation timed out and the connection does not answer a root DSE read",
                        );
                    }
                    if timed_out {
                        return Err(DirError::Failed(last));
                    }
                    timed_out = true;
                    avoid = Some(conn.id);
                }
                e if e.is_connection_error() => {
                    debug!(server = %conn.uri, error = %e, "directory connection broke; retrying on a fresh one");
                    self.drop_conn(&conn);
                }
                OpError::Code(ref r) if paging::is_limit_rc(r.rc) => {
                    // The message starts with the limit's name (see `LdapDirectory::search_base`).
                    return Err(DirError::Limit(format!(
                        "{} from {}",
                        paging::limit_name(r.rc),
                        conn.uri
                    )));
                }
                e if e.is_failover_code() => {
                    self.stats.failovers.fetch_add(1, Ordering::Relaxed);
                    self.fail_server(conn.server, &e.to_string());
                }
                _ => return Err(DirError::Failed(last)),
            }
        }
        Err(DirError::Unreachable(last))
    }

    /// Runs `work`; if it is still running at half the search timeout, reads the root DSE on
    /// the same connection, due by the search deadline. Returns the outcome (`None`: the probe
    /// went unanswered, the connection is frozen and `work` was dropped) and whether a probe
    /// was answered.
    async fn watched<T>(
        &self,
        ldap: Ldap,
        work: impl Future<Output = Result<T, OpError>>,
    ) -> (Option<Result<T, OpError>>, bool) {
        let half = self.search_timeout() / 2;
        tokio::pin!(work);
        tokio::select! {
            r = &mut work => return (Some(r), false),
            _ = tokio::time::sleep(half) => {}
        }
        let probe = op::probe(ldap, half);
        tokio::pin!(probe);
        let done = tokio::select! {
            r = &mut work => r,
            healthy = &mut probe => {
                return if healthy {
                    (Some(work.await), true)
                } else {
                    (None, false)
                };
            }
        };
        if matches!(done, Err(OpError::TimedOut)) {
            // Timed out with the probe still pending (it is due at the same time): the probe
            // says whether the connection is alive.
            if probe.await {
                (Some(done), true)
            } else {
                (None, false)
            }
        } else {
            (Some(done), false)
        }
    }

    /// Connects now (readiness and status are true from the start); runs no operation.
    pub async fn warm_up(self: &Arc<Self>) -> DirResult<()> {
        if self.lock().conns.iter().any(|c| !c.is_closed()) {
            return Ok(());
        }
        self.grow().await
    }

    /// While on a fallback server, tries the preferred ones (those not in backoff) and moves
    /// back to the first that answers: its connection joins, the others are retired.
    pub async fn fail_back(self: &Arc<Self>) {
        let Some(current) = self.lock().server else {
            return;
        };
        if current == 0 {
            return;
        }
        let _one_at_a_time = self.connecting.lock().await;
        let preferred: Vec<usize> = self
            .servers
            .available(Instant::now())
            .into_iter()
            .filter(|&i| i < current)
            .collect();
        for i in preferred {
            if let Ok(conn) = self.open_on(i).await {
                info!(from = %self.servers.uri(current), to = %conn.uri, "failed back to a preferred directory server");
                let old = {
                    let mut st = self.lock();
                    st.server = Some(i);
                    std::mem::replace(&mut st.conns, vec![conn])
                };
                for c in old {
                    self.retire(c);
                }
                return;
            }
        }
    }

    /// Re-reads the bind password and CA file (SIGHUP) and retires every connection, so the
    /// next ones use them. The cache is not touched.
    pub fn reload_credentials(&self) -> Result<(), String> {
        let creds = Credentials::load(&self.cfg)?;
        *self.creds.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(creds);
        self.bad_credentials_logged.store(false, Ordering::Relaxed);
        let old = std::mem::take(&mut self.lock().conns);
        let n = old.len();
        for c in old {
            self.retire(c);
        }
        // A server backed off for bad credentials may be tried at once.
        for i in 0..self.servers.len() {
            self.servers.succeeded(i);
        }
        info!(
            connections_retired = n,
            "directory credentials re-read; reconnecting with them"
        );
        Ok(())
    }

    pub fn failback_interval(&self) -> Duration {
        Duration::from_secs(self.cfg.failback_interval_secs)
    }
}
