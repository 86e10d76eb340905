//! The daemon's view of the directory: the queries the resolver needs, each returning mapped
//! (well-formed, not yet policy-checked) records. [`crate::directory::ldap::LdapDirectory`] implements it
//! over LDAP; tests implement it in memory to count queries.
//!
//! The folder holds the LDAP side: `ldap` (searches, mapping of results into records),
//! `pool` (connections per server, bounded operations, failover, lifetime), `connect` (opening
//! one connection: resolution, keepalive, TLS, bind, credentials), `op` (one operation on a
//! connection and how it fails: the search primitive), `paging` (one complete search on one
//! connection: paged, limits as errors), `members` (RFC 2307bis member DNs and nested groups,
//! resolved in batches) and `servers` (health and backoff of the configured servers).

use std::future::Future;

use crate::records::{GroupRecord, Membership, UserRecord};

/// Why the directory could not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DirError {
    /// No configured server could be reached (connect, bind or I/O failure).
    #[error("no directory server reachable: {0}")]
    Unreachable(String),
    /// A server answered with an error.
    #[error("directory error: {0}")]
    Failed(String),
    /// Too much work queued already (admission or the pool): this request only is refused;
    /// nothing is wrong with the servers.
    #[error("directory busy: {0}")]
    Overloaded(String),
    /// The server cut the answer short (size, time or administrative limit): the partial
    /// answer is never used.
    #[error("directory limit: {0}")]
    Limit(String),
}

pub type DirResult<T> = Result<T, DirError>;

/// Queries the resolver asks of the directory.
pub trait Directory: Send + Sync + 'static {
    fn user_by_name(
        &self,
        name: &str,
    ) -> impl Future<Output = DirResult<Option<UserRecord>>> + Send;
    fn user_by_uid(&self, uid: u32) -> impl Future<Output = DirResult<Option<UserRecord>>> + Send;
    fn group_by_name(
        &self,
        name: &str,
    ) -> impl Future<Output = DirResult<Option<GroupRecord>>> + Send;
    fn group_by_gid(&self, gid: u32)
        -> impl Future<Output = DirResult<Option<GroupRecord>>> + Send;
    /// Groups that list the user as a member, in one search: by name (RFC 2307) or by DN
    /// (RFC 2307bis, `user_dn` is then required).
    fn memberships(
        &self,
        user_name: &str,
        user_dn: Option<&str>,
    ) -> impl Future<Output = DirResult<Vec<Membership>>> + Send;
    /// Every user (paged search), for `enumerate = true`.
    fn all_users(&self) -> impl Future<Output = DirResult<Vec<UserRecord>>> + Send;
    /// Every group (paged search), for `enumerate = true`.
    fn all_groups(&self) -> impl Future<Output = DirResult<Vec<GroupRecord>>> + Send;
    /// Whether memberships need the user's DN (RFC 2307bis).
    fn memberships_need_dn(&self) -> bool;
    /// Makes every directory operation wait in `admission`'s fair queue, in the turn of the
    /// caller it runs for ([`crate::admission::current_caller`]). The resolver calls it with
    /// its own admission (at start and for a directory rebuilt by a reload).
    fn attach_admission(&self, admission: &std::sync::Arc<crate::admission::Admission>) {
        let _ = admission;
    }
}

pub mod connect;
pub mod ldap;
pub mod members;
pub mod op;
pub mod paging;
pub mod pool;
pub mod servers;
