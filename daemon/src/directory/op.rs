//! One operation on one pooled connection, and how it can fail ([`OpError`]): the seam
//! between the pool (which decides what a failure means for the server) and the searches.
//! [`search_on`] is the search primitive: it runs within a deadline and, past it, abandons the
//! operation on the server (LDAP Abandon) rather than leaving it running there.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use ldap3::adapters::{Adapter, PagedResults};
use ldap3::{Ldap, LdapError, LdapResult, ResultEntry, Scope, SearchEntry};
use tracing::{debug, warn};

use crate::directory::paging::{self, ReferenceLog};
use crate::mapping::RawEntry;

/// Result codes that move a request to the next server and back this one off, as nslcd
/// does: busy, unavailable, unwillingToPerform, other.
pub const FAILOVER_CODES: [u32; 4] = [51, 52, 53, 80];

/// Why an operation failed.
#[derive(Debug)]
pub enum OpError {
    /// The connection broke (I/O, end of stream) or the client library failed.
    Ldap(LdapError),
    /// The server answered with a result code that is not success.
    Code(LdapResult),
    /// No answer within the deadline; the operation was abandoned.
    TimedOut,
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Ldap(e) => write!(f, "{e}"),
            OpError::Code(r) if r.text.is_empty() => write!(f, "result code {}", r.rc),
            OpError::Code(r) => write!(f, "result code {}: {}", r.rc, r.text),
            OpError::TimedOut => write!(f, "timed out (abandoned)"),
        }
    }
}

impl From<LdapError> for OpError {
    fn from(e: LdapError) -> OpError {
        match e {
            LdapError::LdapResult { result } => OpError::Code(result),
            LdapError::Timeout { .. } => OpError::TimedOut,
            e => OpError::Ldap(e),
        }
    }
}

impl OpError {
    /// The connection is unusable (it broke, or the stream ended).
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            OpError::Ldap(
                LdapError::Io { .. }
                    | LdapError::OpSend { .. }
                    | LdapError::ResultRecv { .. }
                    | LdapError::EndOfStream
            )
        )
    }

    /// The server said it cannot serve now: fail over.
    pub fn is_failover_code(&self) -> bool {
        matches!(self, OpError::Code(r) if FAILOVER_CODES.contains(&r.rc))
    }
}

/// `SearchEntry::construct` panics on malformed BER; a hostile server must not take us down.
pub fn parse_entry(re: ResultEntry) -> Option<RawEntry> {
    std::panic::catch_unwind(AssertUnwindSafe(|| SearchEntry::construct(re)))
        .ok()
        .map(|e| RawEntry::new(e.dn, e.attrs))
}

/// Sends an Abandon for `msgid` without waiting for anything (Abandon has no response).
fn abandon(ldap: &Ldap, msgid: i32) {
    let mut ldap = ldap.clone();
    tokio::spawn(async move {
        let sent = tokio::time::timeout(Duration::from_secs(1), ldap.abandon(msgid)).await;
        debug!(
            msgid,
            sent = matches!(sent, Ok(Ok(()))),
            "abandoned a timed-out search"
        );
    });
}

/// One subtree search on `ldap` within `timeout` (the whole search, every page): entries,
/// or why not. Past the deadline the operation is abandoned on the server. `noSuchObject`
/// (the base does not exist) is an empty answer. Paged with `page_size` when `page_size` > 0.
#[allow(clippy::too_many_arguments)]
pub async fn search_on(
    ldap: Ldap,
    base: &str,
    scope: Scope,
    filter: &str,
    attrs: &[String],
    page_size: u32,
    timeout: Duration,
    refs: &ReferenceLog,
) -> Result<Vec<RawEntry>, OpError> {
    let mut out = Vec::new();
    search_each_on(
        ldap,
        base,
        scope,
        filter,
        attrs,
        page_size,
        timeout,
        refs,
        &mut |e| out.push(e),
    )
    .await?;
    Ok(out)
}

/// [`search_on`] handing each entry to `each` as it arrives instead of collecting them (the
/// mirror's load: a whole directory is never held as raw entries). On an error, what was
/// handed over is incomplete: the caller drops it.
#[allow(clippy::too_many_arguments)]
pub async fn search_each_on(
    mut ldap: Ldap,
    base: &str,
    scope: Scope,
    filter: &str,
    attrs: &[String],
    page_size: u32,
    timeout: Duration,
    refs: &ReferenceLog,
    each: &mut (dyn FnMut(RawEntry) + Send),
) -> Result<(), OpError> {
    let deadline = tokio::time::Instant::now() + timeout;
    ldap.with_timeout(timeout);
    // No EntriesOnly adapter: references and intermediate messages are counted and skipped
    // here, so that references can be logged (once per base).
    let adapters: Vec<Box<dyn Adapter<_, _>>> = if page_size > 0 {
        vec![Box::new(PagedResults::new(
            page_size.clamp(1, i32::MAX as u32) as i32,
        ))]
    } else {
        vec![]
    };
    let started = tokio::time::timeout_at(
        deadline,
        ldap.streaming_search_with(adapters, base, scope, filter, attrs.to_vec()),
    )
    .await;
    let mut stream = match started {
        Ok(r) => r?,
        Err(_) => return Err(OpError::TimedOut),
    };
    let mut referrals = 0usize;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Ok(Some(re))) if re.is_ref() => referrals += 1,
            Ok(Ok(Some(re))) if re.is_intermediate() => {}
            Ok(Ok(Some(re))) => match parse_entry(re) {
                Some(e) => each(e),
                None => warn!(base, filter, "skipped an entry the server sent malformed"),
            },
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                let e = OpError::from(e);
                if matches!(e, OpError::TimedOut) {
                    let msgid = stream.ldap_handle().last_id();
                    let _ = stream.finish().await;
                    abandon(&ldap, msgid);
                }
                return Err(e);
            }
            Err(_) => {
                let msgid = stream.ldap_handle().last_id();
                let _ = stream.finish().await;
                abandon(&ldap, msgid);
                return Err(OpError::TimedOut);
            }
        }
    }
    let res = stream.finish().await;
    if referrals > 0 && refs.first_time(base) {
        warn!(
            base,
            referrals,
            "the server sent search references; they are not followed (logged once per base)"
        );
    }
    // A limit (size, time, administrative) is an error, never a truncated answer;
    // noSuchObject (the base does not exist) is an empty one.
    paging::check(res, base, filter).map_err(OpError::from)
}

/// A cheap health check: the root DSE, read within `timeout`.
pub async fn probe(mut ldap: Ldap, timeout: Duration) -> bool {
    let read = ldap
        .with_timeout(timeout)
        .search("", Scope::Base, "(objectClass=*)", vec!["1.1"]);
    matches!(
        tokio::time::timeout(timeout, read).await,
        Ok(Ok(ref r)) if r.1.rc == 0
    )
}
