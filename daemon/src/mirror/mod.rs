//! Mirror mode (issue 13): the whole directory (users and groups under the configured bases)
//! held in memory on this node and kept current, so that once loaded every lookup, found or
//! not, is answered with no directory query.
//!
//! One job per file: [`state`] the entries and their indexes (answers derived on demand, policy
//! applied as to single lookups); [`load`] the initial and full loads (paged searches on a
//! connection of the mirror's own, outside the pool and its expiry); [`sync`] RFC 4533
//! `refreshAndPersist`; [`poll`] `modifyTimestamp` polling with periodic reconciliation;
//! [`store`] the mirror on disk (`cache_dir/mirror.bin`: the entries with the sync cookies
//! that describe them, written atomically); [`control`] which mirror is in service and its
//! tasks, at start and on SIGHUP; [`enumerate`] `getent passwd|group` listings from it.
//! This file holds the shared handle ([`Mirror`]): state, phase, counters for status and
//! metrics, and the task that drives it all ([`run`]).
//!
//! Authority: the mirror answers only while `complete` (loaded, or restored from disk, and
//! within `max_entries`). After `cache.max_stale_secs` without a successful sync its answers
//! are flagged stale. A directory that outgrows `max_entries` is logged as an error and the
//! mirror is dropped: the daemon serves in lookup mode.

pub mod control;
pub mod enumerate;
pub(crate) mod gap;
pub mod load;
pub mod poll;
pub mod publish;
pub mod state;
pub mod store;
pub mod sync;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use ldap3::Ldap;
use tracing::{error, info, warn};

use toolforge_nss_config::{Config, LdapConfig, MirrorConfig, MirrorMode};
use toolforge_nss_protocol::Request;

use crate::directory::connect::{self, Credentials};
use crate::mapping::Mapper;
use crate::policy::Policy;
pub use state::{Answer, Kind, State};

/// What the mirror is doing, for status and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not loaded yet: lookups are answered as without a mirror.
    Loading,
    /// Loaded and in sync: authoritative.
    Complete,
    /// Loaded (authoritative) but the sync connection is down or failing.
    Degraded,
    /// The directory outgrew `max_entries`: mirror dropped, lookup mode.
    TooLarge,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Loading => "loading",
            Phase::Complete => "complete",
            Phase::Degraded => "degraded",
            Phase::TooLarge => "too_large",
        }
    }
}

/// Numbers the mirrors of this process (their temporary files' names).
static WRITERS: AtomicU64 = AtomicU64::new(1);

/// Held to put a mirror in or out of service and to rename a save over `mirror.bin`: the two
/// never interleave.
static SERVICE: Mutex<()> = Mutex::new(());

/// The shared mirror handle.
pub struct Mirror {
    pub cfg: MirrorConfig,
    pub ldap: LdapConfig,
    pub cache_dir: PathBuf,
    pub persist: bool,
    pub(crate) max_stale: Duration,
    pub mapper: Mapper,
    state: RwLock<State>,
    /// Sync cookies by stream (`users:BASE`, `groups:BASE`), saved with the entries.
    pub(crate) cookies: Mutex<HashMap<String, (Vec<u8>, SystemTime)>>,
    complete: AtomicBool,
    /// A persist search is in its persist phase: the mirror is in sync as long as it lasts.
    live: AtomicBool,
    phase: Mutex<Phase>,
    /// `syncrepl` or `poll` once decided, `-` before.
    mode: Mutex<&'static str>,
    /// The server the mirror's connection is on (cookies are per server).
    server: Mutex<String>,
    /// Bumped after every change applied (the resolver drops cached answers on it).
    pub generation: AtomicU64,
    pub changed: tokio::sync::Notify,
    pub(crate) last_sync: Mutex<Option<SystemTime>>,
    last_change: Mutex<Option<SystemTime>>,
    pub changes_applied: AtomicU64,
    pub reloads: AtomicU64,
    pub answers: AtomicU64,
    /// Searches the mirror sent (loads, polls, sync searches).
    pub searches: AtomicU64,
    saved_generation: AtomicU64,
    /// In service (the resolver's, or the one starting): only then is it saved to
    /// `cache_dir` (a replacement loading in the background, or a mirror replaced or
    /// disabled, never writes over the one in service: see [`control`]).
    in_service: AtomicBool,
    /// This mirror's number in the process: its temporary file's name (see [`store`]).
    pub(crate) writer: u64,
    /// Referrals met by the mirror's searches (logged once per base).
    pub references: crate::directory::paging::ReferenceLog,
}

impl Mirror {
    pub fn new(config: &Config) -> Arc<Mirror> {
        Arc::new(Mirror {
            cfg: config.mirror.clone(),
            ldap: config.ldap.clone(),
            cache_dir: config.daemon.cache_dir.clone(),
            persist: config.cache.persist_interval_secs > 0,
            max_stale: Duration::from_secs(config.cache.max_stale_secs),
            mapper: Mapper::new(config.ldap.schema, &config.ldap.attributes),
            state: RwLock::new(State::new(
                config.ldap.schema,
                config.ldap.group_nesting_level,
            )),
            cookies: Mutex::new(HashMap::new()),
            complete: AtomicBool::new(false),
            live: AtomicBool::new(false),
            phase: Mutex::new(Phase::Loading),
            mode: Mutex::new("-"),
            server: Mutex::new(String::new()),
            generation: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
            last_sync: Mutex::new(None),
            last_change: Mutex::new(None),
            changes_applied: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            answers: AtomicU64::new(0),
            searches: AtomicU64::new(0),
            saved_generation: AtomicU64::new(0),
            in_service: AtomicBool::new(true),
            writer: WRITERS.fetch_add(1, Ordering::Relaxed),
            references: Default::default(),
        })
    }

    /// Puts the mirror in or out of service. Out of service, once this returns, it renames
    /// nothing over `mirror.bin` any more (see [`Mirror::if_in_service`]).
    pub(crate) fn set_in_service(&self, on: bool) {
        let _renames = SERVICE.lock().unwrap_or_else(|e| e.into_inner());
        self.in_service.store(on, Ordering::Release);
    }

    /// Runs `f` (the rename of a save) only if the mirror is in service, and with no mirror
    /// put in or out of service meanwhile: a save that was under way when its mirror was
    /// replaced or disabled never renames over the new mirror's file.
    pub(crate) fn if_in_service<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        let _renames = SERVICE.lock().unwrap_or_else(|e| e.into_inner());
        self.in_service.load(Ordering::Acquire).then(f)
    }

    /// Whether the mirror answers (loaded and within its bound).
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    pub fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_phase(&self, p: Phase) {
        let mut cur = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if *cur != p {
            info!(from = cur.name(), to = p.name(), "mirror state");
            *cur = p;
        }
    }

    pub fn server(&self) -> String {
        self.server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn mode(&self) -> &'static str {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_mode(&self, m: &'static str) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = m;
    }

    /// Users and groups held.
    pub fn counts(&self) -> (usize, usize) {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .counts()
    }

    /// Answers flagged stale: no successful sync for `max_stale_secs` (a live persist search
    /// is in sync however quiet it is).
    pub fn stale(&self) -> bool {
        if self.live.load(Ordering::Acquire) {
            return false;
        }
        let last = *self.last_sync.lock().unwrap_or_else(|e| e.into_inner());
        last.is_none_or(|t| {
            SystemTime::now().duration_since(t).unwrap_or_default() > self.max_stale
        })
    }

    /// A sync (or poll, or load) succeeded now.
    pub fn synced(&self) {
        *self.last_sync.lock().unwrap_or_else(|e| e.into_inner()) = Some(SystemTime::now());
        if self.is_complete() {
            self.set_phase(Phase::Complete);
        }
    }

    /// A persist search entered (true) or left (false) its persist phase; leaving it, the
    /// mirror was in sync until now.
    pub fn set_live(&self, live: bool) {
        if !live && self.live.swap(false, Ordering::AcqRel) {
            *self.last_sync.lock().unwrap_or_else(|e| e.into_inner()) = Some(SystemTime::now());
        } else if live {
            self.live.store(true, Ordering::Release);
        }
    }

    /// The sync connection failed: still authoritative when loaded, but degraded.
    pub fn degraded(&self) {
        self.set_live(false);
        if self.is_complete() {
            self.set_phase(Phase::Degraded);
        }
    }

    pub fn cookie(&self, stream: &str) -> Option<Vec<u8>> {
        let c = self.cookies.lock().unwrap_or_else(|e| e.into_inner());
        c.get(stream).map(|(c, _)| c.clone())
    }

    pub fn set_cookie(&self, stream: &str, cookie: Vec<u8>) {
        let mut c = self.cookies.lock().unwrap_or_else(|e| e.into_inner());
        c.insert(stream.to_owned(), (cookie, SystemTime::now()));
    }

    pub fn clear_cookies(&self) {
        self.cookies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Applies changes under the write lock, then tells the resolver. Returns what `f` did.
    /// A directory beyond `max_entries` drops the mirror (lookup mode), loudly.
    pub fn apply<T>(&self, f: impl FnOnce(&mut State, &Mapper) -> T) -> T {
        let (out, len) = {
            let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
            let out = f(&mut s, &self.mapper);
            (out, s.len())
        };
        self.changes_applied.fetch_add(1, Ordering::Relaxed);
        *self.last_change.lock().unwrap_or_else(|e| e.into_inner()) = Some(SystemTime::now());
        self.bumped();
        if len > self.cfg.max_entries {
            self.too_large(len);
        }
        out
    }

    fn bumped(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
    }

    /// Replaces the whole mirror (a load or a full reconciliation), atomically for readers.
    pub fn swap(&self, new: State) {
        let len = new.len();
        if len > self.cfg.max_entries {
            self.too_large(len);
            return;
        }
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = new;
        *self.last_change.lock().unwrap_or_else(|e| e.into_inner()) = Some(SystemTime::now());
        self.reloads.fetch_add(1, Ordering::Relaxed);
        self.became_complete();
    }

    /// Loaded: from now on the mirror answers.
    pub fn became_complete(&self) {
        if self.phase() == Phase::TooLarge {
            return;
        }
        if !self.complete.swap(true, Ordering::AcqRel) {
            let (u, g) = self.counts();
            info!(
                users = u,
                groups = g,
                "mirror complete: answering every lookup from memory"
            );
        }
        self.set_phase(Phase::Complete);
        self.bumped();
    }

    fn too_large(&self, len: usize) {
        error!(
            entries = len,
            max_entries = self.cfg.max_entries,
            "the directory outgrew mirror.max_entries: mirror dropped, serving in lookup mode (raise mirror.max_entries)"
        );
        self.complete.store(false, Ordering::Release);
        self.set_phase(Phase::TooLarge);
        *self.state.write().unwrap_or_else(|e| e.into_inner()) =
            State::new(self.ldap.schema, self.ldap.group_nesting_level);
        self.bumped();
    }

    /// The mirror's answer to `req`, with its stale flag; `None` when the mirror is not
    /// authoritative (or for enumeration, which keeps its own path).
    pub fn answer(&self, req: &Request, policy: &Policy) -> Option<(Answer, bool)> {
        if !self.is_complete() {
            return None;
        }
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        // Dropped (too large) between the check and the lock: its empty state is no answer.
        if !self.is_complete() {
            return None;
        }
        let a = match req {
            Request::GetPwNam(n) => s.user_by_name(n, policy),
            Request::GetPwUid(u) => s.user_by_uid(*u, policy),
            Request::GetGrNam(n) => s.group_by_name(n, policy),
            Request::GetGrGid(g) => s.group_by_gid(*g, policy),
            Request::InitGroups(n) => s.groups_of(n, policy),
            Request::PwEnt { .. } | Request::GrEnt { .. } => return None,
        };
        drop(s);
        self.answers.fetch_add(1, Ordering::Relaxed);
        Some((a, self.stale()))
    }

    /// Takes what changed since the last call (see [`state::Changes`]): the publisher patches
    /// those keys into the shared cache data.
    pub fn take_changes(&self) -> state::Changes {
        self.state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take_changes()
    }

    /// Asks for the next publication to be a whole one (see [`invalidate_on_change`]).
    pub fn publish_whole(&self) {
        self.state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .note_everything();
    }

    /// Runs `f` on the state under the read lock (persistence, tests).
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Status lines (`toolforge-nssctl status`).
    pub fn status_lines(&self, out: &mut String) {
        let (u, g) = self.counts();
        let age = |t: Option<SystemTime>| {
            t.and_then(|t| SystemTime::now().duration_since(t).ok())
                .map_or("-".to_owned(), |d| d.as_secs().to_string())
        };
        let last_change = *self.last_change.lock().unwrap_or_else(|e| e.into_inner());
        let last_sync = *self.last_sync.lock().unwrap_or_else(|e| e.into_inner());
        let cookie_at = self.cookie_time();
        let _ = writeln!(out, "mirror_mode: {}", self.mode());
        let server = self.server();
        let _ = writeln!(
            out,
            "mirror_server: {}",
            if server.is_empty() { "-" } else { &server }
        );
        let _ = writeln!(out, "mirror_state: {}", self.phase().name());
        let _ = writeln!(out, "mirror_entries: {} (users {u}, groups {g})", u + g);
        let _ = writeln!(out, "mirror_memory_bytes: {}", self.read(State::heap_bytes));
        let _ = writeln!(
            out,
            "mirror_changes_applied: {}",
            self.changes_applied.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "mirror_last_change_age_secs: {}", age(last_change));
        let _ = writeln!(out, "mirror_last_sync_age_secs: {}", age(last_sync));
        let _ = writeln!(out, "mirror_cookie_age_secs: {}", age(cookie_at));
        let _ = writeln!(out, "mirror_stale: {}", self.is_complete() && self.stale());
        let _ = writeln!(
            out,
            "mirror_reloads: {}",
            self.reloads.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "mirror_searches: {}",
            self.searches.load(Ordering::Relaxed)
        );
    }

    /// Prometheus lines.
    pub fn metrics_lines(&self, out: &mut String) {
        let (u, g) = self.counts();
        let secs = |t: Option<SystemTime>| {
            t.and_then(|t| SystemTime::now().duration_since(t).ok())
                .map_or(-1.0, |d| d.as_secs_f64())
        };
        let last_change = *self.last_change.lock().unwrap_or_else(|e| e.into_inner());
        let cookie_at = self.cookie_time();
        let phase = self.phase();
        let _ = writeln!(out, "# TYPE toolforge_nss_mirror_state gauge");
        for p in [
            Phase::Loading,
            Phase::Complete,
            Phase::Degraded,
            Phase::TooLarge,
        ] {
            let _ = writeln!(
                out,
                "toolforge_nss_mirror_state{{state=\"{}\",mode=\"{}\"}} {}",
                p.name(),
                self.mode(),
                u8::from(p == phase)
            );
        }
        let _ = writeln!(out, "# TYPE toolforge_nss_mirror_entries gauge");
        let _ = writeln!(out, "toolforge_nss_mirror_entries{{map=\"passwd\"}} {u}");
        let _ = writeln!(out, "toolforge_nss_mirror_entries{{map=\"group\"}} {g}");
        let _ = writeln!(out, "# TYPE toolforge_nss_mirror_memory_bytes gauge");
        let _ = writeln!(
            out,
            "toolforge_nss_mirror_memory_bytes {}",
            self.read(State::heap_bytes)
        );
        let _ = writeln!(
            out,
            "# TYPE toolforge_nss_mirror_changes_applied_total counter"
        );
        let _ = writeln!(
            out,
            "toolforge_nss_mirror_changes_applied_total {}",
            self.changes_applied.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE toolforge_nss_mirror_last_change_age_seconds gauge"
        );
        let _ = writeln!(
            out,
            "toolforge_nss_mirror_last_change_age_seconds {}",
            secs(last_change)
        );
        let _ = writeln!(out, "# TYPE toolforge_nss_mirror_cookie_age_seconds gauge");
        let _ = writeln!(
            out,
            "toolforge_nss_mirror_cookie_age_seconds {}",
            secs(cookie_at)
        );
        let _ = writeln!(out, "# TYPE toolforge_nss_mirror_answers_total counter");
        let _ = writeln!(
            out,
            "toolforge_nss_mirror_answers_total {}",
            self.answers.load(Ordering::Relaxed)
        );
    }

    fn cookie_time(&self) -> Option<SystemTime> {
        let c = self.cookies.lock().unwrap_or_else(|e| e.into_inner());
        c.values().map(|(_, t)| *t).min()
    }

    /// Opens the mirror's own connection: the first configured server that binds, in order.
    pub async fn connect(&self) -> Result<(Ldap, String), String> {
        let creds = Credentials::load(&self.ldap)?;
        let mut errors = Vec::new();
        for uri in &self.ldap.uri {
            match connect::open(&self.ldap, &creds, uri).await {
                Ok(l) => return Ok((l, uri.clone())),
                Err(e) => errors.push(format!("{uri}: {e}")),
            }
        }
        Err(errors.join("; "))
    }

    /// Saves the mirror (entries and cookies) when it changed since the last save.
    pub async fn save(self: &Arc<Self>) {
        if !self.persist || !self.is_complete() || !self.in_service.load(Ordering::Acquire) {
            return;
        }
        let generation = self.generation.load(Ordering::Acquire);
        if self.saved_generation.swap(generation, Ordering::AcqRel) == generation {
            return;
        }
        let this = self.clone();
        let r = tokio::task::spawn_blocking(move || store::save(&this)).await;
        match r {
            Ok(Ok(Some(bytes))) => tracing::debug!(bytes, "mirror saved"),
            Ok(Ok(None)) => tracing::debug!("mirror out of service meanwhile: not saved"),
            Ok(Err(e)) => warn!(error = %e, "mirror not saved"),
            Err(e) => warn!(error = %e, "mirror save task failed"),
        }
    }
}

/// Loads the persisted mirror, if any: called before the sockets serve, so that a daemon
/// started with the directory unreachable answers from it at once.
pub async fn restore(m: &Arc<Mirror>) {
    if !m.persist {
        return;
    }
    let mm = m.clone();
    match tokio::task::spawn_blocking(move || store::load(&mm)).await {
        Ok(Ok(Some(n))) => {
            info!(
                entries = n,
                "mirror restored from disk: answering from it at once"
            )
        }
        Ok(Ok(None)) => {}
        Ok(Err(e)) => warn!(error = %e, "persisted mirror not used"),
        Err(e) => warn!(error = %e, "mirror restore task failed"),
    }
}

/// Backoff between attempts of the sync connection: 1 s doubling to 30 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis((1000u64 << failures.min(5)).min(30_000))
}

/// Saves the mirror every 5 s when it changed (and is in service).
pub async fn save_periodically(m: Arc<Mirror>) {
    if !m.persist {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        m.save().await;
    }
}

/// Drives the mirror (after [`restore`]): load, then keep current (syncrepl or polling),
/// reconnecting with backoff. Never returns unless the directory outgrows the bound.
/// [`control`] runs it beside [`save_periodically`] and [`invalidate_on_change`].
pub async fn run(m: Arc<Mirror>) {
    let mut failures = 0u32;
    loop {
        if m.phase() == Phase::TooLarge {
            return;
        }
        let outcome = session(&m).await;
        if m.phase() == Phase::TooLarge {
            return;
        }
        match outcome {
            Ok(()) => failures = 0,
            Err(e) => {
                m.degraded();
                let wait = backoff(failures);
                warn!(error = %e, retry_in = ?wait, "mirror sync connection failed");
                failures += 1;
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One connection's life: decide the mode, load if needed, then sync or poll until it fails.
async fn session(m: &Arc<Mirror>) -> Result<(), String> {
    let (ldap, uri) = m.connect().await?;
    *m.server.lock().unwrap_or_else(|e| e.into_inner()) = uri.clone();
    let mut syncrepl = match m.cfg.mode {
        MirrorMode::Poll => false,
        MirrorMode::Syncrepl => true,
        MirrorMode::Auto => sync::advertised(m, ldap.clone()).await,
    };
    // Without cookies (first start, or after polling): take them before loading.
    let primed = if syncrepl && !sync::has_cookies(m) {
        match sync::prime(m, ldap.clone()).await {
            Ok(()) => true,
            Err(sync::SyncError::Refused(why)) if m.cfg.mode == MirrorMode::Auto => {
                warn!(reason = %why, "the server refused the sync search: polling instead");
                syncrepl = false;
                false
            }
            Err(e) => return Err(e.to_string()),
        }
    } else {
        false
    };
    m.set_mode(if syncrepl { "syncrepl" } else { "poll" });
    info!(server = %uri, mode = m.mode(), "mirror connected");
    // When the mirror was last known current: the poller asks for what changed since.
    let mut current_since =
        (*m.last_sync.lock().unwrap_or_else(|e| e.into_inner())).unwrap_or(SystemTime::UNIX_EPOCH);
    if !m.is_complete() || primed {
        current_since = SystemTime::now();
        let started = Instant::now();
        let state = load::full(m, ldap.clone()).await?;
        let n = state.len();
        m.swap(state);
        m.synced();
        info!(entries = n, took = ?started.elapsed(), "mirror loaded");
        m.save().await;
    }
    if syncrepl {
        match sync::run(m, ldap.clone()).await {
            Err(sync::SyncError::Refused(why)) if m.cfg.mode == MirrorMode::Auto => {
                warn!(reason = %why, "the server refused the sync search: polling instead");
                m.set_mode("poll");
                poll::run(m, ldap, current_since).await
            }
            Err(e) => Err(e.to_string()),
            Ok(()) => Ok(()),
        }
    } else {
        poll::run(m, ldap, current_since).await
    }
}

/// Keeps the resolver's cache and the shared cache data consistent with the mirror: every
/// change applied drops the cached answers (which the mirror then answers again) and
/// publishes it (a patch of the keys it affected); a complete mirror is also republished
/// whole every quarter of the positive TTL so that its published records stay valid (see
/// [`publish`]).
pub async fn invalidate_on_change<D: crate::directory::Directory>(
    m: Arc<Mirror>,
    r: Arc<crate::resolver::Resolver<D>>,
) {
    // The deadline outlives the loop: a change every few seconds (a patch, which keeps the
    // records' expiry) must not put the validity refresh off for ever.
    let mut next = tokio::time::Instant::now();
    let mut first = true;
    loop {
        let ttl = r
            .positive_ttl(&Request::GetPwUid(1))
            .min(r.positive_ttl(&Request::GetGrGid(1)));
        // A shorter TTL (a reload) brings the deadline closer, never further.
        let due = tokio::time::Instant::now() + publish::refresh_interval(ttl);
        next = if first { due } else { next.min(due) };
        first = false;
        tokio::select! {
            _ = m.changed.notified() => r.maps_clear(),
            _ = tokio::time::sleep_until(next) => {
                first = true;
                if !m.is_complete() {
                    continue;
                }
                // The records' validity is extended by a whole publication (a patch
                // keeps the expiry the publication has).
                m.publish_whole();
            }
        }
        r.stats.changed();
    }
}
