//! The fixed frame header, the hard size limits, and version/capability negotiation.
//!
//! ```text
//! offset size field
//!      0    4 magic          b"TFNS"
//!      4    2 version        protocol version the sender speaks in this frame
//!      6    2 flags          per-frame flags (FLAG_STALE on responses)
//!      8    4 capabilities   the sender's capability bits
//!     12    2 kind           request or response kind
//!     14    2 reserved       zero
//!     16    4 request_id     echoed by the daemon
//!     20    4 body_len       bytes that follow the header
//! ```
//! All integers are little-endian.
//!
//! Negotiation: a module sends the highest version it speaks. The daemon answers in that
//! version when it supports it; otherwise it answers with an `Error` of code
//! `UnsupportedVersion` in version 1 layout (the error body's layout is frozen), and the
//! module returns `NSS_STATUS_UNAVAIL`. Optional behaviour inside a version is gated by
//! capability bits: a side uses a feature only when both set its bit. Unknown bits are ignored.

use std::fmt;

/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"TFNS";
/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// The oldest version this crate still decodes.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 24;
/// Largest request body the daemon accepts (names are at most 255 bytes).
pub const MAX_REQUEST_BODY: u32 = 1024;
/// Largest response body either side produces or accepts (4 MiB: a group of ~100,000 members).
pub const MAX_RESPONSE_BODY: u32 = 4 << 20;

/// Response flag: the answer came from cache past its TTL because the directory is unreachable.
pub const FLAG_STALE: u16 = 1 << 0;

/// Optional protocol features, negotiated per request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// The client understands `FLAG_STALE` on responses.
    pub const STALE_FLAG: Capabilities = Capabilities(1 << 0);
    /// Every capability this crate implements.
    pub const ALL: Capabilities = Capabilities::STALE_FLAG;

    /// Capabilities both sides have.
    pub fn intersect(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & other.0 & Self::ALL.0)
    }

    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Why a frame or body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    Truncated,
    BadMagic,
    UnsupportedVersion(u16),
    TooLarge(u32),
    UnknownKind(u16),
    TrailingBytes,
    NulInString,
    InvalidUtf8,
    Invalid(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "frame truncated"),
            DecodeError::BadMagic => write!(f, "bad magic"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            DecodeError::TooLarge(n) => write!(f, "body of {n} bytes exceeds the limit"),
            DecodeError::UnknownKind(k) => write!(f, "unknown message kind {k:#x}"),
            DecodeError::TrailingBytes => write!(f, "trailing bytes after body"),
            DecodeError::NulInString => write!(f, "NUL byte inside a string"),
            DecodeError::InvalidUtf8 => write!(f, "string is not UTF-8"),
            DecodeError::Invalid(what) => write!(f, "invalid {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The fixed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub flags: u16,
    pub capabilities: Capabilities,
    pub kind: u16,
    pub request_id: u32,
    pub body_len: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.capabilities.0.to_le_bytes());
        b[12..14].copy_from_slice(&self.kind.to_le_bytes());
        // 14..16 reserved, zero
        b[16..20].copy_from_slice(&self.request_id.to_le_bytes());
        b[20..24].copy_from_slice(&self.body_len.to_le_bytes());
        b
    }

    /// Decodes a header and checks the magic and the body limit `max_body`. The version is
    /// returned as sent; callers decide with [`Header::version_supported`] (the daemon must
    /// still answer an unsupported version with an error frame).
    pub fn decode(buf: &[u8], max_body: u32) -> Result<Header, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::Truncated);
        }
        if buf[0..4] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let u16_at = |i: usize| u16::from_le_bytes([buf[i], buf[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let h = Header {
            version: u16_at(4),
            flags: u16_at(6),
            capabilities: Capabilities(u32_at(8)),
            kind: u16_at(12),
            request_id: u32_at(16),
            body_len: u32_at(20),
        };
        if h.body_len > max_body {
            return Err(DecodeError::TooLarge(h.body_len));
        }
        Ok(h)
    }

    pub fn version_supported(&self) -> bool {
        (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            version: 1,
            flags: FLAG_STALE,
            capabilities: Capabilities::STALE_FLAG,
            kind: 0x81,
            request_id: 0xdead_beef,
            body_len: 42,
        }
    }

    #[test]
    fn header_round_trips() {
        let h = sample();
        assert_eq!(Header::decode(&h.encode(), MAX_RESPONSE_BODY), Ok(h));
    }

    #[test]
    fn header_layout_is_pinned() {
        let b = sample().encode();
        assert_eq!(&b[0..4], b"TFNS");
        assert_eq!(b[4..6], [1, 0]);
        assert_eq!(b[6..8], [1, 0]);
        assert_eq!(b[12..14], [0x81, 0]);
        assert_eq!(b[16..20], [0xef, 0xbe, 0xad, 0xde]);
        assert_eq!(b[20..24], [42, 0, 0, 0]);
    }

    #[test]
    fn header_refuses_bad_magic_short_input_and_oversized_body() {
        let mut b = sample().encode();
        assert_eq!(Header::decode(&b[..10], 100), Err(DecodeError::Truncated));
        assert_eq!(Header::decode(&b, 41), Err(DecodeError::TooLarge(42)));
        b[0] = b'X';
        assert_eq!(Header::decode(&b, 100), Err(DecodeError::BadMagic));
    }

    #[test]
    fn versions_outside_the_range_are_flagged() {
        let mut h = sample();
        assert!(h.version_supported());
        h.version = 0;
        assert!(!h.version_supported());
        h.version = PROTOCOL_VERSION + 1;
        assert!(!h.version_supported());
    }

    #[test]
    fn unknown_capability_bits_are_ignored() {
        let theirs = Capabilities(0xffff_ffff);
        assert_eq!(theirs.intersect(Capabilities::ALL), Capabilities::ALL);
        assert_eq!(
            Capabilities(1 << 31).intersect(Capabilities::ALL),
            Capabilities(0)
        );
    }
}
