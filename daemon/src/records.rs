//! What the daemon knows about one directory entry after mapping: the NSS view plus the DN
//! (needed for RFC 2307bis membership). Records are immutable and shared behind `Arc`.

use toolforge_nss_protocol::{Group, Passwd};

/// A user as mapped from the directory (before policy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub dn: String,
    pub passwd: Passwd,
}

/// A group as mapped from the directory (before policy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRecord {
    pub dn: String,
    pub group: Group,
}

/// A group a user belongs to, as initgroups needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub name: String,
    pub gid: u32,
}
