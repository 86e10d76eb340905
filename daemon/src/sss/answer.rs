//! One SSSD request to one reply frame, answered by the same [`Resolver`] (validation, policy,
//! cache, single-flight, directory) as the lookup socket, then re-encoded in SSSD's layout.
//!
//! * Found: count 1 and the entry. Not found, or a name that is not UTF-8: count 0 (the
//!   8-byte body libnss_sss needs). Directory unreachable with nothing cached: status
//!   `EHOSTUNREACH` (libnss_sss answers UNAVAIL, so `files` and the rest still count); daemon
//!   busy: `EAGAIN` (TRYAGAIN).
//! * `INITGR`: the user's groups without the user's primary gid (which glibc adds itself),
//!   the same list `libnss_toolforge` hands glibc.
//! * `SET/GET/ENDPWENT`: the paged listing of the lookup protocol (which follows
//!   `[cache] enumerate`), walked per connection as SSSD does; each `GETxxENT` reply carries
//!   at most the count asked for, [`SSS_MAX_ENUM_ENTRIES`] and [`SSS_ENUM_REPLY_BYTES`].

use std::collections::VecDeque;
use std::sync::Arc;

use toolforge_nss_protocol::message::END_OF_ENUMERATION;
use toolforge_nss_protocol::sss::{
    self, status, ReplyBuilder, SssCommand, SssGroup, SssPasswd, SssRequest, SSS_ENUM_REPLY_BYTES,
    SSS_MAX_ENUM_ENTRIES,
};
use toolforge_nss_protocol::{ErrorCode, Group, Passwd, Request, Response, ResponseRef};

use crate::admission::Caller;
use crate::directory::Directory;
use crate::resolver::{Reply, Resolver};

/// Where one connection is in one listing.
struct Walk<E> {
    /// 0 until the daemon named the snapshot.
    generation: u64,
    /// The next batch to ask for; `None` once the last batch was fetched.
    next: Option<u32>,
    /// Entries fetched and not yet sent.
    pending: VecDeque<E>,
}

impl<E> Walk<E> {
    fn start() -> Walk<E> {
        Walk {
            generation: 0,
            next: Some(0),
            pending: VecDeque::new(),
        }
    }
}

/// Per-connection state: the peer and its enumerations.
pub struct Session {
    uid: u32,
    users: Option<Walk<Passwd>>,
    groups: Option<Walk<Group>>,
}

/// A lookup's result, before it is put into SSSD's layout.
enum Outcome<'a> {
    Found(ResponseRef<'a>),
    NotFound,
    Failed(u32),
}

fn outcome_of(reply: &Reply) -> Outcome<'_> {
    match reply {
        Reply::Body { kind, body, .. } => match ResponseRef::decode(*kind as u16, body.bytes()) {
            Ok(r) => Outcome::Found(r),
            Err(_) => Outcome::Failed(status::EIO),
        },
        Reply::Message(m) => match m {
            Response::NotFound => Outcome::NotFound,
            Response::Unavailable => Outcome::Failed(status::EHOSTUNREACH),
            Response::Error {
                code: ErrorCode::Busy,
                ..
            } => Outcome::Failed(status::EAGAIN),
            _ => Outcome::Failed(status::EIO),
        },
    }
}

fn sss_passwd(p: toolforge_nss_protocol::PasswdRef<'_>) -> SssPasswd<'_> {
    SssPasswd {
        uid: p.uid,
        gid: p.gid,
        name: p.name,
        passwd: p.passwd,
        gecos: p.gecos,
        dir: p.dir,
        shell: p.shell,
    }
}

fn owned_passwd(p: &Passwd) -> SssPasswd<'_> {
    SssPasswd {
        uid: p.uid,
        gid: p.gid,
        name: p.name.as_bytes(),
        passwd: p.passwd.as_bytes(),
        gecos: p.gecos.as_bytes(),
        dir: p.dir.as_bytes(),
        shell: p.shell.as_bytes(),
    }
}

fn owned_group(g: &Group) -> SssGroup<'_> {
    SssGroup {
        gid: g.gid,
        name: g.name.as_bytes(),
        passwd: g.passwd.as_bytes(),
        members: g.members.iter().map(|m| m.as_bytes()).collect(),
    }
}

fn finish(b: ReplyBuilder, command: SssCommand) -> Vec<u8> {
    b.finish()
        .unwrap_or_else(|| sss::error_reply(command as u32, status::EIO))
}

impl Session {
    pub fn new(uid: u32) -> Session {
        Session {
            uid,
            users: None,
            groups: None,
        }
    }

    /// The peer uid (SO_PEERCRED) this session serves.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Answers one request with one whole reply frame.
    pub async fn answer<D: Directory>(
        &mut self,
        resolver: &Arc<Resolver<D>>,
        request: SssRequest,
    ) -> Vec<u8> {
        let command = request.command();
        let name = |n: Vec<u8>| String::from_utf8(n).ok();
        match request {
            SssRequest::GetVersion(_) => sss::version_reply(),
            SssRequest::GetPwNam(n) => match name(n) {
                Some(n) => self.lookup(resolver, Request::GetPwNam(n), command).await,
                None => sss::not_found_reply(command),
            },
            SssRequest::GetPwUid(id) => self.lookup(resolver, Request::GetPwUid(id), command).await,
            SssRequest::GetGrNam(n) => match name(n) {
                Some(n) => self.lookup(resolver, Request::GetGrNam(n), command).await,
                None => sss::not_found_reply(command),
            },
            SssRequest::GetGrGid(id) => self.lookup(resolver, Request::GetGrGid(id), command).await,
            SssRequest::InitGr(n) => match name(n) {
                Some(n) => self.initgroups(resolver, n).await,
                None => sss::not_found_reply(command),
            },
            SssRequest::SetPwEnt => {
                self.users = Some(Walk::start());
                sss::empty_reply(command)
            }
            SssRequest::EndPwEnt => {
                self.users = None;
                sss::empty_reply(command)
            }
            SssRequest::SetGrEnt => {
                self.groups = Some(Walk::start());
                sss::empty_reply(command)
            }
            SssRequest::EndGrEnt => {
                self.groups = None;
                sss::empty_reply(command)
            }
            SssRequest::GetPwEnt(max) => self.next_users(resolver, max).await,
            SssRequest::GetGrEnt(max) => self.next_groups(resolver, max).await,
        }
    }

    /// The one place a request reaches the resolver: charged to the peer's uid, under the
    /// same admission (fair queue, miss budget) as the module's socket.
    async fn ask<D: Directory>(&self, resolver: &Arc<Resolver<D>>, request: Request) -> Reply {
        resolver.resolve(request, Caller::Peer(self.uid)).await
    }

    async fn lookup<D: Directory>(
        &self,
        resolver: &Arc<Resolver<D>>,
        request: Request,
        command: SssCommand,
    ) -> Vec<u8> {
        let reply = self.ask(resolver, request).await;
        let mut b = ReplyBuilder::new(command);
        match outcome_of(&reply) {
            Outcome::Found(ResponseRef::Passwd(p)) => b.passwd(&sss_passwd(p)),
            Outcome::Found(ResponseRef::Group(g)) => b.group(&SssGroup {
                gid: g.gid,
                name: g.name,
                passwd: g.passwd,
                members: g.members().collect(),
            }),
            Outcome::Found(_) => return sss::error_reply(command as u32, status::EIO),
            Outcome::NotFound => return sss::not_found_reply(command),
            Outcome::Failed(errno) => return sss::error_reply(command as u32, errno),
        }
        finish(b, command)
    }

    async fn initgroups<D: Directory>(&self, resolver: &Arc<Resolver<D>>, name: String) -> Vec<u8> {
        let command = SssCommand::InitGr;
        let groups = self.ask(resolver, Request::InitGroups(name.clone())).await;
        let ids = match outcome_of(&groups) {
            Outcome::Found(ResponseRef::GroupIds(ids)) => ids,
            Outcome::Found(_) => return sss::error_reply(command as u32, status::EIO),
            Outcome::NotFound => return sss::not_found_reply(command),
            Outcome::Failed(errno) => return sss::error_reply(command as u32, errno),
        };
        // glibc adds the primary gid itself; libnss_toolforge leaves it out of the list it
        // hands back, and so does this reply (a cache hit: the groups query looked the user up).
        let primary = match outcome_of(&self.ask(resolver, Request::GetPwNam(name)).await) {
            Outcome::Found(ResponseRef::Passwd(p)) => Some(p.gid),
            _ => None,
        };
        let mut b = ReplyBuilder::new(command);
        for gid in ids.into_iter().filter(|g| Some(*g) != primary) {
            b.gid(gid);
        }
        finish(b, command)
    }

    async fn next_users<D: Directory>(&mut self, resolver: &Arc<Resolver<D>>, max: u32) -> Vec<u8> {
        let command = SssCommand::GetPwEnt;
        let mut walk = self.users.take().unwrap_or_else(Walk::start);
        let mut b = ReplyBuilder::new(command);
        let max = max.min(SSS_MAX_ENUM_ENTRIES);
        while b.count() < max {
            if walk.pending.is_empty() && !self.fetch_users(resolver, &mut walk).await {
                break;
            }
            let Some(p) = walk.pending.front() else { break };
            let p = owned_passwd(p);
            if b.count() > 0 && b.body_len() + ReplyBuilder::passwd_len(&p) > SSS_ENUM_REPLY_BYTES {
                break;
            }
            b.passwd(&p);
            walk.pending.pop_front();
        }
        self.users = Some(walk);
        finish(b, command)
    }

    async fn next_groups<D: Directory>(
        &mut self,
        resolver: &Arc<Resolver<D>>,
        max: u32,
    ) -> Vec<u8> {
        let command = SssCommand::GetGrEnt;
        let mut walk = self.groups.take().unwrap_or_else(Walk::start);
        let mut b = ReplyBuilder::new(command);
        let max = max.min(SSS_MAX_ENUM_ENTRIES);
        while b.count() < max {
            if walk.pending.is_empty() && !self.fetch_groups(resolver, &mut walk).await {
                break;
            }
            let Some(g) = walk.pending.front() else { break };
            let g = owned_group(g);
            if b.count() > 0 && b.body_len() + ReplyBuilder::group_len(&g) > SSS_ENUM_REPLY_BYTES {
                break;
            }
            b.group(&g);
            walk.pending.pop_front();
        }
        self.groups = Some(walk);
        finish(b, command)
    }

    /// Fetches the next batch of users; false at the end (or when the listing failed or its
    /// snapshot expired: the walk ends, as a listing cut short).
    async fn fetch_users<D: Directory>(
        &self,
        resolver: &Arc<Resolver<D>>,
        walk: &mut Walk<Passwd>,
    ) -> bool {
        let Some(cursor) = walk.next.take() else {
            return false;
        };
        let reply = self
            .ask(
                resolver,
                Request::PwEnt {
                    generation: walk.generation,
                    cursor,
                },
            )
            .await;
        let Outcome::Found(ResponseRef::PasswdBatch {
            generation,
            next_cursor,
            entries,
        }) = outcome_of(&reply)
        else {
            return false;
        };
        walk.generation = generation;
        walk.next = (next_cursor != END_OF_ENUMERATION).then_some(next_cursor);
        walk.pending
            .extend(entries.iter().filter_map(|p| p.to_owned().ok()));
        !walk.pending.is_empty() || walk.next.is_some()
    }

    /// Fetches the next batch of groups; false at the end.
    async fn fetch_groups<D: Directory>(
        &self,
        resolver: &Arc<Resolver<D>>,
        walk: &mut Walk<Group>,
    ) -> bool {
        let Some(cursor) = walk.next.take() else {
            return false;
        };
        let reply = self
            .ask(
                resolver,
                Request::GrEnt {
                    generation: walk.generation,
                    cursor,
                },
            )
            .await;
        let Outcome::Found(ResponseRef::GroupBatch {
            generation,
            next_cursor,
            entries,
        }) = outcome_of(&reply)
        else {
            return false;
        };
        walk.generation = generation;
        walk.next = (next_cursor != END_OF_ENUMERATION).then_some(next_cursor);
        walk.pending
            .extend(entries.iter().filter_map(|g| g.to_owned().ok()));
        !walk.pending.is_empty() || walk.next.is_some()
    }
}
