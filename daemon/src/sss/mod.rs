//! SSSD compatibility: answers SSSD's NSS client protocol (what `libnss_sss.so.2` speaks) on
//! the socket `nss` in `[daemon] sss_compat_dir`, so images that still say `passwd: ... sss`
//! resolve through this daemon's cache, policy and limits when that directory is mounted at
//! `/var/lib/sss/pipes`. The wire format lives in the protocol crate
//! (`toolforge_nss_protocol::sss`); this module only serves it.
//!
//! * [`listener`]: the socket (0666, large backlog), the accept loop with the same connection
//!   caps as the lookup socket (`max_connections`, `max_connections_per_uid`), shutdown.
//! * [`connection`]: one client: bounded frames, timeouts, an error reply for anything it
//!   cannot answer (the connection stays usable), always a reply before closing.
//! * [`answer`]: one request to one reply frame, through the same [`Resolver`] as the lookup
//!   socket; per-connection enumeration state for `getpwent`/`getgrent`.
//!
//! [`Resolver`]: crate::resolver::Resolver

pub mod answer;
pub mod connection;
pub mod listener;

pub use listener::{bind, bind_for, SssServer};
