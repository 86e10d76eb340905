//! One search on one `ldap3::Ldap` handle, plain or paged (RFC 2696), whose answer is either
//! complete or an error: a server limit (sizeLimitExceeded, timeLimitExceeded,
//! adminLimitExceeded) is never taken as an answer, search references are skipped (and
//! reported once per base), and malformed entries are skipped without a panic.
//!
//! This is the seam between the connection side (which picks the handle, retries, fails
//! over) and the mapping side: it takes a handle and returns entries.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::Duration;

use ldap3::adapters::{Adapter, PagedResults};
use ldap3::{Ldap, LdapError, LdapResult, ResultEntry, Scope, SearchEntry};
use tracing::warn;

use crate::mapping::RawEntry;

/// LDAP result codes this module gives a meaning to.
pub mod rc {
    pub const SUCCESS: u32 = 0;
    pub const TIME_LIMIT_EXCEEDED: u32 = 3;
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    pub const ADMIN_LIMIT_EXCEEDED: u32 = 11;
    pub const NO_SUCH_OBJECT: u32 = 32;
}

/// Whether an error is a server limit: the answer was cut short by the server.
pub fn is_limit(e: &LdapError) -> bool {
    matches!(e, LdapError::LdapResult { result } if is_limit_rc(result.rc))
}

/// Whether an error is sizeLimitExceeded on a plain search (paging may get the whole answer).
pub fn is_size_limit(e: &LdapError) -> bool {
    matches!(e, LdapError::LdapResult { result } if result.rc == rc::SIZE_LIMIT_EXCEEDED)
}

fn is_limit_rc(code: u32) -> bool {
    matches!(
        code,
        rc::TIME_LIMIT_EXCEEDED | rc::SIZE_LIMIT_EXCEEDED | rc::ADMIN_LIMIT_EXCEEDED
    )
}

/// The name of sizeLimitExceeded, as [`limit_name`] spells it.
pub const SIZE_LIMIT: &str = "sizeLimitExceeded";

/// The limit's name of an error [`is_limit`] accepts.
pub fn limit_name_of(e: &LdapError) -> &'static str {
    match e {
        LdapError::LdapResult { result } => limit_name(result.rc),
        _ => "limit",
    }
}

/// A human name for a limit code, for logs and errors.
pub fn limit_name(code: u32) -> &'static str {
    match code {
        rc::TIME_LIMIT_EXCEEDED => "timeLimitExceeded",
        rc::SIZE_LIMIT_EXCEEDED => SIZE_LIMIT,
        rc::ADMIN_LIMIT_EXCEEDED => "adminLimitExceeded",
        _ => "limit",
    }
}

/// Bases under which the server sent search references, so each is logged once.
#[derive(Default)]
pub struct ReferenceLog(Mutex<HashSet<String>>);

impl ReferenceLog {
    fn first_time(&self, base: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(base.to_ascii_lowercase())
    }
}

/// `SearchEntry::construct` panics on malformed BER; a hostile server must not take us down.
pub fn parse_entry(re: ResultEntry) -> Option<RawEntry> {
    std::panic::catch_unwind(AssertUnwindSafe(|| SearchEntry::construct(re)))
        .ok()
        .map(|e| RawEntry::new(e.dn, e.attrs))
}

/// How to run a search.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// One request; the server's size limit applies.
    Plain,
    /// Paged results with this page size; OpenLDAP keeps one paged search state per
    /// connection, so the caller makes paged searches on one connection take turns.
    Paged(u32),
}

/// One subtree search under `base`. `Ok` holds every entry the server has (or none when
/// the base does not exist); a limit, a refused page or any other result code is an error.
pub async fn search_complete(
    ldap: &Ldap,
    timeout: Duration,
    mode: Mode,
    refs: &ReferenceLog,
    base: &str,
    filter: &str,
    attrs: &[String],
) -> Result<Vec<RawEntry>, LdapError> {
    let mut ldap = ldap.clone();
    ldap.with_timeout(timeout);
    let adapters: Vec<Box<dyn Adapter<_, _>>> = match mode {
        Mode::Plain => vec![],
        Mode::Paged(size) => vec![Box::new(PagedResults::new(
            size.clamp(1, i32::MAX as u32) as i32
        ))],
    };
    let mut stream = ldap
        .streaming_search_with(adapters, base, Scope::Subtree, filter, attrs.to_vec())
        .await?;
    let mut out = Vec::new();
    let mut skipped = 0usize;
    let mut referrals = 0usize;
    loop {
        let re = match stream.next().await {
            Ok(Some(re)) => re,
            Ok(None) => break,
            Err(e) => {
                let _ = stream.finish().await;
                return Err(e);
            }
        };
        if re.is_ref() {
            referrals += 1;
            continue;
        }
        if re.is_intermediate() {
            continue;
        }
        match parse_entry(re) {
            Some(e) => out.push(e),
            None => skipped += 1,
        }
    }
    let res = stream.finish().await;
    if skipped > 0 {
        warn!(
            base,
            filter, skipped, "skipped entries the server sent malformed"
        );
    }
    if referrals > 0 && refs.first_time(base) {
        warn!(
            base,
            referrals,
            "the server sent search references; they are not followed (logged once per base)"
        );
    }
    check(res, base, filter).map(|()| out)
}

fn check(res: LdapResult, base: &str, filter: &str) -> Result<(), LdapError> {
    match res.rc {
        rc::SUCCESS | rc::NO_SUCH_OBJECT => Ok(()),
        code if is_limit_rc(code) => {
            warn!(
                base,
                filter,
                limit = limit_name(code),
                "the server cut the answer short; not using it"
            );
            Err(LdapError::LdapResult { result: res })
        }
        _ => Err(LdapError::LdapResult { result: res }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(rc: u32) -> LdapResult {
        LdapResult {
            rc,
            matched: String::new(),
            text: String::new(),
            refs: vec![],
            ctrls: vec![],
        }
    }

    #[test]
    fn limits_are_errors_and_a_missing_base_is_empty() {
        for code in [3, 4, 11] {
            let e = check(result(code), "b", "f").unwrap_err();
            assert!(is_limit(&e), "{code}");
        }
        assert!(check(result(0), "b", "f").is_ok());
        assert!(check(result(32), "b", "f").is_ok());
        let other = check(result(50), "b", "f").unwrap_err();
        assert!(!is_limit(&other));
        assert!(is_size_limit(&check(result(4), "b", "f").unwrap_err()));
        assert!(!is_size_limit(&check(result(11), "b", "f").unwrap_err()));
    }

    #[test]
    fn references_are_logged_once_per_base() {
        let log = ReferenceLog::default();
        assert!(log.first_time("ou=a,dc=x"));
        assert!(!log.first_time("OU=A,dc=x"));
        assert!(log.first_time("ou=b,dc=x"));
    }
}
