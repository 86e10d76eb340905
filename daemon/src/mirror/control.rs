//! The mirror's life as the configuration changes: which mirror answers ([`Slot`], the
//! resolver's handle on it) and its tasks (sync or poll, periodic save, invalidation of cached
//! answers), started at start and replaced on SIGHUP ([`Control::reload`]).
//!
//! A reload applies a changed `[mirror]` (enable, disable, mode, intervals, `max_entries`) and
//! a changed `[ldap]` (servers, bases, filters, schema...) to the mirror, whole:
//!
//! * disabled: the mirror is dropped at once (its tasks stopped, its connection closed);
//!   lookups go to the cache and the directory, and the shared data is republished without
//!   the `COMPLETE` flag;
//! * enabled, or changed while the mirror is not complete: a new mirror loads in the slot
//!   (lookups are answered as without a mirror until it is complete, as at a first start);
//! * changed while the mirror is complete: a new mirror is built from the new settings in the
//!   background (its own connection, cookies and full load) while the old one keeps answering
//!   and syncing; once it is complete (or found too large) it takes the old one's place and the
//!   old one stops. Nothing is ever half-applied, and answers never lapse; memory holds both
//!   mirrors for the length of the load.
//!
//! `[daemon]` and `[cache]` settings the mirror uses (`cache_dir`, `max_stale_secs`,
//! persistence) apply after a restart, as for the rest of the daemon: a new mirror takes them
//! from the configuration the daemon started with.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use toolforge_nss_config::Config;

use crate::directory::Directory;
use crate::mirror::{self, Mirror, Phase};
use crate::resolver::Resolver;

/// The mirror in service, if any: what the resolver, publication, status and metrics ask.
#[derive(Default)]
pub struct Slot(RwLock<Option<Arc<Mirror>>>);

impl Slot {
    /// The mirror in service.
    pub fn get(&self) -> Option<Arc<Mirror>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `m` in service (or none); returns the one it replaces.
    fn replace(&self, m: Option<Arc<Mirror>>) -> Option<Arc<Mirror>> {
        std::mem::replace(&mut *self.0.write().unwrap_or_else(|e| e.into_inner()), m)
    }
}

/// A mirror with the tasks that drive it.
struct Running {
    mirror: Arc<Mirror>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops every task (the sync connection closes with them); the mirror serves no more.
    fn stop(self) -> Arc<Mirror> {
        self.mirror.set_in_service(false);
        for t in &self.tasks {
            t.abort();
        }
        self.mirror
    }
}

#[derive(Default)]
struct Inner {
    /// The mirror in the slot.
    serving: Option<Running>,
    /// A mirror of newer settings loading in the background, with its generation.
    pending: Option<(u64, Running)>,
    generation: u64,
}

/// Starts, replaces and stops the mirror. Cheap to clone.
pub struct Control<D: Directory> {
    resolver: Arc<Resolver<D>>,
    /// The configuration the daemon started with: `[daemon]` and `[cache]` for new mirrors.
    started: Config,
    inner: Arc<Mutex<Inner>>,
}

impl<D: Directory> Clone for Control<D> {
    fn clone(&self) -> Self {
        Control {
            resolver: self.resolver.clone(),
            started: self.started.clone(),
            inner: self.inner.clone(),
        }
    }
}

/// Whether `m` was built from `new`'s `[mirror]` and `[ldap]` (but for the lookup pool's
/// queue timeout, which the mirror does not use).
fn built_from(m: &Mirror, new: &Config) -> bool {
    let (mut a, mut b) = (m.ldap.clone(), new.ldap.clone());
    a.queue_timeout_ms = 0;
    b.queue_timeout_ms = 0;
    m.cfg == new.mirror && a == b
}

impl<D: Directory> Control<D> {
    pub fn new(resolver: Arc<Resolver<D>>, started: &Config) -> Control<D> {
        Control {
            resolver,
            started: started.clone(),
            inner: Arc::new(Mutex::new(Inner::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration a new mirror is built from: `[mirror]` and `[ldap]` from `new`, the
    /// rest as the daemon started.
    fn settings_for(&self, new: &Config) -> Config {
        let mut c = self.started.clone();
        c.mirror = new.mirror.clone();
        c.ldap = new.ldap.clone();
        c
    }

    /// At start (when `[mirror] enabled`): restores the persisted mirror, so that a daemon
    /// started with the directory unreachable answers from it at once, and starts it.
    pub async fn start(&self) {
        let m = Mirror::new(&self.started);
        mirror::restore(&m).await;
        self.serve(m);
        info!(mode = ?self.started.mirror.mode, "mirror mode on: loading the directory in the background");
    }

    /// Puts `m` in service with its tasks, stopping the one it replaces.
    fn serve(&self, m: Arc<Mirror>) {
        let mut inner = self.lock();
        self.serve_locked(&mut inner, m);
    }

    /// [`Self::serve`], under `Inner`'s lock (held by the caller for its whole decision).
    fn serve_locked(&self, inner: &mut Inner, m: Arc<Mirror>) {
        // In service (saved) only once the one it replaces is out.
        m.set_in_service(false);
        let tasks = vec![
            tokio::spawn(mirror::run(m.clone())),
            tokio::spawn(mirror::save_periodically(m.clone())),
            tokio::spawn(mirror::invalidate_on_change(
                m.clone(),
                self.resolver.clone(),
            )),
        ];
        let replaced = self.put_in_service(inner, Running { mirror: m, tasks });
        // Replacing one: what the cache and the shared data hold came from the old settings.
        // (A first mirror leaves the cache answering until it is complete.)
        if replaced {
            self.changed();
        }
    }

    /// Puts `r` in the slot (under `Inner`'s lock) and stops the one it replaces, before `r`
    /// is in service: never two mirrors saving to `cache_dir` at once. A new generation, so
    /// that no watcher of an earlier one promotes anything. Whether it replaced one.
    fn put_in_service(&self, inner: &mut Inner, r: Running) -> bool {
        inner.generation += 1;
        let old = inner.serving.take();
        let replaced = old.is_some();
        if let Some(old) = old {
            old.stop();
        }
        r.mirror.set_in_service(true);
        self.resolver.mirror.replace(Some(r.mirror.clone()));
        inner.serving = Some(r);
        replaced
    }

    /// Cached answers and the shared data no longer hold: drop and republish.
    fn changed(&self) {
        self.resolver.maps_clear();
        self.resolver.stats.changed();
    }

    /// Applies a reloaded configuration's `[mirror]` and `[ldap]` to the mirror (see the module
    /// doc). `new` is valid (it passed `Config::load`). The whole decision and its effect are
    /// taken under `Inner`'s lock, so that a replacement's promotion ([`Self::promote`]) comes
    /// wholly before or wholly after it.
    pub fn reload(&self, new: &Config) {
        let mut inner = self.lock();
        mirror::gap::at("reload");
        if let Some((_, p)) = &inner.pending {
            if new.mirror.enabled && built_from(&p.mirror, new) {
                return;
            }
        }
        if let Some((_, p)) = inner.pending.take() {
            inner.generation += 1;
            p.stop();
            info!("mirror: the replacement under way is dropped for the newer settings");
        }
        let serving = inner.serving.as_ref().map(|r| r.mirror.clone());
        match (serving, new.mirror.enabled) {
            (None, false) => {}
            (Some(_), false) => {
                inner.generation += 1;
                if let Some(old) = inner.serving.take() {
                    old.stop();
                }
                self.resolver.mirror.replace(None);
                self.changed();
                info!("SIGHUP: mirror disabled: lookups are answered from the cache and the directory");
            }
            (None, true) => {
                self.serve_locked(&mut inner, Mirror::new(&self.settings_for(new)));
                info!(mode = ?new.mirror.mode, "SIGHUP: mirror enabled: loading the directory in the background");
            }
            (Some(m), true) => {
                if built_from(&m, new) {
                    return;
                }
                let fresh = Mirror::new(&self.settings_for(new));
                if !m.is_complete() {
                    self.serve_locked(&mut inner, fresh);
                    info!(mode = ?new.mirror.mode, "SIGHUP: mirror settings changed: loading the directory again");
                    return;
                }
                info!(mode = ?new.mirror.mode, "SIGHUP: mirror settings changed: loading a new mirror in the background; the current one answers until it is complete");
                self.replace_when_loaded(&mut inner, fresh);
            }
        }
    }

    /// Loads `fresh` beside the mirror in service; puts it in service once complete (or too
    /// large: then lookup mode, loudly, as the new bound says).
    fn replace_when_loaded(&self, inner: &mut Inner, fresh: Arc<Mirror>) {
        fresh.set_in_service(false);
        inner.generation += 1;
        let generation = inner.generation;
        let this = self.clone();
        let m = fresh.clone();
        let watch = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if m.is_complete() || m.phase() == Phase::TooLarge {
                    break;
                }
            }
            this.promote(generation);
        });
        let run = tokio::spawn(mirror::run(fresh.clone()));
        inner.pending = Some((
            generation,
            Running {
                mirror: fresh,
                tasks: vec![run, watch],
            },
        ));
        if inner.serving.is_none() {
            warn!("mirror: a replacement loads with no mirror in service");
        }
    }

    /// The watcher's step once the replacement of `generation` is complete (or too large):
    /// puts it in service, under `Inner`'s lock, unless a reload came meanwhile (a newer
    /// replacement, a disable, another mirror in the slot: another generation). Whether it
    /// did.
    fn promote(&self, generation: u64) -> bool {
        let mut inner = self.lock();
        if inner.generation != generation
            || !matches!(inner.pending, Some((g, _)) if g == generation)
        {
            return false;
        }
        let Some((_, p)) = inner.pending.take() else {
            return false;
        };
        mirror::gap::at("promote");
        // Its loader keeps running: it is the new mirror's sync from now on.
        let mut tasks = p.tasks;
        tasks.pop(); // the watcher (this task, or finishing)
        let m = p.mirror;
        tasks.push(tokio::spawn(mirror::save_periodically(m.clone())));
        tasks.push(tokio::spawn(mirror::invalidate_on_change(
            m.clone(),
            self.resolver.clone(),
        )));
        self.put_in_service(
            &mut inner,
            Running {
                mirror: m.clone(),
                tasks,
            },
        );
        drop(inner);
        self.changed();
        let (u, g) = m.counts();
        info!(
            users = u,
            groups = g,
            state = m.phase().name(),
            "mirror replaced by the one of the new settings"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{DirResult, Directory};
    use crate::records::{GroupRecord, Membership, UserRecord};
    use std::sync::mpsc;

    type Step = Box<dyn FnOnce()>;

    /// No directory: the mirror tests never look anything up.
    struct NoDir;

    impl Directory for NoDir {
        async fn user_by_name(&self, _: &str) -> DirResult<Option<UserRecord>> {
            Ok(None)
        }
        async fn user_by_uid(&self, _: u32) -> DirResult<Option<UserRecord>> {
            Ok(None)
        }
        async fn group_by_name(&self, _: &str) -> DirResult<Option<GroupRecord>> {
            Ok(None)
        }
        async fn group_by_gid(&self, _: u32) -> DirResult<Option<GroupRecord>> {
            Ok(None)
        }
        async fn memberships(&self, _: &str, _: Option<&str>) -> DirResult<Vec<Membership>> {
            Ok(Vec::new())
        }
        async fn all_users(&self) -> DirResult<Vec<UserRecord>> {
            Ok(Vec::new())
        }
        async fn all_groups(&self) -> DirResult<Vec<GroupRecord>> {
            Ok(Vec::new())
        }
        fn memberships_need_dn(&self) -> bool {
            false
        }
    }

    /// A configuration with the mirror on (`max_entries` tells settings apart) or off. The
    /// server is a closed port: the mirrors' tasks never run anyway (the tests do not yield).
    fn config(dir: &std::path::Path, enabled: bool, max_entries: usize) -> Config {
        let text = format!(
            "[ldap]\nuri = [\"ldap://127.0.0.1:1\"]\nbase = \"dc=x\"\n\
             [mirror]\nenabled = {enabled}\nmax_entries = {max_entries}\n\
             [daemon]\ncache_dir = {:?}\n",
            dir.display().to_string()
        );
        Config::parse(&text, std::path::Path::new("t.toml")).unwrap()
    }

    /// A control with a complete mirror of `max_entries = 100` in service, and a replacement
    /// of `max_entries = 200` loaded beside it (complete, its watcher not run yet): the
    /// control, the replacement's generation and the replacement.
    async fn replacing(dir: &std::path::Path) -> (Control<NoDir>, u64, Arc<Mirror>) {
        let started = config(dir, true, 100);
        let c = Control::new(Resolver::new(NoDir, &started), &started);
        c.start().await;
        c.resolver.mirror.get().unwrap().became_complete();
        c.reload(&config(dir, true, 200));
        let (g, p) = {
            let inner = c.lock();
            let (g, p) = inner.pending.as_ref().expect("a replacement loads");
            (*g, p.mirror.clone())
        };
        p.became_complete();
        (c, g, p)
    }

    /// Puts `step` at the gap `at`: run on another thread (in this runtime) when the gap is
    /// reached, waited for a moment (where the caller holds its lock, the step waits for it,
    /// and the caller goes on). Returns the thread, to join once the caller is done.
    fn during(
        at: &'static str,
        step: impl FnOnce() + Send + 'static,
    ) -> mpsc::Receiver<std::thread::JoinHandle<()>> {
        let (threads, thread) = mpsc::channel();
        let rt = tokio::runtime::Handle::current();
        let f: Step = Box::new(move || {
            let (done, finished) = mpsc::channel();
            let t = std::thread::spawn(move || {
                let _rt = rt.enter();
                step();
                let _ = done.send(());
            });
            let _ = finished.recv_timeout(Duration::from_millis(300));
            let _ = threads.send(t);
        });
        mirror::gap::put(at, f);
        thread
    }

    /// A control with an empty mirror in service, complete (the publisher tests).
    async fn complete_mirror(dir: &std::path::Path) -> (Control<NoDir>, Arc<Mirror>) {
        let config = config(dir, true, 100_000);
        let c = Control::new(Resolver::new(NoDir, &config), &config);
        c.start().await;
        let m = in_service(&c).unwrap();
        m.became_complete();
        (c, m)
    }

    /// Entry attributes from pairs.
    fn attrs(kv: &[(&str, Vec<String>)]) -> std::collections::HashMap<String, Vec<String>> {
        kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn in_service(c: &Control<NoDir>) -> Option<Arc<Mirror>> {
        c.resolver.mirror.get()
    }

    #[tokio::test]
    async fn an_identical_reload_as_the_replacement_completes_does_not_strand_it() {
        let dir = tempfile::tempdir().unwrap();
        let (c, g, p) = replacing(dir.path()).await;
        // The watcher wakes (the replacement is complete) while a reload of the same settings
        // (a periodic SIGHUP) looks at the replacement.
        let watcher = c.clone();
        let t = during("reload", move || assert!(watcher.promote(g), "promoted"));
        c.reload(&config(dir.path(), true, 200));
        t.try_recv()
            .expect("the reload reached the gap")
            .join()
            .unwrap();
        let m = in_service(&c).expect("a mirror in service");
        assert!(Arc::ptr_eq(&m, &p), "the replacement is in service");
        let inner = c.lock();
        assert!(inner.pending.is_none(), "no second mirror left loading");
        assert!(Arc::ptr_eq(&inner.serving.as_ref().unwrap().mirror, &p));
    }

    #[tokio::test]
    async fn a_reload_that_disables_the_mirror_as_the_replacement_is_promoted_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (c, g, p) = replacing(dir.path()).await;
        let old = in_service(&c).unwrap();
        // The watcher has decided to promote; a reload disabling the mirror comes meanwhile.
        let reloader = c.clone();
        let off = config(dir.path(), false, 200);
        let t = during("promote", move || reloader.reload(&off));
        assert!(c.promote(g));
        t.try_recv()
            .expect("the promotion reached the gap")
            .join()
            .unwrap();
        assert!(in_service(&c).is_none(), "no mirror serves: disabled");
        let inner = c.lock();
        assert!(inner.serving.is_none() && inner.pending.is_none());
        assert!(!p.in_service.load(std::sync::atomic::Ordering::Acquire));
        assert!(!old.in_service.load(std::sync::atomic::Ordering::Acquire));
    }

    #[tokio::test]
    async fn a_replacement_dropped_by_a_reload_is_never_promoted() {
        let dir = tempfile::tempdir().unwrap();
        let (c, g, _) = replacing(dir.path()).await;
        c.reload(&config(dir.path(), false, 200));
        assert!(!c.promote(g));
        assert!(in_service(&c).is_none());
        // Enabled again with the replacement's settings: a new mirror loads, and the old
        // generation's watcher does not promote it.
        c.reload(&config(dir.path(), true, 200));
        let m = in_service(&c).expect("a new mirror loads in the slot");
        assert!(!c.promote(g));
        assert!(Arc::ptr_eq(&in_service(&c).unwrap(), &m));
    }

    /// The periodic whole publication that extends the published records' validity is not
    /// starved by a stream of changes (each only a patch, which keeps the expiry).
    #[tokio::test]
    async fn a_stream_of_changes_does_not_starve_the_validity_refresh() {
        let dir = tempfile::tempdir().unwrap();
        // positive TTL 4 s: the records' validity is extended every second.
        let text = format!(
            "[ldap]\nuri = [\"ldap://127.0.0.1:1\"]\nbase = \"dc=x\"\n\
             [mirror]\nenabled = true\n[cache]\npositive_ttl_secs = 4\n\
             [daemon]\ncache_dir = {:?}\n",
            dir.path().display().to_string()
        );
        let config = Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
        let r = Resolver::new(NoDir, &config);
        let m = Mirror::new(&config);
        m.became_complete();
        m.take_changes(); // the first whole publication
        let task = tokio::spawn(mirror::invalidate_on_change(m.clone(), r));
        // A change every 200 ms (a busy directory) for 3 s: three refresh intervals.
        let mut full = false;
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            m.changed.notify_one();
            full |= m.take_changes().full;
        }
        task.abort();
        assert!(
            full,
            "no whole publication was asked for in 3 s of changes: the records published \
             keep the expiry of the last whole one and lapse"
        );
    }

    /// Patches keep the shared memory bound (ARCHITECTURE "Bounded shared memory"): the
    /// garbage they leave (a changed record is appended, the old one stays until the next
    /// whole publication) must not take the file's resident bytes far past two publications.
    #[tokio::test]
    async fn patches_keep_the_shared_file_within_its_memory_bound() {
        use crate::mapping::RawEntry;
        use crate::mirror::state::Kind;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (c, m) = complete_mirror(dir.path()).await;
        let group = |extra: usize| {
            let members: Vec<String> = (0..1000 + extra).map(|i| format!("user{i}")).collect();
            RawEntry::new(
                "cn=big,ou=groups,dc=x".into(),
                attrs(&[
                    ("cn", vec!["big".into()]),
                    ("gidNumber", vec!["9000".into()]),
                    ("memberUid", members),
                ]),
            )
        };
        m.apply(|s, mapper| {
            for i in 0..5000 {
                let name = format!("user{i}");
                let e = RawEntry::new(
                    format!("uid={name},ou=people,dc=x"),
                    attrs(&[
                        ("uid", vec![name.clone()]),
                        ("uidNumber", vec![(10_000 + i).to_string()]),
                        ("gidNumber", vec![(10_000 + i).to_string()]),
                        ("homeDirectory", vec![format!("/home/{name}")]),
                    ]),
                );
                s.upsert(mapper, Kind::User, &format!("u{i}"), e).unwrap();
            }
            s.upsert(mapper, Kind::Group, "g", group(0)).unwrap();
        });
        let runtime = tempfile::tempdir().unwrap();
        let p = crate::publish::Publisher::new(runtime.path(), 64).unwrap();
        let r = c.resolver.clone();
        let whole = p.publish(&r).unwrap().expect("published");
        assert!(!whole.patched, "the first publication is whole");
        let allocated = || std::fs::metadata(p.path()).unwrap().blocks() * 512;
        let (mut most, mut patches) = (allocated(), 0);
        // A member comes and goes, again and again (a busy tool's group).
        for round in 0..300 {
            m.apply(|s, mapper| s.upsert(mapper, Kind::Group, "g", group(round % 2)))
                .unwrap();
            let done = p.publish(&r).unwrap().expect("published");
            patches += usize::from(done.patched);
            most = most.max(allocated());
        }
        assert!(patches > 0, "changes are patched");
        let bound = 2 * whole.bytes as u64 * 5 / 4 + 64 * 1024;
        assert!(
            most <= bound,
            "the file took {most} bytes for publications of {} bytes (bound {bound}: two \
             publications and a quarter of garbage each)",
            whole.bytes
        );
    }

    /// Left-right patches through the publisher: after every change both halves are
    /// complete (even counters), byte-identical in their used part, and answer every key as
    /// a whole publication of the mirror does (users renamed, renumbered, removed; members
    /// coming and going).
    #[tokio::test]
    async fn patched_twins_stay_identical_and_answer_as_a_whole_publication() {
        use crate::mapping::RawEntry;
        use crate::mirror::state::Kind;
        use std::collections::BTreeMap;
        use toolforge_nss_protocol::mapfile::{MapView, Region, Table, SEQ_OFFSET};
        let dir = tempfile::tempdir().unwrap();
        let (c, m) = complete_mirror(dir.path()).await;
        let user = |name: &str, uid: u32| {
            RawEntry::new(
                format!("uid={name},ou=people,dc=x"),
                attrs(&[
                    ("uid", vec![name.into()]),
                    ("uidNumber", vec![uid.to_string()]),
                    ("gidNumber", vec![uid.to_string()]),
                    ("homeDirectory", vec![format!("/home/{name}")]),
                ]),
            )
        };
        let group = |g: u32, members: Vec<String>| {
            RawEntry::new(
                format!("cn=g{g},ou=groups,dc=x"),
                attrs(&[
                    ("cn", vec![format!("g{g}")]),
                    ("gidNumber", vec![(9000 + g).to_string()]),
                    ("memberUid", members),
                ]),
            )
        };
        m.apply(|s, mapper| {
            for i in 0..300 {
                s.upsert(
                    mapper,
                    Kind::User,
                    &format!("u{i}"),
                    user(&format!("n{i}"), 10_000 + i),
                )
                .unwrap();
            }
            for g in 0..20 {
                let members = (0..30).map(|i| format!("n{}", g * 7 + i)).collect();
                s.upsert(mapper, Kind::Group, &format!("g{g}"), group(g, members))
                    .unwrap();
            }
        });
        let runtime = tempfile::tempdir().unwrap();
        let p = crate::publish::Publisher::new(runtime.path(), 64).unwrap();
        let r = c.resolver.clone();
        assert!(!p.publish(&r).unwrap().unwrap().patched);
        type Contents = BTreeMap<(usize, Vec<u8>), (u16, Vec<u8>)>;
        let contents = |half: &[u8]| -> Contents {
            let v = MapView::publication(half).expect("a publication");
            let mut out = BTreeMap::new();
            for t in Table::ALL {
                for k in v.stored_keys(t) {
                    let hit = v.get(t, k).expect("a stored key is found");
                    out.insert((t as usize, k.to_vec()), (hit.kind, hit.body.to_vec()));
                }
            }
            out
        };
        let (mut seed, mut patches) = (7u64, 0);
        let mut rnd = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for round in 0..120 {
            let (op, a, b) = (rnd(4), rnd(300) as u32, rnd(300) as u32);
            m.apply(|s, mapper| match op {
                // Renamed (sometimes onto another's name), or renumbered onto another's uid.
                0 => s.upsert(
                    mapper,
                    Kind::User,
                    &format!("u{a}"),
                    user(&format!("n{b}"), 10_000 + a),
                ),
                1 => s.upsert(
                    mapper,
                    Kind::User,
                    &format!("u{a}"),
                    user(&format!("n{a}"), 10_000 + b),
                ),
                2 => {
                    s.remove(Kind::User, &format!("u{a}"));
                    Ok(())
                }
                _ => {
                    let g = a % 20;
                    let members = (0..30 + b % 5).map(|i| format!("n{}", g * 7 + i)).collect();
                    s.upsert(mapper, Kind::Group, &format!("g{g}"), group(g, members))
                }
            })
            .unwrap();
            // None: nothing changed (a user removed twice).
            if let Some(done) = p.publish(&r).unwrap() {
                patches += usize::from(done.patched);
            }
            let file = std::fs::read(p.path()).unwrap();
            let region = Region::parse(&file, file.len()).unwrap();
            let seq =
                |h: usize| u64::from_le_bytes(file[SEQ_OFFSET + 8 * h..][..8].try_into().unwrap());
            assert!(
                seq(0) % 2 == 0 && seq(1) % 2 == 0,
                "round {round}: both halves complete"
            );
            let (a, b) = (&file[region.half(0)], &file[region.half(1)]);
            let used = |h: &[u8]| u64::from_le_bytes(h[32..40].try_into().unwrap()) as usize;
            assert_eq!(used(a), used(b), "round {round}");
            assert!(
                a[..used(a)] == b[..used(b)],
                "round {round}: the halves are twins"
            );
            let (whole, _, _) =
                crate::mirror::publish::build(&r, 1, 99, [0; 16], usize::MAX).unwrap();
            assert_eq!(
                contents(a),
                contents(&whole),
                "round {round}: patched = whole"
            );
        }
        assert!(patches > 100, "{patches} patches");
    }
}
