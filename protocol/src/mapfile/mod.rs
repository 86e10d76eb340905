//! The shared read-only cache data (`runtime_dir/cache.map`) the daemon publishes and the
//! module maps, so a warm lookup needs no socket round trip.
//!
//! One file, written in place: a header page and two *halves* of equal capacity. Each half
//! holds one complete publication; the header names the current one and keeps a sequence
//! counter per half (a seqlock). The daemon writes a new publication into the other half
//! (its counter odd while it writes), then makes it current. A new file is made only when a
//! publication outgrows a half (or at the first start). So the data any process can map is
//! one file holding at most two publications, whatever the number of processes and
//! publications.
//!
//! ```text
//! file (format 2), little-endian
//! offset size
//!      0    8 magic "TFNSMAP\0"
//!      8    4 format (2)
//!     12    4 flags: bit 0 SUPERSEDED (replaced by a new file, or withdrawn: reopen the path)
//!     16    8 file length (= 4096 + 2 x half length)
//!     24    8 half length (a multiple of 4096)
//!     32    8 current half (0 or 1)
//!     40    8 sequence of half 0 (odd while the daemon writes it)
//!     48    8 sequence of half 1
//!     56 4040 reserved (zero)
//!   4096      half 0, then half 1
//!
//! half (one publication)
//!      0    8 magic "TFNSPUB\0"
//!      8    4 flags: bit 0 COMPLETE (a complete mirror of the directory, mirror mode)
//!     12    4 complete until (unix seconds): with COMPLETE, a key the publication does not
//!             hold is authoritatively absent until then (0 with COMPLETE unset)
//!     16    8 generation
//!     24    8 hash seed (random per publication)
//!     32    8 length used (at most the half length)
//!     40    4 table count (5)
//!     44    4 tombstone offset: the publication's one tombstone record (0 = none yet;
//!             written by [`Patcher`], ignored by readers)
//!     48   16 miss key (random per publication: keys of negative entries are hashed with it)
//!     64   80 5 tables: slots offset u64, slot count u32 (a power of two), occupied slots
//!             u32 (live + tombstones; kept by [`MapBuilder`] and [`Patcher`], ignored by
//!             readers)
//!    144      slot arrays (u64 each: hash tag << 32 | record offset; 0 = empty), then records
//! record (8-aligned) = expires_unix_secs u64 | kind u16 | key_len u16 | body_len u32
//!                      | key | body (a protocol response body of `kind`)
//! tombstone record   = expires 0 | kind Passwd | key_len 0 | body_len 0
//! ```
//! Tables: 0 passwd by name, 1 passwd by uid, 2 group by name, 3 group by gid,
//! 4 initgroups by name. Id keys are 4 bytes little-endian. Lookups probe linearly from
//! `hash & (slots - 1)` for at most [`MAX_PROBES`] slots; the hash is FNV-1a 64 over the seed
//! and the key, and its high 32 bits are the tag.
//!
//! Patches in place ([`Patcher`], `mapfile/patch.rs`): the daemon may change single keys of a
//! half (under its sequence, like a write) without rebuilding the publication. A new or
//! replaced record is appended at the length used and its slot pointed at it (tag unchanged;
//! a replaced record stays behind as garbage until the next build); a removed key's slot
//! becomes a *tombstone*: tag 0 and the offset of the publication's one tombstone record,
//! whose empty stored key never equals a key (keys are never empty), so a reader's probe
//! passes it without ending there. A new key takes the first tombstone or the empty slot of
//! its probe, while at most 3/4 of a table's slots are occupied. Readers need no change.
//!
//! Privacy of misses: a negative entry (`NotFound`, empty body) does not store its key but
//! [`MISS_DIGEST_LEN`] bytes of SipHash-2-4 keyed with the publication's miss key, so the
//! file confirms a guessed name (as a lookup would) but does not list the names others looked
//! up in vain. A negative entry whose digest equals a stored key of its table is left out.
//!
//! Readers: load the current half, its sequence (even), read, copy the answer out, then check
//! that the sequence did not move ([`Region::current`], [`SEQ_OFFSET`]); otherwise retry or
//! ask the daemon. [`MapView`] reads any byte slice: every offset and length is checked
//! against it before use, so a truncated, corrupted, torn or hostile file gives `None` or
//! garbage that the caller discards, never a panic or an out-of-bounds read.

use crate::message::ResponseKind;

mod patch;

pub use patch::{HalfIo, PatchError, Patcher};

pub const MAGIC: [u8; 8] = *b"TFNSMAP\0";
pub const FORMAT: u32 = 2;
/// Offset of the file's flags word (4-aligned), which the daemon updates in place.
pub const FLAGS_OFFSET: usize = 12;
pub const FLAG_SUPERSEDED: u32 = 1;
/// Offset of the current half's index (8-aligned).
pub const CURRENT_OFFSET: usize = 32;
/// Offset of half `h`'s sequence counter: `SEQ_OFFSET + 8 * h` (8-aligned).
pub const SEQ_OFFSET: usize = 40;
/// The header page; halves start here.
pub const REGION_HEADER: usize = 4096;
/// Publication flag: the half holds the complete directory (mirror mode, issue 13).
pub const FLAG_COMPLETE: u32 = 1;
pub const PUB_MAGIC: [u8; 8] = *b"TFNSPUB\0";
pub const HEADER_LEN: usize = 64;
pub const TABLES: usize = 5;
const TABLE_DIR_LEN: usize = 16 * TABLES;
const DATA_START: usize = HEADER_LEN + TABLE_DIR_LEN;
/// Longest probe sequence a reader follows.
pub const MAX_PROBES: usize = 64;
/// Largest slot count a reader accepts.
pub const MAX_SLOTS: u32 = 1 << 24;
const RECORD_HEADER: usize = 16;
/// Bytes of keyed digest stored instead of a negative entry's key.
pub const MISS_DIGEST_LEN: usize = 16;
/// Offset of the publication's tombstone-record offset (u32, 0 = none).
const TOMBSTONE_OFFSET: usize = 44;
/// Offset, within a table's directory entry, of its occupied-slot count (u32).
const DIR_OCCUPIED: usize = 12;

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

/// SipHash-2-4 of `m` under the key (`k0`, `k1`).
fn siphash(k0: u64, k1: u64, m: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut chunks = m.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let mi = u64::from_le_bytes(w);
        v[3] ^= mi;
        round(&mut v);
        round(&mut v);
        v[0] ^= mi;
    }
    let mut last = (m.len() as u64) << 56;
    for (i, b) in chunks.remainder().iter().enumerate() {
        last |= u64::from(*b) << (8 * i);
    }
    v[3] ^= last;
    round(&mut v);
    round(&mut v);
    v[0] ^= last;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The stored key of a negative entry: a keyed digest of the key, not the key.
pub fn miss_digest(miss_key: &[u8; 16], key: &[u8]) -> [u8; MISS_DIGEST_LEN] {
    let mut k = [0u8; 8];
    k.copy_from_slice(&miss_key[..8]);
    let k0 = u64::from_le_bytes(k);
    k.copy_from_slice(&miss_key[8..]);
    let k1 = u64::from_le_bytes(k);
    let mut out = [0u8; MISS_DIGEST_LEN];
    out[..8].copy_from_slice(&siphash(k0, k1, key).to_le_bytes());
    out[8..].copy_from_slice(&siphash(k1 ^ 0x5a5a_5a5a_5a5a_5a5a, k0, key).to_le_bytes());
    out
}

/// Appends one record as the file lays it out: header (expiry, kind, key length, body
/// length), the stored key, the body, zeros to the next multiple of 8. The caller has
/// checked that the key fits a u16 and the body a u32.
pub(crate) fn push_record(
    out: &mut Vec<u8>,
    expires_unix_secs: u64,
    kind: ResponseKind,
    stored_key: &[u8],
    body: &[u8],
) {
    out.extend_from_slice(&expires_unix_secs.to_le_bytes());
    out.extend_from_slice(&(kind as u16).to_le_bytes());
    out.extend_from_slice(&(stored_key.len() as u16).to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(stored_key);
    out.extend_from_slice(body);
    out.resize(out.len().next_multiple_of(8), 0);
}

/// One entry to write: key, expiry, kind, body.
/// One added entry, as the builder indexes it: its slot hash, where its record starts in
/// the builder's arena, and for a negative entry the hashes of its key and of its digest
/// (a negative entry is left out when a positive one has either; see [`MapBuilder::build`]).
#[derive(Clone, Copy)]
struct Pending {
    hash: u64,
    record: u32,
    negative: Option<(u64, u64)>,
}

/// Builds one publication (a half). Entries added later for the same table and key are
/// ignored; a negative entry for a key that also has a positive one is left out.
///
/// Each entry is serialised once, at [`MapBuilder::add`], into one arena of records (as they
/// will be stored); [`MapBuilder::build`] lays out the slot arrays and copies the records
/// behind them. So building the whole directory costs two large buffers (the arena, the
/// output), not two small allocations per entry.
pub struct MapBuilder {
    generation: u64,
    seed: u64,
    miss_key: [u8; 16],
    flags: u32,
    /// Unix seconds until which a complete publication's misses are authoritative.
    complete_until: u32,
    /// Records, each 8-aligned, in the order they were added.
    records: Vec<u8>,
    tables: [Vec<Pending>; TABLES],
    /// Upper bound of the publication's length so far.
    len: usize,
}

impl MapBuilder {
    /// A builder; the miss key is derived from `seed` (call [`MapBuilder::miss_key`] to set
    /// one of its own).
    pub fn new(generation: u64, seed: u64) -> MapBuilder {
        let mut miss_key = [0u8; 16];
        miss_key[..8].copy_from_slice(&siphash(seed, !seed, b"miss0").to_le_bytes());
        miss_key[8..].copy_from_slice(&siphash(!seed, seed, b"miss1").to_le_bytes());
        MapBuilder {
            generation,
            seed,
            miss_key,
            flags: 0,
            complete_until: 0,
            records: Vec::new(),
            tables: Default::default(),
            len: DATA_START + TABLES * 8 * 8,
        }
    }

    /// Sets the key negative entries are hashed with.
    pub fn miss_key(mut self, key: [u8; 16]) -> MapBuilder {
        self.miss_key = key;
        self
    }

    /// Marks the publication as a complete mirror of the directory (mirror mode) until
    /// `until_unix_secs` (`None`: not complete): until then, a key it does not hold is
    /// authoritatively absent.
    pub fn complete(mut self, until_unix_secs: Option<u64>) -> MapBuilder {
        match until_unix_secs {
            Some(until) => {
                self.flags = FLAG_COMPLETE;
                self.complete_until = u32::try_from(until).unwrap_or(u32::MAX);
            }
            None => {
                self.flags = 0;
                self.complete_until = 0;
            }
        }
        self
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
        if u32::try_from(body.len()).is_err() {
            return;
        }
        if key.len() > u16::MAX as usize {
            return;
        }
        let record = self.records.len();
        // An arena past 4 GiB cannot be addressed by a slot (nor would it fit a half).
        let Ok(record32) = u32::try_from(record) else {
            return;
        };
        let h = hash(self.seed, key);
        let digest;
        let (stored, negative): (&[u8], _) = if kind == ResponseKind::NotFound {
            digest = miss_digest(&self.miss_key, key);
            (&digest, Some((h, hash(self.seed, &digest))))
        } else {
            (key, None)
        };
        self.len += Self::entry_cost(key.len(), body.len());
        push_record(&mut self.records, expires_unix_secs, kind, stored, body);
        self.tables[table as usize].push(Pending {
            hash: h,
            record: record32,
            negative,
        });
    }

    /// An upper bound of what one entry adds to a publication: up to four slots (load
    /// factor a half to a quarter), record header, key (or a miss digest), body, alignment.
    pub fn entry_cost(key_len: usize, body_len: usize) -> usize {
        32 + RECORD_HEADER + key_len.max(MISS_DIGEST_LEN) + body_len + 8
    }

    /// Bytes the publication would take so far (to enforce a size limit while adding).
    pub fn approximate_len(&self) -> usize {
        self.len
    }

    /// The record at `at` in `bytes` (header, key, body), and its stored key.
    fn record_at(bytes: &[u8], at: usize) -> Option<(&[u8], &[u8])> {
        let key_len = u16::from_le_bytes(bytes.get(at + 10..at + 12)?.try_into().ok()?) as usize;
        let body_len = u32_at(bytes, at + 12)? as usize;
        let key_end = at + RECORD_HEADER + key_len;
        Some((
            bytes.get(at..key_end + body_len)?,
            bytes.get(at + RECORD_HEADER..key_end)?,
        ))
    }

    /// The publication's bytes (to be written into a half).
    pub fn build(self) -> Vec<u8> {
        let slot_bytes: usize = self
            .tables
            .iter()
            .map(|t| (t.len() * 2).next_power_of_two().max(8) * 8)
            .sum();
        let mut out = Vec::with_capacity(DATA_START + slot_bytes + self.records.len());
        out.resize(DATA_START, 0);
        out[0..8].copy_from_slice(&PUB_MAGIC);
        out[8..12].copy_from_slice(&self.flags.to_le_bytes());
        out[12..16].copy_from_slice(&self.complete_until.to_le_bytes());
        out[16..24].copy_from_slice(&self.generation.to_le_bytes());
        out[24..32].copy_from_slice(&self.seed.to_le_bytes());
        out[40..44].copy_from_slice(&(TABLES as u32).to_le_bytes());
        out[48..64].copy_from_slice(&self.miss_key);
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
            // Hashes of the keys with a positive answer: a negative entry never shadows or
            // collides with one. (Two keys of one hash only make a negative entry left out,
            // which costs a reader a question to the daemon, never a wrong answer.)
            let positive: std::collections::HashSet<u64> = entries
                .iter()
                .filter(|e| e.negative.is_none())
                .map(|e| e.hash)
                .collect();
            let mask = slot_counts[t] - 1;
            let mut occupied: u32 = 0;
            for e in entries {
                if let Some((key_hash, digest_hash)) = e.negative {
                    if positive.contains(&key_hash) || positive.contains(&digest_hash) {
                        continue;
                    }
                }
                let Some((record, stored)) = Self::record_at(&self.records, e.record as usize)
                else {
                    continue;
                };
                let mut idx = (e.hash as usize) & mask;
                for _ in 0..MAX_PROBES.min(slot_counts[t]) {
                    let at = slot_offsets[t] + idx * 8;
                    let slot = u64::from_le_bytes(out[at..at + 8].try_into().unwrap_or([0; 8]));
                    if slot == 0 {
                        let rec = out.len();
                        if rec > u32::MAX as usize {
                            break;
                        }
                        out.extend_from_slice(record);
                        out.resize(out.len().next_multiple_of(8), 0);
                        let value = ((e.hash >> 32) << 32) | rec as u64;
                        out[at..at + 8].copy_from_slice(&value.to_le_bytes());
                        occupied += 1;
                        break;
                    }
                    let rec = (slot & 0xffff_ffff) as usize;
                    if Self::record_at(&out, rec).is_some_and(|(_, existing)| existing == stored) {
                        break; // duplicate key: the first one stays
                    }
                    idx = (idx + 1) & mask;
                }
                // A key that found no slot within MAX_PROBES is left out: readers then ask
                // the daemon, which is correct, only slower.
            }
            let dir = HEADER_LEN + 16 * t + DIR_OCCUPIED;
            out[dir..dir + 4].copy_from_slice(&occupied.to_le_bytes());
        }
        let len = out.len() as u64;
        out[32..40].copy_from_slice(&len.to_le_bytes());
        out
    }
}

/// A file of format 2 around one publication in half 0 (tests and tools; the daemon writes
/// halves in place, see `daemon/src/publish.rs`).
pub fn single_file(publication: &[u8]) -> Vec<u8> {
    let half = round_up_page(publication.len().max(1));
    let mut out = Region::header(half as u64);
    out.resize(REGION_HEADER + 2 * half, 0);
    out[REGION_HEADER..REGION_HEADER + publication.len()].copy_from_slice(publication);
    out
}

/// `n` rounded up to a multiple of 4096.
pub fn round_up_page(n: usize) -> usize {
    n.div_ceil(4096).saturating_mul(4096)
}

/// The file's header page: where the halves are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub half_len: usize,
}

impl Region {
    /// Checks the header of a file of `file_len` bytes whose first bytes are `head`.
    pub fn parse(head: &[u8], file_len: usize) -> Option<Region> {
        if head.get(0..8)? != MAGIC || u32_at(head, 8)? != FORMAT {
            return None;
        }
        let len = usize::try_from(u64_at(head, 16)?).ok()?;
        let half_len = usize::try_from(u64_at(head, 24)?).ok()?;
        if len != file_len
            || half_len == 0
            || !half_len.is_multiple_of(4096)
            || half_len.checked_mul(2)?.checked_add(REGION_HEADER)? != len
        {
            return None;
        }
        Some(Region { half_len })
    }

    /// A fresh header page for halves of `half_len` bytes: half 0 current, sequences 0.
    pub fn header(half_len: u64) -> Vec<u8> {
        let mut h = vec![0u8; REGION_HEADER];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        let len = REGION_HEADER as u64 + 2 * half_len;
        h[16..24].copy_from_slice(&len.to_le_bytes());
        h[24..32].copy_from_slice(&half_len.to_le_bytes());
        h
    }

    /// Byte range of half `h` (0 or 1) in the file.
    pub fn half(&self, h: usize) -> std::ops::Range<usize> {
        let start = REGION_HEADER + (h & 1) * self.half_len;
        start..start + self.half_len
    }

    /// The current half and its sequence from a (possibly changing) header: for tools that
    /// read a copy of the file. `None` while that half is being written.
    pub fn current(head: &[u8]) -> Option<(usize, u64)> {
        let h = (u64_at(head, CURRENT_OFFSET)? & 1) as usize;
        let seq = u64_at(head, SEQ_OFFSET + 8 * h)?;
        seq.is_multiple_of(2).then_some((h, seq))
    }
}

/// An answer found in a publication.
#[derive(Debug, PartialEq, Eq)]
pub struct MapHit<'a> {
    pub kind: u16,
    pub body: &'a [u8],
    pub expires_unix_secs: u64,
}

/// A validated view of one publication's bytes.
#[derive(Clone, Copy, Debug)]
pub struct MapView<'a> {
    bytes: &'a [u8],
    seed: u64,
    generation: u64,
    flags: u32,
    complete_until: u32,
    miss_key: [u8; 16],
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
    /// The current publication of a whole file (a copy read with `read(2)`, e.g. by tools):
    /// `None` for anything that is not a complete file of this format, or while its current
    /// half is being written.
    pub fn new(file: &'a [u8]) -> Option<MapView<'a>> {
        let region = Region::parse(file, file.len())?;
        let (h, _) = Region::current(file)?;
        let view = MapView::publication(file.get(region.half(h))?)?;
        view.tables_fit().then_some(view)
    }

    /// Checks a publication's header (`half` is the whole half; the publication may use
    /// less of it); `None` for anything that is not a publication. Tables are checked when
    /// [`MapView::get`] reads them (the lookup path reads one); [`MapView::new`] checks all.
    pub fn publication(half: &'a [u8]) -> Option<MapView<'a>> {
        if half.get(0..8)? != PUB_MAGIC {
            return None;
        }
        let used = usize::try_from(u64_at(half, 32)?).ok()?;
        let bytes = half.get(..used)?;
        if u32_at(bytes, 40)? != TABLES as u32 {
            return None;
        }
        Some(MapView {
            bytes,
            seed: u64_at(bytes, 24)?,
            generation: u64_at(bytes, 16)?,
            flags: u32_at(bytes, 8)?,
            complete_until: u32_at(bytes, 12)?,
            miss_key: bytes.get(48..64)?.try_into().ok()?,
        })
    }

    /// The slot array of `table`: offset and count, if its directory entry fits.
    fn table(&self, table: Table) -> Option<(usize, usize)> {
        let b = self.bytes;
        let dir = HEADER_LEN + 16 * table as usize;
        let off = usize::try_from(u64_at(b, dir)?).ok()?;
        let count = u32_at(b, dir + 8)?;
        if !count.is_power_of_two() || count > MAX_SLOTS {
            return None;
        }
        let end = off.checked_add(count as usize * 8)?;
        if off < DATA_START || end > b.len() || !off.is_multiple_of(8) {
            return None;
        }
        Some((off, count as usize))
    }

    /// Whether every table directory fits.
    fn tables_fit(&self) -> bool {
        Table::ALL.iter().all(|t| self.table(*t).is_some())
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes the publication uses.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Whether the publication is a complete mirror (a miss is authoritative while
    /// [`MapView::complete_at`]).
    pub fn complete(&self) -> bool {
        self.flags & FLAG_COMPLETE != 0
    }

    /// Whether, at `now_unix_secs`, a key this publication does not hold is authoritatively
    /// absent: a complete mirror, within its validity.
    pub fn complete_at(&self, now_unix_secs: u64) -> bool {
        self.complete() && now_unix_secs < u64::from(self.complete_until)
    }

    /// The entry for `key` in `table`, if the publication holds it (expired or not: the
    /// caller compares `expires_unix_secs` with the time). Negative entries are found by the
    /// keyed digest of `key`.
    pub fn get(&self, table: Table, key: &[u8]) -> Option<MapHit<'a>> {
        let b = self.bytes;
        let (off, count) = self.table(table)?;
        let mask = count.checked_sub(1)?;
        let h = hash(self.seed, key);
        let tag = h >> 32;
        let mut idx = (h as usize) & mask;
        let mut digest: Option<[u8; MISS_DIGEST_LEN]> = None;
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
                let stored = b.get(key_at..body_at)?;
                let matches = if kind == ResponseKind::NotFound as u16 {
                    stored == digest.get_or_insert_with(|| miss_digest(&self.miss_key, key))
                } else {
                    stored == key
                };
                if matches {
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

    /// Every stored key of `table` (negative entries show their digest; tombstones, whose
    /// stored key is empty, are skipped): for tests and tools.
    pub fn stored_keys(&self, table: Table) -> Vec<&'a [u8]> {
        let b = self.bytes;
        let mut out = Vec::new();
        let dir = HEADER_LEN + 16 * table as usize;
        let (Some(off), Some(count)) = (u64_at(b, dir), u32_at(b, dir + 8)) else {
            return out;
        };
        for i in 0..count as usize {
            let Some(slot) = u64_at(b, off as usize + i * 8) else {
                break;
            };
            if slot == 0 {
                continue;
            }
            let rec = (slot & 0xffff_ffff) as usize;
            let key_len = b
                .get(rec + 10..rec + 12)
                .map_or(0, |k| u16::from_le_bytes([k[0], k[1]]) as usize);
            if key_len == 0 {
                continue; // a tombstone (a removed key)
            }
            if let Some(k) = b.get(rec + RECORD_HEADER..rec + RECORD_HEADER + key_len) {
                out.push(k);
            }
        }
        out
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
        single_file(&b.build())
    }

    #[test]
    fn every_entry_is_found_and_absent_keys_are_not() {
        let bytes = sample(7);
        let v = MapView::new(&bytes).unwrap();
        assert_eq!(v.generation(), 7);
        assert!(!v.complete());
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
        assert_eq!(v.get(Table::GroupByName, b"nosuci"), None);
    }

    #[test]
    fn truncated_or_altered_headers_are_refused() {
        let bytes = sample(1);
        for cut in [0, 7, 63, 143, 4095, 4096 + 143, bytes.len() - 8] {
            assert!(MapView::new(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(MapView::new(&bad).is_none());
        let mut bad = bytes.clone();
        bad[8] = 1; // format 1: an older module's file, or a newer one's: not read
        assert!(MapView::new(&bad).is_none());
        let mut bad = bytes.clone();
        bad[REGION_HEADER + HEADER_LEN + 8] = 3; // slot count not a power of two
        assert!(MapView::new(&bad).is_none());
        let mut bad = bytes.clone();
        bad[SEQ_OFFSET] = 1; // the current half is being written
        assert!(MapView::new(&bad).is_none());
        let mut other = bytes;
        other[CURRENT_OFFSET] = 1; // the other half holds nothing yet
        assert!(MapView::new(&other).is_none());
    }

    #[test]
    fn misses_are_stored_as_keyed_digests_and_never_shadow_names() {
        let mut b = MapBuilder::new(1, 99).complete(Some(2_000_000_000));
        b.add(Table::PasswdByName, b"alice", 9, ResponseKind::Passwd, b"A");
        b.add(
            Table::PasswdByName,
            b"alice",
            9,
            ResponseKind::NotFound,
            b"",
        );
        b.add(
            Table::PasswdByName,
            b"secret-typo-name",
            9,
            ResponseKind::NotFound,
            b"",
        );
        // A negative entry whose digest equals a stored (positive) key is left out.
        let key = MapBuilder::new(1, 99).miss_key;
        let collide = miss_digest(&key, b"victim");
        b.add(Table::PasswdByName, &collide, 9, ResponseKind::Passwd, b"C");
        b.add(
            Table::PasswdByName,
            b"victim",
            9,
            ResponseKind::NotFound,
            b"",
        );
        let pubn = b.build();
        let file = single_file(&pubn);
        let v = MapView::new(&file).unwrap();
        assert!(v.complete());
        assert!(
            v.complete_at(1_999_999_999),
            "misses authoritative until then"
        );
        assert!(!v.complete_at(2_000_000_000), "and no longer");
        assert_eq!(v.get(Table::PasswdByName, b"alice").unwrap().body, b"A");
        assert_eq!(
            v.get(Table::PasswdByName, b"secret-typo-name")
                .unwrap()
                .kind,
            ResponseKind::NotFound as u16
        );
        assert_eq!(v.get(Table::PasswdByName, b"victim"), None);
        assert!(!pubn.windows(16).any(|w| w == b"secret-typo-name"));
        assert!(!pubn.windows(6).any(|w| w == b"victim"));
        assert_eq!(v.stored_keys(Table::PasswdByName).len(), 3);
    }

    #[test]
    fn siphash_matches_the_reference_vector() {
        // SipHash-2-4 paper, appendix A: key 00..0f, message 00..0e.
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let m: Vec<u8> = (0..15).collect();
        assert_eq!(siphash(k0, k1, &m), 0xa129_ca61_49be_45e5);
    }
}
