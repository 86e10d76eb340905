//! `toolforge-nssd --config FILE`: runs the daemon in the foreground, logging to stderr.
//! `toolforge-nssd --check-config FILE`: validates a configuration and exits.
//!
//! Signals: SIGTERM/SIGINT stop gracefully (the cache is saved, the published cache file
//! stays valid); SIGHUP re-reads the config (a bad one is refused and the running one kept);
//! SIGUSR2 starts a successor from the binary at the same path, which takes over (a gapless
//! upgrade under systemd, see `upgrade`).
//!
//! Started while another daemon serves the same runtime directory, it takes over from it
//! (`handover`): no gap for warm or cold lookups. A bad config is refused before anything is
//! touched, so the running daemon keeps serving.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{error, info, warn};

use toolforge_nss_config::{Config, LogFormat};
use toolforge_nss_protocol::mapfile::MapView;
use toolforge_nssd::directory::ldap::LdapDirectory;
use toolforge_nssd::handover::{self, Phase, Start};
use toolforge_nssd::publish::Publisher;
use toolforge_nssd::resolver::Resolver;
use toolforge_nssd::server::{self, Listener};
use toolforge_nssd::{admin, metrics, mirror, persist, privileges, sss, upgrade};

/// Caching LDAP name-service daemon for containers (serves libnss_toolforge.so.2).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/toolforge-nss/config.toml"
    )]
    config: PathBuf,
    /// Validate FILE and exit: 0 when valid, 1 with the reason when not.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// After handing over to a new daemon: `exit` (0), or `wait` for SIGTERM, drained and
    /// not ready (for supervisors that restart a process that exits, e.g. a Kubernetes pod);
    /// waiting, it exits 1 if the new daemon stops answering (so that it is started again).
    #[arg(long, value_enum, default_value = "exit")]
    after_handover: AfterHandover,
    /// On a clean stop, withdraw the published cache file (processes then ask the socket,
    /// and fail while no daemon runs). By default it stays valid until its entries expire.
    #[arg(long)]
    withdraw_on_stop: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum AfterHandover {
    Exit,
    Wait,
}

/// Set in the daemon's own environment: the NSS module answers UNAVAIL when it sees it, so any
/// lookup from inside the daemon can never recurse into the daemon.
const DISABLE_ENV: &str = "TOOLFORGE_NSS_DISABLE";

type Daemon = Resolver<LdapDirectory>;

/// How long a daemon whose takeover found the old daemon gone leaves the cache file the dead
/// one published in place before replacing it with its own, possibly far less complete one
/// (no cache handed over; the persisted one may be a minute old): longer than the
/// module's back-off after a failed connection (250 ms), so that processes which failed while
/// no daemon ran ask the socket again before entries move from the file to the socket.
const START_GRACE: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = args.check_config {
        return match Config::load(&path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    // Before any thread exists.
    std::env::set_var(DISABLE_ENV, "1");
    // The same for libnss_sss (SSSD's client returns NOTFOUND at once when it sees it).
    std::env::set_var("_SSS_LOOPS", "NO");
    toolforge_nssd::memory::tune_allocator();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("toolforge-nssd: refusing to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(config.daemon.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.daemon.worker_threads)
        .thread_name("toolforge-nssd")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args, config))
}

async fn run(args: Args, config: Config) -> ExitCode {
    let mut stops = StopSignals::install();
    let usr2 = signal(SignalKind::user_defined2()).ok();
    let path = args.config.clone();
    let directory = match LdapDirectory::new(&config.ldap) {
        Ok(d) => d,
        Err(e) => {
            error!("refusing to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let resolver = Resolver::new(directory, &config);
    let persisting = config.cache.persist_interval_secs > 0;
    // --- takeover (issue 14): before anything is bound or published.
    let lookup_socket = config.daemon.runtime_dir.join(server::SOCKET_NAME);
    let admin_socket = config.daemon.admin_dir.join(admin::SOCKET_NAME);
    let mut orphaned = false;
    let taken = tokio::task::spawn_blocking(move || handover::take(&lookup_socket, &admin_socket))
        .await
        .unwrap_or_else(|e| Err(format!("takeover task failed: {e}")));
    let takeover = match taken {
        Ok(Start::Fresh) => None,
        Ok(Start::Orphaned) => {
            orphaned = true;
            None
        }
        Ok(Start::Takeover(t)) => Some(t),
        Err(e) => {
            error!("refusing to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    restore_cache(&resolver, takeover.as_ref(), &config);
    // Every step that can fail comes before the sockets are taken over (SO_REUSEPORT: the
    // old daemon's metrics listener does not block this one).
    let metrics = match &config.metrics.listen {
        Some(addr) => match metrics::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                error!("refusing to start: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    // Publish before dropping privileges (which hands the file to run_as_uid). Taking over:
    // before the sockets, so that warm answers never lapse. Otherwise after the socket: a
    // file left by a killed daemon keeps answering until this daemon can answer what a
    // less complete cache (say, none persisted yet) leaves out.
    let publisher =
        Publisher::new(&config.daemon.runtime_dir, config.cache.map_file_max_mib).map(Arc::new);
    let taking_over = takeover.is_some();
    if taking_over {
        publish_at_start(&publisher, &resolver).await;
    }
    // Every check that can refuse the start comes before the first socket is taken over: a
    // new daemon that refuses after renaming a socket over the old daemon's would leave that
    // socket dead. The admin directory's check first.
    if let Err(e) = privileges::check_private_dir(&config.daemon.admin_dir) {
        error!("refusing to start: {e}");
        return ExitCode::FAILURE;
    }
    // SSSD compatibility socket (issue 15): bound before the privilege drop, and taken over
    // from a running daemon like the other two.
    let sss_listener = match sss::bind_for(&config, taking_over) {
        Ok(l) => l,
        Err(e) => {
            error!("refusing to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The admin socket before the lookup socket: the old daemon decides by the lookup socket.
    let admin = match if taking_over {
        Listener::take_over_at(&config.daemon.admin_dir, 0o700, admin::SOCKET_NAME, 0o600)
    } else {
        Listener::bind_at(&config.daemon.admin_dir, 0o700, admin::SOCKET_NAME, 0o600)
    }
    .map_err(|e| e.to_string())
    {
        Ok(l) => l,
        Err(e) => {
            error!("refusing to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match if taking_over {
        Listener::take_over_at(
            &config.daemon.runtime_dir,
            0o755,
            server::SOCKET_NAME,
            0o666,
        )
    } else {
        Listener::bind(&config.daemon.runtime_dir)
    } {
        Ok(l) => l,
        Err(e) => {
            error!("refusing to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Taking over, the three are bound under temporary names: only now that all are ready
    // are the old daemon's replaced, the lookup socket last (the old daemon decides by it).
    // A failure before leaves the old daemon's sockets as they were.
    let (mut sss_listener, mut admin, mut listener) = (sss_listener, admin, listener);
    for l in sss_listener.iter_mut().chain([&mut admin, &mut listener]) {
        if let Err(e) = l.put_in_place() {
            error!("refusing to start: {e}");
            return ExitCode::FAILURE;
        }
    }
    // A start after the old daemon died during the takeover keeps the file it left in place a
    // little (see START_GRACE); otherwise publish at once.
    let left_behind = orphaned
        && publisher
            .as_ref()
            .is_some_and(|p| std::fs::read(p.path()).is_ok_and(|b| MapView::new(&b).is_some()));
    let first_publication = if left_behind {
        info!(grace = ?START_GRACE, "a cache file was left behind: it answers a while longer");
        START_GRACE
    } else {
        if !taking_over {
            publish_at_start(&publisher, &resolver).await;
        }
        Duration::ZERO
    };
    // --- end takeover
    if let Some(uid) = config.daemon.run_as_uid {
        let gid = config.daemon.run_as_gid.unwrap_or(uid);
        let own = [
            config.daemon.runtime_dir.as_path(),
            config.daemon.cache_dir.as_path(),
        ];
        match privileges::drop_to(uid, gid, &own) {
            Ok(()) => info!(uid, gid, "running unprivileged"),
            Err(e) => {
                error!("refusing to start: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let started = std::time::Instant::now();
    if let Some(t) = takeover {
        // systemd learns the new main pid before the old daemon is told to exit: were it
        // to exit first, systemd would take the service for stopped and kill this one.
        upgrade::notify_ready(true);
        // Our sockets are in place: the old daemon drains and exits.
        let drains = tokio::task::spawn_blocking(move || t.finish())
            .await
            .unwrap_or(false);
        info!(old_daemon_drains = drains, "took over");
    } else {
        upgrade::notify_ready(false);
    }
    tokio::spawn(successor_on_sigusr2(usr2));
    if let Some(p) = &publisher {
        tokio::spawn(publish_periodically(
            p.clone(),
            resolver.clone(),
            Duration::from_millis(config.cache.map_publish_delay_ms),
            first_publication,
        ));
    }
    tokio::spawn(admin::serve(
        admin,
        resolver.clone(),
        started,
        publisher.clone(),
        listener.id(),
    ));
    let warm = resolver.directory();
    tokio::spawn(async move { warm.warm_up().await });
    if let Some(l) = metrics {
        tokio::spawn(metrics::serve(l, resolver.clone()));
    }
    let (users, groups) = (
        config.daemon.prefetch_users.clone(),
        config.daemon.prefetch_groups.clone(),
    );
    if !users.is_empty() || !groups.is_empty() {
        tokio::spawn(prefetch(resolver.clone(), users, groups));
    }
    info!(
        version = env!("CARGO_PKG_VERSION"),
        servers = ?config.ldap.uri,
        schema = ?config.ldap.schema,
        "toolforge-nssd started"
    );
    tokio::spawn(fail_back(resolver.clone()));
    let r = resolver.clone();
    tokio::spawn(toolforge_nssd::memory::trim_periodically(
        move || {
            r.stats
                .generation
                .load(std::sync::atomic::Ordering::Relaxed)
        },
        std::time::Duration::from_secs(5),
    ));
    let mirrors = mirror::control::Control::new(resolver.clone(), &config);
    if config.mirror.enabled {
        mirrors.start().await;
    }
    tokio::spawn(reload_on_sighup(
        resolver.clone(),
        mirrors,
        path,
        config.clone(),
    ));
    if persisting {
        tokio::spawn(persist_periodically(
            resolver.clone(),
            config.daemon.cache_dir.clone(),
            Duration::from_secs(config.cache.persist_interval_secs),
        ));
    }
    // --- stop (issue 14): a signal, or another daemon took over.
    let life = handover::lifecycle();
    let stop = async {
        tokio::select! {
            _ = stops.recv() => {}
            _ = life.must_stop() => {}
        }
    };
    let sss_server = sss_listener.map(|l| sss::SssServer::start(l, resolver.clone(), &config));
    server::serve(listener, resolver.clone(), &config, stop).await;
    if let Some(s) = sss_server {
        s.stop().await;
    }
    // A signal during a takeover: let it settle, so as not to save over the new daemon's cache.
    life.settled().await;
    if life.phase() == Phase::HandedOver {
        if let Some(p) = &publisher {
            p.retire();
        }
        info!("handed over to the new daemon; nothing more is published or saved");
        if args.after_handover == AfterHandover::Wait {
            info!("waiting for SIGTERM (--after-handover wait)");
            let socket = config.daemon.runtime_dir.join(server::SOCKET_NAME);
            tokio::select! {
                _ = stops.recv() => {}
                _ = successor_gone(&socket) => {
                    warn!("the daemon that took over no longer answers; exiting so that this one is started again");
                    return ExitCode::FAILURE;
                }
            }
        }
        info!("stopped");
        return ExitCode::SUCCESS;
    }
    if let Some(p) = publisher {
        // Wait for a publication under way, then stop publishing.
        let _writing = life.may_write().await;
        if args.withdraw_on_stop {
            p.withdraw();
            info!("cache file withdrawn (--withdraw-on-stop)");
        } else {
            p.retire();
        }
    }
    if persisting {
        save(&resolver, &config.daemon.cache_dir).await;
    }
    if let Some(m) = resolver.mirror.get() {
        m.save().await;
    }
    info!("stopped");
    if life.phase() == Phase::Abandoned {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Logs to stderr: text (no colours unless a terminal; no timestamps under journald, which
/// adds its own) or JSON lines. The level comes from `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text if std::env::var_os("JOURNAL_STREAM").is_some() => {
            builder.with_ansi(false).without_time().init()
        }
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// Looks the configured users (with their groups) and groups up once at start.
async fn prefetch(resolver: Arc<Daemon>, users: Vec<String>, groups: Vec<String>) {
    use toolforge_nss_protocol::Request;
    use toolforge_nssd::admission::Caller::Internal;
    let n = users.len() + groups.len();
    for u in users {
        resolver
            .resolve(Request::GetPwNam(u.clone()), Internal)
            .await;
        resolver.resolve(Request::InitGroups(u), Internal).await;
    }
    for g in groups {
        resolver.resolve(Request::GetGrNam(g), Internal).await;
    }
    info!(entries = n, "prefetch done");
}

async fn fail_back(resolver: Arc<Daemon>) {
    loop {
        let dir = resolver.directory();
        tokio::time::sleep(dir.failback_interval()).await;
        dir.fail_back().await;
    }
}

/// Fills the cache from what the old daemon handed over (when in a format this daemon
/// reads), else from the persisted cache (when persistence is on).
fn restore_cache(resolver: &Arc<Daemon>, takeover: Option<&handover::Takeover>, config: &Config) {
    let persisting = config.cache.persist_interval_secs > 0;
    let handed = takeover.and_then(|t| {
        info!(old_version = %t.version, "taking over from the running daemon");
        if t.cache.is_none() {
            warn!(
                old_cache_format = t.cache_format,
                this_cache_format = persist::FORMAT,
                "the running daemon's cache is in another format; loading the persisted cache instead"
            );
        }
        t.cache.as_deref()
    });
    let loaded = match handed {
        Some(bytes) => match persist::decode(resolver, bytes) {
            Ok(l) => {
                info!(
                    records = l.records,
                    refused_by_policy = l.refused,
                    "loaded the handed-over cache"
                );
                Some(l)
            }
            Err(e) => {
                warn!("handed-over cache unusable: {e}");
                resolver.maps_clear();
                None
            }
        },
        None => None,
    };
    let loaded = match loaded {
        Some(l) => Some(l),
        None if persisting => match persist::load(resolver, &config.daemon.cache_dir) {
            Ok(Some(l)) => {
                info!(
                    records = l.records,
                    refused_by_policy = l.refused,
                    "loaded the persisted cache"
                );
                Some(l)
            }
            Ok(None) => {
                info!(dir = %config.daemon.cache_dir.display(), "no persisted cache yet");
                None
            }
            Err(e) => {
                warn!("persisted cache unusable: {e}");
                None
            }
        },
        None => None,
    };
    if loaded.is_some_and(|l| l.records > l.refused) {
        resolver
            .stats
            .loaded_from_disk
            .store(true, Ordering::Relaxed);
    }
}

/// The first publication: it also supersedes a file a previous run (or the daemon taken over
/// from) left behind.
async fn publish_at_start(publisher: &Option<Arc<Publisher>>, resolver: &Arc<Daemon>) {
    if let Some(p) = publisher {
        admin::publish_now(p.clone(), resolver.clone()).await;
        info!(file = %p.path().display(), "publishing the shared cache file");
    }
}

/// Saves the persisted cache, unless this daemon is handing over (the new one owns the file).
async fn save(resolver: &Arc<Daemon>, dir: &Path) {
    let Some(_writing) = handover::lifecycle().may_write().await else {
        return;
    };
    let bytes = persist::encode(resolver);
    let dir = dir.to_owned();
    let len = bytes.len();
    match tokio::task::spawn_blocking(move || persist::save(&bytes, &dir)).await {
        Ok(Ok(())) => info!(bytes = len, "cache persisted"),
        Ok(Err(e)) => warn!(error = %e, "cannot persist the cache"),
        Err(e) => warn!(error = %e, "cache persistence task failed"),
    }
}

async fn persist_periodically(resolver: Arc<Daemon>, dir: PathBuf, every: Duration) {
    let mut saved = resolver.stats.generation.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(every).await;
        let now = resolver.stats.generation.load(Ordering::Relaxed);
        if now != saved {
            save(&resolver, &dir).await;
            saved = now;
        }
    }
}

/// Republishes the cache file `delay` after the cache changed (changes meanwhile are
/// published together), then rests nine times as long as the publication took, so that
/// publishing costs at most a tenth of a core however fast the cache changes. A change that
/// comes while it rests and that a patch can carry (mirror mode: its cost is the keys it
/// affected, not the directory) is published at once all the same, and then rests nine
/// times as long as that publication took in turn (a patch of a large group, or one that had
/// to be whole). The first publication waits `first`.
async fn publish_periodically(
    publisher: Arc<Publisher>,
    resolver: Arc<Daemon>,
    delay: Duration,
    first: Duration,
) {
    if !first.is_zero() {
        tokio::time::sleep(first).await;
        admin::publish_now(publisher.clone(), resolver.clone()).await;
    }
    let mut pending = false;
    loop {
        if !pending {
            resolver.stats.change.notified().await;
        }
        pending = false;
        let pace = publish_after(&publisher, &resolver, delay).await;
        let rested = tokio::time::Instant::now() + pace;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(rested) => break,
                _ = resolver.stats.change.notified() => {
                    if publisher.can_patch(&resolver) {
                        // Patches are paced too: a patch of a large group, or one that found
                        // no room (or met a change that is not patchable) and so was a whole
                        // publication, rests nine times its cost (a cheap patch, less
                        // than `delay`, is not held back).
                        let rest = publish_after(&publisher, &resolver, delay).await;
                        if rest > delay {
                            tokio::time::sleep(rest).await;
                        }
                    } else {
                        // Published when the rest is over (or by a patch before).
                        pending = true;
                    }
                }
            }
        }
    }
}

/// Publishes `delay` from now; returns how long to rest after: nine times what the
/// publication took, at most [`mirror::publish::MAX_PACE`] in mirror mode (a change must
/// reach every container within about a second even when it needs a whole publication).
async fn publish_after(
    publisher: &Arc<Publisher>,
    resolver: &Arc<Daemon>,
    delay: Duration,
) -> Duration {
    tokio::time::sleep(delay).await;
    let started = std::time::Instant::now();
    admin::publish_now(publisher.clone(), resolver.clone()).await;
    let pace = started.elapsed() * 9;
    if resolver.mirror.get().is_some_and(|m| m.is_complete()) {
        pace.min(mirror::publish::MAX_PACE)
    } else {
        pace
    }
}

async fn reload_on_sighup(
    resolver: Arc<Daemon>,
    mirrors: mirror::control::Control<LdapDirectory>,
    path: PathBuf,
    mut running: Config,
) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        error!("cannot install the SIGHUP handler; reload needs a restart");
        return;
    };
    while hup.recv().await.is_some() {
        info!(config = %path.display(), "SIGHUP: reloading the configuration");
        let new = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                error!("reload refused, keeping the running configuration: {e}");
                continue;
            }
        };
        // The queue timeout applies in place; the rest of [ldap] makes a new directory.
        let ldap_changed = {
            let (mut a, mut b) = (new.ldap.clone(), running.ldap.clone());
            a.queue_timeout_ms = 0;
            b.queue_timeout_ms = 0;
            a != b
        };
        let directory = if ldap_changed {
            match LdapDirectory::new(&new.ldap) {
                Ok(d) => Some(d),
                Err(e) => {
                    error!("reload refused, keeping the running configuration: {e}");
                    continue;
                }
            }
        } else {
            // Same settings: the password and CA files may have been rotated.
            if let Err(e) = resolver.directory().reload_credentials() {
                error!("credentials not reloaded, keeping the running ones: {e}");
            }
            None
        };
        // The query budget applies in place; the rest of [daemon] after a restart.
        let (mut a, mut b) = (new.daemon.clone(), running.daemon.clone());
        (a.miss_queries_per_uid_per_sec, a.miss_query_burst_per_uid) = (0, 0);
        (b.miss_queries_per_uid_per_sec, b.miss_query_burst_per_uid) = (0, 0);
        if a != b {
            warn!("[daemon] settings changed: they apply after a restart");
        }
        let (a, b) = (&new.cache, &running.cache);
        if (
            a.max_entries,
            a.refresh_ahead_percent,
            a.max_stale_secs,
            a.persist_interval_secs,
        ) != (
            b.max_entries,
            b.refresh_ahead_percent,
            b.max_stale_secs,
            b.persist_interval_secs,
        ) {
            warn!("cache.max_entries, refresh_ahead_percent, max_stale_secs and persist_interval_secs apply after a restart");
        }
        let flush = ldap_changed || new.policy != running.policy;
        resolver.reload(&new, directory, flush);
        // [mirror] and the [ldap] it reads: a new mirror replaces the old one once loaded.
        mirrors.reload(&new);
        info!(
            directory_changed = ldap_changed,
            cache_flushed = flush,
            "configuration reloaded"
        );
        // What applies only after a restart stays as it runs, so that a later reload still
        // says it has not applied.
        let mut applied = new;
        let budget = (
            applied.daemon.miss_queries_per_uid_per_sec,
            applied.daemon.miss_query_burst_per_uid,
        );
        applied.daemon = running.daemon.clone();
        (
            applied.daemon.miss_queries_per_uid_per_sec,
            applied.daemon.miss_query_burst_per_uid,
        ) = budget;
        let (a, b) = (&mut applied.cache, &running.cache);
        a.max_entries = b.max_entries;
        a.refresh_ahead_percent = b.refresh_ahead_percent;
        a.max_stale_secs = b.max_stale_secs;
        a.persist_interval_secs = b.persist_interval_secs;
        running = applied;
    }
}

/// Resolves once nothing has answered on `socket` for three checks a second apart (the
/// daemon that took over is gone: a handed-over daemon waiting for SIGTERM then exits, and
/// its supervisor starts it again).
async fn successor_gone(socket: &Path) {
    let mut misses = 0;
    while misses < 3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            misses = 0;
        } else {
            misses += 1;
        }
    }
}

/// SIGUSR2: start a successor that takes over (ignored once this daemon is handing over).
async fn successor_on_sigusr2(usr2: Option<Signal>) {
    let Some(mut usr2) = usr2 else {
        error!("cannot install the SIGUSR2 handler; upgrade by restarting");
        return;
    };
    while usr2.recv().await.is_some() {
        if handover::lifecycle().phase() == Phase::Serving {
            upgrade::start_successor();
        }
    }
}

/// SIGTERM and SIGINT, registered first thing, so that a stop asked for during start-up
/// waits for it instead of killing the daemon with its sockets half in place.
struct StopSignals {
    term: Option<Signal>,
    int: Option<Signal>,
}

impl StopSignals {
    fn install() -> StopSignals {
        StopSignals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    async fn recv(&mut self) {
        let (Some(term), Some(int)) = (self.term.as_mut(), self.int.as_mut()) else {
            error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
        }
    }
}
