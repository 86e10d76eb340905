//! `libnss_toolforge.so.2`: the glibc NSS module of toolforge-nss (service name `toolforge`).
//!
//! It runs inside every process of a container, so it never panics across FFI (every export
//! is wrapped in `catch_unwind`, and the crate denies `unwrap`/`expect`/`panic`/indexing),
//! never spawns threads, never prints, keeps no thread-locals, keeps its fds close-on-exec
//! and above 2, and bounds every call by a time budget. A missing daemon costs microseconds
//! and answers `NSS_STATUS_UNAVAIL`, so `files` keeps working.
//!
//! Code map: [`exports`] are the `_nss_toolforge_*` functions and the status discipline;
//! [`client`] does one request/response exchange with the daemon; [`connection`] owns the
//! socket (cached fd, fork and fd-reuse safety); [`breaker`] skips a failing daemon for a
//! while; [`pack`] writes answers into the caller's buffer; [`enumeration`] keeps
//! `getpwent`/`getgrent` state; [`last_reply`] answers an ERANGE retry without a round
//! trip; [`mapcache`] answers warm lookups from the daemon's shared cache file without a
//! round trip (its entries decoded by the protocol crate's `warm` decoders); [`settings`] reads the environment once; [`clock`] is the monotonic clock;
//! [`trust`] decides whose directory, file and socket are believed; [`sys`] holds the raw
//! system calls that keep the module within the glibc 2.17 baseline.

pub mod breaker;
pub mod client;
pub mod clock;
pub mod connection;
pub mod enumeration;
pub mod exports;
pub mod last_reply;
pub mod mapcache;
pub mod pack;
pub mod settings;
pub mod sys;
pub mod trust;

/// `enum nss_status` from glibc's `<nss.h>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NssStatus {
    TryAgain = -2,
    Unavail = -1,
    NotFound = 0,
    Success = 1,
    Return = 2,
}
