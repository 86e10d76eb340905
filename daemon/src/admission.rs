//! Admission of directory work, keyed by who asks (the peer uid, from SO_PEERCRED, which a
//! client cannot forge). One component, two gates, in the order a miss meets them:
//!
//! 1. **Budget** ([`Admission::charge`]), per lookup: each uid has a token bucket of directory
//!    queries for misses (`[daemon] miss_queries_per_uid_per_sec`, `miss_query_burst_per_uid`).
//!    Over budget, that uid's new misses answer `Unavailable` at once; its cached answers,
//!    misses it merely joins (single-flight) and other uids are unaffected.
//! 2. **Fair queue** ([`Admission::enter`]), per directory *operation*: the connection pool's
//!    operation slots (`connections_per_server` x `max_ops_per_connection`) are this queue's
//!    slots, and every operation the pool runs holds one ([`crate::directory::pool`] enters it
//!    before it picks a connection). Beyond, operations wait in one FIFO per caller, served
//!    round-robin across callers, so one uid's flood waits behind every other uid's
//!    operations however many operations each of its lookups fans out into (one per base,
//!    member batches, nested groups). The wait is bounded per *lookup*, not per operation: a
//!    client's lookup ([`with_caller`] with a [`Caller::Peer`]) has one [`WaitBudget`] of
//!    `queue_timeout_ms` of queue waiting in total, shared by all its operations, whether
//!    they run one after another (rfc2307bis: group search, member batches, nested levels) or
//!    at once (one per base); time spent in LDAP operations themselves is not counted (search
//!    timeouts bound that). An operation that finds the budget spent, or spends it waiting,
//!    answers as a queue timeout: `Unavailable` for that request only, within the module's
//!    budget. The daemon's own work ([`Caller::Internal`], and listings, see
//!    [`with_caller_per_operation`]) waits at most `queue_timeout_ms` per operation.
//!    Overload is never a server failure.
//!
//! The caller travels with the request: the resolver runs a lookup's directory work inside
//! [`with_caller`], and the pool reads it back with [`current_caller`] (work outside any
//! lookup, such as a connection warm-up, is [`Caller::Internal`]). The uid charged for a
//! query is the one that started it: single-flight runs the leader's closure, which carries
//! the leader's [`Caller`] and its wait budget. A lookup made inside another one for the same
//! caller (initgroups' user lookup) shares the outer lookup's budget.
//!
//! One [`Admission`] lives as long as the resolver: a SIGHUP changes its limits in place,
//! and a directory rebuilt by a reload is handed the same one
//! ([`crate::directory::Directory::attach_admission`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

tokio::task_local! {
    /// The caller on whose behalf the current task does directory work, and its lookup's
    /// budget of queue waiting.
    static CALLER: Scope;
}

/// What travels with a lookup's directory work.
#[derive(Clone)]
pub struct Scope {
    caller: Caller,
    /// `None`: each operation waits at most the queue timeout on its own.
    budget: Option<Arc<WaitBudget>>,
}

/// Runs a lookup's directory work on behalf of `caller`: every directory operation it makes
/// waits in `caller`'s turn of the fair queue, and a client's ([`Caller::Peer`]) operations
/// share one budget of queue waiting (`queue_timeout_ms` in total). Inside another lookup
/// for the same caller, the outer lookup's budget is shared.
pub fn with_caller<F: std::future::Future>(
    caller: Caller,
    work: F,
) -> tokio::task::futures::TaskLocalFuture<Scope, F> {
    let budget = match caller {
        Caller::Internal => None,
        Caller::Peer(_) => Some(
            CALLER
                .try_with(|s| (s.caller == caller).then(|| s.budget.clone()).flatten())
                .ok()
                .flatten()
                .unwrap_or_default(),
        ),
    };
    CALLER.scope(Scope { caller, budget }, work)
}

/// Runs `work` on behalf of `caller` with no lookup budget: each operation waits at most the
/// queue timeout on its own (listings, whose snapshot serves every client, and the daemon's
/// own work).
pub fn with_caller_per_operation<F: std::future::Future>(
    caller: Caller,
    work: F,
) -> tokio::task::futures::TaskLocalFuture<Scope, F> {
    CALLER.scope(
        Scope {
            caller,
            budget: None,
        },
        work,
    )
}

/// The caller the current task works for ([`Caller::Internal`] outside [`with_caller`]).
pub fn current_caller() -> Caller {
    CALLER.try_with(|s| s.caller).unwrap_or(Caller::Internal)
}

/// The queue waiting a lookup may still do: the time during which at least one of its
/// operations waited (for a fair-queue slot or a connection's permit) counts once, however
/// many waited at once; the time its operations ran does not count.
#[derive(Default, Debug)]
pub struct WaitBudget {
    state: Mutex<WaitState>,
}

#[derive(Default, Debug)]
struct WaitState {
    /// Operations of the lookup waiting now.
    waiting: usize,
    /// When the current stretch of waiting began (meaningful while `waiting > 0`).
    since: Option<Instant>,
    /// Waiting done in earlier stretches.
    spent: Duration,
}

impl WaitBudget {
    fn lock(&self) -> std::sync::MutexGuard<'_, WaitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue waiting done so far.
    pub fn spent(&self) -> Duration {
        let st = self.lock();
        st.spent + st.since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Starts one operation's wait; it ends when the guard drops (served, timed out or
    /// cancelled).
    fn start(self: &Arc<Self>) -> Waiting {
        let mut st = self.lock();
        if st.waiting == 0 {
            st.since = Some(Instant::now());
        }
        st.waiting += 1;
        Waiting(self.clone())
    }
}

struct Waiting(Arc<WaitBudget>);

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.waiting = st.waiting.saturating_sub(1);
        if st.waiting == 0 {
            if let Some(t) = st.since.take() {
                st.spent += t.elapsed();
            }
        }
    }
}

/// Waits for `fut`, one operation's queue wait on behalf of `caller`: at most `per_op`, and
/// for a lookup with a wait budget at most what is left of `per_op` in that budget (`None`
/// at once when it is spent). The wait is counted in the budget.
pub async fn queue_wait<F: std::future::Future>(
    caller: Caller,
    per_op: Duration,
    fut: F,
) -> Option<F::Output> {
    let budget = CALLER
        .try_with(|s| (s.caller == caller).then(|| s.budget.clone()).flatten())
        .ok()
        .flatten();
    let Some(budget) = budget else {
        return tokio::time::timeout(per_op, fut).await.ok();
    };
    let left = per_op.saturating_sub(budget.spent());
    if left.is_zero() {
        return None;
    }
    let _waiting = budget.start();
    tokio::time::timeout(left, fut).await.ok()
}

/// Who a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A client of the lookup socket, by peer uid.
    Peer(u32),
    /// The daemon itself (prefetch, admin `lookup`, connection warm-up): no budget, its own
    /// turn in the queue.
    Internal,
}

/// Why a request was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The uid spent its budget of miss queries.
    OverBudget,
    /// No slot freed within the queue timeout.
    QueueTimeout,
}

/// The limits in force (a SIGHUP may change them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Tokens per second per uid; 0 disables the budget.
    pub rate: f64,
    /// Bucket size.
    pub burst: f64,
    /// Slots of the fair queue: directory operations in flight.
    pub slots: usize,
    pub queue_timeout: Duration,
}

impl Limits {
    pub fn from(config: &toolforge_nss_config::Config) -> Limits {
        Limits {
            rate: f64::from(config.daemon.miss_queries_per_uid_per_sec),
            burst: f64::from(config.daemon.miss_query_burst_per_uid),
            ..Limits::queue_only(&config.ldap)
        }
    }

    /// The fair queue of a pool used without a resolver (no budget).
    pub fn queue_only(l: &toolforge_nss_config::LdapConfig) -> Limits {
        Limits {
            rate: 0.0,
            burst: 0.0,
            slots: l.connections_per_server * l.max_ops_per_connection,
            queue_timeout: Duration::from_millis(l.queue_timeout_ms),
        }
    }
}

/// Counters for status and metrics.
#[derive(Default, Debug)]
pub struct AdmissionStats {
    /// Misses refused because their uid was over budget.
    pub over_budget: AtomicU64,
    /// Directory operations that waited for a slot and got none in time.
    pub queue_timeouts: AtomicU64,
    /// Directory operations that had to wait for a slot.
    pub queued: AtomicU64,
    /// Directory queries charged to a uid's budget.
    pub charged: AtomicU64,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Most uids whose refusals are remembered for status (the busiest kept).
const REFUSED_UIDS_SHOWN: usize = 64;
/// Buckets are pruned (full ones dropped) when there are more than this.
const BUCKETS_PRUNE_AT: usize = 4096;

struct Waiter {
    id: u64,
    tx: oneshot::Sender<()>,
}

#[derive(Default)]
struct Queue {
    in_flight: usize,
    waiting: HashMap<Caller, VecDeque<Waiter>>,
    /// Callers with waiters, in round-robin order.
    ring: VecDeque<Caller>,
    next_id: u64,
}

impl Queue {
    fn waiters(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }
}

pub struct Admission {
    limits: Mutex<Limits>,
    buckets: Mutex<HashMap<u32, Bucket>>,
    refused_by_uid: Mutex<HashMap<u32, u64>>,
    queue: Mutex<Queue>,
    pub stats: AdmissionStats,
}

/// A slot of the fair queue; freed (and handed to the next caller in turn) on drop.
pub struct Slot {
    admission: Arc<Admission>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.release();
    }
}

/// Removes a waiter that gave up (timeout or cancellation); frees a slot granted meanwhile.
struct WaitGuard<'a> {
    admission: &'a Arc<Admission>,
    caller: Caller,
    id: u64,
    /// Owned here so that a slot handed over can always be seen (and passed on) on drop.
    rx: oneshot::Receiver<()>,
    done: bool,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut q = self.admission.lock_queue();
        if let Some(d) = q.waiting.get_mut(&self.caller) {
            if let Some(pos) = d.iter().position(|w| w.id == self.id) {
                d.remove(pos);
                if d.is_empty() {
                    q.waiting.remove(&self.caller);
                    q.ring.retain(|c| *c != self.caller);
                }
                return;
            }
        }
        drop(q);
        // Not queued any more: a slot was handed to us; pass it on.
        if self.rx.try_recv().is_ok() {
            self.admission.release();
        }
    }
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits: Mutex::new(limits),
            buckets: Mutex::new(HashMap::new()),
            refused_by_uid: Mutex::new(HashMap::new()),
            queue: Mutex::new(Queue::default()),
            stats: AdmissionStats::default(),
        })
    }

    /// Applies new limits (SIGHUP). More slots are handed to waiters at once, one per new
    /// slot; fewer take effect as operations finish.
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
        let mut q = self.lock_queue();
        while q.in_flight < limits.slots && Self::grant_next(&mut q) {
            q.in_flight += 1;
        }
    }

    pub fn limits(&self) -> Limits {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one token of `caller`'s budget for a directory query; `Err` when it has none.
    pub fn charge(&self, caller: Caller, now: Instant) -> Result<(), Refused> {
        let Caller::Peer(uid) = caller else {
            return Ok(());
        };
        let Limits { rate, burst, .. } = self.limits();
        if rate <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= BUCKETS_PRUNE_AT {
            // A full bucket is the same as no bucket.
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
        }
        let b = buckets.entry(uid).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            drop(buckets);
            self.stats.charged.fetch_add(1, Ordering::Relaxed);
            Ok(())
        } else {
            drop(buckets);
            self.stats.over_budget.fetch_add(1, Ordering::Relaxed);
            let mut r = self
                .refused_by_uid
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if r.len() >= REFUSED_UIDS_SHOWN && !r.contains_key(&uid) {
                // Forget the least refused to make room: the busiest stay visible.
                if let Some((&least, _)) = r.iter().min_by_key(|(_, n)| **n) {
                    r.remove(&least);
                }
            }
            *r.entry(uid).or_insert(0) += 1;
            Err(Refused::OverBudget)
        }
    }

    /// A slot for one directory operation, waiting in `caller`'s turn for at most the queue
    /// timeout, and within a client's lookup for at most what is left of its wait budget
    /// ([`queue_wait`]).
    pub async fn enter(self: &Arc<Self>, caller: Caller) -> Result<Slot, Refused> {
        let timeout = self.limits().queue_timeout;
        let (id, rx) = {
            let mut q = self.lock_queue();
            if q.in_flight < self.limits().slots && q.ring.is_empty() {
                q.in_flight += 1;
                return Ok(Slot {
                    admission: self.clone(),
                });
            }
            let (tx, rx) = oneshot::channel();
            q.next_id += 1;
            let id = q.next_id;
            let d = q.waiting.entry(caller).or_default();
            d.push_back(Waiter { id, tx });
            if d.len() == 1 {
                q.ring.push_back(caller);
            }
            (id, rx)
        };
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        let mut guard = WaitGuard {
            admission: self,
            caller,
            id,
            rx,
            done: false,
        };
        match queue_wait(caller, timeout, &mut guard.rx).await {
            Some(Ok(())) => {
                guard.done = true;
                Ok(Slot {
                    admission: self.clone(),
                })
            }
            _ => {
                // The guard either removes us from the queue or passes on a slot granted just
                // now; either way this request is not served.
                drop(guard);
                self.stats.queue_timeouts.fetch_add(1, Ordering::Relaxed);
                Err(Refused::QueueTimeout)
            }
        }
    }

    /// Hands a freed slot to the next waiter in round-robin order, or frees it.
    fn release(&self) {
        let slots = self.limits().slots;
        let mut q = self.lock_queue();
        if q.in_flight > slots {
            // The limit was lowered: shrink instead of handing on.
            q.in_flight -= 1;
            return;
        }
        if !Self::grant_next(&mut q) {
            q.in_flight = q.in_flight.saturating_sub(1);
        }
    }

    /// Gives a slot to the next waiter in round-robin order; false when nobody waits (the
    /// caller then keeps or frees the slot).
    fn grant_next(q: &mut Queue) -> bool {
        while let Some(caller) = q.ring.pop_front() {
            let Some(d) = q.waiting.get_mut(&caller) else {
                continue;
            };
            let w = d.pop_front();
            if d.is_empty() {
                q.waiting.remove(&caller);
            } else {
                q.ring.push_back(caller);
            }
            if let Some(w) = w {
                if w.tx.send(()).is_ok() {
                    return true;
                }
            }
        }
        false
    }

    /// Slots in use and operations waiting now.
    pub fn load(&self) -> (usize, usize) {
        let q = self.lock_queue();
        (q.in_flight, q.waiters())
    }

    /// Uids refused for budget, with counts, busiest first (at most 64 remembered).
    pub fn refused_uids(&self) -> Vec<(u32, u64)> {
        let r = self
            .refused_by_uid
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(u32, u64)> = r.iter().map(|(u, n)| (*u, *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: f64, burst: f64, slots: usize, timeout_ms: u64) -> Limits {
        Limits {
            rate,
            burst,
            slots,
            queue_timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn the_budget_is_per_uid_and_refills_at_its_rate() {
        let a = Admission::new(limits(10.0, 5.0, 1, 10));
        let t0 = Instant::now();
        for _ in 0..5 {
            a.charge(Caller::Peer(1000), t0).unwrap();
        }
        assert_eq!(a.charge(Caller::Peer(1000), t0), Err(Refused::OverBudget));
        a.charge(Caller::Peer(2000), t0)
            .expect("another uid has its own budget");
        a.charge(Caller::Internal, t0)
            .expect("the daemon is not budgeted");
        // 10 per second: one token after 100 ms.
        let t1 = t0 + Duration::from_millis(110);
        a.charge(Caller::Peer(1000), t1).unwrap();
        assert_eq!(a.charge(Caller::Peer(1000), t1), Err(Refused::OverBudget));
        assert_eq!(a.refused_uids(), vec![(1000, 2)]);
        assert_eq!(a.stats.over_budget.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_zero_rate_means_no_budget() {
        let a = Admission::new(limits(0.0, 1.0, 1, 10));
        let t0 = Instant::now();
        for _ in 0..1000 {
            a.charge(Caller::Peer(1), t0).unwrap();
        }
    }

    #[tokio::test]
    async fn a_full_queue_times_out_and_frees_nothing_it_did_not_take() {
        let a = Admission::new(limits(0.0, 1.0, 1, 30));
        let held = a.enter(Caller::Peer(1)).await.unwrap();
        assert_eq!(
            a.enter(Caller::Peer(2)).await.err(),
            Some(Refused::QueueTimeout)
        );
        assert_eq!(a.load(), (1, 0), "the timed-out waiter left the queue");
        drop(held);
        assert_eq!(a.load(), (0, 0));
        let _again = a.enter(Caller::Peer(2)).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_are_served_round_robin_across_uids() {
        let a = Admission::new(limits(0.0, 1.0, 1, 5_000));
        let held = a.enter(Caller::Peer(1)).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Ten waiters of uid 1 queue first, then one of uid 2.
        for (i, uid) in (0..10).map(|_| 1).chain([2]).enumerate() {
            let (a2, order) = (a.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let s = a2.enter(Caller::Peer(uid)).await.unwrap();
                order.lock().unwrap().push(uid);
                tokio::time::sleep(Duration::from_millis(2)).await;
                drop(s);
            }));
            // Queue in a known order.
            while a.load().1 < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let pos = order.iter().position(|&u| u == 2).unwrap();
        assert!(
            pos <= 1,
            "uid 2 is served second at the latest, not after uid 1's ten: {order:?}"
        );
        assert_eq!(a.load(), (0, 0));
    }

    #[tokio::test]
    async fn a_cancelled_waiter_does_not_leak_its_slot() {
        let a = Admission::new(limits(0.0, 1.0, 1, 5_000));
        let held = a.enter(Caller::Peer(1)).await.unwrap();
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.enter(Caller::Peer(2)).await.map(|_s| ()) })
        };
        while a.load().1 == 0 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(a.load(), (1, 0));
        drop(held);
        assert_eq!(a.load(), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn raising_the_slots_wakes_as_many_waiters_as_new_slots() {
        let a = Admission::new(limits(0.0, 1.0, 1, 5_000));
        let held = a.enter(Caller::Peer(1)).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for uid in 2..6 {
            let (a, tx) = (a.clone(), tx.clone());
            tokio::spawn(async move {
                let s = a.enter(Caller::Peer(uid)).await.unwrap();
                tx.send(uid).unwrap();
                // Held until the test ends: only new slots can serve the others.
                std::future::pending::<()>().await;
                drop(s);
            });
        }
        while a.load().1 < 4 {
            tokio::task::yield_now().await;
        }
        // One slot held, four waiting; three more slots serve three of them at once, while
        // the held slot is still held.
        a.set_limits(limits(0.0, 1.0, 4, 5_000));
        let mut served = Vec::new();
        for _ in 0..3 {
            let uid = tokio::time::timeout(Duration::from_secs(2), rx.recv())
                .await
                .expect("a waiter is served by a new slot")
                .unwrap();
            served.push(uid);
        }
        assert_eq!(a.load(), (4, 1), "served: {served:?}");
        drop(held);
        let last = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("the freed slot goes to the last waiter");
        assert!(last.is_some());
        assert_eq!(a.load(), (4, 0));
    }

    /// Waits of one lookup's operations that overlap count once; time between waits (the
    /// operations' own work) does not count; a nested lookup of the same caller shares the
    /// budget; the daemon's own work and listings have none.
    #[tokio::test]
    async fn a_lookups_wait_budget_counts_overlapping_waits_once_and_not_its_work() {
        let per_op = Duration::from_millis(200);
        let never = || std::future::pending::<()>();
        let peer = Caller::Peer(7);
        let (spent, nested_shares) = with_caller(peer, async {
            // Two operations wait at once for 80 ms: 80 ms of the budget, not 160.
            let (x, y) = tokio::join!(
                queue_wait(peer, per_op, tokio::time::sleep(Duration::from_millis(80))),
                queue_wait(peer, per_op, tokio::time::sleep(Duration::from_millis(80))),
            );
            assert!(x.is_some() && y.is_some());
            // The operations' own work: not counted.
            tokio::time::sleep(Duration::from_millis(150)).await;
            let budget = CALLER.with(|s| s.budget.clone()).unwrap();
            let spent = budget.spent();
            // A nested lookup for the same caller spends the same budget.
            let nested =
                with_caller(peer, async { CALLER.with(|s| s.budget.clone()).unwrap() }).await;
            let t = Instant::now();
            // What is left (about 120 ms) bounds the next wait, not the whole 200 ms.
            assert!(queue_wait(peer, per_op, never()).await.is_none());
            let waited = t.elapsed();
            assert!(
                waited < Duration::from_millis(180),
                "waited {waited:?} after spending {spent:?}"
            );
            // Spent: the next wait gives up at once.
            let t = Instant::now();
            assert!(queue_wait(peer, per_op, never()).await.is_none());
            assert!(t.elapsed() < Duration::from_millis(20));
            (spent, Arc::ptr_eq(&budget, &nested))
        })
        .await;
        assert!(
            spent >= Duration::from_millis(80) && spent < Duration::from_millis(150),
            "overlapping waits counted once, work not counted: {spent:?}"
        );
        assert!(nested_shares, "a nested lookup shares its caller's budget");
        for scope in [
            with_caller(Caller::Internal, async {
                CALLER.with(|s| s.budget.is_none())
            })
            .await,
            with_caller_per_operation(peer, async { CALLER.with(|s| s.budget.is_none()) }).await,
        ] {
            assert!(scope, "per-operation bound only");
        }
        // Without a budget, every wait gets the whole per-operation bound.
        let t = Instant::now();
        let r = with_caller_per_operation(peer, async {
            queue_wait(peer, Duration::from_millis(60), never()).await;
            queue_wait(peer, Duration::from_millis(60), never()).await
        })
        .await;
        assert!(r.is_none() && t.elapsed() >= Duration::from_millis(120));
    }

    #[tokio::test]
    async fn the_caller_travels_with_the_work() {
        assert_eq!(current_caller(), Caller::Internal);
        let inner = with_caller(Caller::Peer(7), async {
            tokio::task::yield_now().await;
            let nested =
                futures_util::future::join_all((0..3).map(|_| async { current_caller() })).await;
            (current_caller(), nested)
        })
        .await;
        assert_eq!(inner.0, Caller::Peer(7));
        assert!(inner.1.iter().all(|c| *c == Caller::Peer(7)));
        assert_eq!(current_caller(), Caller::Internal);
    }
}
