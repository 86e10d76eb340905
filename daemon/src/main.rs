//! `toolforge-nssd --config FILE`: runs the daemon in the foreground, logging to stderr.
//! `toolforge-nssd --check-config FILE`: validates a configuration and exits.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tracing::{error, info};

use toolforge_nss_config::Config;
use toolforge_nssd::ldap::LdapDirectory;
use toolforge_nssd::resolver::Resolver;
use toolforge_nssd::server::{self, Listener};

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
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            error!("refusing to start: {e}");
            return ExitCode::FAILURE;
        }
    };
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
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    let directory = match LdapDirectory::new(&config.ldap) {
        Ok(d) => d,
        Err(e) => {
            error!("refusing to start: ldap.bind_password_file: {e}");
            return ExitCode::FAILURE;
        }
    };
    let resolver = Arc::new(Resolver::new(directory, &config));
    let listener = match Listener::bind(&config.daemon.runtime_dir) {
        Ok(l) => l,
        Err(e) => {
            error!("refusing to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    info!(
        version = env!("CARGO_PKG_VERSION"),
        servers = ?config.ldap.uri,
        schema = ?config.ldap.schema,
        "toolforge-nssd started"
    );
    server::serve(listener, resolver, &config, shutdown_signal()).await;
    info!("stopped");
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
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
