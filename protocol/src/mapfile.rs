//! The shared read-only cache file (`runtime_dir/cache.map`) the daemon publishes and the
//! module maps, so a warm lookup needs no socket round trip.
//!
//! ```text
//! offset size
//!      0    8 magic "TFNSMAP\0"
//!      8    4 format (1)
//!     12    4 flags: bit 0 SUPERSEDED, set by the daemon once a newer file replaced this one
//!     16    8 generation
//!     24    8 hash seed (random per file)
//!     32    8 file length
//!     40    4 table count (5)
//!     44   20 reserved (zero)
//!     64   16 x 5 tables: slots offset u64, slot count u32 (a power of two), reserved u32
//!    144      slot arrays (u64 each: hash tag << 32 | record offset; 0 = empty), then records
//! record (8-aligned) = expires_unix_secs u64 | kind u16 | key_len u16 | body_len u32
//!                      | key | body (a protocol response body of `kind`)
//! ```
//! Tables: 0 passwd by name, 1 passwd by uid, 2 group by name, 3 group by gid,
//! 4 initgroups by name. Id keys are 4 bytes little-endian. Lookups probe linearly from
//! `hash & (slots - 1)` for at most [`MAX_PROBES`] slots; the hash is FNV-1a 64 over the seed
//! and the key, and its high 32 bits are the tag.
//!
//! A published file never changes except for its flags word. [`MapView`] reads any byte
//! slice: every offset and length is checked against it before use, so a truncated,
//! corrupted or hostile file gives `None`, never a panic or an out-of-bounds read.

use crate::message::ResponseKind;

pub const MAGIC: [u8; 8] = *b"TFNSMAP\0";
pub const FORMAT: u32 = 1;
/// Offset of the flags word (4-aligned), which the daemon updates in place.
pub const FLAGS_OFFSET: usize = 12;
pub const FLAG_SUPERSEDED: u32 = 1;
pub const HEADER_LEN: usize = 64;
pub const TABLES: usize = 5;
const TABLE_DIR_LEN: usize = 16 * TABLES;
const DATA_START: usize = HEADER_LEN + TABLE_DIR_LEN;
/// Longest probe sequence a reader follows.
pub const MAX_PROBES: usize = 64;
/// Largest slot count a reader accepts.
pub const MAX_SLOTS: u32 = 1 << 24;
const RECORD_HEADER: usize = 16;

/// The five tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Table {
    PasswdByName = 0,
    PasswdByUid = 1,
    GroupByName = 2,
    GroupByGid = 3,
    InitGroups = 4,
}

impl Table {
    /// Every table, in file order.
    pub const ALL: [Table; TABLES] = [
        Table::PasswdByName,
        Table::PasswdByUid,
        Table::GroupByName,
        Table::GroupByGid,
        Table::InitGroups,
    ];
}

fn hash(seed: u64, key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Final avalanche so that the low bits (the slot index) depend on every key byte.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// One entry to write: key, expiry, kind, body.
type Entry = (Vec<u8>, u64, ResponseKind, Vec<u8>);

/// Builds a file. Entries added later for the same table and key are ignored.
pub struct MapBuilder {
    generation: u64,
    seed: u64,
    tables: [Vec<Entry>; TABLES],
    /// Upper bound of the file's length so far.
    len: usize,
}

impl MapBuilder {
    pub fn new(generation: u64, seed: u64) -> MapBuilder {
        MapBuilder {
            generation,
            seed,
            tables: Default::default(),
            len: DATA_START + TABLES * 8 * 8,
        }
    }

    /// Adds `key` to `table`: `body` of `kind` (a `NotFound` with an empty body for a known
    /// absence), valid until `expires_unix_secs`.
    pub fn add(
        &mut self,
        table: Table,
        key: &[u8],
        expires_unix_secs: u64,
        kind: ResponseKind,
        body: &[u8],
    ) {
        if key.len() <= u16::MAX as usize {
            // Up to four slots (load factor a half to a quarter), record header, key, body,
            // alignment.
            self.len += 32 + RECORD_HEADER + key.len() + body.len() + 8;
            self.tables[table as usize].push((
                key.to_vec(),
                expires_unix_secs,
                kind,
                body.to_vec(),
            ));
        }
    }

    /// Bytes the file would take so far (to enforce a size limit while adding).
    pub fn approximate_len(&self) -> usize {
        self.len
    }

    pub fn build(self) -> Vec<u8> {
        let mut out = vec![0u8; DATA_START];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        out[16..24].copy_from_slice(&self.generation.to_le_bytes());
        out[24..32].copy_from_slice(&self.seed.to_le_bytes());
        out[40..44].copy_from_slice(&(TABLES as u32).to_le_bytes());
        // Slot arrays first (load factor at most one half), records after.
        let mut slot_offsets = [0usize; TABLES];
        let mut slot_counts = [0usize; TABLES];
        for (t, entries) in self.tables.iter().enumerate() {
            let count = (entries.len() * 2).next_power_of_two().max(8);
            slot_offsets[t] = out.len();
            slot_counts[t] = count;
            out.resize(out.len() + count * 8, 0);
            let dir = HEADER_LEN + 16 * t;
            out[dir..dir + 8].copy_from_slice(&(slot_offsets[t] as u64).to_le_bytes());
            out[dir + 8..dir + 12].copy_from_slice(&(count as u32).to_le_bytes());
        }
        for (t, entries) in self.tables.iter().enumerate() {
            let mask = slot_counts[t] - 1;
            for (key, expires, kind, body) in entries {
                let h = hash(self.seed, key);
                let mut idx = (h as usize) & mask;
                let mut placed = false;
                for _ in 0..MAX_PROBES.min(slot_counts[t]) {
                    let at = slot_offsets[t] + idx * 8;
                    let slot = u64::from_le_bytes(out[at..at + 8].try_into().unwrap_or([0; 8]));
                    if slot == 0 {
                        while !out.len().is_multiple_of(8) {
                            out.push(0);
                        }
                        let rec = out.len();
                        if rec > u32::MAX as usize {
                            break;
                        }
                        out.extend_from_slice(&expires.to_le_bytes());
                        out.extend_from_slice(&(*kind as u16).to_le_bytes());
                        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
                        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
                        out.extend_from_slice(key);
                        out.extend_from_slice(body);
                        let value = ((h >> 32) << 32) | rec as u64;
                        out[at..at + 8].copy_from_slice(&value.to_le_bytes());
                        placed = true;
                        break;
                    }
                    let rec = (slot & 0xffff_ffff) as usize;
                    if let Some(existing) = out.get(rec + 10..rec + 12) {
                        let klen = u16::from_le_bytes([existing[0], existing[1]]) as usize;
                        if out.get(rec + RECORD_HEADER..rec + RECORD_HEADER + klen)
                            == Some(key.as_slice())
                        {
                            placed = true; // duplicate key: the first one stays
                            break;
                        }
                    }
                    idx = (idx + 1) & mask;
                }
                // A key that found no slot within MAX_PROBES is left out: readers then ask
                // the daemon, which is correct, only slower.
                let _ = placed;
            }
        }
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let len = out.len() as u64;
        out[32..40].copy_from_slice(&len.to_le_bytes());
        out
    }
}

/// An answer found in the file.
#[derive(Debug, PartialEq, Eq)]
pub struct MapHit<'a> {
    pub kind: u16,
    pub body: &'a [u8],
    pub expires_unix_secs: u64,
}

/// A validated view of a file's bytes.
#[derive(Clone, Copy, Debug)]
pub struct MapView<'a> {
    bytes: &'a [u8],
    seed: u64,
    generation: u64,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

impl<'a> MapView<'a> {
    /// Checks the header and table directory; `None` for anything that is not a complete
    /// file of this format.
    pub fn new(bytes: &'a [u8]) -> Option<MapView<'a>> {
        if bytes.get(0..8)? != MAGIC || u32_at(bytes, 8)? != FORMAT {
            return None;
        }
        if u64_at(bytes, 32)? != bytes.len() as u64 || u32_at(bytes, 40)? != TABLES as u32 {
            return None;
        }
        for t in 0..TABLES {
            let dir = HEADER_LEN + 16 * t;
            let off = usize::try_from(u64_at(bytes, dir)?).ok()?;
            let count = u32_at(bytes, dir + 8)?;
            if !count.is_power_of_two() || count > MAX_SLOTS {
                return None;
            }
            let end = off.checked_add(count as usize * 8)?;
            if off < DATA_START || end > bytes.len() || !off.is_multiple_of(8) {
                return None;
            }
        }
        Some(MapView {
            bytes,
            seed: u64_at(bytes, 24)?,
            generation: u64_at(bytes, 16)?,
        })
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The entry for `key` in `table`, if the file holds it (expired or not: the caller
    /// compares `expires_unix_secs` with the time).
    pub fn get(&self, table: Table, key: &[u8]) -> Option<MapHit<'a>> {
        let b = self.bytes;
        let dir = HEADER_LEN + 16 * table as usize;
        let off = usize::try_from(u64_at(b, dir)?).ok()?;
        let count = u32_at(b, dir + 8)? as usize;
        let mask = count.checked_sub(1)?;
        let h = hash(self.seed, key);
        let tag = h >> 32;
        let mut idx = (h as usize) & mask;
        for _ in 0..MAX_PROBES.min(count) {
            let slot = u64_at(b, off.checked_add(idx * 8)?)?;
            if slot == 0 {
                return None;
            }
            if slot >> 32 == tag {
                let rec = (slot & 0xffff_ffff) as usize;
                let expires = u64_at(b, rec)?;
                let kind = u16::from_le_bytes(b.get(rec + 8..rec + 10)?.try_into().ok()?);
                let key_len =
                    u16::from_le_bytes(b.get(rec + 10..rec + 12)?.try_into().ok()?) as usize;
                let body_len = u32_at(b, rec + 12)? as usize;
                let key_at = rec.checked_add(RECORD_HEADER)?;
                let body_at = key_at.checked_add(key_len)?;
                if b.get(key_at..body_at)? == key {
                    let body = b.get(body_at..body_at.checked_add(body_len)?)?;
                    return Some(MapHit {
                        kind,
                        body,
                        expires_unix_secs: expires,
                    });
                }
            }
            idx = (idx + 1) & mask;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(generation: u64) -> Vec<u8> {
        let mut b = MapBuilder::new(generation, 0x1234_5678);
        for i in 0..1000u32 {
            let name = format!("user{i}");
            b.add(
                Table::PasswdByName,
                name.as_bytes(),
                100 + u64::from(i),
                ResponseKind::Passwd,
                name.as_bytes(),
            );
            b.add(
                Table::PasswdByUid,
                &(1000 + i).to_le_bytes(),
                100,
                ResponseKind::Passwd,
                name.as_bytes(),
            );
        }
        b.add(
            Table::GroupByName,
            b"nosuch",
            50,
            ResponseKind::NotFound,
            b"",
        );
        b.build()
    }

    #[test]
    fn every_entry_is_found_and_absent_keys_are_not() {
        let bytes = sample(7);
        let v = MapView::new(&bytes).unwrap();
        assert_eq!(v.generation(), 7);
        for i in 0..1000u32 {
            let name = format!("user{i}");
            let hit = v.get(Table::PasswdByName, name.as_bytes()).unwrap();
            assert_eq!(
                (hit.kind, hit.body, hit.expires_unix_secs),
                (
                    ResponseKind::Passwd as u16,
                    name.as_bytes(),
                    100 + u64::from(i)
                )
            );
            assert_eq!(
                v.get(Table::PasswdByUid, &(1000 + i).to_le_bytes())
                    .unwrap()
                    .body,
                name.as_bytes()
            );
        }
        assert_eq!(v.get(Table::PasswdByName, b"user1000"), None);
        assert_eq!(v.get(Table::GroupByGid, &5u32.to_le_bytes()), None);
        assert_eq!(
            v.get(Table::GroupByName, b"nosuch").unwrap().kind,
            ResponseKind::NotFound as u16
        );
    }

    #[test]
    fn truncated_or_altered_headers_are_refused() {
        let bytes = sample(1);
        for cut in [0, 7, 63, 143, bytes.len() - 8] {
            assert!(MapView::new(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(MapView::new(&bad).is_none());
        let mut bad = bytes.clone();
        bad[8] = 9;
        assert!(MapView::new(&bad).is_none());
        let mut bad = bytes;
        bad[HEADER_LEN + 8] = 3; // slot count not a power of two
        assert!(MapView::new(&bad).is_none());
    }
}
