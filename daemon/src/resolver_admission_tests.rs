//! The resolver's side of admission, with an in-memory directory: a miss that starts a query
//! is charged to its caller's budget, a miss that joins one is not, and cached answers never
//! cost anything. The fake directories hold a slot of the attached fair queue for each
//! operation, in the current caller's turn, as the connection pool does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use toolforge_nss_config::Config;
use toolforge_nss_protocol::message::Passwd;
use toolforge_nss_protocol::{Request, Response};

use crate::admission::{current_caller, Admission, Caller, Slot};
use crate::directory::{DirError, DirResult, Directory};
use crate::records::{GroupRecord, Membership, UserRecord};
use crate::resolver::{Reply, Resolver};

/// The pool's side of admission: each operation holds a slot of the fair queue the resolver
/// attached, taken in the current caller's turn.
#[derive(Default)]
struct Gate(std::sync::OnceLock<Arc<Admission>>);

impl Gate {
    async fn slot(&self) -> DirResult<Slot> {
        let a = self.0.get().expect("the resolver attaches its admission");
        a.enter(current_caller())
            .await
            .map_err(|_| DirError::Overloaded("no operation slot in time".into()))
    }
}

/// How the fake directory spends its operations; each holds one of the directory's
/// operation slots (of the fair queue), taken in the current caller's turn.
#[derive(Clone, Copy, Default)]
enum Shape {
    /// Users named `real*` exist; a user query is one operation of 100 ms.
    #[default]
    Slow,
    /// Users named `real*` exist and take one operation; a group lookup fans out into `FAN`
    /// operations at once (several bases, member batches). Every operation takes 50 ms.
    Fan,
    /// A user query is one operation of 80 ms and finds nothing; a group lookup runs
    /// `PHASES` operations of 10 ms one after another (an rfc2307bis group: the group
    /// search, member batches, nested levels), each waiting for a slot in its caller's turn.
    Phases,
}

const FAN: usize = 16;
const PHASES: u64 = 6;

/// A directory in memory, of one [`Shape`]; no user by uid, no group, no membership.
#[derive(Default)]
struct FakeDir {
    shape: Shape,
    gate: Gate,
    /// User queries made (`Shape::Slow`).
    queries: AtomicU64,
    /// Group-lookup phases that got a slot (`Shape::Phases`).
    phases_run: AtomicU64,
}

impl FakeDir {
    fn new(shape: Shape) -> FakeDir {
        FakeDir {
            shape,
            ..FakeDir::default()
        }
    }

    /// One operation: a slot, held for `ms`.
    async fn op(&self, ms: u64) -> DirResult<()> {
        let _slot = self.gate.slot().await?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(())
    }
}

/// The user `name` if it is one of the `real*` users.
fn real_user(name: &str) -> Option<UserRecord> {
    name.starts_with("real").then(|| UserRecord {
        dn: format!("uid={name},dc=example"),
        passwd: Passwd {
            name: name.into(),
            passwd: "x".into(),
            uid: 5000,
            gid: 5000,
            gecos: String::new(),
            dir: format!("/home/{name}"),
            shell: "/bin/bash".into(),
        },
    })
}

impl Directory for FakeDir {
    async fn user_by_name(&self, name: &str) -> DirResult<Option<UserRecord>> {
        match self.shape {
            Shape::Slow => {
                self.queries.fetch_add(1, Ordering::SeqCst);
                self.op(100).await?;
                Ok(real_user(name))
            }
            Shape::Fan => {
                self.op(50).await?;
                Ok(real_user(name))
            }
            Shape::Phases => {
                self.op(80).await?;
                Ok(None)
            }
        }
    }
    async fn user_by_uid(&self, _: u32) -> DirResult<Option<UserRecord>> {
        Ok(None)
    }
    async fn group_by_name(&self, _: &str) -> DirResult<Option<GroupRecord>> {
        match self.shape {
            Shape::Slow => {}
            Shape::Fan => {
                futures_util::future::try_join_all((0..FAN).map(|_| self.op(50))).await?;
            }
            Shape::Phases => {
                for _ in 0..PHASES {
                    let _slot = self.gate.slot().await?;
                    self.phases_run.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
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
    fn attach_admission(&self, admission: &Arc<Admission>) {
        let _ = self.gate.0.set(admission.clone());
    }
}

fn resolver(burst: u32) -> Arc<Resolver<FakeDir>> {
    let text = format!(
        "[ldap]\nuri = [\"ldap://127.0.0.1\"]\nbase = \"dc=example\"\n\
         [daemon]\nmiss_queries_per_uid_per_sec = 1\nmiss_query_burst_per_uid = {burst}\n"
    );
    let config = Config::parse(&text, std::path::Path::new("test.toml")).unwrap();
    Resolver::new(FakeDir::new(Shape::Slow), &config)
}

fn kind(r: &Reply) -> &'static str {
    match r {
        Reply::Body { .. } => "found",
        Reply::Message(Response::NotFound) => "notfound",
        Reply::Message(Response::Unavailable) => "unavailable",
        Reply::Message(_) => "other",
    }
}

fn pwnam(name: &str) -> Request {
    Request::GetPwNam(name.into())
}

#[tokio::test]
async fn over_budget_misses_are_unavailable_while_hits_and_other_uids_are_served() {
    let r = resolver(2);
    let (a, b) = (Caller::Peer(1000), Caller::Peer(2000));
    assert_eq!(kind(&r.resolve(pwnam("realann"), a).await), "found");
    assert_eq!(kind(&r.resolve(pwnam("nosuch1"), a).await), "notfound");
    // Budget spent: a new miss is refused at once, without a query.
    assert_eq!(kind(&r.resolve(pwnam("nosuch2"), a).await), "unavailable");
    assert_eq!(r.directory().queries.load(Ordering::SeqCst), 2);
    // Its cached answers (positive and negative) still answer; another uid is unaffected.
    assert_eq!(kind(&r.resolve(pwnam("realann"), a).await), "found");
    assert_eq!(kind(&r.resolve(pwnam("nosuch1"), a).await), "notfound");
    assert_eq!(kind(&r.resolve(pwnam("nosuch2"), b).await), "notfound");
    // The daemon's own lookups are not budgeted.
    assert_eq!(
        kind(&r.resolve(pwnam("realbob"), Caller::Internal).await),
        "found"
    );
    assert_eq!(r.admission.stats.over_budget.load(Ordering::Relaxed), 1);
    assert_eq!(r.admission.refused_uids(), vec![(1000, 1)]);
}

#[tokio::test]
async fn the_uid_that_starts_a_shared_query_is_the_one_charged() {
    let r = resolver(1);
    let (a, b) = (Caller::Peer(1000), Caller::Peer(2000));
    // uid 1000 spends its only token.
    assert_eq!(kind(&r.resolve(pwnam("nosuch0"), a).await), "notfound");
    // uid 2000 starts a query; uid 1000 asks for the same key while it runs: it joins the
    // query for free instead of being refused.
    let started = {
        let r = r.clone();
        tokio::spawn(async move { r.resolve(pwnam("realcarl"), b).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let joined = r.resolve(pwnam("realcarl"), a).await;
    assert_eq!(kind(&joined), "found");
    assert_eq!(kind(&started.await.unwrap()), "found");
    assert_eq!(r.directory().queries.load(Ordering::SeqCst), 2);
    assert_eq!(r.admission.stats.charged.load(Ordering::Relaxed), 2);
    assert_eq!(r.admission.stats.over_budget.load(Ordering::Relaxed), 0);
}

/// A victim that joins a query a flooding uid started (behind that uid's own queue) is not
/// refused for the flooder's place in the fair queue: it asks again in its own turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_that_joins_a_flooders_query_is_not_refused_for_its_queue() {
    let text = "[ldap]\nuri = [\"ldap://127.0.0.1\"]\nbase = \"dc=example\"\n\
         connections_per_server = 1\nmax_ops_per_connection = 1\nqueue_timeout_ms = 250\n\
         [daemon]\nmiss_queries_per_uid_per_sec = 0\n";
    let config = Config::parse(text, std::path::Path::new("test.toml")).unwrap();
    let r = Resolver::new(FakeDir::new(Shape::Slow), &config);
    let (a, b) = (Caller::Peer(1000), Caller::Peer(2000));
    // uid 1000 floods: 5 misses in flight / queued in its FIFO.
    let mut flood = Vec::new();
    for i in 0..5 {
        let r = r.clone();
        flood.push(tokio::spawn(async move {
            r.resolve(pwnam(&format!("nosuch{i}")), a).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    // uid 1000 also starts the lookup of a real user the victim needs.
    let lead = {
        let r = r.clone();
        tokio::spawn(async move { r.resolve(pwnam("realvictim"), a).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    // The victim (no other request of its own) asks for it too: it joins uid 1000's query.
    let got = r.resolve(pwnam("realvictim"), b).await;
    let _ = lead.await;
    for f in flood {
        let _ = f.await;
    }
    // Control: the victim's own query for another user, with the same flood, is served.
    let mut flood = Vec::new();
    for i in 5..10 {
        let r = r.clone();
        flood.push(tokio::spawn(async move {
            r.resolve(pwnam(&format!("nosuch{i}")), a).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let control = r.resolve(pwnam("realother"), b).await;
    for f in flood {
        let _ = f.await;
    }
    assert_eq!(kind(&control), "found");
    assert_eq!(
        kind(&got),
        "found",
        "victim refused because it joined the flooder's flight"
    );
}

/// Issue 10's fair queue holds per directory operation, not per lookup: uid 1000 floods
/// group lookups that each fan out into 16 operations, with 2 operation slots; uid 2000's
/// single-operation lookup gets a slot in its own turn (within a couple of operations'
/// time), not behind the operations of the flooder's lookups already admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_fanning_out_lookups_does_not_hold_up_another_uids_operations() {
    let text = "[ldap]\nuri = [\"ldap://127.0.0.1\"]\nbase = \"dc=example\"\n\
         connections_per_server = 1\nmax_ops_per_connection = 2\nqueue_timeout_ms = 500\n\
         [daemon]\nmiss_queries_per_uid_per_sec = 0\n";
    let config = Config::parse(text, std::path::Path::new("test.toml")).unwrap();
    let r = Resolver::new(FakeDir::new(Shape::Fan), &config);
    let (a, b) = (Caller::Peer(1000), Caller::Peer(2000));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..10)
        .map(|t| {
            let (r, stop) = (r.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    r.resolve(Request::GetGrNam(format!("flood{t}n{i}")), a)
                        .await;
                    i += 1;
                }
            })
        })
        .collect();
    // Let the flood fill the queue, then look up five users, one after the other.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut took = Vec::new();
    for i in 0..5 {
        let t = std::time::Instant::now();
        let got = r.resolve(pwnam(&format!("realb{i}")), b).await;
        took.push((kind(&got), t.elapsed().as_millis()));
    }
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.await.unwrap();
    }
    // In its turn: one operation's wait (25-50 ms) and its own 50 ms; the margin is for a
    // loaded machine. Behind the flooder's admitted lookups it was 300 ms and more, or a
    // queue timeout.
    assert!(
        took.iter().all(|(k, ms)| *k == "found" && *ms < 250),
        "uid 2000's lookups (answer, ms): {took:?}"
    );
}

/// Brief 17g: a lookup's queue waiting is bounded by `queue_timeout_ms` in total, not per
/// phase. uid 1000 floods one slot with 80 ms operations, so each phase of uid 2000's group
/// lookup waits about one or two of them (well under the 300 ms queue timeout on its own);
/// six phases one after another used to add up to ~1 s and answer long after the module
/// gave up. Now the lookup answers `Unavailable` once its waits add up to 300 ms, and stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookups_phases_share_one_queue_timeout() {
    let text = "[ldap]\nuri = [\"ldap://127.0.0.1\"]\nbase = \"dc=example\"\n\
         connections_per_server = 1\nmax_ops_per_connection = 1\nqueue_timeout_ms = 300\n\
         [daemon]\nmiss_queries_per_uid_per_sec = 0\n";
    let config = Config::parse(text, std::path::Path::new("test.toml")).unwrap();
    let r = Resolver::new(FakeDir::new(Shape::Phases), &config);
    let (a, b) = (Caller::Peer(1000), Caller::Peer(2000));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..8)
        .map(|t| {
            let (r, stop) = (r.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    r.resolve(pwnam(&format!("nosuch{t}n{i}")), a).await;
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = std::time::Instant::now();
    let got = r.resolve(Request::GetGrNam("deepgroup".into()), b).await;
    let took = t.elapsed().as_millis();
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.await.unwrap();
    }
    let phases = r.directory().phases_run.load(Ordering::SeqCst);
    // 300 ms of waiting, a phase's 10 ms and the wake-up; the margin is for a loaded
    // machine, well under the ~1 s of six phases each waiting on its own.
    assert!(
        kind(&got) == "unavailable" && took < 600,
        "uid 2000's lookup: {} after {took} ms, {phases} of {PHASES} phases run",
        kind(&got)
    );
    assert!(
        phases < PHASES,
        "the lookup stopped when its budget ran out"
    );
    // Each phase did get a slot in its turn before the budget ran out: the budget counts
    // the waits, not a wall-clock deadline that a phase's own work would use up.
    assert!(phases >= 1, "no phase was served at all");
}
