//! `toolforge-nssctl`: status, explained lookups and cache control for `toolforge-nssd`, over
//! its admin socket (root only), in the manner of SSSD's `sssctl` and `sss_cache`.
//!
//! Exit codes: 0 success (for `status`: ready); 1 not ready, refused or not found; 2 the
//! daemon cannot be reached or the arguments are wrong.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use toolforge_nss_config::Config;
use toolforge_nss_protocol::admin::{AdminRequest, AdminResponse, Map, Scope};
use toolforge_nss_protocol::{Header, HEADER_LEN, MAX_RESPONSE_BODY};

const DEFAULT_CONFIG: &str = "/etc/toolforge-nss/config.toml";
const DEFAULT_ADMIN_SOCKET: &str = "/run/toolforge-nss-admin/admin.socket";

/// Operate and debug toolforge-nssd (the toolforge-nss node daemon).
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Talks to the daemon's admin socket, which only root may use."
)]
struct Cli {
    /// The admin socket (default: from --config, else /run/toolforge-nss-admin/admin.socket).
    #[arg(long, global = true, value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    /// The daemon's config, to find the admin socket.
    #[arg(long, global = true, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Directory server, online/offline, cache entries, hit ratio, stale answers, uptime.
    /// Exits 0 when ready to answer, 1 when not (usable as a Kubernetes probe).
    Status,
    /// Look a user, group or group list up as the module would, through the daemon.
    Lookup {
        map: MapArg,
        /// Name, or uid/gid for passwd and group.
        key: String,
        /// Also say where the answer came from: cache state, age and expiry, server,
        /// LDAP filters, directory searches made and time taken.
        #[arg(long)]
        explain: bool,
    },
    /// Cache control.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Validate a configuration file (exit 0 when valid).
    CheckConfig { file: PathBuf },
}

#[derive(Subcommand, Debug)]
enum CacheCommand {
    /// Drop cached answers: everything, or one user or group (and the group lists that
    /// depend on them); the next lookup asks the directory.
    Invalidate(InvalidateArgs),
    /// Every cached entry with its expiry (negative: expired, served only while offline).
    Dump,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct InvalidateArgs {
    /// Every cached answer.
    #[arg(long)]
    all: bool,
    /// One user: by name, by uid, and its group list.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// One group: by name, by gid, and its members' group lists.
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MapArg {
    Passwd,
    Group,
    Initgroups,
}

fn admin_socket(cli: &Cli) -> PathBuf {
    if let Some(p) = &cli.admin_socket {
        return p.clone();
    }
    match Config::load(&cli.config) {
        Ok(c) => c.daemon.admin_dir.join("admin.socket"),
        Err(_) => PathBuf::from(DEFAULT_ADMIN_SOCKET),
    }
}

/// One admin request; `Err((exit code, message))`.
fn ask(socket: &Path, req: &AdminRequest) -> Result<AdminResponse, (u8, String)> {
    let unreachable = |e: std::io::Error| {
        (
            2,
            format!("cannot reach the daemon at {}: {e}", socket.display()),
        )
    };
    let mut s = UnixStream::connect(socket).map_err(unreachable)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(unreachable)?;
    let written = s.write_all(&req.encode(1));
    let mut head = [0u8; HEADER_LEN];
    if let Err(e) = s.read_exact(&mut head) {
        return Err(unreachable(written.err().unwrap_or(e)));
    }
    let h = Header::decode(&head, MAX_RESPONSE_BODY)
        .map_err(|e| (2, format!("bad answer from the daemon: {e}")))?;
    let mut body = vec![0u8; h.body_len as usize];
    s.read_exact(&mut body).map_err(unreachable)?;
    AdminResponse::decode(h.kind, &body).map_err(|e| (1, format!("the daemon refused: {e}")))
}

fn text(r: AdminResponse) -> String {
    match r {
        AdminResponse::Text(t) => t,
        AdminResponse::Done(n) => format!("{n}\n"),
        AdminResponse::HandedOver { version, .. } => format!("handed over (version {version})\n"),
    }
}

fn run(cli: &Cli) -> Result<u8, (u8, String)> {
    let socket = admin_socket(cli);
    match &cli.command {
        Command::CheckConfig { file } => match Config::load(file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(0)
            }
            Err(e) => Err((1, e.to_string())),
        },
        Command::Status => {
            let t = text(ask(&socket, &AdminRequest::Status)?);
            print!("{t}");
            Ok(if t.lines().any(|l| l == "ready: true") {
                0
            } else {
                1
            })
        }
        Command::Lookup { map, key, explain } => {
            let map = match map {
                MapArg::Passwd => Map::Passwd,
                MapArg::Group => Map::Group,
                MapArg::Initgroups => Map::InitGroups,
            };
            let t = text(ask(&socket, &AdminRequest::Explain(map, key.clone()))?);
            let answer = t
                .lines()
                .find_map(|l| l.strip_prefix("answer: "))
                .unwrap_or("")
                .to_string();
            if *explain {
                print!("{t}");
            } else {
                println!("{answer}");
            }
            Ok(
                if answer == "not found" || answer.starts_with("unavailable") {
                    1
                } else {
                    0
                },
            )
        }
        Command::Cache(CacheCommand::Dump) => {
            print!("{}", text(ask(&socket, &AdminRequest::Dump)?));
            Ok(0)
        }
        Command::Cache(CacheCommand::Invalidate(a)) => {
            let scope = match (&a.user, &a.group) {
                (Some(u), _) => Scope::User(u.clone()),
                (_, Some(g)) => Scope::Group(g.clone()),
                _ => Scope::All,
            };
            match ask(&socket, &AdminRequest::Invalidate(scope))? {
                AdminResponse::Done(n) => println!("invalidated {n} cache entries"),
                other => println!("{}", text(other)),
            }
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err((code, message)) => {
            eprintln!("toolforge-nssctl: {message}");
            ExitCode::from(code)
        }
    }
}
