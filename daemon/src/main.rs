//! `toolforge-nssd --config FILE`: runs the daemon in the foreground, logging to stderr.
//! `toolforge-nssd --check-config FILE`: validates a configuration and exits.
//!
//! Signals: SIGTERM/SIGINT stop gracefully (the cache is saved); SIGHUP re-reads the config
//! (a bad one is refused and the running one kept).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use toolforge_nss_config::{Config, LogFormat};
use toolforge_nssd::directory::ldap::LdapDirectory;
use toolforge_nssd::publish::Publisher;
use toolforge_nssd::resolver::Resolver;
use toolforge_nssd::server::{self, Listener};
use toolforge_nssd::{admin, metrics, persist, privileges};

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
}

/// Set in the daemon's own environment: the NSS module answers UNAVAIL when it sees it, so any
/// lookup from inside the daemon can never recurse into the daemon.
const DISABLE_ENV: &str = "TOOLFORGE_NSS_DISABLE";

type Daemon = Resolver<LdapDirectory>;

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
    runtime.block_on(run(args.config, config))
}

async fn run(path: PathBuf, config: Config) -> ExitCode {
    let directory = match LdapDirectory::new(&config.ldap) {
        Ok(d) => d,
        Err(e) => {
            error!("refusing to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let resolver = Resolver::new(directory, &config);
    let persisting = config.cache.persist_interval_secs > 0;
    if persisting {
        match persist::load(&resolver, &config.daemon.cache_dir) {
            Ok(Some(l)) => {
                info!(
                    records = l.records,
                    refused_by_policy = l.refused,
                    "loaded the persisted cache"
                );
                if l.records > l.refused {
                    resolver
                        .stats
                        .loaded_from_disk
                        .store(true, Ordering::Relaxed);
                }
            }
            Ok(None) => info!(dir = %config.daemon.cache_dir.display(), "no persisted cache yet"),
            Err(e) => warn!("persisted cache unusable: {e}"),
        }
    }
    let listener = match Listener::bind(&config.daemon.runtime_dir) {
        Ok(l) => l,
        Err(e) => {
            error!("refusing to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let admin = match privileges::check_private_dir(&config.daemon.admin_dir).and_then(|()| {
        Listener::bind_at(&config.daemon.admin_dir, 0o700, admin::SOCKET_NAME, 0o600)
            .map_err(|e| e.to_string())
    }) {
        Ok(l) => l,
        Err(e) => {
            error!("refusing to start: {e}");
            return ExitCode::FAILURE;
        }
    };
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
    let publisher =
        Publisher::new(&config.daemon.runtime_dir, config.cache.map_file_max_mib).map(Arc::new);
    if let Some(p) = &publisher {
        // At once: this also supersedes a file a previous run left behind.
        admin::publish_now(p.clone(), resolver.clone()).await;
        info!(file = %p.path().display(), "publishing the shared cache file");
        tokio::spawn(publish_periodically(
            p.clone(),
            resolver.clone(),
            Duration::from_millis(config.cache.map_publish_delay_ms),
        ));
    }
    tokio::spawn(admin::serve(
        admin,
        resolver.clone(),
        started,
        publisher.clone(),
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
    tokio::spawn(reload_on_sighup(resolver.clone(), path, config.clone()));
    if persisting {
        tokio::spawn(persist_periodically(
            resolver.clone(),
            config.daemon.cache_dir.clone(),
            Duration::from_secs(config.cache.persist_interval_secs),
        ));
    }
    server::serve(listener, resolver.clone(), &config, shutdown_signal()).await;
    if let Some(p) = publisher {
        p.withdraw();
    }
    if persisting {
        save(&resolver, &config.daemon.cache_dir).await;
    }
    info!("stopped");
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
    let n = users.len() + groups.len();
    for u in users {
        resolver.resolve(Request::GetPwNam(u.clone())).await;
        resolver.resolve(Request::InitGroups(u)).await;
    }
    for g in groups {
        resolver.resolve(Request::GetGrNam(g)).await;
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

async fn save(resolver: &Arc<Daemon>, dir: &Path) {
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
/// published together), then rests nine times as long as the build took, so that publishing
/// costs at most a tenth of a core however fast the cache changes.
async fn publish_periodically(publisher: Arc<Publisher>, resolver: Arc<Daemon>, delay: Duration) {
    loop {
        resolver.stats.change.notified().await;
        tokio::time::sleep(delay).await;
        let started = std::time::Instant::now();
        admin::publish_now(publisher.clone(), resolver.clone()).await;
        tokio::time::sleep(started.elapsed() * 9).await;
    }
}

async fn reload_on_sighup(resolver: Arc<Daemon>, path: PathBuf, mut running: Config) {
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
        let ldap_changed = new.ldap != running.ldap;
        let directory = if ldap_changed {
            match LdapDirectory::new(&new.ldap) {
                Ok(d) => Some(d),
                Err(e) => {
                    error!("reload refused, keeping the running configuration: {e}");
                    continue;
                }
            }
        } else {
            None
        };
        if new.daemon != running.daemon {
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
        info!(
            directory_changed = ldap_changed,
            cache_flushed = flush,
            "configuration reloaded"
        );
        running = new;
    }
}

async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
}
