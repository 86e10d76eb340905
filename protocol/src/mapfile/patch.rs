//! Patching a published half in place: set or remove single keys of a publication that
//! [`MapBuilder`](super::MapBuilder) built, without rebuilding it, so that the reader as it
//! is ([`MapView::get`](super::MapView::get)) reads the patched half correctly.
//!
//! The daemon patches a half under its seqlock (readers retry torn reads), so the order of
//! the writes within one call does not matter to readers. What this module owns:
//!
//! * where a record goes: appended at the publication's length used (8-aligned, padded with
//!   zeros, as the builder lays records out), never past the half's capacity, at an offset a
//!   slot can hold (u32);
//! * which slot a key takes: the builder's linear probe from `hash & mask` for at most
//!   `MAX_PROBES.min(count)` slots, reusing the first tombstone seen, within an occupancy of
//!   3/4 of the slots (live + tombstones);
//! * removal: the slot becomes a tombstone (tag 0, offset of the publication's one tombstone
//!   record, appended at the first removal and named in the half header), which readers skip
//!   without ending their probe;
//! * the header fields a patch changes (length used, generation, occupancy, tombstone offset),
//!   written by [`Patcher::finish`].
//!
//! Every call either completes or fails before writing anything; the same calls on two
//! byte-identical halves leave them byte-identical (errors included). Every offset and length
//! read from the half is checked: hostile bytes give [`PatchError::Invalid`], never a panic.

use std::fmt;
use std::io;

use super::{
    hash, miss_digest, push_record, u32_at, u64_at, Table, DATA_START, DIR_OCCUPIED, FLAG_COMPLETE,
    HEADER_LEN, MAX_PROBES, MAX_SLOTS, MISS_DIGEST_LEN, PUB_MAGIC, RECORD_HEADER, TABLES,
    TOMBSTONE_OFFSET,
};
use crate::message::ResponseKind;

/// Random access to the bytes of one half, for [`Patcher`] (the daemon: the file at the
/// half's offset, with space reserved before writes; tests: a byte slice).
pub trait HalfIo {
    /// The half's length (its capacity).
    fn capacity(&self) -> usize;
    fn read_at(&self, at: usize, buf: &mut [u8]) -> io::Result<()>;
    fn write_at(&mut self, at: usize, data: &[u8]) -> io::Result<()>;
}

fn out_of_range(at: usize, len: usize, capacity: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("bytes {at}+{len} out of a half of {capacity} bytes"),
    )
}

impl HalfIo for [u8] {
    fn capacity(&self) -> usize {
        self.len()
    }

    fn read_at(&self, at: usize, buf: &mut [u8]) -> io::Result<()> {
        let src = at
            .checked_add(buf.len())
            .and_then(|end| self.get(at..end))
            .ok_or_else(|| out_of_range(at, buf.len(), self.len()))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&mut self, at: usize, data: &[u8]) -> io::Result<()> {
        let len = self.len();
        let dst = at
            .checked_add(data.len())
            .and_then(|end| self.get_mut(at..end))
            .ok_or_else(|| out_of_range(at, data.len(), len))?;
        dst.copy_from_slice(data);
        Ok(())
    }
}

/// A `Vec` is patched as the slice it holds: it never grows.
impl HalfIo for Vec<u8> {
    fn capacity(&self) -> usize {
        self.len()
    }

    fn read_at(&self, at: usize, buf: &mut [u8]) -> io::Result<()> {
        self.as_slice().read_at(at, buf)
    }

    fn write_at(&mut self, at: usize, data: &[u8]) -> io::Result<()> {
        self.as_mut_slice().write_at(at, data)
    }
}

#[derive(Debug)]
pub enum PatchError {
    /// No room: the half's capacity, the table's occupancy limit or the probe limit.
    NoRoom,
    /// Not a publication this code can patch, or an unsupported change.
    Invalid,
    Io(io::Error),
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchError::NoRoom => write!(
                f,
                "no room in the published half (capacity, table occupancy or probe limit)"
            ),
            PatchError::Invalid => write!(
                f,
                "not a publication that can be patched, or an unsupported change"
            ),
            PatchError::Io(e) => write!(f, "patching the published half: {e}"),
        }
    }
}

impl std::error::Error for PatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PatchError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for PatchError {
    fn from(e: io::Error) -> PatchError {
        PatchError::Io(e)
    }
}

/// The tombstone record: expires 0, kind Passwd, key_len 0, body_len 0.
fn tombstone_record() -> [u8; RECORD_HEADER] {
    let mut r = [0u8; RECORD_HEADER];
    r[8..10].copy_from_slice(&(ResponseKind::Passwd as u16).to_le_bytes());
    r
}

/// A table's slot array as the patcher keeps it.
#[derive(Clone, Copy, Debug)]
struct TableDir {
    /// Offset of the slot array.
    slots: usize,
    /// Slot count (a power of two).
    count: usize,
    /// Occupied slots (live + tombstones).
    occupied: u32,
    /// Occupied slots as read (to write back only what changed).
    occupied_read: u32,
}

impl TableDir {
    /// At most 3/4 of the slots occupied.
    fn limit(&self) -> usize {
        self.count / 4 * 3 + (self.count % 4) * 3 / 4
    }
}

/// What a probe for a key found in its window.
struct Probe {
    /// The key's tag (high 32 bits of its hash).
    tag: u64,
    /// Slot index and record offset of the first record matching the key.
    found: Option<(usize, usize)>,
    /// The first tombstone seen before the probe ended.
    tombstone: Option<usize>,
    /// The empty slot that ended the probe.
    empty: Option<usize>,
}

/// Patches one half in place. Open it, make the changes, then [`Patcher::finish`] with the
/// new generation, which writes the header fields the changes touched. A patcher dropped
/// without `finish` after a successful change leaves slots pointing past the length used
/// (readers then miss those keys): rebuild or finish the half.
pub struct Patcher<'a, IO: HalfIo + ?Sized> {
    io: &'a mut IO,
    capacity: usize,
    flags: u32,
    complete_until: u32,
    generation: u64,
    seed: u64,
    miss_key: [u8; 16],
    /// Flags and complete-until as read (written back by `finish` when changed).
    flags_read: u32,
    complete_until_read: u32,
    /// Length used as read, and as the changes made it.
    used_read: usize,
    used: usize,
    /// Offset of the tombstone record (0 = none yet), as read.
    tombstone_read: u32,
    tombstone: u32,
    tables: [TableDir; TABLES],
}

impl<'a, IO: HalfIo + ?Sized> Patcher<'a, IO> {
    /// Reads and checks the publication's header and table directories (as MapView does).
    pub fn open(io: &'a mut IO) -> Result<Patcher<'a, IO>, PatchError> {
        let capacity = io.capacity();
        if capacity < DATA_START {
            return Err(PatchError::Invalid);
        }
        let mut head = [0u8; DATA_START];
        io.read_at(0, &mut head)?;
        let bad = || PatchError::Invalid;
        if head[0..8] != PUB_MAGIC || u32_at(&head, 40).ok_or_else(bad)? != TABLES as u32 {
            return Err(PatchError::Invalid);
        }
        let used = usize::try_from(u64_at(&head, 32).ok_or_else(bad)?).map_err(|_| bad())?;
        if used < DATA_START || used > capacity || !used.is_multiple_of(8) {
            return Err(PatchError::Invalid);
        }
        let mut tables = [TableDir {
            slots: 0,
            count: 0,
            occupied: 0,
            occupied_read: 0,
        }; TABLES];
        for (t, dir) in tables.iter_mut().enumerate() {
            let at = HEADER_LEN + 16 * t;
            let slots = usize::try_from(u64_at(&head, at).ok_or_else(bad)?).map_err(|_| bad())?;
            let count = u32_at(&head, at + 8).ok_or_else(bad)?;
            let occupied = u32_at(&head, at + DIR_OCCUPIED).ok_or_else(bad)?;
            if !count.is_power_of_two() || count > MAX_SLOTS || occupied > count {
                return Err(PatchError::Invalid);
            }
            let end = slots.checked_add(count as usize * 8).ok_or_else(bad)?;
            if slots < DATA_START || end > used || !slots.is_multiple_of(8) {
                return Err(PatchError::Invalid);
            }
            *dir = TableDir {
                slots,
                count: count as usize,
                occupied,
                occupied_read: occupied,
            };
        }
        let tombstone = u32_at(&head, TOMBSTONE_OFFSET).ok_or_else(bad)?;
        if tombstone != 0 {
            let at = tombstone as usize;
            if at < DATA_START
                || !at.is_multiple_of(8)
                || at.checked_add(RECORD_HEADER).is_none_or(|end| end > used)
            {
                return Err(PatchError::Invalid);
            }
            let mut rec = [0u8; RECORD_HEADER];
            io.read_at(at, &mut rec)?;
            if rec != tombstone_record() {
                return Err(PatchError::Invalid);
            }
        }
        let flags = u32_at(&head, 8).ok_or_else(bad)?;
        let complete_until = u32_at(&head, 12).ok_or_else(bad)?;
        Ok(Patcher {
            capacity,
            flags,
            complete_until,
            flags_read: flags,
            complete_until_read: complete_until,
            generation: u64_at(&head, 16).ok_or_else(bad)?,
            seed: u64_at(&head, 24).ok_or_else(bad)?,
            miss_key: head[48..64].try_into().map_err(|_| bad())?,
            used_read: used,
            used,
            tombstone_read: tombstone,
            tombstone,
            tables,
            io,
        })
    }

    /// `Some(complete until, unix secs)` when the publication is flagged COMPLETE.
    pub fn complete_until(&self) -> Option<u64> {
        (self.flags & FLAG_COMPLETE != 0).then_some(u64::from(self.complete_until))
    }

    /// Marks the publication as a complete mirror until `until_unix_secs` (`None`: not
    /// complete), as [`MapBuilder::complete`](super::MapBuilder::complete) does; written by
    /// [`Patcher::finish`] (mirror mode: a sync that found the directory unchanged, or
    /// patched in its changes, extends the time misses are authoritative).
    pub fn set_complete_until(&mut self, until_unix_secs: Option<u64>) {
        match until_unix_secs {
            Some(until) => {
                self.flags |= FLAG_COMPLETE;
                self.complete_until = u32::try_from(until).unwrap_or(u32::MAX);
            }
            None => {
                self.flags &= !FLAG_COMPLETE;
                self.complete_until = 0;
            }
        }
    }

    /// The generation the publication had when opened.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The publication's length used so far (with the changes made).
    pub fn len_used(&self) -> usize {
        self.used
    }

    /// The half being patched (to read it; tests count its writes).
    pub fn io(&self) -> &IO {
        self.io
    }

    /// Sets `key` of `table` to a positive answer (`kind` != NotFound, else Err(Invalid)),
    /// valid until `expires_unix_secs`. When the stored record already has the same kind,
    /// expiry and body, nothing is written: Ok(false). Otherwise Ok(true).
    pub fn put(
        &mut self,
        table: Table,
        key: &[u8],
        expires_unix_secs: u64,
        kind: ResponseKind,
        body: &[u8],
    ) -> Result<bool, PatchError> {
        if kind == ResponseKind::NotFound || key.is_empty() || key.len() > u16::MAX as usize {
            return Err(PatchError::Invalid);
        }
        u32::try_from(body.len()).map_err(|_| PatchError::Invalid)?;
        let dir = self.tables[table as usize];
        let probe = self.probe(&dir, key)?;
        let slot_index = match probe.found {
            Some((index, rec)) => {
                if self.same_record(rec, expires_unix_secs, kind, key, body)? {
                    return Ok(false);
                }
                index
            }
            None => match (probe.tombstone, probe.empty) {
                (Some(index), _) => index,
                (None, Some(index)) => {
                    if dir.occupied as usize + 1 > dir.limit() {
                        return Err(PatchError::NoRoom);
                    }
                    index
                }
                (None, None) => return Err(PatchError::NoRoom),
            },
        };
        let takes_empty = probe.found.is_none() && probe.tombstone.is_none();
        // The record, as the builder lays it out: header, key, body, zeros to 8 bytes.
        let mut record = Vec::with_capacity((RECORD_HEADER + key.len() + body.len() + 7) & !7);
        push_record(&mut record, expires_unix_secs, kind, key, body);
        let at = self.room_for(record.len())?;
        // Nothing is written before this point.
        self.io.write_at(at, &record)?;
        let value = (probe.tag << 32) | at as u64;
        self.io
            .write_at(dir.slots + slot_index * 8, &value.to_le_bytes())?;
        self.used = at + record.len();
        if takes_empty {
            self.tables[table as usize].occupied += 1;
        }
        Ok(true)
    }

    /// Removes `key` from `table` (a positive record, or a negative one stored under the
    /// key's miss digest, matched as `MapView::get` matches): Ok(true) when it was there.
    pub fn remove(&mut self, table: Table, key: &[u8]) -> Result<bool, PatchError> {
        if key.is_empty() || key.len() > u16::MAX as usize {
            return Err(PatchError::Invalid);
        }
        let dir = self.tables[table as usize];
        let Some((index, _)) = self.probe(&dir, key)?.found else {
            return Ok(false);
        };
        let tombstone = if self.tombstone != 0 {
            self.tombstone
        } else {
            let record = tombstone_record();
            let at = self.room_for(record.len())?;
            // `room_for` refused offsets a slot cannot hold; 0 is below DATA_START.
            let at32 = u32::try_from(at).map_err(|_| PatchError::NoRoom)?;
            self.io.write_at(at, &record)?;
            self.used = at + record.len();
            self.tombstone = at32;
            at32
        };
        // Tag 0, the tombstone record's offset: a probe reads an empty key and goes on.
        self.io
            .write_at(dir.slots + index * 8, &u64::from(tombstone).to_le_bytes())?;
        Ok(true)
    }

    /// Writes the header fields the calls changed (length used, generation, occupancy,
    /// tombstone offset; flags and complete-until after [`Patcher::set_complete_until`]) and
    /// returns the publication's new length used.
    pub fn finish(self, generation: u64) -> Result<usize, PatchError> {
        for (t, dir) in self.tables.iter().enumerate() {
            if dir.occupied != dir.occupied_read {
                self.io.write_at(
                    HEADER_LEN + 16 * t + DIR_OCCUPIED,
                    &dir.occupied.to_le_bytes(),
                )?;
            }
        }
        if self.tombstone != self.tombstone_read {
            self.io
                .write_at(TOMBSTONE_OFFSET, &self.tombstone.to_le_bytes())?;
        }
        if self.flags != self.flags_read {
            self.io.write_at(8, &self.flags.to_le_bytes())?;
        }
        if self.complete_until != self.complete_until_read {
            self.io.write_at(12, &self.complete_until.to_le_bytes())?;
        }
        if generation != self.generation {
            self.io.write_at(16, &generation.to_le_bytes())?;
        }
        if self.used != self.used_read {
            self.io.write_at(32, &(self.used as u64).to_le_bytes())?;
        }
        Ok(self.used)
    }

    /// Where a record of `len` bytes (a multiple of 8) goes: the length used, if the record
    /// fits the half and a slot can hold its offset.
    fn room_for(&self, len: usize) -> Result<usize, PatchError> {
        let at = self.used;
        let end = at.checked_add(len).ok_or(PatchError::NoRoom)?;
        if end > self.capacity || at > u32::MAX as usize {
            return Err(PatchError::NoRoom);
        }
        Ok(at)
    }

    fn read_u64(&self, at: usize) -> Result<u64, PatchError> {
        let mut b = [0u8; 8];
        self.read_used(at, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads bytes of the publication (within its length used, as a reader sees it).
    fn read_used(&self, at: usize, buf: &mut [u8]) -> Result<(), PatchError> {
        if at.checked_add(buf.len()).is_none_or(|end| end > self.used) {
            return Err(PatchError::Invalid);
        }
        self.io.read_at(at, buf)?;
        Ok(())
    }

    /// The record header at `rec`: expires, kind, key length, body length.
    fn record_header(&self, rec: usize) -> Result<(u64, u16, usize, usize), PatchError> {
        let mut h = [0u8; RECORD_HEADER];
        self.read_used(rec, &mut h)?;
        let expires = u64::from_le_bytes(h[0..8].try_into().map_err(|_| PatchError::Invalid)?);
        let kind = u16::from_le_bytes([h[8], h[9]]);
        let key_len = u16::from_le_bytes([h[10], h[11]]) as usize;
        let body_len = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
        Ok((expires, kind, key_len, body_len))
    }

    /// Probes `key`'s window as `MapView::get` does: from `hash & mask`, at most
    /// `MAX_PROBES.min(count)` slots, ending at an empty slot; a record matches as `get`
    /// matches it (a positive one by its key, a negative one by the key's miss digest).
    /// Where `get` would give up on a record out of bounds, the half is `Invalid`.
    fn probe(&self, dir: &TableDir, key: &[u8]) -> Result<Probe, PatchError> {
        let h = hash(self.seed, key);
        let tag = h >> 32;
        let mask = dir.count - 1;
        let mut idx = (h as usize) & mask;
        let mut digest: Option<[u8; MISS_DIGEST_LEN]> = None;
        let mut probe = Probe {
            tag,
            found: None,
            tombstone: None,
            empty: None,
        };
        let mut stored = Vec::new();
        for _ in 0..MAX_PROBES.min(dir.count) {
            let slot = self.read_u64(dir.slots + idx * 8)?;
            if slot == 0 {
                probe.empty = Some(idx);
                break;
            }
            if self.tombstone != 0 && slot == u64::from(self.tombstone) {
                probe.tombstone.get_or_insert(idx);
            } else if slot >> 32 == tag {
                let rec = (slot & 0xffff_ffff) as usize;
                let (_, kind, key_len, _) = self.record_header(rec)?;
                // `get` reads the stored key whatever its length: out of bounds, it gives up.
                if (rec + RECORD_HEADER + key_len) > self.used {
                    return Err(PatchError::Invalid);
                }
                let want: &[u8] = if kind == ResponseKind::NotFound as u16 {
                    digest.get_or_insert_with(|| miss_digest(&self.miss_key, key))
                } else {
                    key
                };
                if key_len == want.len() {
                    stored.resize(key_len, 0);
                    self.read_used(rec + RECORD_HEADER, &mut stored)?;
                    if stored == want {
                        probe.found = Some((idx, rec));
                        break;
                    }
                }
            }
            idx = (idx + 1) & mask;
        }
        Ok(probe)
    }

    /// Whether the record at `rec` (which matched `key`) holds exactly this answer.
    fn same_record(
        &self,
        rec: usize,
        expires: u64,
        kind: ResponseKind,
        key: &[u8],
        body: &[u8],
    ) -> Result<bool, PatchError> {
        let (e, k, key_len, body_len) = self.record_header(rec)?;
        if e != expires || k != kind as u16 || key_len != key.len() || body_len != body.len() {
            return Ok(false);
        }
        let mut stored = vec![0u8; body_len];
        self.read_used(rec + RECORD_HEADER + key_len, &mut stored)?;
        Ok(stored == body)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{hash, MapBuilder, MapView};
    use super::*;

    const SEED: u64 = 0x5eed;

    /// `n` keys whose probes all start at slot `home` of an 8-slot table.
    fn colliding(n: usize, home: usize) -> Vec<Vec<u8>> {
        (0..)
            .map(|i| format!("k{i}").into_bytes())
            .filter(|k| hash(SEED, k) as usize & 7 == home)
            .take(n)
            .collect()
    }

    fn slot(half: &[u8], table: Table, i: usize) -> u64 {
        let dir = HEADER_LEN + 16 * table as usize;
        let off = u64_at(half, dir).unwrap() as usize;
        u64_at(half, off + 8 * i).unwrap()
    }

    /// A chain of three keys from one home slot: removing the first or the middle one
    /// leaves the ones after it found; the tombstone is skipped by the reader, and reused
    /// (first tombstone of the probe) by the next new key of that chain.
    #[test]
    fn keys_after_a_removed_key_in_its_chain_are_still_found() {
        let keys = colliding(4, 5);
        let mut b = MapBuilder::new(1, SEED);
        for k in &keys[..3] {
            b.add(Table::GroupByName, k, 9, ResponseKind::Group, k);
        }
        let mut half = b.build();
        half.resize(half.len() + 4096, 0);
        // The chain: slots 5, 6, 7 in the order added (an 8-slot table).
        for (i, k) in keys[..3].iter().enumerate() {
            let value = slot(&half, Table::GroupByName, 5 + i);
            let rec = (value & 0xffff_ffff) as usize;
            assert_eq!(&half[rec + RECORD_HEADER..][..k.len()], &k[..]);
        }
        let mut p = Patcher::open(half.as_mut_slice()).unwrap();
        assert!(p.remove(Table::GroupByName, &keys[0]).unwrap());
        assert!(!p.remove(Table::GroupByName, &keys[0]).unwrap());
        p.finish(2).unwrap();
        let tombstone = u64::from(u32_at(&half, TOMBSTONE_OFFSET).unwrap());
        assert_ne!(tombstone, 0);
        assert_eq!(slot(&half, Table::GroupByName, 5), tombstone);
        {
            let v = MapView::publication(&half).unwrap();
            assert_eq!(v.get(Table::GroupByName, &keys[0]), None);
            assert_eq!(
                v.get(Table::GroupByName, &keys[1]).unwrap().body,
                &keys[1][..]
            );
            assert_eq!(
                v.get(Table::GroupByName, &keys[2]).unwrap().body,
                &keys[2][..]
            );
            assert_eq!(v.stored_keys(Table::GroupByName).len(), 2);
        }
        // The middle one too: the last one is still found past two tombstones.
        let mut p = Patcher::open(half.as_mut_slice()).unwrap();
        assert!(p.remove(Table::GroupByName, &keys[1]).unwrap());
        p.finish(3).unwrap();
        assert_eq!(slot(&half, Table::GroupByName, 6), tombstone, "one record");
        {
            let v = MapView::publication(&half).unwrap();
            assert_eq!(
                v.get(Table::GroupByName, &keys[2]).unwrap().body,
                &keys[2][..]
            );
            assert_eq!(v.get(Table::GroupByName, &keys[1]), None);
        }
        // A new key of the chain takes the first tombstone (slot 5), not an empty slot;
        // the occupancy stays 3.
        let mut p = Patcher::open(half.as_mut_slice()).unwrap();
        assert!(p
            .put(Table::GroupByName, &keys[3], 9, ResponseKind::Group, b"new")
            .unwrap());
        // Replacing the last key keeps its slot (slot 7), its tag unchanged.
        let before = slot(p.io(), Table::GroupByName, 7);
        assert!(p
            .put(
                Table::GroupByName,
                &keys[2],
                10,
                ResponseKind::Group,
                b"two"
            )
            .unwrap());
        p.finish(4).unwrap();
        let after = slot(&half, Table::GroupByName, 7);
        assert_eq!(after >> 32, before >> 32);
        assert_ne!(after, before);
        assert_eq!(
            slot(&half, Table::GroupByName, 5) >> 32,
            hash(SEED, &keys[3]) >> 32
        );
        assert_eq!(slot(&half, Table::GroupByName, 0), 0);
        let dir = HEADER_LEN + 16 * Table::GroupByName as usize;
        assert_eq!(u32_at(&half, dir + DIR_OCCUPIED), Some(3));
        let v = MapView::publication(&half).unwrap();
        assert_eq!(v.generation(), 4);
        assert_eq!(v.get(Table::GroupByName, &keys[3]).unwrap().body, b"new");
        let hit = v.get(Table::GroupByName, &keys[2]).unwrap();
        assert_eq!((hit.body, hit.expires_unix_secs), (&b"two"[..], 10));
        assert_eq!(v.get(Table::GroupByName, &keys[1]), None);
        assert_eq!(v.get(Table::GroupByName, &keys[0]), None);
    }

    /// A negative entry is removed (and replaced) as the reader finds it: by the key's miss
    /// digest.
    #[test]
    fn negative_entries_are_matched_by_their_digest() {
        let mut b = MapBuilder::new(1, SEED).miss_key([3; 16]);
        b.add(Table::PasswdByName, b"typo", 9, ResponseKind::NotFound, b"");
        b.add(Table::PasswdByName, b"gone", 9, ResponseKind::NotFound, b"");
        let mut half = b.build();
        half.resize(half.len() + 4096, 0);
        let mut p = Patcher::open(&mut half).unwrap();
        assert!(p.remove(Table::PasswdByName, b"typo").unwrap());
        assert!(p
            .put(
                Table::PasswdByName,
                b"gone",
                9,
                ResponseKind::Passwd,
                b"now here"
            )
            .unwrap());
        assert_eq!(p.complete_until(), None);
        p.finish(2).unwrap();
        let v = MapView::publication(&half).unwrap();
        assert_eq!(v.get(Table::PasswdByName, b"typo"), None);
        assert_eq!(
            v.get(Table::PasswdByName, b"gone").unwrap().body,
            b"now here"
        );
        assert_eq!(v.stored_keys(Table::PasswdByName), vec![&b"gone"[..]]);
    }

    /// Header fields and slots a patcher cannot trust are refused (Invalid), and a refused
    /// call writes nothing.
    #[test]
    fn untrusted_fields_are_refused() {
        let keys = colliding(2, 3);
        let mut b = MapBuilder::new(1, SEED);
        b.add(Table::PasswdByName, &keys[0], 9, ResponseKind::Passwd, b"a");
        let mut good = b.build();
        good.resize(good.len() + 4096, 0);
        let dir = HEADER_LEN + 16 * Table::PasswdByName as usize;
        let set = |at: usize, v: &[u8]| {
            let mut h = good.clone();
            h[at..at + v.len()].copy_from_slice(v);
            h
        };
        let used = u64_at(&good, 32).unwrap();
        for (what, mut bad) in [
            (
                "occupancy above the slot count",
                set(dir + DIR_OCCUPIED, &9u32.to_le_bytes()),
            ),
            (
                "tombstone not a tombstone record",
                set(TOMBSTONE_OFFSET, &[0, 1, 0, 0]),
            ),
            (
                "tombstone past the length used",
                set(TOMBSTONE_OFFSET, &(used as u32).to_le_bytes()),
            ),
            (
                "length used past the half",
                set(32, &(good.len() as u64 + 8).to_le_bytes()),
            ),
            (
                "length used not aligned",
                set(32, &(used - 4).to_le_bytes()),
            ),
            (
                "slots past the length used",
                set(dir, &(used - 8).to_le_bytes()),
            ),
        ] {
            assert!(
                matches!(Patcher::open(&mut bad), Err(PatchError::Invalid)),
                "{what}"
            );
        }
        // A slot with the key's tag whose record lies past the length used: the reader
        // gives up there, so the patcher refuses to patch past it.
        let slots = u64_at(&good, dir).unwrap() as usize;
        let tag = hash(SEED, &keys[1]) >> 32;
        let mut bad = set(slots + 4 * 8, &((tag << 32) | (used + 8)).to_le_bytes());
        let before = bad.clone();
        let mut p = Patcher::open(&mut bad).unwrap();
        assert!(matches!(
            p.put(Table::PasswdByName, &keys[1], 9, ResponseKind::Passwd, b"b"),
            Err(PatchError::Invalid)
        ));
        assert!(matches!(
            p.remove(Table::PasswdByName, &keys[1]),
            Err(PatchError::Invalid)
        ));
        assert_eq!(bad, before);
    }

    #[test]
    fn complete_until_is_read_from_the_header_and_set() {
        let mut half = MapBuilder::new(1, SEED).complete(Some(1234)).build();
        let mut p = Patcher::open(&mut half).unwrap();
        assert_eq!(p.complete_until(), Some(1234));
        p.set_complete_until(Some(5678));
        assert_eq!(p.complete_until(), Some(5678));
        p.finish(2).unwrap();
        let v = MapView::publication(&half).unwrap();
        assert!(v.complete_at(5677) && !v.complete_at(5678));
        let mut p = Patcher::open(&mut half).unwrap();
        assert_eq!(p.complete_until(), Some(5678));
        p.set_complete_until(None);
        p.finish(3).unwrap();
        let v = MapView::publication(&half).unwrap();
        assert!(!v.complete());
        assert_eq!(Patcher::open(&mut half).unwrap().complete_until(), None);
        // Unchanged by a patch that does not set it.
        let mut half = MapBuilder::new(1, SEED).complete(Some(99)).build();
        Patcher::open(&mut half).unwrap().finish(1).unwrap();
        assert_eq!(half, MapBuilder::new(1, SEED).complete(Some(99)).build());
    }

    /// Offsets the slice and vector halves refuse, without panicking or growing.
    #[test]
    fn byte_halves_refuse_out_of_range_access() {
        let mut v = vec![0u8; 16];
        let mut buf = [0u8; 8];
        assert!(v.read_at(8, &mut buf).is_ok());
        assert!(v.read_at(9, &mut buf).is_err());
        assert!(v.read_at(usize::MAX, &mut buf).is_err());
        assert!(v.write_at(12, &[1; 8]).is_err());
        assert!(v.write_at(usize::MAX - 2, &[1; 8]).is_err());
        assert!(v.write_at(8, &[1; 8]).is_ok());
        assert_eq!(v.len(), 16);
        assert_eq!(v.as_mut_slice().capacity(), 16);
        // A vector's capacity as a half is its length, not its allocation.
        let mut w: Vec<u8> = Vec::with_capacity(64);
        w.resize(16, 0);
        assert_eq!(HalfIo::capacity(&w), 16);
        assert!(w.write_at(16, &[1]).is_err());
        assert_eq!(w.len(), 16);
        assert_eq!(v, [&[0u8; 8][..], &[1u8; 8][..]].concat());
    }
}
