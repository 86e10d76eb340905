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
        m.set_in_service(true);
        let tasks = vec![
            tokio::spawn(mirror::run(m.clone())),
            tokio::spawn(mirror::save_periodically(m.clone())),
            tokio::spawn(mirror::invalidate_on_change(
                m.clone(),
                self.resolver.clone(),
            )),
        ];
        let old = self.lock().serving.replace(Running {
            mirror: m.clone(),
            tasks,
        });
        self.resolver.mirror.replace(Some(m));
        // Replacing one: what the cache and the shared data hold came from the old settings.
        // (A first mirror leaves the cache answering until it is complete.)
        if let Some(old) = old {
            old.stop();
            self.changed();
        }
    }

    /// Cached answers and the shared data no longer hold: drop and republish.
    fn changed(&self) {
        self.resolver.maps_clear();
        self.resolver.stats.changed();
    }

    /// Applies a reloaded configuration's `[mirror]` and `[ldap]` to the mirror (see the module
    /// doc). `new` is valid (it passed `Config::load`).
    pub fn reload(&self, new: &Config) {
        let serving = self.lock().serving.as_ref().map(|r| r.mirror.clone());
        let pending = self.lock().pending.take();
        if let Some((g, p)) = pending {
            if new.mirror.enabled && built_from(&p.mirror, new) {
                self.lock().pending = Some((g, p));
                return;
            }
            p.stop();
            info!("mirror: the replacement under way is dropped for the newer settings");
        }
        match (serving, new.mirror.enabled) {
            (None, false) => {}
            (Some(_), false) => {
                if let Some(old) = self.lock().serving.take() {
                    old.stop();
                }
                self.resolver.mirror.replace(None);
                self.changed();
                info!("SIGHUP: mirror disabled: lookups are answered from the cache and the directory");
            }
            (None, true) => {
                self.serve(Mirror::new(&self.settings_for(new)));
                info!(mode = ?new.mirror.mode, "SIGHUP: mirror enabled: loading the directory in the background");
            }
            (Some(m), true) => {
                if built_from(&m, new) {
                    return;
                }
                let fresh = Mirror::new(&self.settings_for(new));
                if !m.is_complete() {
                    self.serve(fresh);
                    info!(mode = ?new.mirror.mode, "SIGHUP: mirror settings changed: loading the directory again");
                    return;
                }
                info!(mode = ?new.mirror.mode, "SIGHUP: mirror settings changed: loading a new mirror in the background; the current one answers until it is complete");
                self.replace_when_loaded(fresh);
            }
        }
    }

    /// Loads `fresh` beside the mirror in service; puts it in service once complete (or too
    /// large: then lookup mode, loudly, as the new bound says).
    fn replace_when_loaded(&self, fresh: Arc<Mirror>) {
        fresh.set_in_service(false);
        let mut inner = self.lock();
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
            let mut inner = this.lock();
            // Replaced meanwhile by a newer SIGHUP's: that one goes on.
            let Some((_, p)) = inner.pending.take_if(|(g, _)| *g == generation) else {
                return;
            };
            drop(inner);
            // Its loader keeps running: it is the new mirror's sync from now on.
            let mut tasks = p.tasks;
            tasks.pop(); // this watcher
            let m = p.mirror;
            m.set_in_service(true);
            tasks.push(tokio::spawn(mirror::save_periodically(m.clone())));
            tasks.push(tokio::spawn(mirror::invalidate_on_change(
                m.clone(),
                this.resolver.clone(),
            )));
            let old = this.lock().serving.replace(Running {
                mirror: m.clone(),
                tasks,
            });
            this.resolver.mirror.replace(Some(m.clone()));
            if let Some(old) = old {
                old.stop();
            }
            this.changed();
            let (u, g) = m.counts();
            info!(
                users = u,
                groups = g,
                state = m.phase().name(),
                "mirror replaced by the one of the new settings"
            );
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
}
