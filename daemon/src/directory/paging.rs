//! What makes a search's answer complete: plain or paged (RFC 2696) [`Mode`]; a server limit
//! (sizeLimitExceeded, timeLimitExceeded, adminLimitExceeded) is never taken as an answer
//! ([`check`], used by the search primitive `op::search_on`); search references are skipped
//! and reported once per base ([`ReferenceLog`]).

use std::collections::HashSet;
use std::sync::Mutex;

use ldap3::{LdapError, LdapResult};
use tracing::warn;

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

pub fn is_limit_rc(code: u32) -> bool {
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
    pub fn first_time(&self, base: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(base.to_ascii_lowercase())
    }
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

/// What a search's final result means: success and noSuchObject (the base does not exist)
/// are a complete answer; a limit or any other code is an error (a limit is logged).
pub fn check(res: LdapResult, base: &str, filter: &str) -> Result<(), LdapError> {
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
