//! Bounds-checked primitives for reading and writing little-endian fields. Everything that
//! decodes goes through [`Reader`], which never reads past its slice and never panics.

use crate::frame::DecodeError;

/// Appends little-endian fields to a byte vector.
pub(crate) struct Writer<'a> {
    pub(crate) out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    pub(crate) fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    /// A string field: u16 length, then the bytes. Callers guarantee `len <= u16::MAX`
    /// (the daemon refuses longer values before it encodes them); longer input is truncated
    /// at a byte boundary rather than producing a frame that lies about its length.
    pub(crate) fn str(&mut self, s: &[u8]) {
        let len = s.len().min(u16::MAX as usize);
        self.u16(len as u16);
        self.out.extend_from_slice(&s[..len]);
    }
}

/// Reads little-endian fields from an untrusted slice.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A string field: u16 length and bytes, which must not contain NUL (they become C strings).
    pub(crate) fn str(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()? as usize;
        let s = self.bytes(len)?;
        if s.contains(&0) {
            return Err(DecodeError::NulInString);
        }
        Ok(s)
    }

    /// The `n` bytes read most recently (`n` must not exceed what was read).
    pub(crate) fn last(&self, n: usize) -> &'a [u8] {
        &self.buf[self.pos.saturating_sub(n)..self.pos]
    }

    /// Succeeds only when every byte was consumed.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}
