//! The admin socket: status, cache invalidation and a cache dump, for root only. It lives in
//! `admin_dir` (0700, never mounted into pods), the socket is 0600, and every connection's
//! peer uid (SO_PEERCRED) must be 0. One request per connection, bounded in size and time.
//! The exception is a takeover (`Handover`, then `Drain` on the same connection, see
//! `handover`), which a new daemon running as this daemon's own uid may also ask for, and
//! which has its own time limits.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use toolforge_nss_protocol::admin::{AdminRequest, AdminResponse, Map};
use toolforge_nss_protocol::mapfile::{MapView, Table};
use toolforge_nss_protocol::{
    Capabilities, ErrorCode, Header, Request, Response, ResponseKind, ResponseRef, HEADER_LEN,
    MAX_REQUEST_BODY,
};

use crate::directory::ldap::LdapDirectory;
use crate::handover::{self, Phase};
use crate::publish::Publisher;
use crate::resolver::{Reply, Resolver};
use crate::server::{Listener, SocketId};
use crate::wallclock::Clock;

/// The admin socket's file name inside `admin_dir`.
pub const SOCKET_NAME: &str = "admin.socket";
const DEADLINE: Duration = Duration::from_secs(5);
/// Most lines a dump returns.
const MAX_DUMP_LINES: usize = 50_000;

type Daemon = Resolver<LdapDirectory>;

/// Serves admin requests for the life of the process. `lookup` is this daemon's lookup
/// socket (a takeover checks whether it was replaced).
pub async fn serve(
    listener: Listener,
    resolver: Arc<Daemon>,
    started: Instant,
    publisher: Option<Arc<Publisher>>,
    lookup: SocketId,
) {
    info!(socket = %listener.path().display(), "serving admin requests (uid 0 only)");
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (resolver, publisher, lookup) = (resolver.clone(), publisher.clone(), lookup.clone());
        tokio::spawn(async move {
            let _ = handle(stream, resolver, started, publisher, lookup).await;
        });
    }
}

fn error(code: ErrorCode, message: &str) -> Vec<u8> {
    Response::Error {
        code,
        message: message.into(),
    }
    .encode(0, 0, Capabilities::default())
}

/// Reads one request (the caller bounds it in time); `Ok(None)`: refused and answered.
async fn read_request(stream: &mut UnixStream) -> std::io::Result<Option<(Header, AdminRequest)>> {
    let mut head = [0u8; HEADER_LEN];
    stream.read_exact(&mut head).await?;
    let header = match Header::decode(&head, MAX_REQUEST_BODY) {
        Ok(h) if h.version_supported() => h,
        Ok(h) => {
            let e = error(
                ErrorCode::UnsupportedVersion,
                &format!("version {}", h.version),
            );
            stream.write_all(&e).await?;
            return Ok(None);
        }
        Err(e) => {
            stream
                .write_all(&error(ErrorCode::BadRequest, &e.to_string()))
                .await?;
            return Ok(None);
        }
    };
    let mut body = vec![0u8; header.body_len as usize];
    stream.read_exact(&mut body).await?;
    match AdminRequest::decode(header.kind, &body) {
        Ok(req) => Ok(Some((header, req))),
        Err(e) => {
            stream
                .write_all(&error(ErrorCode::BadRequest, &e.to_string()))
                .await?;
            Ok(None)
        }
    }
}

async fn handle(
    mut stream: UnixStream,
    resolver: Arc<Daemon>,
    started: Instant,
    publisher: Option<Arc<Publisher>>,
    lookup: SocketId,
) -> std::io::Result<()> {
    let uid = stream.peer_cred().map(|c| c.uid()).ok();
    // SAFETY: geteuid has no preconditions.
    let own = uid == Some(unsafe { libc::geteuid() });
    let denied = error(
        ErrorCode::BadRequest,
        "permission denied: admin requests need uid 0",
    );
    if uid != Some(0) && !own {
        warn!(peer_uid = ?uid, "admin request refused: not root");
        return timeout(DEADLINE, stream.write_all(&denied))
            .await
            .unwrap_or(Ok(()));
    }
    let (header, request) = match timeout(DEADLINE, read_request(&mut stream)).await {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) | Err(_) => return Ok(()),
        Ok(Err(e)) => return Err(e),
    };
    if let AdminRequest::Handover {
        version,
        cache_format,
    } = request
    {
        return handover::give(
            stream,
            resolver,
            header.request_id,
            &lookup,
            version,
            cache_format,
        )
        .await;
    }
    if uid != Some(0) {
        warn!(peer_uid = ?uid, "admin request refused: not root");
        return timeout(DEADLINE, stream.write_all(&denied))
            .await
            .unwrap_or(Ok(()));
    }
    timeout(DEADLINE, async move {
        let answer = match request {
            AdminRequest::Status => AdminResponse::Text(status(&resolver, started)),
            AdminRequest::Invalidate(scope) => {
                let removed = resolver.invalidate(&scope);
                // The answer waits for the cache file: once the command returns, no process
                // reads an invalidated entry from it.
                if let Some(p) = publisher {
                    publish_now(p, resolver.clone()).await;
                }
                AdminResponse::Done(removed)
            }
            AdminRequest::Dump => AdminResponse::Text(dump(&resolver)),
            AdminRequest::Explain(map, key) => {
                let file = publisher.map(|p| p.path());
                AdminResponse::Text(explain(&resolver, map, key, file).await)
            }
            AdminRequest::Drain | AdminRequest::Handover { .. } => {
                return stream
                    .write_all(&error(
                        ErrorCode::BadRequest,
                        "Drain only follows Handover on the same connection",
                    ))
                    .await
            }
        };
        stream.write_all(&answer.encode(header.request_id)).await
    })
    .await
    .unwrap_or(Ok(()))
}

/// Publishes the cache file now (after an invalidation); nothing while a takeover is under
/// way or done (the new daemon publishes).
pub async fn publish_now(publisher: Arc<Publisher>, resolver: Arc<Daemon>) {
    let Some(_writing) = handover::lifecycle().may_write().await else {
        debug!("not publishing: this daemon is handing over");
        return;
    };
    match tokio::task::spawn_blocking(move || publisher.publish(&resolver)).await {
        Ok(Ok(Some(p))) => debug!(
            generation = p.generation,
            entries = p.entries,
            left_out = p.left_out,
            "cache file published"
        ),
        Ok(Ok(None)) => {} // retired (stopped or handed over) or withdrawn
        Ok(Err(e)) => warn!(error = %e, "cannot publish the cache file"),
        Err(e) => warn!(error = %e, "cache file publication failed"),
    }
}

/// Whether the daemon can answer: a server answered once, or a persisted cache was loaded
/// (or handed over); never once it has handed over to a new daemon.
pub fn ready(r: &Daemon) -> bool {
    (r.directory().ever_connected()
        || r.stats.loaded_from_disk.load(Ordering::Relaxed)
        || r.mirror.get().is_some_and(|m| m.is_complete()))
        && !matches!(
            handover::lifecycle().phase(),
            Phase::HandedOver | Phase::Abandoned
        )
}

fn secs_left(t: Instant) -> i64 {
    let now = Instant::now();
    if t >= now {
        (t - now).as_secs() as i64
    } else {
        -((now - t).as_secs() as i64)
    }
}

/// A lookup as the daemon makes it, with where the answer came from.
pub async fn explain(r: &Arc<Daemon>, map: Map, key: String, file: Option<PathBuf>) -> String {
    let numeric = key.parse::<u32>().ok();
    let req = match (map, numeric) {
        (Map::Passwd, Some(uid)) => Request::GetPwUid(uid),
        (Map::Passwd, None) => Request::GetPwNam(key),
        (Map::Group, Some(gid)) => Request::GetGrGid(gid),
        (Map::Group, None) => Request::GetGrNam(key),
        (Map::InitGroups, _) => Request::InitGroups(key),
    };
    let in_file = match file {
        Some(path) => in_cache_file(&path, &req).await,
        None => "off (cache.map_file_max_mib = 0)".to_string(),
    };
    let dir = r.directory();
    let (before, positive, expires) = r.cache_state(&req);
    let searches = dir.search_count();
    // Mirror mode (issue 13): a complete mirror answers before the cache and the directory.
    let mirror = r.mirror.get().filter(|m| m.is_complete());
    let started = Instant::now();
    let reply = r
        .resolve(req.clone(), crate::admission::Caller::Internal)
        .await;
    let took = started.elapsed();
    let asked = dir.search_count() - searches;
    let mut s = String::new();
    let _ = writeln!(s, "request: {req:?}");
    let (answer, stale) = match &reply {
        Reply::Body { kind, body, stale } => (describe_answer(*kind, body.bytes()), *stale),
        Reply::Message(Response::NotFound) => ("not found".to_string(), false),
        Reply::Message(Response::Unavailable) => (
            "unavailable (directory unreachable, nothing cached)".to_string(),
            false,
        ),
        Reply::Message(other) => (format!("{other:?}"), false),
    };
    let _ = writeln!(s, "answer: {answer}");
    let source = match (asked, before, stale) {
        (0, _, _) if mirror.is_some() => {
            let m = mirror.as_ref().map_or("-", |m| m.mode());
            format!(
                "mirror ({m}; the whole directory in memory, found or not: no directory query){}",
                if stale {
                    ", flagged stale: no successful sync for max_stale_secs"
                } else {
                    ""
                }
            )
        }
        (_, _, true) => {
            "daemon cache, expired: the directory did not answer in time (served stale)".to_string()
        }
        (n @ 1.., _, _) => format!("directory ({n} search{})", if n == 1 { "" } else { "es" }),
        (0, "fresh", _) => "daemon cache (fresh)".to_string(),
        (0, "due", _) => "daemon cache (fresh; refresh started in the background)".to_string(),
        (0, "miss", _) => {
            "policy: refused without a query (invalid or filtered name, or id out of range)"
                .to_string()
        }
        (0, state, _) => format!("daemon cache ({state})"),
    };
    let source = if in_file.starts_with("hit") || in_file.starts_with("absent from a complete") {
        format!("cache file (processes read it without asking the daemon); the daemon answered from: {source}")
    } else {
        source
    };
    let _ = writeln!(s, "cache_file: {in_file}");
    let _ = writeln!(s, "source: {source}");
    let _ = writeln!(
        s,
        "cache_state_before: {before}{}",
        positive.map_or("", |p| if p { " (found)" } else { " (absent)" })
    );
    if let Some(exp) = expires {
        let left = secs_left(exp);
        let _ = writeln!(s, "expires_in_secs_before: {left}");
        if positive == Some(true) {
            let _ = writeln!(
                s,
                "age_secs: {}",
                r.positive_ttl(&req).as_secs() as i64 - left
            );
        }
    }
    if let (_, _, Some(after)) = r.cache_state(&req) {
        let _ = writeln!(s, "expires_in_secs: {}", secs_left(after));
    }
    let _ = writeln!(
        s,
        "server: {}",
        dir.server_in_use()
            .as_deref()
            .unwrap_or("- (not connected)")
    );
    let user_dn = match &req {
        Request::InitGroups(n) => r
            .maps
            .users_by_name
            .peek(n, Instant::now())
            .and_then(|(_, v, _)| v)
            .map(|u| u.dn().to_owned()),
        _ => None,
    };
    match &mirror {
        Some(m) => {
            let (u, g) = m.counts();
            let _ = writeln!(
                s,
                "mirror: {} ({}), {} entries (users {u}, groups {g})",
                m.phase().name(),
                m.mode(),
                u + g
            );
        }
        None => {
            for q in dir.describe(&req, user_dn.as_deref()) {
                let _ = writeln!(s, "query: {q}");
            }
        }
    }
    let _ = writeln!(s, "directory_searches: {asked}");
    let _ = writeln!(s, "took_us: {}", took.as_micros());
    s
}

/// What the shared cache file says about `req`'s key, as the module would read it.
async fn in_cache_file(path: &Path, req: &Request) -> String {
    let (table, key) = match req {
        Request::GetPwNam(n) => (Table::PasswdByName, n.as_bytes().to_vec()),
        Request::GetPwUid(u) => (Table::PasswdByUid, u.to_le_bytes().to_vec()),
        Request::GetGrNam(n) => (Table::GroupByName, n.as_bytes().to_vec()),
        Request::GetGrGid(g) => (Table::GroupByGid, g.to_le_bytes().to_vec()),
        Request::InitGroups(n) => (Table::InitGroups, n.as_bytes().to_vec()),
        Request::PwEnt { .. } | Request::GrEnt { .. } => return "-".into(),
    };
    let owned = path.to_owned();
    let Ok(Ok(bytes)) = tokio::task::spawn_blocking(move || std::fs::read(owned)).await else {
        return format!("none published at {}", path.display());
    };
    let Some(view) = MapView::new(&bytes) else {
        return format!("{} is not a valid cache file", path.display());
    };
    let generation = view.generation();
    let now = Clock::new().unix_ms / 1000;
    let Some(hit) = view.get(table, &key) else {
        if view.complete_at(now) {
            return format!("absent from a complete mirror publication (generation {generation}): processes answer not found without asking the daemon");
        }
        return format!("miss (generation {generation}): processes ask the daemon");
    };
    let what = if hit.kind == ResponseKind::NotFound as u16 {
        "absent"
    } else {
        "found"
    };
    if hit.expires_unix_secs > now {
        format!(
            "hit (generation {generation}, {what}, expires_in_secs {})",
            hit.expires_unix_secs - now
        )
    } else {
        format!("expired (generation {generation}, {what}): processes ask the daemon")
    }
}

fn describe_answer(kind: ResponseKind, body: &[u8]) -> String {
    match ResponseRef::decode(kind as u16, body).and_then(|r| r.to_owned()) {
        Ok(Response::Passwd(p)) => format!(
            "{}:{}:{}:{}:{}:{}:{}",
            p.name, p.passwd, p.uid, p.gid, p.gecos, p.dir, p.shell
        ),
        Ok(Response::Group(g)) => {
            let shown: Vec<&str> = g.members.iter().take(20).map(String::as_str).collect();
            let more = g.members.len().saturating_sub(20);
            let tail = if more > 0 {
                format!(",... ({more} more)")
            } else {
                String::new()
            };
            format!(
                "{}:{}:{}:{}{tail}",
                g.name,
                g.passwd,
                g.gid,
                shown.join(",")
            )
        }
        Ok(Response::GroupIds(ids)) => format!("gids {ids:?}"),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("undecodable answer: {e}"),
    }
}

/// `key: value` lines, stable for scripts and probes.
pub fn status(r: &Daemon, started: Instant) -> String {
    let mut s = String::new();
    let dir = r.directory();
    let st = &r.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let (hits, misses) = (load(&st.hits), load(&st.misses));
    let server = dir.server_in_use();
    let _ = writeln!(s, "version: {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(s, "uptime_secs: {}", started.elapsed().as_secs());
    let _ = writeln!(s, "ready: {}", ready(r));
    let phase = match handover::lifecycle().phase() {
        Phase::Serving => "serving",
        Phase::HandingOver => "handing over",
        Phase::HandedOver => "handed over (draining)",
        Phase::Abandoned => "abandoned by the daemon that took over (stopping)",
    };
    let _ = writeln!(s, "phase: {phase}");
    let (up, since) = dir.reachable_since();
    let since_secs = std::time::SystemTime::now()
        .duration_since(since)
        .map_or(0, |d| d.as_secs());
    let _ = writeln!(
        s,
        "directory: {} (for {since_secs} s)",
        if up { "online" } else { "offline" }
    );
    let _ = writeln!(s, "server_in_use: {}", server.as_deref().unwrap_or("-"));
    for h in dir.health() {
        let _ = writeln!(
            s,
            "server: {} failures={} errors_total={} retry_in_ms={} last_error={}",
            h.uri,
            h.failures,
            h.errors_total,
            h.retry_in.map_or(0, |d| d.as_millis()),
            h.last_error.as_deref().unwrap_or("-")
        );
    }
    let [a, b, c, d, e] = r.cache_sizes();
    let _ = writeln!(s, "cache_entries: passwd_by_name={a} passwd_by_uid={b} group_by_name={c} group_by_gid={d} initgroups={e}");
    let _ = writeln!(
        s,
        "cache_bytes: {} (found entries, as [cache] max_mib counts them)",
        r.maps.bytes()
    );
    let _ = writeln!(s, "cache_expired_entries: {}", r.expired_entries());
    let _ = writeln!(
        s,
        "cache_file: generation={} entries={} bytes={} rebuilds={} patches={}",
        load(&st.map_generation),
        load(&st.map_entries),
        load(&st.map_bytes),
        load(&st.map_rebuilds),
        load(&st.map_patches)
    );
    let _ = writeln!(
        s,
        "requests: {} hits: {hits} misses: {misses} refreshes: {} stale_served: {} unavailable: {}",
        load(&st.requests),
        load(&st.refreshes),
        load(&st.stale_served),
        load(&st.unavailable)
    );
    let ratio = if hits + misses == 0 {
        0.0
    } else {
        hits as f64 / (hits + misses) as f64
    };
    let _ = writeln!(s, "hit_ratio: {ratio:.4}");
    let _ = writeln!(s, "directory_searches: {}", dir.search_count());
    match r.mirror.get() {
        Some(m) => m.status_lines(&mut s),
        None => {
            let _ = writeln!(s, "mirror_state: off");
        }
    }
    let ps = dir.pool_stats();
    let (open, ops) = dir.pool_load();
    let _ = writeln!(
        s,
        "directory_pool: connections={open} ops_in_flight={ops} opened_total={} retired_total={} timeouts_total={} failovers_total={}",
        load(&ps.opened),
        load(&ps.retired),
        load(&ps.timeouts),
        load(&ps.failovers)
    );
    let ad = &r.admission;
    let (slots, waiting) = ad.load();
    let _ = writeln!(
        s,
        "admission: slots_in_use={slots} waiting={waiting} queued_total={} queue_timeouts_total={} charged_total={} over_budget_total={}",
        load(&ad.stats.queued),
        load(&ad.stats.queue_timeouts),
        load(&ad.stats.charged),
        load(&ad.stats.over_budget)
    );
    let refused: Vec<String> = ad
        .refused_uids()
        .iter()
        .map(|(uid, n)| format!("{uid}={n}"))
        .collect();
    let _ = writeln!(
        s,
        "admission_over_budget_by_uid: {}",
        if refused.is_empty() {
            "-".to_owned()
        } else {
            refused.join(" ")
        }
    );
    let _ = writeln!(s, "connections: {}", load(&st.connections));
    s
}

/// One line per cached entry: map, key, answer, seconds to expiry (negative: expired).
pub fn dump(r: &Daemon) -> String {
    let mut s = String::new();
    let now = Instant::now();
    let left = |t: Instant| {
        if t >= now {
            (t - now).as_secs() as i64
        } else {
            -((now - t).as_secs() as i64)
        }
    };
    let mut lines = 0;
    let mut line = |s: &mut String, text: String| {
        if lines < MAX_DUMP_LINES {
            s.push_str(&text);
            s.push('\n');
        }
        lines += 1;
    };
    let m = &r.maps;
    for e in m.users_by_name.snapshot(now) {
        let what = e.value.map_or("absent".to_string(), |u| {
            format!("uid={} home={}", u.uid(), u.passwd().dir)
        });
        line(
            &mut s,
            format!(
                "passwd name={} {what} expires_in_secs={}",
                e.key,
                left(e.expires)
            ),
        );
    }
    for e in m.users_by_uid.snapshot(now) {
        let what = e
            .value
            .map_or("absent".to_string(), |u| format!("name={}", u.name()));
        line(
            &mut s,
            format!(
                "passwd uid={} {what} expires_in_secs={}",
                e.key,
                left(e.expires)
            ),
        );
    }
    for e in m.groups_by_name.snapshot(now) {
        let what = e.value.map_or("absent".to_string(), |g| {
            format!("gid={} members={}", g.gid(), g.members().count())
        });
        line(
            &mut s,
            format!(
                "group name={} {what} expires_in_secs={}",
                e.key,
                left(e.expires)
            ),
        );
    }
    for e in m.groups_by_gid.snapshot(now) {
        let what = e
            .value
            .map_or("absent".to_string(), |g| format!("name={}", g.name()));
        line(
            &mut s,
            format!(
                "group gid={} {what} expires_in_secs={}",
                e.key,
                left(e.expires)
            ),
        );
    }
    for e in m.initgroups.snapshot(now) {
        let what = e.value.map_or("absent".to_string(), |g| {
            format!("gids={:?}", g.gids().collect::<Vec<_>>())
        });
        line(
            &mut s,
            format!(
                "initgroups name={} {what} expires_in_secs={}",
                e.key,
                left(e.expires)
            ),
        );
    }
    if lines > MAX_DUMP_LINES {
        let _ = writeln!(s, "... {} more entries not shown", lines - MAX_DUMP_LINES);
    }
    s
}
