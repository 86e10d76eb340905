//! toolforge-nssd: the node-local caching daemon. It answers NSS lookups from containers on a
//! Unix socket, from its cache or from the LDAP directory.
//!
//! Code map (one job each): [`server`] listens and bounds connections; [`connection`] frames
//! one client; [`resolver`] answers a request (policy, cache, single-flight, directory);
//! [`admission`] budgets and queues directory work fairly by peer uid;
//! [`cache`] is one bounded TTL map; [`singleflight`] merges concurrent misses;
//! [`enumeration`] pages listings; [`directory`] is the query interface, with its LDAP implementation
//! (`directory::ldap`) and server health and backoff (`directory::servers`); [`persist`] keeps the cache
//! on disk; [`publish`] writes the shared cache file the module maps; [`mapping`] turns entries into records; [`policy`] decides what is served;
//! [`filter`] builds escaped LDAP filters; [`records`] holds the record types; [`sss`] answers
//! SSSD's NSS client protocol on an optional second socket; [`handover`] is the takeover
//! from a running daemon; [`upgrade`] starts a successor on SIGUSR2 and speaks systemd's
//! readiness protocol.
//!
//! [`mirror`] (issue 13) holds the whole directory in memory, kept current by RFC 4533 sync
//! or polling, and answers every lookup once loaded.
//!
//! The daemon never resolves users or groups through NSS itself.

pub mod admin;
pub mod admission;
pub mod cache;
pub mod cached;
pub mod connection;
pub mod directory;
pub mod enumeration;
pub mod filter;
pub mod handover;
pub mod histogram;
pub mod mapping;
pub mod memory;
pub mod metrics;
pub mod mirror;
pub mod peers;
pub mod persist;
pub mod policy;
pub mod privileges;
pub mod publish;
pub mod records;
pub mod resolver;
pub mod server;
pub mod singleflight;
pub mod sss;
pub mod upgrade;
pub mod wallclock;
