//! Reads the daemon's shared cache data (`RUNTIME_DIR/cache.map`, format in
//! `toolforge_nss_protocol::mapfile`) through a read-only shared mapping, so that a warm
//! lookup costs a hash probe and a copy instead of a socket round trip.
//!
//! The read path takes no lock and makes no system call: it loads the current mapping's index,
//! registers as a reader of it, checks the file's `SUPERSEDED` flag, then reads the current
//! half under its sequence counter (a seqlock, as SSSD's memory cache and nscd's shared
//! database do): the counter is even before and unchanged after the read, or the read is
//! retried (and after a few torn reads the daemon is asked). The caller's function may thus
//! run on torn bytes; its result is used only when the read was whole (see
//! [`MapCache::with_entry`]). Once a second at most, one lookup also `stat`s the path, so a
//! file replaced without the flag (or removed) is noticed, unmaps old files nobody reads, and
//! closes the cached connection to the daemon once it has been idle long enough.
//!
//! Mappings live in a fixed pool of [`SLOTS`] that is never freed. A slot is unmapped or
//! reused only while it is not current and has no registered reader; a reader registers
//! *before* confirming that the slot is still current (both sequentially consistent), so a
//! slot a reader uses cannot be unmapped under it. Remapping takes a try-lock; a thread that
//! finds the file superseded remaps only if no other thread has done so meanwhile. A fork
//! handler resets, in the child, the reader counts and the lock that threads of the parent
//! held (they do not exist in the child); it also makes the connections and the enumeration
//! state of the parent's threads the child's to drop (see `connection`, `enumeration`).
//!
//! Trust and faults: the runtime directory must be trusted (`trust::trusted_dir`), and the
//! file a regular file owned by root or the daemon and writable by no one else, so only they
//! could truncate it (SIGBUS in a reader); the daemon never does (it writes within the file's
//! size and punches holes, which read as zeros). Every byte is still hostile: `MapView` checks
//! each offset and length against the half, and any doubt (missing, untrusted, invalid,
//! superseded, torn, expired, absent) makes the caller ask the socket.

use std::ffi::CStr;
use std::sync::atomic::{
    fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

use toolforge_nss_protocol::mapfile::{
    MapView, Region, Table, CURRENT_OFFSET, FLAGS_OFFSET, FLAG_SUPERSEDED, REGION_HEADER,
    SEQ_OFFSET,
};

use crate::{clock, settings, sys, trust};

/// Mappings a process keeps at most (the current file and files still being read).
pub const SLOTS: usize = 4;
/// Reader counters per slot, each on its own cache line, so that threads do not contend.
const STRIPES: usize = 8;
const NONE: usize = usize::MAX;
/// Largest file mapped (records are addressed with 32-bit offsets within a half).
const MAX_FILE_LEN: u64 = 1 << 33;
/// Reads of a half before giving up on torn reads and asking the daemon.
const ATTEMPTS: usize = 4;
const SC: Ordering = Ordering::SeqCst;

#[repr(align(64))]
struct Stripe(AtomicU32);

struct Mapping {
    readers: [Stripe; STRIPES],
    /// Start of the mapping; null while the slot is free.
    ptr: AtomicPtr<u8>,
    len: AtomicUsize,
    half_len: AtomicUsize,
    dev: AtomicU64,
    ino: AtomicU64,
}

impl Mapping {
    const fn new() -> Mapping {
        Mapping {
            readers: [const { Stripe(AtomicU32::new(0)) }; STRIPES],
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            len: AtomicUsize::new(0),
            half_len: AtomicUsize::new(0),
            dev: AtomicU64::new(0),
            ino: AtomicU64::new(0),
        }
    }

    fn idle(&self) -> bool {
        self.readers.iter().all(|s| s.0.load(SC) == 0)
    }

    /// Unmaps the slot. Only under the remap lock, for a slot that is not current and idle.
    fn release(&self) {
        let p = self.ptr.swap(std::ptr::null_mut(), SC);
        if !p.is_null() {
            // SAFETY: p and len describe a mapping this slot made; no reader uses it (the
            // caller checked), and no new reader can (the slot is not current).
            unsafe { libc::munmap(p.cast(), self.len.load(SC)) };
        }
    }
}

/// Registration as a reader of one slot; dropping it unregisters.
struct Reader<'a>(&'a AtomicU32);

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SC);
    }
}

/// The stripe a thread counts itself in: threads have different stacks.
fn stripe() -> usize {
    let marker = 0u8;
    let addr = std::ptr::addr_of!(marker) as u64;
    // Stacks are megabytes apart and similarly aligned: mix the page number (Fibonacci
    // hashing) and take the top bits.
    ((addr >> 12).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - STRIPES.trailing_zeros())) as usize
}

/// The mappings of one cache file path.
pub struct MapCache {
    slots: [Mapping; SLOTS],
    current: AtomicUsize,
    /// Pid of the remapping thread's process; 0 when free.
    lock: AtomicI32,
    /// Wall-clock second (+1) of the last `stat` of the path (0: never).
    checked: AtomicU64,
}

/// The process's cache, for the path in [`settings`].
pub static GLOBAL: MapCache = MapCache::new();

/// Why the file gave no answer: the caller asks the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoAnswer {
    /// No usable file (none published, untrusted, invalid, superseded, torn, or being
    /// replaced).
    NoFile,
    /// The key is not in the file.
    Absent,
    /// The key is not in the file, and the file is a complete mirror of the directory within
    /// its validity: the key is authoritatively absent (NOTFOUND without asking the daemon).
    Known,
    /// The key's entry is past its expiry.
    Expired,
}

impl Default for MapCache {
    fn default() -> MapCache {
        MapCache::new()
    }
}

/// One read of a half: what the caller's function made of the entry, or why there was none.
enum Read<R> {
    Hit(R),
    Miss(NoAnswer),
}

impl MapCache {
    pub const fn new() -> MapCache {
        MapCache {
            slots: [const { Mapping::new() }; SLOTS],
            current: AtomicUsize::new(NONE),
            lock: AtomicI32::new(0),
            checked: AtomicU64::new(0),
        }
    }

    /// Looks `key` up in `table` of the file at `path` (in the runtime directory `dir`) and,
    /// on a valid, unexpired entry, calls `f` with its response kind and body (valid only
    /// during the call). `f` may be called more than once, and on bytes torn by a concurrent
    /// publication: it must only compute a result (or write where a later call overwrites);
    /// only the result of a whole read is returned.
    pub fn with_entry<R>(
        &self,
        dir: &CStr,
        path: &CStr,
        table: Table,
        key: &[u8],
        mut f: impl FnMut(u16, &[u8]) -> R,
    ) -> Result<R, NoAnswer> {
        register_fork_handler();
        // One clock read serves the once-a-second check and the expiry.
        let now = clock::secs(libc::CLOCK_REALTIME_COARSE);
        self.maintain(dir, path, now);
        for _ in 0..ATTEMPTS {
            let idx = self.current.load(SC);
            let slot = self.slots.get(idx).ok_or(NoAnswer::NoFile)?;
            let counter = &slot.readers.get(stripe()).ok_or(NoAnswer::NoFile)?.0;
            counter.fetch_add(1, SC);
            let reader = Reader(counter);
            if self.current.load(SC) != idx {
                continue; // replaced meanwhile; `reader` unregisters
            }
            let (ptr, len) = (slot.ptr.load(SC), slot.len.load(SC));
            let half_len = slot.half_len.load(SC);
            if ptr.is_null() || len != REGION_HEADER + 2 * half_len {
                return Err(NoAnswer::NoFile);
            }
            // SAFETY: the slot is current and we are registered, so the mapping of `len`
            // bytes at `ptr` stays mapped until `reader` is dropped. The header words are
            // aligned (page-aligned mapping) and written by the daemon with atomics.
            let word = |at: usize| unsafe { (*ptr.add(at).cast::<AtomicU64>()).load(SC) };
            // SAFETY: as above.
            let flags = unsafe { (*ptr.add(FLAGS_OFFSET).cast::<AtomicU32>()).load(SC) };
            if flags & FLAG_SUPERSEDED != 0 {
                drop(reader);
                if !self.remap_from(dir, path, idx) {
                    return Err(NoAnswer::NoFile);
                }
                continue;
            }
            let h = (word(CURRENT_OFFSET) & 1) as usize;
            let seq_at = SEQ_OFFSET + 8 * h;
            let before = word(seq_at);
            if before % 2 == 1 {
                continue; // being written: the daemon switches halves in a moment
            }
            // SAFETY: half `h` lies inside the mapping (len checked above). Its bytes may
            // change under us; every use is bounds-checked and the result discarded if so.
            let half = unsafe {
                std::slice::from_raw_parts(
                    ptr.add(REGION_HEADER + h * half_len).cast_const(),
                    half_len,
                )
            };
            let read = match MapView::publication(half) {
                None => Read::Miss(NoAnswer::NoFile),
                Some(view) => match view.get(table, key) {
                    None if view.complete_at(now) => Read::Miss(NoAnswer::Known),
                    None => Read::Miss(NoAnswer::Absent),
                    Some(hit) if hit.expires_unix_secs <= now => Read::Miss(NoAnswer::Expired),
                    Some(hit) => Read::Hit(f(hit.kind, hit.body)),
                },
            };
            fence(Ordering::Acquire);
            if word(seq_at) != before {
                continue; // torn: read again
            }
            drop(reader);
            return match read {
                Read::Hit(r) => Ok(r),
                Read::Miss(why) => Err(why),
            };
        }
        Err(NoAnswer::NoFile)
    }

    /// At most once a second (of `now_secs`, the coarse wall clock: a clock step costs one
    /// extra check at most): `stat` the path and remap when it is another file (or none),
    /// then unmap old files no one reads, and close the cached connection if it is idle.
    fn maintain(&self, dir: &CStr, path: &CStr, now_secs: u64) {
        let now = now_secs.saturating_add(1);
        let last = self.checked.load(Ordering::Relaxed);
        if last == now
            || self
                .checked
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let on_disk = sys::stat(path, false).map(|s| (s.dev, s.ino));
        let current = self.current.load(SC);
        let mapped = self
            .slots
            .get(current)
            .map(|s| (s.dev.load(SC), s.ino.load(SC)));
        if on_disk != mapped || mapped.is_none() {
            self.remap_from(dir, path, current);
        } else if let Some(_lock) = self.try_lock() {
            self.sweep();
        }
        crate::connection::close_if_idle();
    }

    /// Maps the file now at `path` and makes it current (or makes no file current when
    /// there is no valid one), unless another thread already replaced `seen` (the mapping
    /// the caller found wanting). False when there is no file to read after all.
    fn remap_from(&self, dir: &CStr, path: &CStr, seen: usize) -> bool {
        let Some(_lock) = self.try_lock() else {
            return false;
        };
        if self.current.load(SC) != seen {
            return true; // another thread remapped meanwhile: read what it mapped
        }
        let fresh = if trust::trusted_dir(dir) {
            map_file(path)
        } else {
            None
        };
        let Some(m) = fresh else {
            self.current.store(NONE, SC);
            self.sweep();
            return false;
        };
        let current = self.current.load(SC);
        let free = (0..SLOTS).find(|&i| {
            i != current
                && self
                    .slots
                    .get(i)
                    .is_some_and(|s| s.ptr.load(SC).is_null() || s.idle())
        });
        let Some(slot) = free.and_then(|i| self.slots.get(i).map(|s| (i, s))) else {
            // Every other slot is still being read, for a moment: keep what we have (a
            // superseded file is not read; the next lookup tries again).
            // SAFETY: the mapping was just made and never shared.
            unsafe { libc::munmap(m.ptr.cast(), m.len) };
            return false;
        };
        let (i, s) = slot;
        s.release();
        s.len.store(m.len, SC);
        s.half_len.store(m.half_len, SC);
        s.dev.store(m.dev, SC);
        s.ino.store(m.ino, SC);
        s.ptr.store(m.ptr, SC);
        self.current.store(i, SC);
        self.sweep();
        true
    }

    /// Unmaps every slot that is not current and has no reader. Under the lock.
    fn sweep(&self) {
        let current = self.current.load(SC);
        for (i, s) in self.slots.iter().enumerate() {
            if i != current && !s.ptr.load(SC).is_null() && s.idle() {
                s.release();
            }
        }
    }

    fn try_lock(&self) -> Option<LockGuard<'_>> {
        // SAFETY: getpid has no preconditions (only reached when remapping, not per lookup).
        let pid = unsafe { libc::getpid() };
        let holder = self.lock.load(SC);
        let taken = match holder {
            0 => self.lock.compare_exchange(0, pid, SC, SC).is_ok(),
            // The lock lives in this process's memory, so another pid can only be the parent
            // that held it when this process was forked: no thread here will ever free it.
            h if h != pid => self.lock.compare_exchange(h, pid, SC, SC).is_ok(),
            _ => false,
        };
        // `then`, not `then_some`: a guard built and dropped on failure would free the lock
        // another thread holds.
        taken.then(|| LockGuard(&self.lock))
    }

    /// In a child just forked (one thread): the parent's other threads, registered as
    /// readers or holding the lock, do not exist here.
    fn after_fork_in_child(&self) {
        for s in &self.slots {
            for r in &s.readers {
                r.0.store(0, SC);
            }
        }
        self.lock.store(0, SC);
    }

    /// Mappings now held (for tests).
    pub fn mapped(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| !s.ptr.load(SC).is_null())
            .count()
    }

    /// Registered readers of every slot (for tests).
    pub fn readers(&self) -> u32 {
        self.slots
            .iter()
            .flat_map(|s| s.readers.iter())
            .map(|r| r.0.load(SC))
            .sum()
    }
}

impl Drop for MapCache {
    fn drop(&mut self) {
        for s in &self.slots {
            s.release();
        }
    }
}

struct LockGuard<'a>(&'a AtomicI32);

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.0.store(0, SC);
    }
}

extern "C" {
    // glibc (GLIBC_2.3.2): what pthread_atfork calls, with our object's handle, so the
    // handler is dropped if the module is ever unloaded.
    fn __register_atfork(
        prepare: Option<unsafe extern "C" fn()>,
        parent: Option<unsafe extern "C" fn()>,
        child: Option<unsafe extern "C" fn()>,
        dso_handle: *mut libc::c_void,
    ) -> libc::c_int;
    static __dso_handle: *mut libc::c_void;
}

static FORK_HANDLER: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn in_child() {
    GLOBAL.after_fork_in_child();
    crate::connection::after_fork_in_child();
    crate::enumeration::after_fork_in_child();
}

/// Registers (once) the handler that makes a forked child's state usable.
pub fn register_fork_handler() {
    if FORK_HANDLER.load(Ordering::Relaxed) || FORK_HANDLER.swap(true, SC) {
        return;
    }
    // SAFETY: registering a plain function; __dso_handle is this object's handle.
    unsafe {
        __register_atfork(
            None,
            None,
            Some(in_child),
            std::ptr::addr_of!(__dso_handle).cast_mut().cast(),
        )
    };
}

/// A fresh mapping of a trusted file.
struct Mapped {
    ptr: *mut u8,
    len: usize,
    half_len: usize,
    dev: u64,
    ino: u64,
}

/// Opens, checks and maps the file, or `None`.
fn map_file(path: &CStr) -> Option<Mapped> {
    // SAFETY: path is NUL-terminated; the fd is closed below on every path.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        return None;
    }
    let mapped = map_fd(fd);
    // SAFETY: we own fd; the mapping does not need it.
    unsafe { libc::close(fd) };
    mapped
}

fn map_fd(fd: libc::c_int) -> Option<Mapped> {
    let st = sys::fstat(fd)?;
    let size = u64::try_from(st.size).ok()?;
    // Only root or the daemon can write (or truncate) a file we map.
    if st.mode & libc::S_IFMT != libc::S_IFREG
        || !trust::trusted_file(&st)
        || size < REGION_HEADER as u64
        || size > MAX_FILE_LEN
    {
        return None;
    }
    let len = usize::try_from(size).ok()?;
    // SAFETY: a fresh read-only shared mapping of a regular file we hold open.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: the mapping is `len` bytes long (at least the header page) and readable.
    let head = unsafe { std::slice::from_raw_parts(p.cast::<u8>().cast_const(), REGION_HEADER) };
    let Some(region) = Region::parse(head, len) else {
        // SAFETY: the mapping we just made.
        unsafe { libc::munmap(p, len) };
        return None;
    };
    Some(Mapped {
        ptr: p.cast(),
        len,
        half_len: region.half_len,
        dev: st.dev,
        ino: st.ino,
    })
}

/// Looks `key` up in the process's cache file (see [`MapCache::with_entry`]); `NoFile` when
/// the module is disabled or has no path.
pub fn with_entry<R>(
    table: Table,
    key: &[u8],
    f: impl FnMut(u16, &[u8]) -> R,
) -> Result<R, NoAnswer> {
    let s = settings::get();
    if s.disabled {
        return Err(NoAnswer::NoFile);
    }
    let path = s.map_path.as_deref().ok_or(NoAnswer::NoFile)?;
    let dir = s.dir_path.as_deref().ok_or(NoAnswer::NoFile)?;
    GLOBAL.with_entry(dir, path, table, key, f)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use toolforge_nss_protocol::mapfile::{single_file, MapBuilder};
    use toolforge_nss_protocol::{Passwd, Response, ResponseKind, ResponseRef};

    const USERS: u32 = 300;
    const HALF: usize = 256 << 10;

    fn far_future() -> u64 {
        clock::secs(libc::CLOCK_REALTIME) + 3600
    }

    /// Version `v` of the publication: every field of every entry names `v`.
    fn version(v: u64, expires: u64) -> Vec<u8> {
        let mut b = MapBuilder::new(v, v.wrapping_mul(0x9e37_79b9));
        for i in 0..USERS {
            let p = Passwd {
                name: format!("user{i}"),
                passwd: "x".into(),
                uid: 1000 + i,
                gid: v as u32,
                gecos: format!("version {v}"),
                dir: format!("/home/v{v}/user{i}"),
                shell: format!("/bin/v{v}"),
            };
            let mut body = Vec::new();
            Response::Passwd(p).encode_body(&mut body);
            b.add(
                Table::PasswdByName,
                format!("user{i}").as_bytes(),
                expires,
                ResponseKind::Passwd,
                &body,
            );
        }
        b.add(
            Table::PasswdByName,
            b"ghost",
            expires,
            ResponseKind::NotFound,
            b"",
        );
        b.build()
    }

    /// A file of `HALF`-byte halves holding `publication` in half 0.
    fn file_of(publication: &[u8]) -> Vec<u8> {
        let mut f = single_file(publication);
        let mut head = Region::header(HALF as u64);
        head.resize(REGION_HEADER + 2 * HALF, 0);
        head[REGION_HEADER..REGION_HEADER + publication.len()].copy_from_slice(publication);
        f.clear();
        f.extend_from_slice(&head);
        f
    }

    /// Makes a new file (temp, rename, flag the old one), as the daemon does on a resize.
    fn replace(dir: &Path, bytes: &[u8]) {
        let (path, temp) = (dir.join("cache.map"), dir.join(".tmp"));
        let _ = std::fs::remove_file(&temp);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)
            .unwrap()
            .write_all_at(bytes, 0)
            .unwrap();
        let old = std::fs::OpenOptions::new().write(true).open(&path).ok();
        std::fs::rename(&temp, &path).unwrap();
        if let Some(old) = old {
            old.write_all_at(&FLAG_SUPERSEDED.to_le_bytes(), FLAGS_OFFSET as u64)
                .unwrap();
        }
    }

    /// Writes a publication in place as the daemon does: the other half under an odd
    /// sequence, then switch.
    fn publish_in_place(dir: &Path, publication: &[u8]) {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("cache.map"))
            .unwrap();
        let mut head = [0u8; 64];
        f.read_exact_at(&mut head, 0).unwrap();
        let word = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().unwrap());
        let h = 1 - (word(CURRENT_OFFSET) & 1) as usize;
        let seq = word(SEQ_OFFSET + 8 * h);
        let put = |at: usize, v: u64| f.write_all_at(&v.to_le_bytes(), at as u64).unwrap();
        put(SEQ_OFFSET + 8 * h, seq + 1);
        // Scribble first, so a reader that does not check the sequence sees garbage.
        f.write_all_at(
            &vec![0xa5; publication.len()],
            (REGION_HEADER + h * HALF) as u64,
        )
        .unwrap();
        f.write_all_at(publication, (REGION_HEADER + h * HALF) as u64)
            .unwrap();
        put(SEQ_OFFSET + 8 * h, seq + 2);
        put(CURRENT_OFFSET, h as u64);
    }

    fn cpath(dir: &Path) -> CString {
        CString::new(dir.join("cache.map").into_os_string().into_encoded_bytes()).unwrap()
    }

    fn cdir(dir: &Path) -> CString {
        CString::new(dir.as_os_str().as_encoded_bytes()).unwrap()
    }

    /// The version an answer belongs to, or `None` when its fields disagree (torn).
    fn version_of(kind: u16, body: &[u8], name: &str) -> Option<u64> {
        let Ok(ResponseRef::Passwd(p)) = ResponseRef::decode(kind, body) else {
            return None;
        };
        let v = u64::from(p.gid);
        let whole = p.name == name.as_bytes()
            && p.gecos == format!("version {v}").as_bytes()
            && p.dir == format!("/home/v{v}/{name}").as_bytes()
            && p.shell == format!("/bin/v{v}").as_bytes();
        whole.then_some(v)
    }

    fn mapped_in_proc_maps(dir: &Path) -> usize {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let needle = dir.to_str().unwrap();
        maps.lines().filter(|l| l.contains(needle)).count()
    }

    #[test]
    fn readers_see_whole_versions_while_a_writer_republishes_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let (path, d) = (cpath(dir.path()), cdir(dir.path()));
        let cache = Arc::new(MapCache::new());
        replace(dir.path(), &file_of(&version(1, far_future())));
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..4)
            .map(|t| {
                let (cache, path, d, done) = (cache.clone(), path.clone(), d.clone(), done.clone());
                std::thread::spawn(move || {
                    let (mut last, mut answers, mut i) = (0u64, 0u64, t);
                    while !done.load(Ordering::Relaxed) {
                        let name = format!("user{}", i % USERS);
                        i += 7;
                        let got = cache.with_entry(
                            &d,
                            &path,
                            Table::PasswdByName,
                            name.as_bytes(),
                            |k, b| version_of(k, b, &name),
                        );
                        match got {
                            Ok(Some(v)) => {
                                assert!(v >= last, "went back from version {last} to {v}");
                                last = v;
                                answers += 1;
                            }
                            Ok(None) => panic!("{name}: a torn entry was returned"),
                            // Several torn reads in a row: the caller asks the daemon.
                            Err(NoAnswer::NoFile) => {}
                            Err(e) => panic!("{name}: {e:?}"),
                        }
                    }
                    (last, answers)
                })
            })
            .collect();
        let versions = 300u64;
        for v in 2..=versions {
            publish_in_place(dir.path(), &version(v, far_future()));
            std::thread::sleep(Duration::from_micros(300));
        }
        std::thread::sleep(Duration::from_millis(50));
        done.store(true, Ordering::Relaxed);
        for r in readers {
            let (last, answers) = r.join().unwrap();
            assert!(answers > 1000, "only {answers} answers");
            assert_eq!(last, versions, "readers end on the last version");
        }
        assert_eq!(cache.mapped(), 1, "one file, written in place");
        assert_eq!(mapped_in_proc_maps(dir.path()), 1);
        assert_eq!(cache.readers(), 0);
    }

    #[test]
    fn a_new_file_is_mapped_once_and_the_old_one_unmapped() {
        let dir = tempfile::tempdir().unwrap();
        let (path, d) = (cpath(dir.path()), cdir(dir.path()));
        let cache = Arc::new(MapCache::new());
        replace(dir.path(), &file_of(&version(1, far_future())));
        let get = |c: &MapCache| {
            c.with_entry(&d, &path, Table::PasswdByName, b"user1", |k, b| {
                version_of(k, b, "user1")
            })
        };
        assert_eq!(get(&cache), Ok(Some(1)));
        for v in 2..50 {
            replace(dir.path(), &file_of(&version(v, far_future())));
            // Many threads see the flag at once; one remaps, the others read what it mapped.
            let seen: Vec<_> = (0..4)
                .map(|_| {
                    let (cache, path, d) = (cache.clone(), path.clone(), d.clone());
                    std::thread::spawn(move || {
                        cache.with_entry(&d, &path, Table::PasswdByName, b"user1", |k, b| {
                            version_of(k, b, "user1")
                        })
                    })
                })
                .collect();
            for s in seen {
                let r = s.join().unwrap();
                assert!(r == Ok(Some(v)) || r == Err(NoAnswer::NoFile), "{r:?}");
            }
            assert_eq!(get(&cache), Ok(Some(v)));
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while cache.mapped() > 1 && Instant::now() < deadline {
            let _ = get(&cache);
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(cache.mapped(), 1);
        assert_eq!(mapped_in_proc_maps(dir.path()), 1, "old files stay mapped");
    }

    #[test]
    fn expiry_absence_negative_entries_and_replacement_without_flag() {
        let dir = tempfile::tempdir().unwrap();
        let (path, d) = (cpath(dir.path()), cdir(dir.path()));
        let cache = MapCache::new();
        let get = |name: &str| {
            cache.with_entry(&d, &path, Table::PasswdByName, name.as_bytes(), |k, b| {
                if k == ResponseKind::NotFound as u16 {
                    Some(0)
                } else {
                    version_of(k, b, name)
                }
            })
        };
        assert_eq!(get("user1"), Err(NoAnswer::NoFile), "no file yet");
        replace(
            dir.path(),
            &file_of(&version(3, clock::secs(libc::CLOCK_REALTIME) - 1)),
        );
        std::thread::sleep(Duration::from_millis(1100)); // the path is checked once a second
        assert_eq!(get("user1"), Err(NoAnswer::Expired));
        publish_in_place(dir.path(), &version(4, far_future()));
        assert_eq!(get("user1"), Ok(Some(4)), "seen at once");
        assert_eq!(get("nobody"), Err(NoAnswer::Absent));
        assert_eq!(get("ghost"), Ok(Some(0)), "a negative entry");
        // Replaced without flagging the old file: noticed by the once-a-second stat.
        let p = dir.path().join("cache.map");
        std::fs::write(dir.path().join("new"), file_of(&version(5, far_future()))).unwrap();
        std::fs::rename(dir.path().join("new"), &p).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(get("user1"), Ok(Some(5)));
        // Removed: the old mapping is dropped at the next check.
        std::fs::remove_file(&p).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(get("user1"), Err(NoAnswer::NoFile));
        assert_eq!(cache.mapped(), 0);
    }

    #[test]
    fn hostile_or_untrusted_files_are_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let (path, d) = (cpath(dir.path()), cdir(dir.path()));
        let p = dir.path().join("cache.map");
        let good = file_of(&version(1, far_future()));
        let mut cases: Vec<(&str, Vec<u8>, u32, Option<u32>)> = vec![
            ("empty", vec![], 0o644, None),
            ("truncated", good[..good.len() / 2].to_vec(), 0o644, None),
            (
                "garbage",
                (0..10_000u32).map(|i| (i * 7919 % 251) as u8).collect(),
                0o644,
                None,
            ),
            ("group-writable", good.clone(), 0o664, None),
            ("world-writable", good.clone(), 0o646, None),
            ("another uid's", good.clone(), 0o644, Some(12_345)),
            ("nobody's", good.clone(), 0o644, Some(65_534)),
        ];
        let mut wild = good.clone();
        for at in (REGION_HEADER + 200..REGION_HEADER + 40_000).step_by(13) {
            wild[at] ^= 0xa5; // slots and records point anywhere
        }
        cases.push(("corrupted", wild, 0o644, None));
        for (what, bytes, mode, owner) in cases {
            let cache = MapCache::new();
            let _ = std::fs::remove_file(&p);
            std::fs::write(&p, &bytes).unwrap();
            std::fs::set_permissions(&p, PermissionsExt::from_mode(mode)).unwrap();
            if let Some(uid) = owner {
                std::os::unix::fs::chown(&p, Some(uid), Some(uid)).unwrap();
            }
            for i in 0..USERS {
                let name = format!("user{i}");
                let r =
                    cache.with_entry(&d, &path, Table::PasswdByName, name.as_bytes(), |k, b| {
                        ResponseRef::decode(k, b).is_ok()
                    });
                if what == "corrupted" {
                    // No crash and no out-of-bounds read; what the entry holds is checked by
                    // the caller (decoded, matched against the question, else the socket).
                    let _ = r;
                } else {
                    assert_eq!(r, Err(NoAnswer::NoFile), "{what}");
                }
            }
        }
        // A symlink is not followed.
        let _ = std::fs::remove_file(&p);
        std::fs::write(dir.path().join("real"), &good).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), &p).unwrap();
        let cache = MapCache::new();
        assert_eq!(
            cache.with_entry(&d, &path, Table::PasswdByName, b"user1", |_, _| ()),
            Err(NoAnswer::NoFile)
        );
        // A good file in a directory others may write, or that another uid owns.
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, &good).unwrap();
        for (mode, owner) in [(0o775, 0), (0o757, 0), (0o755, 12_345)] {
            std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(mode)).unwrap();
            std::os::unix::fs::chown(dir.path(), Some(owner), None).unwrap();
            let cache = MapCache::new();
            assert_eq!(
                cache.with_entry(&d, &path, Table::PasswdByName, b"user1", |_, _| ()),
                Err(NoAnswer::NoFile),
                "directory {mode:o} of uid {owner}"
            );
        }
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(dir.path(), Some(0), None).unwrap();
        assert_eq!(
            MapCache::new().with_entry(&d, &path, Table::PasswdByName, b"user1", |_, _| ()),
            Ok(()),
            "trusted again"
        );
    }
}
