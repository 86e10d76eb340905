//! The typed configuration. Every section and key has a default documented here; the
//! defaults match the directory layout Toolforge uses and what SSSD users expect.

use serde::Deserialize;
use std::path::PathBuf;

use crate::template::HomeTemplate;

/// The whole file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub ldap: LdapConfig,
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub mirror: MirrorConfig,
}

/// How the mirror hears about changes.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MirrorMode {
    /// RFC 4533 when the server advertises it (root DSE `supportedControl`) and lets the
    /// bind identity use it; polling otherwise.
    #[default]
    Auto,
    /// RFC 4533 `refreshAndPersist` only (a server that refuses it leaves the mirror
    /// degraded, retried with backoff).
    Syncrepl,
    /// `modifyTimestamp` polling plus periodic full reconciliation.
    Poll,
}

/// `[mirror]` (issue 13): the whole directory held in memory on every node and kept current;
/// once loaded it answers every lookup, found or not, with no directory query.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorConfig {
    /// Default false: lookup mode (cache + directory queries).
    pub enabled: bool,
    /// `auto` (default), `syncrepl` or `poll`.
    pub mode: MirrorMode,
    /// Polling: look for entries changed since the last poll this often. Default 30 s.
    pub poll_interval_secs: u64,
    /// Polling: reload everything this often (finds deletions and renames) and swap it in.
    /// Default 3600 s.
    pub full_refresh_secs: u64,
    /// Most users plus groups held; a directory beyond it is logged as an error and the
    /// daemon stays in (or falls back to) lookup mode. Default 200000.
    pub max_entries: usize,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            enabled: false,
            mode: MirrorMode::Auto,
            poll_interval_secs: 30,
            full_refresh_secs: 3600,
            max_entries: 200_000,
        }
    }
}

/// `[metrics]`: an optional Prometheus text endpoint.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `ADDRESS:PORT` to serve `GET /metrics` on (keep it on loopback or a node-local
    /// address); unset: no endpoint.
    pub listen: Option<String>,
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (without timestamps under journald, which adds its own).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Directory schema: how group membership is stored.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Schema {
    /// RFC 2307: `memberUid` holds user names.
    #[default]
    Rfc2307,
    /// RFC 2307bis: `member` holds user DNs.
    Rfc2307bis,
}

/// `[ldap]`: where the directory is and how to read it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// Servers, tried in order (failover). Required.
    pub uri: Vec<String>,
    /// Default search base for every map. Required.
    pub base: String,
    /// Simple bind DN; absent means an anonymous bind.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// File holding the bind password (first line); required with `bind_dn`.
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// PEM file of the CA(s) that sign the servers' certificates, for `ldaps://` and
    /// StartTLS. Default: the system bundle `/etc/ssl/certs/ca-certificates.crt`.
    /// Certificates and host names are always verified.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Upgrade `ldap://` connections with StartTLS (refused if the server cannot).
    #[serde(default)]
    pub starttls: bool,
    /// `rfc2307` (default) or `rfc2307bis`.
    #[serde(default)]
    pub schema: Schema,
    /// TCP connect (and TLS handshake) timeout. Default 2000 ms.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Timeout of the bind after a connect. Default 2000 ms.
    #[serde(default = "defaults::bind_timeout_ms")]
    pub bind_timeout_ms: u64,
    /// Timeout of one search. Default 5000 ms.
    #[serde(default = "defaults::search_timeout_ms")]
    pub search_timeout_ms: u64,
    /// A failed server is skipped for a backoff that doubles per failure up to this. Default 30000 ms.
    #[serde(default = "defaults::reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// While on a fallback server, how often to try the preferred ones again. Default 30 s.
    #[serde(default = "defaults::failback_interval_secs")]
    pub failback_interval_secs: u64,
    /// Page size for paged searches (enumeration, large listings). Default 500.
    #[serde(default = "defaults::page_size")]
    pub page_size: u32,
    // --- Connection pool (issue 10): bounded operations, queueing, lifetime. ---
    /// Connections kept open to the server in use. Default 2.
    #[serde(default = "defaults::connections_per_server")]
    pub connections_per_server: usize,
    /// Most operations in flight on one connection (slapd closes a connection with more than
    /// `conn_max_pending`, 100 for anonymous binds). Default 32.
    #[serde(default = "defaults::max_ops_per_connection")]
    pub max_ops_per_connection: usize,
    /// A lookup that needs the directory waits at most this long for a free slot of the pool
    /// (a queue fair by peer uid), then answers `Unavailable`; below the module's 500 ms
    /// budget. Default 250 ms.
    #[serde(default = "defaults::queue_timeout_ms")]
    pub queue_timeout_ms: u64,
    /// Connections older than this are retired gracefully (a new one first, the old one
    /// drained), under the servers' idle timeout. Default 540 s.
    #[serde(default = "defaults::connection_expire_secs")]
    pub connection_expire_secs: u64,
    /// RFC 2307bis: levels of nested groups followed in member lists and initgroups
    /// (SSSD's `ldap_group_nesting_level`). 0: none. Default 2.
    #[serde(default = "defaults::group_nesting_level")]
    pub group_nesting_level: u32,
    /// The users map (`passwd`).
    #[serde(default = "defaults::users")]
    pub users: MapConfig,
    /// The groups map (`group`, `initgroups`).
    #[serde(default = "defaults::groups")]
    pub groups: MapConfig,
    /// Attribute names.
    #[serde(default)]
    pub attributes: AttributeMap,
}

/// `[ldap.users]` / `[ldap.groups]`: where a map's entries live.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MapConfig {
    /// Search bases (subtree); empty means `[ldap] base`.
    #[serde(default)]
    pub bases: Vec<String>,
    /// The filter that selects this map's entries.
    pub filter: String,
}

/// `[ldap.attributes]`: attribute names, overridable as in SSSD's `ldap_user_*` options.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AttributeMap {
    pub user_name: String,
    pub uid_number: String,
    pub gid_number: String,
    pub gecos: String,
    /// Used for the gecos field when `gecos` is absent.
    pub full_name: String,
    pub home_directory: String,
    pub login_shell: String,
    pub group_name: String,
    pub group_gid_number: String,
    /// RFC 2307 membership (user names).
    pub member_uid: String,
    /// RFC 2307bis membership (DNs).
    pub member: String,
}

impl Default for AttributeMap {
    fn default() -> Self {
        AttributeMap {
            user_name: "uid".into(),
            uid_number: "uidNumber".into(),
            gid_number: "gidNumber".into(),
            gecos: "gecos".into(),
            full_name: "cn".into(),
            home_directory: "homeDirectory".into(),
            login_shell: "loginShell".into(),
            group_name: "cn".into(),
            group_gid_number: "gidNumber".into(),
            member_uid: "memberUid".into(),
            member: "member".into(),
        }
    }
}

/// `[daemon]`: the local service.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Holds the lookup socket (`socket`); mounted into pods. Default `/run/toolforge-nss`.
    pub runtime_dir: PathBuf,
    /// Where the cache persists across restarts. Default `/var/cache/toolforge-nss`.
    pub cache_dir: PathBuf,
    /// Holds the admin socket (`admin.socket`, 0600): a directory only root may enter
    /// (0700). Never mounted into pods. Default `/run/toolforge-nss-admin`.
    pub admin_dir: PathBuf,
    /// When set, also answer SSSD's NSS client protocol (what `libnss_sss.so.2` speaks) on
    /// the socket `nss` in this directory (0666; the directory searchable by all), so images
    /// with `libnss-sss` resolve through this daemon when this directory is mounted at
    /// `/var/lib/sss/pipes`. Unset (default): no such socket.
    pub sss_compat_dir: Option<PathBuf>,
    /// After binding its sockets, run as this uid (numeric: the daemon never resolves users
    /// through NSS). Unset: keep the uid it was started with.
    pub run_as_uid: Option<u32>,
    /// Group for `run_as_uid` (default: the same number).
    pub run_as_gid: Option<u32>,
    /// Users looked up (with their groups) at start, so they answer from cache at once.
    pub prefetch_users: Vec<String>,
    /// Groups looked up at start.
    pub prefetch_groups: Vec<String>,
    /// `text` (default) or `json`. The level comes from `RUST_LOG` (default `info`).
    pub log_format: LogFormat,
    /// Most client connections served at once; further ones get a `Busy` error. Default 4096.
    pub max_connections: usize,
    /// Most connections from one peer uid (SO_PEERCRED), so one tool cannot take every
    /// slot; further ones get a `Busy` error. Default 256.
    pub max_connections_per_uid: usize,
    /// A connection idle this long is closed (clients reconnect). Default 30000 ms.
    pub idle_timeout_ms: u64,
    /// Most time a client may take to send a whole request once it started. Default 1000 ms.
    pub request_timeout_ms: u64,
    /// Tokio worker threads. Default 2.
    pub worker_threads: usize,
    // --- Admission (issues 10 and 11): a budget of directory queries per peer uid. ---
    /// Directory queries for misses each peer uid may start per second, on average (a token
    /// bucket); over budget its new misses answer `Unavailable` (glibc goes on to the next
    /// source), its cached answers and other uids are unaffected. 0: no budget. Default 50.
    pub miss_queries_per_uid_per_sec: u32,
    /// The bucket's size: how many such queries a uid may start at once. Default 200.
    pub miss_query_burst_per_uid: u32,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            runtime_dir: "/run/toolforge-nss".into(),
            cache_dir: "/var/cache/toolforge-nss".into(),
            admin_dir: "/run/toolforge-nss-admin".into(),
            sss_compat_dir: None,
            run_as_uid: None,
            run_as_gid: None,
            prefetch_users: vec![],
            prefetch_groups: vec![],
            log_format: LogFormat::Text,
            max_connections: 4096,
            max_connections_per_uid: 256,
            idle_timeout_ms: 30_000,
            request_timeout_ms: 1_000,
            worker_threads: 2,
            miss_queries_per_uid_per_sec: 100,
            miss_query_burst_per_uid: 10_000,
        }
    }
}

/// `[cache]`: the daemon's in-memory cache.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Lifetime of a found entry. Default 300 s (SSSD's `entry_cache_timeout` is 5400 s).
    pub positive_ttl_secs: u64,
    /// Lifetime of a "no such entry" answer. Default 60 s.
    pub negative_ttl_secs: u64,
    /// Most entries per map (LRU beyond). Default 50000.
    pub max_entries: usize,
    /// `true`: `getent passwd`/`getent group` list the directory (paged search).
    /// `false` (default, as SSSD): they list what is cached.
    pub enumerate: bool,
    /// While the directory is unreachable, expired answers are served (flagged stale) for
    /// at most this long past their expiry. Default 7 days.
    pub max_stale_secs: u64,
    /// A hit past this percentage of its TTL is answered and refreshed in the background.
    /// 0 disables refresh-ahead. Default 75.
    pub refresh_ahead_percent: u8,
    /// When an expired answer exists, wait at most this long for the directory before
    /// serving it stale (the query goes on in the background). Default 250 ms.
    pub stale_wait_ms: u64,
    /// Write the cache to `cache_dir` this often (and at shutdown); 0 turns persistence off.
    /// Default 60 s.
    pub persist_interval_secs: u64,
    /// Largest size of the shared cache file (`runtime_dir/cache.map`) the module reads
    /// directly; 0 publishes no file (every lookup then asks the daemon). Default 64 MiB.
    pub map_file_max_mib: u64,
    /// A change to the cache reaches the cache file after this delay (changes within it are
    /// published together), and publications are paced so that building the file takes at
    /// most a tenth of one core. An invalidation is published at once. Default 20 ms.
    pub map_publish_delay_ms: u64,
    /// Lifetime of a found user (`passwd`); unset: `positive_ttl_secs` (SSSD's
    /// `entry_cache_user_timeout`).
    pub user_ttl_secs: Option<u64>,
    /// Lifetime of a found group and of an initgroups list; unset: `positive_ttl_secs`
    /// (SSSD's `entry_cache_group_timeout`).
    pub group_ttl_secs: Option<u64>,
    /// Most "no such entry" answers kept per map, in an LRU of their own: misses never evict
    /// found entries. Default 10000.
    pub max_negative_entries: usize,
    /// Most memory the cached answers may take, in MiB (their encoded size plus the
    /// record, estimated); the least recently used go first when either this or
    /// `max_entries` is reached. Default 256.
    pub max_mib: u64,
}

impl CacheConfig {
    /// TTL of found users.
    pub fn user_ttl_secs(&self) -> u64 {
        self.user_ttl_secs.unwrap_or(self.positive_ttl_secs)
    }

    /// TTL of found groups and initgroups lists.
    pub fn group_ttl_secs(&self) -> u64 {
        self.group_ttl_secs.unwrap_or(self.positive_ttl_secs)
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            positive_ttl_secs: 300,
            negative_ttl_secs: 60,
            max_entries: 50_000,
            enumerate: false,
            max_stale_secs: 7 * 86_400,
            refresh_ahead_percent: 75,
            stale_wait_ms: 250,
            persist_interval_secs: 60,
            map_file_max_mib: 64,
            map_publish_delay_ms: 20,
            user_ttl_secs: None,
            group_ttl_secs: None,
            max_negative_entries: 10_000,
            max_mib: 256,
        }
    }
}

/// `[policy]`: what is never served, and how entries are shaped.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// User names never served from the directory. Default `["root"]`.
    pub filter_users: Vec<String>,
    /// Group names never served from the directory. Default `["root"]`.
    pub filter_groups: Vec<String>,
    /// Smallest uid/gid served (0 is never served whatever this says). Default 1.
    pub min_id: u32,
    /// Largest uid/gid served. Default 4294967294.
    pub max_id: u32,
    /// Home directory for every user, e.g. `/home/%u`.
    pub override_homedir: Option<HomeTemplate>,
    /// Home directory for users whose entry has none.
    pub fallback_homedir: Option<HomeTemplate>,
    /// Shell for users whose entry has none (unset: the field stays empty, as in the entry).
    pub default_shell: Option<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            filter_users: vec!["root".into()],
            filter_groups: vec!["root".into()],
            min_id: 1,
            max_id: u32::MAX - 1,
            override_homedir: None,
            fallback_homedir: None,
            default_shell: None,
        }
    }
}

mod defaults {
    use super::MapConfig;
    pub fn connect_timeout_ms() -> u64 {
        2_000
    }
    pub fn search_timeout_ms() -> u64 {
        5_000
    }
    pub fn bind_timeout_ms() -> u64 {
        2_000
    }
    pub fn reconnect_max_ms() -> u64 {
        30_000
    }
    pub fn failback_interval_secs() -> u64 {
        30
    }
    pub fn page_size() -> u32 {
        500
    }
    pub fn connections_per_server() -> usize {
        2
    }
    pub fn max_ops_per_connection() -> usize {
        32
    }
    pub fn queue_timeout_ms() -> u64 {
        250
    }
    pub fn connection_expire_secs() -> u64 {
        540
    }
    pub fn group_nesting_level() -> u32 {
        2
    }
    pub fn users() -> MapConfig {
        MapConfig {
            bases: vec![],
            filter: "(objectClass=posixAccount)".into(),
        }
    }
    pub fn groups() -> MapConfig {
        MapConfig {
            bases: vec![],
            filter: "(objectClass=posixGroup)".into(),
        }
    }
}

impl LdapConfig {
    /// The bases to search for users (`users.bases`, or `base`).
    pub fn user_bases(&self) -> Vec<String> {
        bases_or(&self.users.bases, &self.base)
    }
    /// The bases to search for groups (`groups.bases`, or `base`).
    pub fn group_bases(&self) -> Vec<String> {
        bases_or(&self.groups.bases, &self.base)
    }
}

fn bases_or(bases: &[String], base: &str) -> Vec<String> {
    if bases.is_empty() {
        vec![base.to_owned()]
    } else {
        bases.to_vec()
    }
}
