//! Answers lookups: validate, apply policy, consult the cache, and on a miss ask the
//! directory once per key however many clients wait (single-flight). Found entries are stored
//! already encoded, so a warm hit costs a map lookup and a copy.
//!
//! Degraded operation, per cache state: a `Due` hit is answered and refreshed in the
//! background (refresh-ahead); an `Expired` entry waits at most `stale_wait` for the
//! directory and is then served flagged stale while the query goes on; a `Miss` waits for the
//! directory and answers `Unavailable` when it cannot be reached.
//!
//! Admission ([`crate::admission`]): a miss that starts a directory query is charged to the
//! caller's budget (over it: `Unavailable`, or the expired answer); the query runs on behalf
//! of the caller ([`crate::admission::with_caller`]), so each of its directory operations
//! waits for a slot of the fair queue in the caller's turn. A miss that joins a query already
//! under way costs nothing: the uid that started it is the one charged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use toolforge_nss_config::Config;
use toolforge_nss_protocol::admin::Scope;
use toolforge_nss_protocol::names::is_valid_name;
use toolforge_nss_protocol::{ErrorCode, Request, Response, ResponseKind, MAX_RESPONSE_BODY};

use crate::admission::{self, Admission, Caller, Limits};
use crate::cache::{Bounds, Lookup, TtlLru};
use crate::directory::{DirError, DirResult, Directory};
use crate::enumeration::{Enumerations, Listing, Snapshot};
use crate::policy::Policy;
use crate::records::{GroupRecord, UserRecord};
use crate::singleflight::SingleFlight;

pub use crate::cached::{Cached, GroupEntry, GroupIds, UserEntry};

/// What the server writes back.
#[derive(Debug)]
pub enum Reply {
    /// An encoded body of `kind`; `stale` when served past its TTL because the directory is away.
    Body {
        kind: ResponseKind,
        body: BodyRef,
        stale: bool,
    },
    Message(Response),
}

/// Shared ownership of an encoded body, whichever cache it lives in.
#[derive(Debug, Clone)]
pub enum BodyRef {
    User(UserEntry),
    Group(GroupEntry),
    Ids(GroupIds),
    Owned(Arc<Vec<u8>>),
}

impl BodyRef {
    pub fn bytes(&self) -> &[u8] {
        match self {
            BodyRef::User(e) => e.body(),
            BodyRef::Group(e) => e.body(),
            BodyRef::Ids(e) => e.body(),
            BodyRef::Owned(b) => b,
        }
    }
}

/// Counters for status, metrics and tests.
#[derive(Default, Debug)]
pub struct Stats {
    pub requests: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub refreshes: AtomicU64,
    pub stale_served: AtomicU64,
    pub unavailable: AtomicU64,
    /// Bumped on every cache write (see [`Stats::changed`]): persistence saves only when it
    /// moved.
    pub generation: AtomicU64,
    /// Woken on every cache write: the cache file publisher waits on it.
    pub change: tokio::sync::Notify,
    /// Answers by map ([`MAPS`]) and result ([`RESULTS`]).
    pub lookups: [[AtomicU64; 3]; 4],
    /// Client connections open now.
    pub connections: AtomicU64,
    /// A persisted cache was loaded at start (readiness).
    pub loaded_from_disk: std::sync::atomic::AtomicBool,
    /// The shared cache file last published: generation, entries, bytes (0: none yet).
    pub map_generation: AtomicU64,
    pub map_entries: AtomicU64,
    pub map_bytes: AtomicU64,
    /// Publications of the shared cache file: whole ones, and patches of the keys a mirror
    /// change affected.
    pub map_rebuilds: AtomicU64,
    pub map_patches: AtomicU64,
    /// Bumped by every configuration reload (the publisher builds afresh after one).
    pub settings_epoch: AtomicU64,
}

impl Stats {
    /// Records a change to the cache.
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.change.notify_one();
    }
}

/// Map names for [`Stats::lookups`].
pub const MAPS: [&str; 4] = ["passwd", "group", "initgroups", "enumeration"];
/// Result names for [`Stats::lookups`].
pub const RESULTS: [&str; 3] = ["found", "notfound", "unavailable"];

/// The settings a SIGHUP may change.
#[derive(Debug)]
struct Settings {
    policy: Policy,
    /// Found users (`[cache] user_ttl_secs`).
    user_ttl: Duration,
    /// Found groups and initgroups lists (`[cache] group_ttl_secs`).
    group_ttl: Duration,
    negative_ttl: Duration,
    stale_wait: Duration,
    enumerate: bool,
}

impl Settings {
    fn from(config: &Config) -> Settings {
        Settings {
            policy: Policy::new(&config.policy),
            user_ttl: Duration::from_secs(config.cache.user_ttl_secs()),
            group_ttl: Duration::from_secs(config.cache.group_ttl_secs()),
            negative_ttl: Duration::from_secs(config.cache.negative_ttl_secs),
            stale_wait: Duration::from_millis(config.cache.stale_wait_ms),
            enumerate: config.cache.enumerate,
        }
    }
}

/// The ids that occur exactly once in a listing (the others are ambiguous: not indexed by id).
fn unique_ids(ids: impl Iterator<Item = u32>) -> std::collections::HashSet<u32> {
    let mut seen = std::collections::HashMap::new();
    for id in ids {
        *seen.entry(id).or_insert(0u32) += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n == 1)
        .map(|(id, _)| id)
        .collect()
}

/// The five maps of the cache.
pub struct Maps {
    pub users_by_name: TtlLru<String, UserEntry>,
    pub users_by_uid: TtlLru<u32, UserEntry>,
    pub groups_by_name: TtlLru<String, GroupEntry>,
    pub groups_by_gid: TtlLru<u32, GroupEntry>,
    pub initgroups: TtlLru<String, GroupIds>,
}

impl Maps {
    /// Each map holds at most `max_entries` found entries, `max_negative_entries` misses and
    /// a fifth of `max_mib` (users by name and by uid share their records, so the bound is
    /// conservative).
    fn new(config: &Config) -> Maps {
        let c = &config.cache;
        let bounds = Bounds {
            entries: c.max_entries,
            negative_entries: c.max_negative_entries,
            bytes: usize::try_from(c.max_mib.saturating_mul(1 << 20) / 5).unwrap_or(usize::MAX),
        };
        let ahead = c.refresh_ahead_percent;
        let stale = Duration::from_secs(c.max_stale_secs);
        Maps {
            users_by_name: TtlLru::new(bounds, ahead, stale),
            users_by_uid: TtlLru::new(bounds, ahead, stale),
            groups_by_name: TtlLru::new(bounds, ahead, stale),
            groups_by_gid: TtlLru::new(bounds, ahead, stale),
            initgroups: TtlLru::new(bounds, ahead, stale),
        }
    }

    /// Bytes charged to found entries, all maps.
    pub fn bytes(&self) -> usize {
        self.users_by_name.bytes()
            + self.users_by_uid.bytes()
            + self.groups_by_name.bytes()
            + self.groups_by_gid.bytes()
            + self.initgroups.bytes()
    }

    fn clear(&self) {
        self.users_by_name.clear();
        self.users_by_uid.clear();
        self.groups_by_name.clear();
        self.groups_by_gid.clear();
        self.initgroups.clear();
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum UserKey {
    Name(String),
    Uid(u32),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum GroupKey {
    Name(String),
    Gid(u32),
}

/// The outcome of one map lookup before it becomes a reply.
enum Outcome<V> {
    Found(V, bool),
    NotFound,
    Unavailable,
}

/// A listing of a complete mirror and what it was made from (weak: a replaced mirror or
/// settings are not kept alive by it).
struct MirrorListing {
    mirror: std::sync::Weak<crate::mirror::Mirror>,
    generation: u64,
    settings: std::sync::Weak<Settings>,
    snapshot: Arc<Snapshot>,
}

pub struct Resolver<D: Directory> {
    dir: RwLock<Arc<D>>,
    settings: RwLock<Arc<Settings>>,
    pub maps: Maps,
    user_flights: SingleFlight<UserKey, DirResult<Option<UserEntry>>>,
    group_flights: SingleFlight<GroupKey, DirResult<Option<GroupEntry>>>,
    initgroups_flights: SingleFlight<String, DirResult<Option<GroupIds>>>,
    enumerations: Enumerations,
    /// The last listing of a complete mirror, users and groups ([`Resolver::mirror_listing`]).
    mirror_listings: Mutex<[Option<MirrorListing>; 2]>,
    pub stats: Stats,
    /// Budget and fair queue of directory work, by peer uid.
    pub admission: Arc<Admission>,
    /// Mirror mode (issue 13): the mirror in service, set and replaced by `mirror::control`.
    pub mirror: crate::mirror::control::Slot,
}

impl<D: Directory> Resolver<D> {
    pub fn new(dir: D, config: &Config) -> Arc<Self> {
        let admission = Admission::new(Limits::from(config));
        dir.attach_admission(&admission);
        Arc::new(Resolver {
            dir: RwLock::new(Arc::new(dir)),
            settings: RwLock::new(Arc::new(Settings::from(config))),
            maps: Maps::new(config),
            user_flights: SingleFlight::default(),
            group_flights: SingleFlight::default(),
            initgroups_flights: SingleFlight::default(),
            enumerations: Enumerations::new(Duration::from_secs(config.cache.positive_ttl_secs)),
            mirror_listings: Mutex::new([None, None]),
            stats: Stats::default(),
            admission,
            mirror: Default::default(),
        })
    }

    /// The directory in use.
    pub fn directory(&self) -> Arc<D> {
        self.dir.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies a reloaded configuration. A new directory (`Some`) means the `[ldap]` section
    /// changed; then, or when `[policy]` changed, cached answers no longer hold and are dropped.
    pub fn reload(&self, config: &Config, dir: Option<D>, flush: bool) {
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(Settings::from(config));
        self.stats.settings_epoch.fetch_add(1, Ordering::Relaxed);
        self.admission.set_limits(Limits::from(config));
        if let Some(d) = dir {
            d.attach_admission(&self.admission);
            *self.dir.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(d);
        }
        if flush {
            self.maps.clear();
            self.stats.changed();
            info!("cache flushed: directory or policy settings changed");
        }
    }

    /// Entries past their TTL, in all maps.
    pub fn expired_entries(&self) -> usize {
        let (m, now) = (&self.maps, Instant::now());
        m.users_by_name.expired_count(now)
            + m.users_by_uid.expired_count(now)
            + m.groups_by_name.expired_count(now)
            + m.groups_by_gid.expired_count(now)
            + m.initgroups.expired_count(now)
    }

    /// Entries per map: passwd by name, by uid, group by name, by gid, initgroups.
    pub fn cache_sizes(&self) -> [usize; 5] {
        let m = &self.maps;
        [
            m.users_by_name.len(),
            m.users_by_uid.len(),
            m.groups_by_name.len(),
            m.groups_by_gid.len(),
            m.initgroups.len(),
        ]
    }

    /// Answers one request for `caller` (the peer uid it is charged to).
    pub async fn resolve(self: &Arc<Self>, req: Request, caller: Caller) -> Reply {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let map = match &req {
            Request::GetPwNam(_) | Request::GetPwUid(_) => 0,
            Request::GetGrNam(_) | Request::GetGrGid(_) => 1,
            Request::InitGroups(_) => 2,
            Request::PwEnt { .. } | Request::GrEnt { .. } => 3,
        };
        let reply = self.answer(req, caller).await;
        let result = match &reply {
            Reply::Body { .. } => 0,
            Reply::Message(Response::NotFound) => 1,
            Reply::Message(_) => 2,
        };
        self.stats.lookups[map][result].fetch_add(1, Ordering::Relaxed);
        reply
    }

    /// The cache state of a request's key, without touching its LRU position: state name,
    /// whether the entry is positive, and its expiry.
    pub fn cache_state(&self, req: &Request) -> (&'static str, Option<bool>, Option<Instant>) {
        let now = Instant::now();
        let m = &self.maps;
        fn found<V>(
            (state, v, exp): (&'static str, Option<V>, Instant),
        ) -> (&'static str, bool, Instant) {
            (state, v.is_some(), exp)
        }
        let peeked = match req {
            Request::GetPwNam(n) => m.users_by_name.peek(n, now).map(found),
            Request::GetPwUid(u) => m.users_by_uid.peek(u, now).map(found),
            Request::GetGrNam(n) => m.groups_by_name.peek(n, now).map(found),
            Request::GetGrGid(g) => m.groups_by_gid.peek(g, now).map(found),
            Request::InitGroups(n) => m.initgroups.peek(n, now).map(found),
            Request::PwEnt { .. } | Request::GrEnt { .. } => None,
        };
        match peeked {
            Some((state, positive, expires)) => (state, Some(positive), Some(expires)),
            None => ("miss", None, None),
        }
    }

    /// The policy in force (mirror publication applies it as lookups do).
    pub fn policy(&self) -> Policy {
        self.settings().policy.clone()
    }

    /// The TTL in force for a found answer to `req` (users, or groups and initgroups).
    pub fn positive_ttl(&self, req: &Request) -> Duration {
        let s = self.settings();
        match req {
            Request::GetPwNam(_) | Request::GetPwUid(_) | Request::PwEnt { .. } => s.user_ttl,
            _ => s.group_ttl,
        }
    }

    async fn answer(self: &Arc<Self>, req: Request, caller: Caller) -> Reply {
        if let Some(reply) = self.mirror_answer(&req) {
            return reply;
        }
        match req {
            Request::GetPwNam(name) => {
                let o = self.user(UserKey::Name(name), caller).await;
                self.reply(o, ResponseKind::Passwd, BodyRef::User)
            }
            Request::GetPwUid(uid) => {
                let o = self.user(UserKey::Uid(uid), caller).await;
                self.reply(o, ResponseKind::Passwd, BodyRef::User)
            }
            Request::GetGrNam(name) => {
                let o = self.group(GroupKey::Name(name), caller).await;
                self.reply(o, ResponseKind::Group, BodyRef::Group)
            }
            Request::GetGrGid(gid) => {
                let o = self.group(GroupKey::Gid(gid), caller).await;
                self.reply(o, ResponseKind::Group, BodyRef::Group)
            }
            Request::InitGroups(name) => {
                let o = self.groups_of(name, caller).await;
                self.reply(o, ResponseKind::GroupIds, BodyRef::Ids)
            }
            // A listing's directory work waits in the caller's turn; its snapshot serves every
            // client, so each operation keeps its own queue bound (no lookup budget).
            Request::PwEnt { generation, cursor } => {
                admission::with_caller_per_operation(
                    caller,
                    self.list(Listing::Users, generation, cursor),
                )
                .await
            }
            Request::GrEnt { generation, cursor } => {
                admission::with_caller_per_operation(
                    caller,
                    self.list(Listing::Groups, generation, cursor),
                )
                .await
            }
        }
    }

    /// Mirror mode (issue 13): once the mirror is complete it answers every keyed lookup,
    /// found or not, with no directory query and nothing cached (the mirror itself is what
    /// the shared cache data publishes, see `mirror::publish`).
    fn mirror_answer(&self, req: &Request) -> Option<Reply> {
        use crate::mirror::Answer;
        let (answer, stale) = self.mirror.get()?.answer(req, &self.settings().policy)?;
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        let (kind, body) = match answer {
            Answer::NotFound => return Some(Reply::Message(Response::NotFound)),
            Answer::User(record) => (
                ResponseKind::Passwd,
                BodyRef::User(Arc::new(Cached::user(&record))),
            ),
            Answer::Group(record)
                if Response::group_encoded_len(&record.group) <= MAX_RESPONSE_BODY as usize =>
            {
                (
                    ResponseKind::Group,
                    BodyRef::Group(Arc::new(Cached::group(&record))),
                )
            }
            Answer::Group(rec) => {
                warn!(dn = %rec.dn, members = rec.group.members.len(), "group too large to serve");
                return Some(Reply::Message(Response::NotFound));
            }
            Answer::Ids(gids) => {
                let name = match req {
                    Request::InitGroups(name) => name.as_str(),
                    _ => "",
                };
                (
                    ResponseKind::GroupIds,
                    BodyRef::Ids(Arc::new(Cached::ids(name, &gids))),
                )
            }
        };
        Some(Reply::Body { kind, body, stale })
    }

    fn reply<V>(
        &self,
        o: Outcome<V>,
        kind: ResponseKind,
        wrap: impl FnOnce(V) -> BodyRef,
    ) -> Reply {
        match o {
            Outcome::Found(v, stale) => Reply::Body {
                kind,
                body: wrap(v),
                stale,
            },
            Outcome::NotFound => Reply::Message(Response::NotFound),
            Outcome::Unavailable => Reply::Message(Response::Unavailable),
        }
    }

    /// The shape of every keyed lookup, by cache state (see the module doc).
    /// `refreshing`: a query for this key is already under way (a `Due` hit then starts none).
    /// `fetch` runs the query on behalf of `caller`, also when spawned (a refresh).
    async fn lookup<V, F, Fut>(
        self: &Arc<Self>,
        cached: Lookup<V>,
        refreshing: bool,
        fetch: F,
        what: &(dyn std::fmt::Debug + Sync),
        caller: Caller,
    ) -> Outcome<V>
    where
        V: Clone + Send + 'static,
        F: Fn(Arc<Self>) -> Fut,
        Fut: std::future::Future<Output = DirResult<Option<V>>> + Send + 'static,
    {
        let stats = &self.stats;
        let found = |v: Option<V>, stale: bool| match v {
            Some(v) => Outcome::Found(v, stale),
            None => Outcome::NotFound,
        };
        let expired = match cached {
            Lookup::Fresh(v) => {
                stats.hits.fetch_add(1, Ordering::Relaxed);
                return found(v, false);
            }
            Lookup::Due(v) => {
                stats.hits.fetch_add(1, Ordering::Relaxed);
                if !refreshing {
                    stats.refreshes.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(fetch(self.clone()));
                }
                return found(v, false);
            }
            Lookup::Expired(v) => {
                // Starting a query costs the caller a token; joining one does not.
                if !refreshing && self.admission.charge(caller, Instant::now()).is_err() {
                    debug!(lookup = ?what, ?caller, "over its query budget; serving the expired answer");
                    if v.is_some() {
                        stats.stale_served.fetch_add(1, Ordering::Relaxed);
                    }
                    return found(v, true);
                }
                v
            }
            Lookup::Miss => {
                stats.misses.fetch_add(1, Ordering::Relaxed);
                if !refreshing && self.admission.charge(caller, Instant::now()).is_err() {
                    debug!(lookup = ?what, ?caller, "over its query budget");
                    stats.unavailable.fetch_add(1, Ordering::Relaxed);
                    return Outcome::Unavailable;
                }
                let mut result = fetch(self.clone()).await;
                if refreshing && matches!(result, Err(DirError::Overloaded(_))) {
                    // This caller joined a query another uid started, and that query found no
                    // directory slot in time: its place was its starter's turn in the fair
                    // queue (say, behind that uid's own flood). Ask once more in this
                    // caller's own turn, charged as a starter.
                    if self.admission.charge(caller, Instant::now()).is_ok() {
                        result = fetch(self.clone()).await;
                    }
                }
                return match result {
                    Ok(v) => found(v, false),
                    Err(e @ DirError::Overloaded(_)) => {
                        debug!(lookup = ?what, error = %e, "directory busy");
                        stats.unavailable.fetch_add(1, Ordering::Relaxed);
                        Outcome::Unavailable
                    }
                    Err(e) => {
                        warn!(lookup = ?what, error = %e, "directory unavailable and nothing cached");
                        stats.unavailable.fetch_add(1, Ordering::Relaxed);
                        Outcome::Unavailable
                    }
                };
            }
        };
        // Expired: give the directory `stale_wait`; the query carries on in the background
        // and refreshes the cache whenever it completes.
        stats.misses.fetch_add(1, Ordering::Relaxed);
        let query = tokio::spawn(fetch(self.clone()));
        match tokio::time::timeout(self.settings().stale_wait, query).await {
            Ok(Ok(Ok(v))) => found(v, false),
            outcome => {
                if let Ok(Ok(Err(e))) = &outcome {
                    debug!(lookup = ?what, error = %e, "directory unavailable; serving the expired answer");
                } else {
                    debug!(lookup = ?what, "directory slow; serving the expired answer");
                }
                if expired.is_some() {
                    stats.stale_served.fetch_add(1, Ordering::Relaxed);
                }
                found(expired, true)
            }
        }
    }

    /// Caches a user by name, and by uid only when the lookup that found it established that
    /// no other user claims the uid (`by_id`): a lookup by name does not, so it must not decide
    /// what `getpwuid` answers.
    fn store_user(&self, s: &Settings, rec: UserRecord, by_id: bool, now: Instant) -> UserEntry {
        let e = Arc::new(Cached::user(&rec));
        self.maps
            .users_by_name
            .put(e.name().to_owned(), Some(e.clone()), s.user_ttl, now);
        if by_id {
            self.maps
                .users_by_uid
                .put(e.uid(), Some(e.clone()), s.user_ttl, now);
        }
        self.stats.changed();
        e
    }

    /// As [`Resolver::store_user`], for groups and gids.
    fn store_group(&self, s: &Settings, rec: GroupRecord, by_id: bool, now: Instant) -> GroupEntry {
        let e = Arc::new(Cached::group(&rec));
        self.maps
            .groups_by_name
            .put(e.name().to_owned(), Some(e.clone()), s.group_ttl, now);
        if by_id {
            self.maps
                .groups_by_gid
                .put(e.gid(), Some(e.clone()), s.group_ttl, now);
        }
        self.stats.changed();
        e
    }

    /// Policy, then cache: `None` when the entry is refused (logged with its DN).
    pub fn admit_user(&self, rec: UserRecord, by_id: bool, now: Instant) -> Option<UserEntry> {
        let s = self.settings();
        let dn = rec.dn.clone();
        match s.policy.user(rec) {
            Ok(u) => Some(self.store_user(&s, u, by_id, now)),
            Err(why) => {
                warn!(dn = %dn, reason = %why, "not serving user");
                None
            }
        }
    }

    pub fn admit_group(&self, rec: GroupRecord, by_id: bool, now: Instant) -> Option<GroupEntry> {
        let s = self.settings();
        let dn = rec.dn.clone();
        match s.policy.group(rec) {
            Ok(g) if Response::group_encoded_len(&g.group) <= MAX_RESPONSE_BODY as usize => {
                Some(self.store_group(&s, g, by_id, now))
            }
            Ok(g) => {
                warn!(dn = %dn, members = g.group.members.len(), "group too large to serve");
                None
            }
            Err(why) => {
                warn!(dn = %dn, reason = %why, "not serving group");
                None
            }
        }
    }

    /// Caches gids for initgroups (`None`: the user is in no group).
    pub fn store_groups_of(
        &self,
        name: String,
        gids: Option<Vec<u32>>,
        now: Instant,
    ) -> Option<GroupIds> {
        let s = self.settings();
        self.stats.changed();
        match gids.filter(|g| !g.is_empty()) {
            None => {
                self.maps.initgroups.put(name, None, s.negative_ttl, now);
                None
            }
            Some(gids) => {
                let e = Arc::new(Cached::ids(&name, &gids));
                self.maps
                    .initgroups
                    .put(name, Some(e.clone()), s.group_ttl, now);
                Some(e)
            }
        }
    }

    /// Restores a persisted user (policy applied again); `false` when policy refuses it.
    pub fn restore_user(
        &self,
        rec: UserRecord,
        by_name: bool,
        by_id: bool,
        expires: Instant,
    ) -> bool {
        let Ok(u) = self.settings().policy.user(rec) else {
            return false;
        };
        let e = Arc::new(Cached::user(&u));
        if by_name {
            self.maps
                .users_by_name
                .restore(e.name().to_owned(), Some(e.clone()), expires);
        }
        if by_id {
            self.maps.users_by_uid.restore(e.uid(), Some(e), expires);
        }
        true
    }

    /// Restores a persisted group (policy applied again); `false` when policy refuses it.
    pub fn restore_group(
        &self,
        rec: GroupRecord,
        by_name: bool,
        by_id: bool,
        expires: Instant,
    ) -> bool {
        let Ok(g) = self.settings().policy.group(rec) else {
            return false;
        };
        let e = Arc::new(Cached::group(&g));
        if by_name {
            self.maps
                .groups_by_name
                .restore(e.name().to_owned(), Some(e.clone()), expires);
        }
        if by_id {
            self.maps.groups_by_gid.restore(e.gid(), Some(e), expires);
        }
        true
    }

    /// Restores persisted initgroups gids (policy on names cannot be re-checked here; ids are).
    pub fn restore_groups_of(
        &self,
        name: String,
        gids: Option<Vec<u32>>,
        expires: Instant,
    ) -> bool {
        let s = self.settings();
        if !s.policy.user_name_allowed(&name) {
            return false;
        }
        let value = gids.map(|mut g| {
            g.retain(|id| s.policy.id_allowed(*id));
            Arc::new(Cached::ids(&name, &g))
        });
        self.maps.initgroups.restore(name, value, expires);
        true
    }

    /// Drops every cached answer.
    pub fn maps_clear(&self) {
        self.maps.clear();
    }

    /// Drops cached answers (as `sss_cache`): everything, one user (by name and uid, and its
    /// groups list), or one group (by name and gid, and the groups lists of its members).
    /// Returns how many entries went.
    pub fn invalidate(&self, scope: &Scope) -> u32 {
        let m = &self.maps;
        let n = match scope {
            Scope::All => {
                let n: usize = self.cache_sizes().iter().sum();
                m.clear();
                n as u32
            }
            Scope::User(name) => {
                let mut n = 0;
                if let Some(v) = m.users_by_name.remove(name) {
                    n += 1;
                    if let Some(e) = v {
                        n += u32::from(m.users_by_uid.remove(&e.uid()).is_some());
                    }
                }
                // An entry cached only by uid (getpwuid) is found by its name.
                n += m.users_by_uid.remove_where(|e| e.name() == name).len() as u32;
                n + u32::from(m.initgroups.remove(name).is_some())
            }
            Scope::Group(name) => {
                let mut n = 0;
                let mut dropped = Vec::new();
                if let Some(v) = m.groups_by_name.remove(name) {
                    n += 1;
                    if let Some(e) = v {
                        n += u32::from(m.groups_by_gid.remove(&e.gid()).is_some());
                        dropped.push(e);
                    }
                }
                // An entry cached only by gid (getgrgid) is found by its name.
                let by_gid = m.groups_by_gid.remove_where(|e| e.name() == name);
                n += by_gid.len() as u32;
                dropped.extend(by_gid);
                for e in &dropped {
                    for member in e.members() {
                        n += u32::from(m.initgroups.remove(&member.to_owned()).is_some());
                    }
                }
                n
            }
        };
        self.stats.changed();
        info!(?scope, entries = n, "cache invalidated");
        n
    }

    async fn fetch_user(self: Arc<Self>, key: UserKey) -> DirResult<Option<UserEntry>> {
        let this = self.clone();
        self.user_flights
            .run(key.clone(), || async move {
                // Refreshed by another query since this one was scheduled: nothing to ask.
                if let Lookup::Fresh(v) = this.cached_user(&key, Instant::now()) {
                    return Ok(v);
                }
                let dir = this.directory();
                let found = match &key {
                    UserKey::Name(n) => dir.user_by_name(n).await?,
                    UserKey::Uid(u) => dir.user_by_uid(*u).await?,
                };
                let now = Instant::now();
                let entry =
                    found.and_then(|rec| this.admit_user(rec, matches!(key, UserKey::Uid(_)), now));
                if entry.is_none() {
                    let ttl = this.settings().negative_ttl;
                    match &key {
                        UserKey::Name(n) => this.maps.users_by_name.put(n.clone(), None, ttl, now),
                        UserKey::Uid(u) => this.maps.users_by_uid.put(*u, None, ttl, now),
                    }
                    this.stats.changed();
                }
                Ok(entry)
            })
            .await
    }

    async fn user(self: &Arc<Self>, key: UserKey, caller: Caller) -> Outcome<UserEntry> {
        let now = Instant::now();
        let policy = &self.settings().policy;
        let cached = match &key {
            UserKey::Name(n) if !is_valid_name(n.as_bytes()) || !policy.user_name_allowed(n) => {
                return Outcome::NotFound
            }
            UserKey::Uid(u) if !policy.id_allowed(*u) => return Outcome::NotFound,
            _ => self.cached_user(&key, now),
        };
        let refreshing = self.user_flights.running(&key);
        let k = key.clone();
        self.lookup(
            cached,
            refreshing,
            move |this| admission::with_caller(caller, this.fetch_user(k.clone())),
            &key,
            caller,
        )
        .await
    }

    fn cached_user(&self, key: &UserKey, now: Instant) -> Lookup<UserEntry> {
        match key {
            UserKey::Name(n) => self.maps.users_by_name.get(n, now),
            UserKey::Uid(u) => self.maps.users_by_uid.get(u, now),
        }
    }

    fn cached_group(&self, key: &GroupKey, now: Instant) -> Lookup<GroupEntry> {
        match key {
            GroupKey::Name(n) => self.maps.groups_by_name.get(n, now),
            GroupKey::Gid(g) => self.maps.groups_by_gid.get(g, now),
        }
    }

    async fn fetch_group(self: Arc<Self>, key: GroupKey) -> DirResult<Option<GroupEntry>> {
        let this = self.clone();
        self.group_flights
            .run(key.clone(), || async move {
                if let Lookup::Fresh(v) = this.cached_group(&key, Instant::now()) {
                    return Ok(v);
                }
                let dir = this.directory();
                let found = match &key {
                    GroupKey::Name(n) => dir.group_by_name(n).await?,
                    GroupKey::Gid(g) => dir.group_by_gid(*g).await?,
                };
                let now = Instant::now();
                let entry = found
                    .and_then(|rec| this.admit_group(rec, matches!(key, GroupKey::Gid(_)), now));
                if entry.is_none() {
                    let ttl = this.settings().negative_ttl;
                    match &key {
                        GroupKey::Name(n) => {
                            this.maps.groups_by_name.put(n.clone(), None, ttl, now)
                        }
                        GroupKey::Gid(g) => this.maps.groups_by_gid.put(*g, None, ttl, now),
                    }
                    this.stats.changed();
                }
                Ok(entry)
            })
            .await
    }

    async fn group(self: &Arc<Self>, key: GroupKey, caller: Caller) -> Outcome<GroupEntry> {
        let now = Instant::now();
        let policy = &self.settings().policy;
        let cached = match &key {
            GroupKey::Name(n) if !is_valid_name(n.as_bytes()) || !policy.group_name_allowed(n) => {
                return Outcome::NotFound
            }
            GroupKey::Gid(g) if !policy.id_allowed(*g) => return Outcome::NotFound,
            _ => self.cached_group(&key, now),
        };
        let refreshing = self.group_flights.running(&key);
        let k = key.clone();
        self.lookup(
            cached,
            refreshing,
            move |this| admission::with_caller(caller, this.fetch_group(k.clone())),
            &key,
            caller,
        )
        .await
    }

    async fn fetch_groups_of(
        self: Arc<Self>,
        name: String,
        caller: Caller,
    ) -> DirResult<Option<GroupIds>> {
        let this = self.clone();
        self.initgroups_flights
            .run(name.clone(), || async move {
                if let Lookup::Fresh(v) = this.maps.initgroups.get(&name, Instant::now()) {
                    return Ok(v);
                }
                let dir = this.directory();
                let dn = if dir.memberships_need_dn() {
                    match this.user(UserKey::Name(name.clone()), caller).await {
                        Outcome::Found(u, _) => Some(u.dn().to_owned()),
                        Outcome::NotFound => {
                            return Ok(this.store_groups_of(name, None, Instant::now()))
                        }
                        Outcome::Unavailable => {
                            return Err(DirError::Unreachable("user lookup failed".into()))
                        }
                    }
                } else {
                    None
                };
                let groups = dir.memberships(&name, dn.as_deref()).await?;
                let policy = &this.settings().policy;
                let mut gids: Vec<u32> = groups
                    .iter()
                    .filter(|m| policy.membership_allowed(m))
                    .map(|m| m.gid)
                    .collect();
                gids.sort_unstable();
                gids.dedup();
                Ok(this.store_groups_of(name, Some(gids), Instant::now()))
            })
            .await
    }

    async fn groups_of(self: &Arc<Self>, name: String, caller: Caller) -> Outcome<GroupIds> {
        if !is_valid_name(name.as_bytes()) || !self.settings().policy.user_name_allowed(&name) {
            return Outcome::NotFound;
        }
        let cached = self.maps.initgroups.get(&name, Instant::now());
        let refreshing = self.initgroups_flights.running(&name);
        let n = name.clone();
        self.lookup(
            cached,
            refreshing,
            move |this| admission::with_caller(caller, this.fetch_groups_of(n.clone(), caller)),
            &name,
            caller,
        )
        .await
    }

    /// Enumeration: batches from a snapshot taken at cursor 0 of generation 0.
    async fn list(&self, what: Listing, generation: u64, cursor: u32) -> Reply {
        let snapshot = if generation == 0 {
            match self.snapshot(what).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "enumeration failed");
                    return Reply::Message(Response::Unavailable);
                }
            }
        } else {
            match self.enumerations.get(generation) {
                Some(s) => s,
                None => {
                    return Reply::Message(Response::Error {
                        code: ErrorCode::EnumerationExpired,
                        message: format!("enumeration {generation} expired; start again"),
                    })
                }
            }
        };
        let (kind, body) = snapshot.batch(cursor);
        Reply::Body {
            kind,
            body: BodyRef::Owned(Arc::new(body)),
            stale: false,
        }
    }

    /// The listing of a complete mirror: the one made last while the mirror (same mirror,
    /// same generation) and the settings are unchanged and its snapshot is still kept, else
    /// a new one. So any number of `setpwent` calls cost one listing per mirror change, not
    /// one each (each sorts and encodes the whole directory under the mirror's read lock),
    /// and do not push other clients' snapshots out. `None`: not complete.
    fn mirror_listing(
        &self,
        what: Listing,
        m: &Arc<crate::mirror::Mirror>,
    ) -> Option<Arc<Snapshot>> {
        let settings = self.settings();
        // Read before listing: a change during it makes the tag older than the content, which
        // only costs a new listing next time.
        let generation = m.generation.load(Ordering::Acquire);
        let slot = match what {
            Listing::Users => 0,
            Listing::Groups => 1,
        };
        {
            let last = self
                .mirror_listings
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(l) = &last[slot] {
                let same = l.generation == generation
                    && l.mirror.upgrade().is_some_and(|x| Arc::ptr_eq(&x, m))
                    && l.settings
                        .upgrade()
                        .is_some_and(|x| Arc::ptr_eq(&x, &settings));
                if same && self.enumerations.get(l.snapshot.generation()).is_some() {
                    return Some(l.snapshot.clone());
                }
            }
        }
        let bodies = crate::mirror::enumerate::listing(m, what, &settings.policy)?;
        let snapshot = self.enumerations.publish(what, bodies, false);
        self.mirror_listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())[slot] = Some(MirrorListing {
            mirror: Arc::downgrade(m),
            generation,
            settings: Arc::downgrade(&settings),
            snapshot: snapshot.clone(),
        });
        Some(snapshot)
    }

    async fn snapshot(&self, what: Listing) -> DirResult<Arc<Snapshot>> {
        // Mirror mode (issue 13): a complete mirror lists everything with no directory query.
        if let Some(m) = self.mirror.get() {
            if let Some(s) = self.mirror_listing(what, &m) {
                return Ok(s);
            }
        }
        if let Some(s) = self.enumerations.recent(what) {
            return Ok(s);
        }
        let now = Instant::now();
        let enumerate = self.settings().enumerate;
        let bodies: Vec<BodyRef> = match (what, enumerate) {
            (Listing::Users, true) => {
                let users = self.directory().all_users().await?;
                let unique = unique_ids(users.iter().map(|u| u.passwd.uid));
                users
                    .into_iter()
                    .filter_map(|u| {
                        let by_id = unique.contains(&u.passwd.uid);
                        self.admit_user(u, by_id, now)
                    })
                    .map(BodyRef::User)
                    .collect()
            }
            (Listing::Groups, true) => {
                let groups = self.directory().all_groups().await?;
                let unique = unique_ids(groups.iter().map(|g| g.group.gid));
                groups
                    .into_iter()
                    .filter_map(|g| {
                        let by_id = unique.contains(&g.group.gid);
                        self.admit_group(g, by_id, now)
                    })
                    .map(BodyRef::Group)
                    .collect()
            }
            (Listing::Users, false) => {
                let mut v = self.maps.users_by_name.fresh_values(now);
                v.sort_by_key(|e| e.uid());
                v.into_iter().map(BodyRef::User).collect()
            }
            (Listing::Groups, false) => {
                let mut v = self.maps.groups_by_name.fresh_values(now);
                v.sort_by_key(|e| e.gid());
                v.into_iter().map(BodyRef::Group).collect()
            }
        };
        Ok(self.enumerations.publish(what, bodies, enumerate))
    }
}

#[cfg(test)]
#[path = "resolver_admission_tests.rs"]
mod admission_tests;
