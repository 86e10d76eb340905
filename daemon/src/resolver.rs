//! Answers lookups: validate, apply policy, consult the cache, and on a miss ask the
//! directory once per key however many clients wait (single-flight). Found entries are stored
//! already encoded, so a warm hit costs a map lookup and a copy. When the directory cannot be
//! reached, an expired answer is served (flagged stale) rather than nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use toolforge_nss_config::Config;
use toolforge_nss_protocol::names::is_valid_name;
use toolforge_nss_protocol::{Request, Response, ResponseKind, MAX_RESPONSE_BODY};

use crate::cache::{Lookup, TtlLru};
use crate::directory::{DirError, DirResult, Directory};
use crate::enumeration::{Enumerations, Listing};
use crate::policy::Policy;
use crate::records::{GroupRecord, UserRecord};
use crate::singleflight::SingleFlight;

/// A cached answer with its encoded response body.
#[derive(Debug)]
pub struct Encoded<R> {
    pub record: R,
    pub body: Vec<u8>,
}

pub type UserEntry = Arc<Encoded<UserRecord>>;
pub type GroupEntry = Arc<Encoded<GroupRecord>>;
pub type GroupIds = Arc<Encoded<Vec<u32>>>;

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
            BodyRef::User(e) => &e.body,
            BodyRef::Group(e) => &e.body,
            BodyRef::Ids(e) => &e.body,
            BodyRef::Owned(b) => b,
        }
    }
}

/// Counters for status and tests.
#[derive(Default, Debug)]
pub struct Stats {
    pub requests: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stale_served: AtomicU64,
    pub unavailable: AtomicU64,
}

fn encode(resp: &Response) -> Vec<u8> {
    let mut body = Vec::new();
    resp.encode_body(&mut body);
    body
}

/// The ids that occur exactly once in a listing.
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

pub struct Resolver<D: Directory> {
    dir: D,
    policy: Policy,
    positive_ttl: Duration,
    negative_ttl: Duration,
    enumerate: bool,
    users_by_name: TtlLru<String, UserEntry>,
    users_by_uid: TtlLru<u32, UserEntry>,
    groups_by_name: TtlLru<String, GroupEntry>,
    groups_by_gid: TtlLru<u32, GroupEntry>,
    initgroups: TtlLru<String, GroupIds>,
    user_flights: SingleFlight<UserKey, DirResult<Option<UserEntry>>>,
    group_flights: SingleFlight<GroupKey, DirResult<Option<GroupEntry>>>,
    initgroups_flights: SingleFlight<String, DirResult<Option<GroupIds>>>,
    enumerations: Enumerations,
    pub stats: Stats,
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

impl<D: Directory> Resolver<D> {
    pub fn new(dir: D, config: &Config) -> Self {
        let cap = config.cache.max_entries;
        Resolver {
            dir,
            policy: Policy::new(&config.policy),
            positive_ttl: Duration::from_secs(config.cache.positive_ttl_secs),
            negative_ttl: Duration::from_secs(config.cache.negative_ttl_secs),
            enumerate: config.cache.enumerate,
            users_by_name: TtlLru::new(cap),
            users_by_uid: TtlLru::new(cap),
            groups_by_name: TtlLru::new(cap),
            groups_by_gid: TtlLru::new(cap),
            initgroups: TtlLru::new(cap),
            user_flights: SingleFlight::default(),
            group_flights: SingleFlight::default(),
            initgroups_flights: SingleFlight::default(),
            enumerations: Enumerations::new(Duration::from_secs(config.cache.positive_ttl_secs)),
            stats: Stats::default(),
        }
    }

    pub fn directory(&self) -> &D {
        &self.dir
    }

    /// Entries per map: passwd by name, by uid, group by name, by gid, initgroups.
    pub fn cache_sizes(&self) -> [usize; 5] {
        [
            self.users_by_name.len(),
            self.users_by_uid.len(),
            self.groups_by_name.len(),
            self.groups_by_gid.len(),
            self.initgroups.len(),
        ]
    }

    /// Answers one request.
    pub async fn resolve(&self, req: Request) -> Reply {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        match req {
            Request::GetPwNam(name) => {
                let o = self.user(UserKey::Name(name)).await;
                self.reply(o, ResponseKind::Passwd, BodyRef::User)
            }
            Request::GetPwUid(uid) => {
                let o = self.user(UserKey::Uid(uid)).await;
                self.reply(o, ResponseKind::Passwd, BodyRef::User)
            }
            Request::GetGrNam(name) => {
                let o = self.group(GroupKey::Name(name)).await;
                self.reply(o, ResponseKind::Group, BodyRef::Group)
            }
            Request::GetGrGid(gid) => {
                let o = self.group(GroupKey::Gid(gid)).await;
                self.reply(o, ResponseKind::Group, BodyRef::Group)
            }
            Request::InitGroups(name) => {
                let o = self.groups_of(name).await;
                self.reply(o, ResponseKind::GroupIds, BodyRef::Ids)
            }
            Request::PwEnt { generation, cursor } => {
                self.list(Listing::Users, generation, cursor).await
            }
            Request::GrEnt { generation, cursor } => {
                self.list(Listing::Groups, generation, cursor).await
            }
        }
    }

    fn reply<V>(
        &self,
        o: Outcome<V>,
        kind: ResponseKind,
        wrap: impl FnOnce(V) -> BodyRef,
    ) -> Reply {
        match o {
            Outcome::Found(v, stale) => {
                if stale {
                    self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                }
                Reply::Body {
                    kind,
                    body: wrap(v),
                    stale,
                }
            }
            Outcome::NotFound => Reply::Message(Response::NotFound),
            Outcome::Unavailable => {
                self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                Reply::Message(Response::Unavailable)
            }
        }
    }

    /// Shared shape of every keyed lookup: fresh hit, else one flight to the directory, else
    /// the expired answer when the directory is unreachable.
    async fn cached<V: Clone>(
        &self,
        cached: Lookup<V>,
        fetch: impl std::future::Future<Output = DirResult<Option<V>>>,
        what: &(dyn std::fmt::Debug + Sync),
    ) -> Outcome<V> {
        let expired = match cached {
            Lookup::Fresh(Some(v)) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Outcome::Found(v, false);
            }
            Lookup::Fresh(None) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Outcome::NotFound;
            }
            Lookup::Expired(v) => Some(v),
            Lookup::Miss => None,
        };
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        match (fetch.await, expired) {
            (Ok(Some(v)), _) => Outcome::Found(v, false),
            (Ok(None), _) => Outcome::NotFound,
            (Err(e), Some(Some(v))) => {
                warn!(lookup = ?what, error = %e, "directory unavailable; serving expired entry");
                Outcome::Found(v, true)
            }
            (Err(e), Some(None)) => {
                debug!(lookup = ?what, error = %e, "directory unavailable; serving expired negative entry");
                Outcome::NotFound
            }
            (Err(e), None) => {
                warn!(lookup = ?what, error = %e, "directory unavailable and nothing cached");
                Outcome::Unavailable
            }
        }
    }

    /// Caches a user by name, and by uid only when the lookup that found it established that
    /// no other user claims the uid (`by_id`): a lookup by name does not, so it must not decide
    /// what `getpwuid` answers.
    fn store_user(&self, rec: UserRecord, by_id: bool, now: Instant) -> UserEntry {
        let body = encode(&Response::Passwd(rec.passwd.clone()));
        let e = Arc::new(Encoded { record: rec, body });
        let ttl = self.positive_ttl;
        self.users_by_name
            .put(e.record.passwd.name.clone(), Some(e.clone()), ttl, now);
        if by_id {
            self.users_by_uid
                .put(e.record.passwd.uid, Some(e.clone()), ttl, now);
        }
        e
    }

    /// As [`Resolver::store_user`], for groups and gids.
    fn store_group(&self, rec: GroupRecord, by_id: bool, now: Instant) -> GroupEntry {
        let body = encode(&Response::Group(rec.group.clone()));
        let e = Arc::new(Encoded { record: rec, body });
        let ttl = self.positive_ttl;
        self.groups_by_name
            .put(e.record.group.name.clone(), Some(e.clone()), ttl, now);
        if by_id {
            self.groups_by_gid
                .put(e.record.group.gid, Some(e.clone()), ttl, now);
        }
        e
    }

    /// Policy, then cache: `None` when the entry is refused (logged with its DN).
    fn admit_user(&self, rec: UserRecord, by_id: bool, now: Instant) -> Option<UserEntry> {
        let dn = rec.dn.clone();
        match self.policy.user(rec) {
            Ok(u) => Some(self.store_user(u, by_id, now)),
            Err(why) => {
                warn!(dn = %dn, reason = %why, "not serving user");
                None
            }
        }
    }

    fn admit_group(&self, rec: GroupRecord, by_id: bool, now: Instant) -> Option<GroupEntry> {
        let dn = rec.dn.clone();
        match self.policy.group(rec) {
            Ok(g) if Response::group_encoded_len(&g.group) <= MAX_RESPONSE_BODY as usize => {
                Some(self.store_group(g, by_id, now))
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

    async fn user(&self, key: UserKey) -> Outcome<UserEntry> {
        let now = Instant::now();
        let cached = match &key {
            UserKey::Name(n) => {
                if !is_valid_name(n.as_bytes()) || !self.policy.user_name_allowed(n) {
                    return Outcome::NotFound;
                }
                self.users_by_name.get(n, now)
            }
            UserKey::Uid(u) => {
                if !self.policy.id_allowed(*u) {
                    return Outcome::NotFound;
                }
                self.users_by_uid.get(u, now)
            }
        };
        let fetch = self.user_flights.run(key.clone(), || async {
            let found = match &key {
                UserKey::Name(n) => self.dir.user_by_name(n).await?,
                UserKey::Uid(u) => self.dir.user_by_uid(*u).await?,
            };
            let now = Instant::now();
            let entry =
                found.and_then(|rec| self.admit_user(rec, matches!(key, UserKey::Uid(_)), now));
            if entry.is_none() {
                match &key {
                    UserKey::Name(n) => {
                        self.users_by_name
                            .put(n.clone(), None, self.negative_ttl, now)
                    }
                    UserKey::Uid(u) => self.users_by_uid.put(*u, None, self.negative_ttl, now),
                }
            }
            Ok(entry)
        });
        self.cached(cached, fetch, &key).await
    }

    async fn group(&self, key: GroupKey) -> Outcome<GroupEntry> {
        let now = Instant::now();
        let cached = match &key {
            GroupKey::Name(n) => {
                if !is_valid_name(n.as_bytes()) || !self.policy.group_name_allowed(n) {
                    return Outcome::NotFound;
                }
                self.groups_by_name.get(n, now)
            }
            GroupKey::Gid(g) => {
                if !self.policy.id_allowed(*g) {
                    return Outcome::NotFound;
                }
                self.groups_by_gid.get(g, now)
            }
        };
        let fetch = self.group_flights.run(key.clone(), || async {
            let found = match &key {
                GroupKey::Name(n) => self.dir.group_by_name(n).await?,
                GroupKey::Gid(g) => self.dir.group_by_gid(*g).await?,
            };
            let now = Instant::now();
            let entry =
                found.and_then(|rec| self.admit_group(rec, matches!(key, GroupKey::Gid(_)), now));
            if entry.is_none() {
                match &key {
                    GroupKey::Name(n) => {
                        self.groups_by_name
                            .put(n.clone(), None, self.negative_ttl, now)
                    }
                    GroupKey::Gid(g) => self.groups_by_gid.put(*g, None, self.negative_ttl, now),
                }
            }
            Ok(entry)
        });
        self.cached(cached, fetch, &key).await
    }

    async fn groups_of(&self, name: String) -> Outcome<GroupIds> {
        if !is_valid_name(name.as_bytes()) || !self.policy.user_name_allowed(&name) {
            return Outcome::NotFound;
        }
        let cached = self.initgroups.get(&name, Instant::now());
        let fetch = self.initgroups_flights.run(name.clone(), || async {
            let dn = if self.dir.memberships_need_dn() {
                match self.user(UserKey::Name(name.clone())).await {
                    Outcome::Found(u, _) => Some(u.record.dn.clone()),
                    Outcome::NotFound => return Ok(None),
                    Outcome::Unavailable => {
                        return Err(DirError::Unreachable("user lookup failed".into()))
                    }
                }
            } else {
                None
            };
            let groups = self.dir.memberships(&name, dn.as_deref()).await?;
            let mut gids: Vec<u32> = groups
                .iter()
                .filter(|m| self.policy.membership_allowed(m))
                .map(|m| m.gid)
                .collect();
            gids.sort_unstable();
            gids.dedup();
            let now = Instant::now();
            if gids.is_empty() {
                self.initgroups
                    .put(name.clone(), None, self.negative_ttl, now);
                return Ok(None);
            }
            let body = encode(&Response::GroupIds(gids.clone()));
            let e = Arc::new(Encoded { record: gids, body });
            self.initgroups
                .put(name.clone(), Some(e.clone()), self.positive_ttl, now);
            Ok(Some(e))
        });
        self.cached(cached, fetch, &name).await
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
                        code: toolforge_nss_protocol::ErrorCode::EnumerationExpired,
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

    async fn snapshot(&self, what: Listing) -> DirResult<Arc<crate::enumeration::Snapshot>> {
        if let Some(s) = self.enumerations.recent(what) {
            return Ok(s);
        }
        let now = Instant::now();
        let bodies: Vec<BodyRef> = match (what, self.enumerate) {
            (Listing::Users, true) => {
                let users = self.dir.all_users().await?;
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
                let groups = self.dir.all_groups().await?;
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
                let mut v = self.users_by_name.fresh_values(now);
                v.sort_by_key(|e| e.record.passwd.uid);
                v.into_iter().map(BodyRef::User).collect()
            }
            (Listing::Groups, false) => {
                let mut v = self.groups_by_name.fresh_values(now);
                v.sort_by_key(|e| e.record.group.gid);
                v.into_iter().map(BodyRef::Group).collect()
            }
        };
        Ok(self.enumerations.publish(what, bodies, self.enumerate))
    }
}
