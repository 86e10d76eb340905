//! An optional Prometheus text endpoint (`[metrics] listen`): `GET /metrics` answers the
//! counters below; anything else gets 404. Requests are bounded (8 KiB, 2 s) like any other
//! input, and the endpoint only reads.
//!
//! The same listener answers this daemon's probes (Kubernetes `httpGet`, one pod's own
//! address): `GET /readyz` 200 when this daemon answers lookups (a server answered once or a
//! cache was loaded) and is not handing over, 503 otherwise; `GET /livez` 200 when the
//! runtime, the blocking pool and the cache locks respond within 2 s, whether the directory
//! is reachable or not (an outage must not restart the daemon), 503 when they do not.
//!
//! The listener is bound with `SO_REUSEPORT`, so a daemon taking over binds the same address
//! while the old one still holds it.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::admin::ready;
use crate::directory::ldap::LdapDirectory;
use crate::resolver::{Resolver, MAPS, RESULTS};

type Daemon = Resolver<LdapDirectory>;

fn metric(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        s,
        "# HELP toolforge_nss_{name} {help}\n# TYPE toolforge_nss_{name} {kind}"
    );
}

/// The exposition text.
pub fn render(r: &Daemon) -> String {
    let mut s = String::with_capacity(4096);
    let st = &r.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let dir = r.directory();

    metric(
        &mut s,
        "lookups_total",
        "counter",
        "Lookups answered, by map and result.",
    );
    for (m, map) in MAPS.iter().enumerate() {
        for (k, result) in RESULTS.iter().enumerate() {
            let _ = writeln!(
                s,
                "toolforge_nss_lookups_total{{map=\"{map}\",result=\"{result}\"}} {}",
                load(&st.lookups[m][k])
            );
        }
    }
    for (name, help, v) in [
        (
            "cache_hits_total",
            "Answers from the cache within their TTL.",
            load(&st.hits),
        ),
        (
            "cache_misses_total",
            "Lookups that asked the directory.",
            load(&st.misses),
        ),
        (
            "cache_refreshes_total",
            "Background refreshes started (refresh-ahead).",
            load(&st.refreshes),
        ),
        (
            "cache_stale_total",
            "Expired answers served because the directory did not answer.",
            load(&st.stale_served),
        ),
        (
            "cache_generation",
            "Changes to the cache since start (persistence saves when it moves).",
            load(&st.generation),
        ),
        (
            "cache_file_generation",
            "Generation of the shared cache file last published (0: none).",
            load(&st.map_generation),
        ),
        (
            "cache_file_entries",
            "Entries in the shared cache file last published.",
            load(&st.map_entries),
        ),
        (
            "cache_file_bytes",
            "Size of the shared cache file last published.",
            load(&st.map_bytes),
        ),
        (
            "cache_file_rebuilds_total",
            "Publications of the shared cache file built whole.",
            load(&st.map_rebuilds),
        ),
        (
            "cache_file_patches_total",
            "Publications of the shared cache file made by patching the keys a mirror change affected in place.",
            load(&st.map_patches),
        ),
        (
            "directory_searches_total",
            "LDAP searches sent.",
            dir.search_count(),
        ),
        (
            "directory_connections_opened_total",
            "Directory connections opened (pool).",
            load(&dir.pool_stats().opened),
        ),
        (
            "directory_connections",
            "Directory connections open now (pool).",
            dir.pool_load().0 as u64,
        ),
        (
            "directory_timeouts_total",
            "Directory operations abandoned after search_timeout_ms.",
            load(&dir.pool_stats().timeouts),
        ),
        (
            "directory_failovers_total",
            "Operations moved to another server by result code 51, 52, 53 or 80.",
            load(&dir.pool_stats().failovers),
        ),
        (
            "admission_over_budget_total",
            "Misses refused because their peer uid spent its query budget.",
            load(&r.admission.stats.over_budget),
        ),
        (
            "admission_queue_timeouts_total",
            "Directory operations that found no slot within queue_timeout_ms.",
            load(&r.admission.stats.queue_timeouts),
        ),
        (
            "admission_queued_total",
            "Directory operations that waited in the fair queue.",
            load(&r.admission.stats.queued),
        ),
        (
            "admission_waiting",
            "Directory operations waiting in the fair queue now.",
            r.admission.load().1 as u64,
        ),
    ] {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        metric(&mut s, name, kind, help);
        let _ = writeln!(s, "toolforge_nss_{name} {v}");
    }
    metric(&mut s, "cache_entries", "gauge", "Entries per cache map.");
    let names = [
        "passwd_by_name",
        "passwd_by_uid",
        "group_by_name",
        "group_by_gid",
        "initgroups",
    ];
    for (name, n) in names.iter().zip(r.cache_sizes()) {
        let _ = writeln!(s, "toolforge_nss_cache_entries{{map=\"{name}\"}} {n}");
    }
    metric(
        &mut s,
        "cache_bytes",
        "gauge",
        "Bytes of found entries, as [cache] max_mib counts them.",
    );
    let _ = writeln!(s, "toolforge_nss_cache_bytes {}", r.maps.bytes());
    metric(
        &mut s,
        "directory_search_seconds",
        "histogram",
        "Latency of LDAP searches that got an answer.",
    );
    let (buckets, count, sum) = dir.search_times.read();
    for (le, n) in buckets {
        let _ = writeln!(
            s,
            "toolforge_nss_directory_search_seconds_bucket{{le=\"{le}\"}} {n}"
        );
    }
    let _ = writeln!(
        s,
        "toolforge_nss_directory_search_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(s, "toolforge_nss_directory_search_seconds_sum {sum}");
    let _ = writeln!(s, "toolforge_nss_directory_search_seconds_count {count}");
    metric(
        &mut s,
        "directory_errors_total",
        "counter",
        "Connect, bind, I/O and timeout failures, by server.",
    );
    for h in dir.health() {
        let _ = writeln!(
            s,
            "toolforge_nss_directory_errors_total{{server=\"{}\"}} {}",
            h.uri, h.errors_total
        );
    }
    metric(
        &mut s,
        "directory_up",
        "gauge",
        "1 when a directory server is reachable.",
    );
    let _ = writeln!(
        s,
        "toolforge_nss_directory_up {}",
        u8::from(dir.reachable_since().0)
    );
    metric(&mut s, "connections", "gauge", "Client connections open.");
    let _ = writeln!(s, "toolforge_nss_connections {}", load(&st.connections));
    metric(
        &mut s,
        "ready",
        "gauge",
        "1 when the daemon can answer (directory reached once or cache loaded).",
    );
    let _ = writeln!(s, "toolforge_nss_ready {}", u8::from(ready(r)));
    if let Some(m) = r.mirror.get() {
        m.metrics_lines(&mut s);
    }
    s
}

/// Serves `GET /metrics` on `listener` for the life of the process.
pub async fn serve(listener: TcpListener, resolver: Arc<Daemon>) {
    info!(address = ?listener.local_addr().ok(), "serving metrics");
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let resolver = resolver.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            let read = tokio::time::timeout(Duration::from_secs(2), async {
                while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let req = &buf[..n];
            let is = |path: &[u8]| {
                req.strip_prefix(b"GET ".as_slice())
                    .and_then(|r| r.strip_prefix(path))
                    .is_some_and(|r| r.starts_with(b" ") || r.starts_with(b"?"))
            };
            let response = if is(b"/metrics") {
                let body = render(&resolver);
                format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            } else if is(b"/readyz") {
                probe_answer(ready(&resolver), "ready")
            } else if is(b"/livez") {
                probe_answer(alive(&resolver).await, "alive")
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                stream.write_all(response.as_bytes()),
            )
            .await;
        });
    }
}

fn probe_answer(ok: bool, what: &str) -> String {
    let (status, body) = if ok {
        ("200 OK", what.to_string())
    } else {
        ("503 Service Unavailable", format!("not {what}"))
    };
    format!("HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}\n", body.len() + 1)
}

/// Whether the daemon is not hung: a blocking task that takes every cache lock finishes
/// within 2 s. Never asks the directory.
async fn alive(r: &Arc<Daemon>) -> bool {
    let r = r.clone();
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::task::spawn_blocking(move || r.cache_sizes())
        )
        .await,
        Ok(Ok(_))
    )
}

/// Binds the metrics address with `SO_REUSEPORT` (a daemon taking over shares it with the old
/// one until that exits); a bind failure refuses the start, as any bad config would.
pub async fn bind(addr: &str) -> Result<TcpListener, String> {
    let fail = |e: std::io::Error| format!("metrics.listen = {addr:?}: {e}");
    let parsed: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| format!("metrics.listen = {addr:?}: {e}"))?;
    let socket = if parsed.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(fail)?;
    socket.set_reuseaddr(true).map_err(fail)?;
    socket.set_reuseport(true).map_err(fail)?;
    socket.bind(parsed).map_err(fail)?;
    socket
        .listen(128)
        .map_err(fail)
        .inspect_err(|e| warn!("{e}"))
}
