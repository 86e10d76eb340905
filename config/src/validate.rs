//! Checks that the types cannot express: value ranges, URI schemes, DN and filter shapes,
//! names. The first problem found is reported with its dotted key and its value.

use crate::model::{Config, MapConfig};
use toolforge_nss_protocol::names::is_valid_name;

pub(crate) struct Violation {
    pub key: String,
    pub value: String,
    pub reason: String,
}

fn bad(key: &str, value: impl std::fmt::Debug, reason: impl Into<String>) -> Violation {
    Violation {
        key: key.into(),
        value: format!("{value:?}"),
        reason: reason.into(),
    }
}

fn check(ok: bool, key: &str, value: impl std::fmt::Debug, reason: &str) -> Result<(), Violation> {
    if ok {
        Ok(())
    } else {
        Err(bad(key, value, reason))
    }
}

fn check_range(key: &str, v: u64, min: u64, max: u64) -> Result<(), Violation> {
    check(
        (min..=max).contains(&v),
        key,
        v,
        &format!("must be between {min} and {max}"),
    )
}

/// Every entry of a list of user or group names must be a valid name.
fn check_names(key: &str, names: &[String]) -> Result<(), Violation> {
    names.iter().try_for_each(|n| {
        check(
            is_valid_name(n.as_bytes()),
            key,
            n,
            "is not a valid user or group name",
        )
    })
}

/// A DN must be non-empty and made of `attr=value` components.
fn looks_like_dn(dn: &str) -> bool {
    !dn.is_empty()
        && dn
            .split(',')
            .all(|rdn| rdn.contains('=') && !rdn.trim().starts_with('='))
}

/// Parses an LDAP search filter (RFC 4515): `Err` says what is wrong and where.
pub(crate) fn parse_filter(f: &str) -> Result<(), String> {
    let b = f.as_bytes();
    let end = parse_one(b, 0)?;
    if end != b.len() {
        return Err(format!("unexpected text after the filter at byte {end}"));
    }
    Ok(())
}

/// One `( ... )` starting at `i`; returns the index after its `)`.
fn parse_one(b: &[u8], i: usize) -> Result<usize, String> {
    if b.get(i) != Some(&b'(') {
        return Err(format!("expected '(' at byte {i}"));
    }
    let mut i = i + 1;
    match b.get(i) {
        Some(b'&') | Some(b'|') => {
            i += 1;
            while b.get(i) == Some(&b'(') {
                i = parse_one(b, i)?;
            }
        }
        Some(b'!') => i = parse_one(b, i + 1)?,
        Some(_) => i = parse_item(b, i)?,
        None => return Err("unterminated filter".into()),
    }
    if b.get(i) != Some(&b')') {
        return Err(format!("expected ')' at byte {i}"));
    }
    Ok(i + 1)
}

/// `attr=value`, `attr~=`, `attr>=`, `attr<=`, `attr=*`, substrings and extensible matches.
fn parse_item(b: &[u8], mut i: usize) -> Result<usize, String> {
    let start = i;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'-' | b';' | b'.' | b':'))
    {
        i += 1;
    }
    let attr = &b[start..i];
    let op_at = i;
    let extensible = attr.ends_with(b":");
    match (b.get(i), b.get(i + 1)) {
        (Some(b'~' | b'>' | b'<'), Some(b'=')) if !extensible => i += 2,
        (Some(b'='), _) => i += 1,
        _ => {
            return Err(format!(
                "expected a comparison (=, ~=, >=, <=) at byte {op_at}"
            ))
        }
    }
    let name = attr.strip_suffix(b":").unwrap_or(attr);
    let first = name.split(|&c| c == b':').next().unwrap_or(b"");
    let valid_attr = (first.is_empty() && extensible)
        || first.first().is_some_and(|c| c.is_ascii_alphanumeric());
    if !valid_attr || (!extensible && attr.contains(&b':')) {
        return Err(format!("bad attribute description at byte {start}"));
    }
    while let Some(&c) = b.get(i) {
        match c {
            b')' => return Ok(i),
            b'(' | 0 => return Err(format!("unescaped {:?} in a value at byte {i}", c as char)),
            b'\\' => {
                let hex = b.get(i + 1..i + 3).unwrap_or(b"");
                if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(format!("bad escape at byte {i} (\\XX, two hex digits)"));
                }
                i += 3;
            }
            b'*' if b[op_at] != b'=' || extensible => {
                return Err(format!("'*' is only allowed with '=' (byte {i})"))
            }
            _ => i += 1,
        }
    }
    Err("unterminated filter".into())
}

fn check_map(section: &str, map: &MapConfig) -> Result<(), Violation> {
    for base in &map.bases {
        check(
            looks_like_dn(base),
            &format!("{section}.bases"),
            base,
            "is not a DN (attr=value,...)",
        )?;
    }
    parse_filter(&map.filter).map_err(|why| {
        bad(
            &format!("{section}.filter"),
            &map.filter,
            format!("is not an LDAP filter (RFC 4515): {why}"),
        )
    })
}

pub(crate) fn validate(c: &Config) -> Result<(), Violation> {
    let l = &c.ldap;
    check(
        !l.uri.is_empty(),
        "ldap.uri",
        &l.uri,
        "needs at least one server",
    )?;
    for uri in &l.uri {
        let rest = uri
            .strip_prefix("ldap://")
            .or_else(|| uri.strip_prefix("ldaps://"))
            .ok_or_else(|| bad("ldap.uri", uri, "must start with ldap:// or ldaps://"))?;
        let host = rest.split('/').next().unwrap_or("");
        check(!host.is_empty(), "ldap.uri", uri, "has no host")?;
        if let Some((_, port)) = host.rsplit_once(':').filter(|_| !host.ends_with(']')) {
            check(
                port.parse::<u16>().is_ok_and(|p| p > 0),
                "ldap.uri",
                uri,
                "has an invalid port",
            )?;
        }
    }
    check(
        looks_like_dn(&l.base),
        "ldap.base",
        &l.base,
        "is not a DN (attr=value,...)",
    )?;
    if l.starttls {
        if let Some(u) = l.uri.iter().find(|u| u.starts_with("ldaps://")) {
            return Err(bad(
                "ldap.starttls",
                true,
                format!("is for ldap:// URIs; {u} is already TLS"),
            ));
        }
    }
    match (&l.bind_dn, &l.bind_password_file) {
        (Some(dn), Some(_)) => check(looks_like_dn(dn), "ldap.bind_dn", dn, "is not a DN")?,
        (Some(dn), None) => {
            return Err(bad(
                "ldap.bind_dn",
                dn,
                "needs ldap.bind_password_file (passwords are never written in the config)",
            ))
        }
        (None, Some(f)) => {
            return Err(bad(
                "ldap.bind_password_file",
                f,
                "is set without ldap.bind_dn",
            ))
        }
        (None, None) => {}
    }
    check_range("ldap.connect_timeout_ms", l.connect_timeout_ms, 10, 60_000)?;
    check_range("ldap.bind_timeout_ms", l.bind_timeout_ms, 10, 60_000)?;
    check_range("ldap.search_timeout_ms", l.search_timeout_ms, 10, 300_000)?;
    check_range("ldap.reconnect_max_ms", l.reconnect_max_ms, 100, 3_600_000)?;
    check_range(
        "ldap.failback_interval_secs",
        l.failback_interval_secs,
        1,
        86_400,
    )?;
    check_range("ldap.page_size", l.page_size as u64, 1, 100_000)?;
    check_range(
        "ldap.connections_per_server",
        l.connections_per_server as u64,
        1,
        64,
    )?;
    check_range(
        "ldap.max_ops_per_connection",
        l.max_ops_per_connection as u64,
        1,
        1000,
    )?;
    check_range("ldap.queue_timeout_ms", l.queue_timeout_ms, 1, 60_000)?;
    check_range(
        "ldap.connection_expire_secs",
        l.connection_expire_secs,
        1,
        86_400,
    )?;
    check_range(
        "ldap.group_nesting_level",
        u64::from(l.group_nesting_level),
        0,
        16,
    )?;
    check_map("ldap.users", &l.users)?;
    check_map("ldap.groups", &l.groups)?;
    let a = &l.attributes;
    for (key, v) in [
        ("user_name", &a.user_name),
        ("uid_number", &a.uid_number),
        ("gid_number", &a.gid_number),
        ("gecos", &a.gecos),
        ("full_name", &a.full_name),
        ("home_directory", &a.home_directory),
        ("login_shell", &a.login_shell),
        ("group_name", &a.group_name),
        ("group_gid_number", &a.group_gid_number),
        ("member_uid", &a.member_uid),
        ("member", &a.member),
    ] {
        let ok = v.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';');
        check(
            ok,
            &format!("ldap.attributes.{key}"),
            v,
            "is not an attribute name",
        )?;
    }

    let d = &c.daemon;
    check(
        d.runtime_dir.is_absolute(),
        "daemon.runtime_dir",
        &d.runtime_dir,
        "must be an absolute path",
    )?;
    check(
        d.cache_dir.is_absolute(),
        "daemon.cache_dir",
        &d.cache_dir,
        "must be an absolute path",
    )?;
    // sun_path holds 108 bytes including the NUL; the socket is runtime_dir + "/socket".
    check(
        d.runtime_dir.as_os_str().len() + "/socket".len() < 108,
        "daemon.runtime_dir",
        &d.runtime_dir,
        "is too long for a Unix socket path",
    )?;
    check_range(
        "daemon.max_connections",
        d.max_connections as u64,
        1,
        1_000_000,
    )?;
    check(
        d.admin_dir.is_absolute(),
        "daemon.admin_dir",
        &d.admin_dir,
        "must be an absolute path",
    )?;
    check(
        d.admin_dir != d.runtime_dir,
        "daemon.admin_dir",
        &d.admin_dir,
        "must not be the runtime_dir (which pods mount)",
    )?;
    if let Some(dir) = &d.sss_compat_dir {
        check(
            dir.is_absolute(),
            "daemon.sss_compat_dir",
            dir,
            "must be an absolute path",
        )?;
        check(
            dir != &d.runtime_dir && dir != &d.admin_dir && dir != &d.cache_dir,
            "daemon.sss_compat_dir",
            dir,
            "must be a directory of its own (not runtime_dir, admin_dir or cache_dir)",
        )?;
        // sun_path holds 108 bytes including the NUL; the socket is the dir + "/nss".
        check(
            dir.as_os_str().len() + "/nss".len() < 108,
            "daemon.sss_compat_dir",
            dir,
            "is too long for a Unix socket path",
        )?;
    }
    check(
        d.run_as_uid != Some(0),
        "daemon.run_as_uid",
        d.run_as_uid,
        "0 is root; leave it unset to keep the starting uid",
    )?;
    check(
        d.run_as_gid.is_none() || d.run_as_uid.is_some(),
        "daemon.run_as_gid",
        d.run_as_gid,
        "needs daemon.run_as_uid",
    )?;
    check_range(
        "daemon.max_connections_per_uid",
        d.max_connections_per_uid as u64,
        1,
        d.max_connections as u64,
    )?;
    check_range("daemon.idle_timeout_ms", d.idle_timeout_ms, 100, 3_600_000)?;
    check_range(
        "daemon.request_timeout_ms",
        d.request_timeout_ms,
        10,
        60_000,
    )?;
    check_range("daemon.worker_threads", d.worker_threads as u64, 1, 256)?;
    check_range(
        "daemon.miss_queries_per_uid_per_sec",
        u64::from(d.miss_queries_per_uid_per_sec),
        0,
        1_000_000,
    )?;
    check_range(
        "daemon.miss_query_burst_per_uid",
        u64::from(d.miss_query_burst_per_uid),
        1,
        1_000_000,
    )?;

    check_names("daemon.prefetch_users", &d.prefetch_users)?;
    check_names("daemon.prefetch_groups", &d.prefetch_groups)?;
    if let Some(addr) = &c.metrics.listen {
        check(
            addr.parse::<std::net::SocketAddr>().is_ok(),
            "metrics.listen",
            addr,
            "must be ADDRESS:PORT, e.g. 127.0.0.1:9477",
        )?;
    }
    let k = &c.cache;
    check_range(
        "cache.positive_ttl_secs",
        k.positive_ttl_secs,
        1,
        30 * 86_400,
    )?;
    check_range("cache.negative_ttl_secs", k.negative_ttl_secs, 0, 86_400)?;
    for (key, ttl) in [
        ("cache.user_ttl_secs", k.user_ttl_secs),
        ("cache.group_ttl_secs", k.group_ttl_secs),
    ] {
        if let Some(t) = ttl {
            check_range(key, t, 1, 30 * 86_400)?;
        }
    }
    check_range(
        "cache.max_negative_entries",
        k.max_negative_entries as u64,
        1,
        10_000_000,
    )?;
    check_range("cache.max_mib", k.max_mib, 1, 65_536)?;
    check_range("cache.max_entries", k.max_entries as u64, 1, 10_000_000)?;
    check_range("cache.max_stale_secs", k.max_stale_secs, 0, 365 * 86_400)?;
    check_range(
        "cache.refresh_ahead_percent",
        k.refresh_ahead_percent as u64,
        0,
        99,
    )?;
    check_range("cache.stale_wait_ms", k.stale_wait_ms, 0, 60_000)?;
    check_range(
        "cache.persist_interval_secs",
        k.persist_interval_secs,
        0,
        86_400,
    )?;
    check_range("cache.map_file_max_mib", k.map_file_max_mib, 0, 4_095)?;
    check_range(
        "cache.map_publish_delay_ms",
        k.map_publish_delay_ms,
        1,
        60_000,
    )?;

    let m = &c.mirror;
    check_range("mirror.poll_interval_secs", m.poll_interval_secs, 1, 86_400)?;
    check_range(
        "mirror.full_refresh_secs",
        m.full_refresh_secs,
        1,
        7 * 86_400,
    )?;
    check(
        m.full_refresh_secs >= m.poll_interval_secs,
        "mirror.full_refresh_secs",
        m.full_refresh_secs,
        "must not be below mirror.poll_interval_secs",
    )?;
    check_range("mirror.max_entries", m.max_entries as u64, 1, 10_000_000)?;

    let p = &c.policy;
    check_names("policy.filter_users", &p.filter_users)?;
    check_names("policy.filter_groups", &p.filter_groups)?;
    check(
        p.min_id >= 1,
        "policy.min_id",
        p.min_id,
        "must be at least 1 (id 0 is never served)",
    )?;
    check(
        p.min_id <= p.max_id,
        "policy.max_id",
        p.max_id,
        "must not be below policy.min_id",
    )?;
    if let Some(shell) = &p.default_shell {
        check(
            shell.starts_with('/') && !shell.contains('\0'),
            "policy.default_shell",
            shell,
            "must be an absolute path",
        )?;
    }
    Ok(())
}
