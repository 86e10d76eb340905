//! The wire protocol between the NSS module (`libnss_toolforge.so.2`) and the daemon
//! (`toolforge-nssd`). This crate is the only place that knows the byte layout; it depends on
//! `std` alone so the module can link it without pulling in anything else.
//!
//! A frame is a fixed [`Header`] followed by `body_len` bytes. Every decoder treats its input
//! as hostile: it checks lengths before it reads, refuses trailing bytes, NUL bytes in strings
//! and anything above the hard limits, and never panics.
//!
//! * [`frame`]: the header, limits, version and capability negotiation.
//! * [`message`]: requests and responses and their bodies.
//! * [`names`]: the name rules both sides apply before a name is sent or searched.
//! * [`admin`]: the admin socket's messages.
//! * [`mapfile`]: the shared read-only cache file the daemon publishes (and patches in place)
//!   and the module maps.
//! * [`sss`]: SSSD's NSS client protocol (what `libnss_sss.so.2` speaks), for the daemon's
//!   compatibility socket.

pub mod admin;
pub mod frame;
pub mod mapfile;
pub mod message;
pub mod names;
pub mod sss;
pub mod warm;
mod wire;

pub use frame::{
    Capabilities, DecodeError, Header, HEADER_LEN, MAGIC, MAX_REQUEST_BODY, MAX_RESPONSE_BODY,
    PROTOCOL_VERSION,
};
pub use message::{
    ErrorCode, Group, GroupRef, Passwd, PasswdRef, Request, RequestKind, Response, ResponseKind,
    ResponseRef,
};
