//! toolforge-nssd: the node-local caching daemon. It answers NSS lookups from containers on a
//! Unix socket, from its cache or from the LDAP directory.
//!
//! Code map (one job each): [`server`] listens and bounds connections; [`connection`] frames
//! one client; [`resolver`] answers a request (policy, cache, single-flight, directory);
//! [`cache`] is one bounded TTL map; [`singleflight`] merges concurrent misses;
//! [`enumeration`] pages listings; [`directory`] is the query interface, with its LDAP implementation
//! (`directory::ldap`) and server health and backoff (`directory::servers`); [`persist`] keeps the cache
//! on disk; [`publish`] writes the shared cache file the module maps; [`mapping`] turns entries into records; [`policy`] decides what is served;
//! [`filter`] builds escaped LDAP filters; [`records`] holds the record types.
//!
//! The daemon never resolves users or groups through NSS itself.

pub mod admin;
pub mod cache;
pub mod connection;
pub mod directory;
pub mod enumeration;
pub mod filter;
pub mod histogram;
pub mod mapping;
pub mod memory;
pub mod metrics;
pub mod peers;
pub mod persist;
pub mod policy;
pub mod privileges;
pub mod publish;
pub mod records;
pub mod resolver;
pub mod server;
pub mod singleflight;
pub mod wallclock;
