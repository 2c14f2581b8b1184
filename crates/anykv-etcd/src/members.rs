//! The members a store talks to: one connection per endpoint, a health
//! probe per member, and the choice of the member each request goes to.
//!
//! - Each endpoint gets an etcd client of its own (its own HTTP/2
//!   connection), so the store always knows which member a request went
//!   to, can send the next attempt elsewhere, and can move a watch or a
//!   keep-alive stream off a member that stopped answering. (One client
//!   balanced over all endpoints cannot: a frozen member still accepts
//!   TCP connections, so its balancer keeps sending it requests.)
//! - With more than one endpoint, a task per member asks it for its
//!   status every [`PROBE_INTERVAL`]. A member that does not answer
//!   within [`PROBE_TIMEOUT`], refuses the connection, or has no leader
//!   is *down*; the next answer with a leader makes it *up* again. So a
//!   member that freezes is found down [`PROBE_TIMEOUT`] to
//!   [`PROBE_TIMEOUT`] + [`PROBE_INTERVAL`] after it froze, and one that
//!   resumes is used again within about [`PROBE_INTERVAL`]. The status
//!   reply also names the member and its leader.
//! - A request goes to the member that is up and says it is the leader
//!   (etcd serves every write and every linearizable read through the
//!   leader, so this saves a hop, and a follower that freezes costs
//!   nothing); else to the members that are up, in turn; else, when none
//!   is up, to any member that has a connection (so an outage of every
//!   member still fails within the request timeout, and a cluster that
//!   comes back is found again).
//! - A stream (a watch stream, a lease's keep-alive stream) stays on its
//!   member until [`Conn::failed`]: the member was found down since the
//!   stream chose it, or it is down while another member is up.
//! - With one endpoint nothing is probed: every request goes to it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, KvClient, LeaseClient, WatchClient};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// How often each member is asked for its status (with several endpoints).
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// How long a member may take to answer its probe before it is down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The largest gRPC message sent or received (etcd enforces its own).
const MAX_MESSAGE: usize = usize::MAX >> 1;

/// What the probes know of one member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Health {
    /// Whether it answered its last probe (with a leader).
    pub up: bool,
    /// Whether it answered its last probe at all (even without a leader,
    /// or with a refusal): a member that is alive.
    pub answering: bool,
    /// How many times it was found down: a stream that chose the member
    /// before the count changed leaves it.
    pub downs: u64,
    /// Its etcd member id (0 until it answered a probe).
    pub member_id: u64,
    /// The leader it named in its last answer (0: none).
    pub leader_id: u64,
    /// The raft term of its last answer.
    pub term: u64,
}

impl Health {
    /// Whether the member said it is the leader.
    fn is_leader(&self) -> bool {
        self.member_id != 0 && self.leader_id == self.member_id
    }
}

/// One endpoint.
pub(crate) struct Member {
    /// `scheme://host:port`.
    url: String,
    /// Its client, once one was built (kept for the store's life: the
    /// client reconnects by itself).
    client: OnceLock<Arc<MemberClient>>,
    health: Mutex<Health>,
}

/// A member's client and its key-value service, built once: a request
/// takes a reference to them, not a copy of every service's handle.
pub(crate) struct MemberClient {
    client: Client,
    kv: KvClient,
}

impl MemberClient {
    fn new(client: Client) -> Self {
        let kv = client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        MemberClient { client, kv }
    }
}

/// The members of one store and what connects them to the tasks and
/// streams that watch their health.
pub(crate) struct Members {
    members: Vec<Member>,
    /// Whether members are probed (several endpoints).
    probed: bool,
    /// Bumped on every change of any member's health.
    changes: watch::Sender<u64>,
    /// The turn of round-robin choices.
    turn: AtomicUsize,
    /// The probe tasks, aborted when the store's client goes.
    tasks: Mutex<Vec<AbortHandle>>,
}

/// What a store knows of one of its endpoints (see
/// [`crate::EtcdStore::members`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberStatus {
    /// The endpoint, `host:port`.
    pub endpoint: String,
    /// Whether the store has a client for it (built once the endpoint was
    /// first reached; it reconnects by itself after that).
    pub connected: bool,
    /// Whether it answered its last probe within [`PROBE_TIMEOUT`] and
    /// had a leader (always true with a single endpoint, which is never
    /// probed).
    pub up: bool,
    /// Whether its last answer said it is the leader.
    pub leader: bool,
}

impl Members {
    /// The members of `urls`, none connected yet; with one URL it counts
    /// as up.
    pub fn new(urls: &[String]) -> Members {
        let probed = urls.len() > 1;
        Members {
            members: urls
                .iter()
                .map(|u| Member {
                    url: u.clone(),
                    client: OnceLock::new(),
                    health: Mutex::new(Health {
                        up: !probed,
                        ..Health::default()
                    }),
                })
                .collect(),
            probed,
            changes: watch::channel(0).0,
            turn: AtomicUsize::new(0),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// How many endpoints there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// A number that changes whenever any member's health does.
    pub fn generation(&self) -> u64 {
        *self.changes.borrow()
    }

    /// Member `i`'s URL.
    pub fn url(&self, i: usize) -> &str {
        self.members.get(i).map_or("", |m| m.url.as_str())
    }

    /// Member `i`'s client, if it has one.
    pub fn client(&self, i: usize) -> Option<Client> {
        Some(self.members.get(i)?.client.get()?.client.clone())
    }

    /// Gives member `i` its client (the first one set stays).
    pub fn set_client(&self, i: usize, client: Client) -> Option<Client> {
        let m = self.members.get(i)?;
        let _ = m.client.set(Arc::new(MemberClient::new(client)));
        Some(m.client.get()?.client.clone())
    }

    /// Every member's state, in endpoint order.
    pub fn list(&self) -> Vec<MemberStatus> {
        self.members
            .iter()
            .map(|m| {
                let h = *m.health.lock();
                MemberStatus {
                    endpoint: m
                        .url
                        .split_once("://")
                        .map_or(&*m.url, |(_, e)| e)
                        .to_owned(),
                    connected: m.client.get().is_some(),
                    up: h.up,
                    leader: h.is_leader(),
                }
            })
            .collect()
    }

    fn health(&self, i: usize) -> Health {
        self.members
            .get(i)
            .map(|m| *m.health.lock())
            .unwrap_or_default()
    }

    /// Records what member `i`'s probe (or a request) found; a member
    /// without a leader counts as down. Does nothing with one endpoint
    /// (never probed).
    pub fn record(&self, i: usize, probe: Probe) {
        if !self.probed {
            return;
        }
        let Some(m) = self.members.get(i) else { return };
        let changed = {
            let mut h = m.health.lock();
            let before = *h;
            match probe {
                Probe::Status {
                    member_id,
                    leader_id,
                    term,
                } => {
                    h.member_id = member_id;
                    h.leader_id = leader_id;
                    h.term = term;
                    h.up = leader_id != 0;
                    h.answering = true;
                }
                Probe::Alive => {
                    h.up = true;
                    h.answering = true;
                    h.leader_id = 0;
                }
                Probe::Silent => {
                    h.up = false;
                    h.answering = false;
                    h.leader_id = 0;
                }
            }
            if before.up && !h.up {
                h.downs += 1;
            }
            // Whether anything changed, and whether up/down did.
            (before != *h).then_some(((before.up != h.up).then_some(h.up), h.downs))
        };
        if let Some((up, downs_before)) = changed {
            if let Some(up) = up {
                if up && downs_before > 0 {
                    crate::background::reconnected("an etcd member", &m.url);
                }
                tracing::debug!(
                    "etcd member {} is {}",
                    m.url,
                    if up { "up" } else { "down" }
                );
            }
            self.changes.send_modify(|c| *c = c.wrapping_add(1));
        }
    }

    /// Records that member `i` answered the store's first request: it is
    /// up until its probe says otherwise.
    pub fn mark_up(&self, i: usize) {
        if let Some(m) = self.members.get(i) {
            {
                let mut h = m.health.lock();
                h.up = true;
                h.answering = true;
            }
            self.changes.send_modify(|c| *c = c.wrapping_add(1));
        }
    }

    /// Records that a request could not reach member `i` (refused): it is
    /// down at once, without waiting for its probe.
    pub fn unreachable(&self, i: usize) {
        self.record(i, Probe::Silent);
    }

    /// The connection to use for the next attempt: see the module
    /// documentation. Members in `avoid` are passed over while another
    /// member has a connection; `None` if no member has one.
    pub fn pick(self: &Arc<Self>, avoid: &[usize]) -> Option<Conn> {
        self.pick_among(avoid, true)
    }

    /// Like [`Members::pick`], but `None` rather than a member in `avoid`.
    pub fn pick_other(self: &Arc<Self>, avoid: &[usize]) -> Option<Conn> {
        self.pick_among(avoid, false)
    }

    fn pick_among(self: &Arc<Self>, avoid: &[usize], or_avoided: bool) -> Option<Conn> {
        if self.members.len() == 1 {
            // One endpoint: nothing to choose (and nothing probed).
            if !or_avoided && avoid.contains(&0) {
                return None;
            }
            return self.conn(0);
        }
        let candidates: Vec<Candidate> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.client.get().is_some())
            .map(|(i, m)| Candidate {
                index: i,
                health: *m.health.lock(),
                avoided: avoid.contains(&i),
            })
            .collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let index = choose(&candidates, turn, or_avoided)?;
        self.conn(index)
    }

    /// A connection to member `index`, if it has a client.
    fn conn(self: &Arc<Self>, index: usize) -> Option<Conn> {
        let client = self.members.get(index)?.client.get()?.clone();
        let h = self.health(index);
        Some(Conn {
            members: self.clone(),
            index,
            client,
            downs: h.downs,
            leader_id: h.leader_id,
        })
    }

    /// Starts the probe of every member (several endpoints only); each
    /// member without a client gets one first.
    pub fn start_probes(self: &Arc<Self>, options: &ConnectOptions, connect_timeout: Duration) {
        if !self.probed {
            return;
        }
        let mut tasks = self.tasks.lock();
        for i in 0..self.members.len() {
            let task = tokio::spawn(probe(
                Arc::downgrade(self),
                i,
                options.clone(),
                connect_timeout,
            ));
            tasks.push(task.abort_handle());
        }
    }

    /// Stops the probes.
    pub fn stop_probes(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The member's status: its id, the leader it knows (0: none) and
    /// the raft term.
    Status {
        member_id: u64,
        leader_id: u64,
        term: u64,
    },
    /// The member answered, but not with its status (it refused the
    /// request).
    Alive,
    /// No answer in time, or no connection.
    Silent,
}

/// Whether a gRPC error code is the server's own refusal (so the member
/// is alive), not a transport failure or a member that cannot serve.
fn answered(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
            | Code::InvalidArgument
            | Code::FailedPrecondition
    )
}

/// A member as [`choose`] sees it.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    index: usize,
    health: Health,
    avoided: bool,
}

/// The member to use among connected `candidates` (see the module
/// documentation); `turn` rotates among equals. With `or_avoided`, an
/// avoided member is chosen when nothing else is there.
fn choose(candidates: &[Candidate], turn: usize, or_avoided: bool) -> Option<usize> {
    let rotate = |set: Vec<&Candidate>| -> Option<usize> {
        (!set.is_empty()).then(|| set[turn % set.len()].index)
    };
    let free: Vec<&Candidate> = candidates.iter().filter(|c| !c.avoided).collect();
    // The leader that is up (the highest term, should two claim it).
    let leader = free
        .iter()
        .filter(|c| c.health.up && c.health.is_leader())
        .max_by_key(|c| c.health.term);
    if let Some(l) = leader {
        return Some(l.index);
    }
    let up: Vec<&Candidate> = free.iter().copied().filter(|c| c.health.up).collect();
    // None is up: those that answer without a leader (they refuse at once,
    // and serve again once one is elected) before those that are silent.
    let answering: Vec<&Candidate> = free
        .iter()
        .copied()
        .filter(|c| c.health.answering)
        .collect();
    rotate(up)
        .or_else(|| rotate(answering))
        .or_else(|| rotate(free))
        .or_else(|| {
            or_avoided
                .then(|| rotate(candidates.iter().collect()))
                .flatten()
        })
}

/// Probes member `i` until the store's client goes: builds its client if
/// it has none, then asks for its status every [`PROBE_INTERVAL`].
async fn probe(
    members: std::sync::Weak<Members>,
    i: usize,
    options: ConnectOptions,
    connect_timeout: Duration,
) {
    loop {
        let Some(ms) = members.upgrade() else { return };
        let client = match ms.client(i) {
            Some(c) => Some(c),
            None => {
                let url = ms.url(i).to_owned();
                let connect = Client::connect([url], Some(options.clone()));
                match tokio::time::timeout(connect_timeout, connect).await {
                    Ok(Ok(c)) => ms.set_client(i, c),
                    _ => None,
                }
            }
        };
        let probe = match client {
            Some(mut c) => match tokio::time::timeout(PROBE_TIMEOUT, c.status()).await {
                Ok(Ok(s)) => Probe::Status {
                    member_id: s.header().map_or(0, |h| h.member_id()),
                    leader_id: s.leader(),
                    term: s.raft_term(),
                },
                // The member answered, if only to refuse: it is alive.
                Ok(Err(etcd_client::Error::GRpcStatus(st))) if answered(st.code()) => Probe::Alive,
                _ => Probe::Silent,
            },
            None => Probe::Silent,
        };
        ms.record(i, probe);
        drop(ms);
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        self.stop_probes();
    }
}

/// The connection to one member, as one attempt or one stream uses it.
#[derive(Clone)]
pub(crate) struct Conn {
    members: Arc<Members>,
    index: usize,
    client: Arc<MemberClient>,
    /// The member's count of downs when it was chosen.
    downs: u64,
    /// The leader it named then (0: unknown).
    leader_id: u64,
}

impl Conn {
    /// The member's index among the store's endpoints.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The member's URL.
    pub fn url(&self) -> &str {
        self.members.url(self.index)
    }

    /// The key-value service, without a message size limit of its own.
    pub fn kv(&self) -> KvClient {
        self.client.kv.clone()
    }

    /// The lease service.
    pub fn leases(&self) -> LeaseClient {
        self.client.client.lease_client()
    }

    /// The watch service, without a message size limit of its own.
    pub fn watches(&self) -> WatchClient {
        self.client
            .client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// Records that this attempt could not reach the member.
    pub fn unreachable(&self) {
        self.members.unreachable(self.index);
    }

    /// Whether the member was found down since it was chosen, or now names
    /// another leader (a request it forwarded to the old one is lost).
    pub fn went_down(&self) -> bool {
        let h = self.members.health(self.index);
        h.downs != self.downs
            || (self.leader_id != 0 && h.leader_id != 0 && h.leader_id != self.leader_id)
    }

    /// Whether a stream on this member should move: the member was found
    /// down since it was chosen, or it is down while another is up.
    pub fn has_failed(&self) -> bool {
        let h = self.members.health(self.index);
        h.downs != self.downs
            || (!h.up
                && (0..self.members.len()).any(|j| j != self.index && self.members.health(j).up))
    }

    /// Resolves once [`Conn::has_failed`] holds (never with one endpoint):
    /// for a stream, which then moves.
    pub async fn failed(&self) {
        self.until(Self::has_failed).await
    }

    /// Resolves once [`Conn::went_down`] holds (never with one endpoint):
    /// for a single request, whose member is known to have stopped
    /// answering since it was sent.
    pub async fn gone_down(&self) {
        self.until(Self::went_down).await
    }

    async fn until(&self, holds: fn(&Self) -> bool) {
        let mut changes = self.members.changes.subscribe();
        loop {
            if holds(self) {
                return;
            }
            if changes.changed().await.is_err() {
                // The members are gone with the store: never.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(index: usize, up: bool, leader: bool, avoided: bool) -> Candidate {
        Candidate {
            index,
            health: Health {
                up,
                answering: up,
                downs: 0,
                member_id: index as u64 + 1,
                leader_id: if leader { index as u64 + 1 } else { 9 },
                term: 2,
            },
            avoided,
        }
    }

    #[test]
    fn the_leader_that_is_up_comes_first() {
        let all = [c(0, true, false, false), c(1, true, true, false)];
        for turn in 0..4 {
            assert_eq!(choose(&all, turn, true), Some(1));
        }
        // A leader that is down is passed over; the others take turns.
        let all = [
            c(0, true, false, false),
            c(1, false, true, false),
            c(2, true, false, false),
        ];
        let picked: Vec<_> = (0..4).map(|t| choose(&all, t, true)).collect();
        assert_eq!(picked, [Some(0), Some(2), Some(0), Some(2)]);
    }

    #[test]
    fn members_that_are_down_serve_only_when_none_is_up() {
        let all = [c(0, false, false, false), c(1, false, false, false)];
        assert_eq!(choose(&all, 0, true), Some(0));
        assert_eq!(choose(&all, 1, true), Some(1));
        // A member that comes back is used again.
        let all = [c(0, false, false, false), c(1, true, false, false)];
        assert_eq!(choose(&all, 0, true), Some(1));
        assert_eq!(choose(&all, 1, true), Some(1));
    }

    #[test]
    fn members_that_answer_without_a_leader_before_silent_ones() {
        let mut answering = c(1, false, false, false);
        answering.health.answering = true;
        let all = [
            c(0, false, true, false),
            answering,
            c(2, false, false, false),
        ];
        for turn in 0..3 {
            assert_eq!(choose(&all, turn, true), Some(1));
        }
    }

    #[test]
    fn avoided_members_only_when_allowed_and_nothing_else() {
        let all = [c(0, true, true, true), c(1, false, false, false)];
        assert_eq!(choose(&all, 0, true), Some(1));
        let all = [c(0, true, true, true)];
        assert_eq!(choose(&all, 0, true), Some(0));
        assert_eq!(choose(&all, 0, false), None);
        assert_eq!(choose(&[], 0, true), None);
    }

    #[test]
    fn a_member_without_a_leader_is_down() {
        let m = Members::new(&["http://a".to_owned(), "http://b".to_owned()]);
        let status = |leader_id| Probe::Status {
            member_id: 1,
            leader_id,
            term: 2,
        };
        m.record(0, status(1));
        assert!(m.health(0).up);
        m.record(0, status(0));
        let h = m.health(0);
        assert!(!h.up);
        assert_eq!(h.downs, 1);
        m.record(0, Probe::Silent);
        assert_eq!(m.health(0).downs, 1, "already down");
        // A refusal shows the member alive, though not as the leader.
        m.record(0, Probe::Alive);
        assert!(m.health(0).up && !m.health(0).is_leader());
        // One endpoint is never probed and always up.
        let one = Members::new(&["http://a".to_owned()]);
        one.record(0, Probe::Silent);
        assert!(one.health(0).up);
    }
}
