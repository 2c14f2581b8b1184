//! The shared sessions that leases and locks live on.
//!
//! A store keeps a small pool of extra ZooKeeper sessions, one per
//! session timeout the server granted (a lease's or lock's TTL becomes a
//! session timeout, which the server may raise or lower). Every lease and
//! lock with that TTL lives on that session: a lease's keys and a lock's
//! waiter node are its ephemeral nodes. A session is opened when the first
//! lease or lock needs it and closed when the last one is gone, so a store
//! holds its own session plus one per distinct TTL in use, however many
//! leases and locks it has.
//!
//! ZooKeeper's client keeps the session alive itself, moving to another
//! server when its server goes away. A session's monitor tells a
//! *suspension* (the connection is down, the session lives on: a leader
//! election, a server that went away) from a *loss*. The session counts
//! as lost when it ends, or when its connection stays down until
//! [`anykv_core::backend::loss_deadline`] of its timeout has passed since
//! the client last heard from a server ([`silence_grace`] after it
//! noticed): then every member's `lost()` fires and the session is
//! closed. Under [`LossPolicy::Connection`] a suspension also fires the
//! locks' `lost()` at once and gives their nodes up.
//!
//! A lock node that is given up (released, lost, or a lock call that
//! failed) and could not be deleted at once, say because the connection
//! was down, is kept as an *orphan*: the monitor deletes it as soon as the
//! session is connected again, retrying until the delete is confirmed (or
//! the session ends, which deletes it too). A node given up never keeps
//! other clients waiting for longer than the session's connection is down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anykv_core::backend::LostTrigger;
use anykv_core::Result;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use zookeeper_client as zk;

use crate::client::{
    connection_timeout, count_keepalive_failure, count_reconnect, open_session, silence_grace,
    with_deadline, ZkClient, TARGET,
};
use crate::config::{LossPolicy, ZkConfig};

/// How long the monitor waits before it tries again to delete orphans
/// whose delete failed while the session seemed connected.
const ORPHAN_RETRY: Duration = Duration::from_millis(200);

/// One member of a shared session: a lease, or a lock (held or waiting).
pub(crate) struct SessionMember {
    /// Fired when the member is lost (or given back).
    pub(crate) trigger: LostTrigger,
    /// Whether this is a lock (under [`LossPolicy::Connection`], lost as
    /// soon as the session's connection is down).
    pub(crate) is_lock: bool,
    /// A lock's waiter node, once created.
    pub(crate) lock_node: Option<String>,
}

/// A session shared by the leases and locks of one granted timeout, and
/// its members.
pub(crate) struct SharedSession {
    session: Mutex<Option<zk::Client>>,
    /// The session timeout the server granted.
    pub(crate) granted_timeout: Duration,
    /// The TTLs asked for that were granted this session's timeout.
    asked: Mutex<Vec<Duration>>,
    members: Mutex<HashMap<u64, SessionMember>>,
    ended: AtomicBool,
    /// Lock nodes given up whose delete is not confirmed yet.
    orphans: Mutex<Vec<String>>,
    /// Wakes the monitor when there are orphans to delete.
    wake: Arc<Notify>,
}

impl SharedSession {
    /// The session's client, unless it is closed or lost.
    pub(crate) fn session(&self) -> Option<zk::Client> {
        if self.has_ended() {
            return None;
        }
        self.session.lock().clone()
    }

    /// Notes the waiter node of lock member `id`; a member already lost
    /// gives the node up at once.
    pub(crate) fn set_lock_node(&self, id: u64, node: &str) {
        let mut lost = false;
        if let Some(m) = self.members.lock().get_mut(&id) {
            if m.trigger.is_fired() {
                lost = true;
            } else {
                m.lock_node = Some(node.to_owned());
            }
        }
        if lost {
            self.give_back(node.to_owned());
        }
    }

    /// Hands a lock node over to the monitor, which deletes it as soon as
    /// the session is connected, until the delete is confirmed. Nothing
    /// to do once the session ended (its nodes went with it).
    pub(crate) fn give_back(&self, node: String) {
        if self.has_ended() {
            return;
        }
        self.orphans.lock().push(node);
        self.wake.notify_one();
    }

    /// Whether the session was closed or lost.
    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Fires every lock member's `lost()` and gives their nodes up (a
    /// suspension under [`LossPolicy::Connection`]).
    fn suspend_locks(&self) {
        let mut given_up = Vec::new();
        for m in self.members.lock().values_mut().filter(|m| m.is_lock) {
            m.trigger.fire();
            given_up.extend(m.lock_node.take());
        }
        if !given_up.is_empty() {
            self.orphans.lock().extend(given_up);
        }
    }

    /// Fires every member and closes the session (the server deletes its
    /// ephemeral nodes).
    fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        for (_, m) in self.members.lock().drain() {
            m.trigger.fire();
        }
        self.orphans.lock().clear();
        self.session.lock().take();
    }
}

/// The store's shared sessions.
#[derive(Default)]
pub(crate) struct SessionPool {
    sessions: Mutex<Vec<Arc<SharedSession>>>,
}

impl SessionPool {
    /// How many sessions are open.
    pub(crate) fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// A session for a lease or lock of `ttl`, with `member` joined to it
    /// as `id`: a live session of the pool, or a new one (opened within
    /// `limit`).
    pub(crate) async fn join(
        &self,
        client: &ZkClient,
        ttl: Duration,
        id: u64,
        member: SessionMember,
        limit: Duration,
    ) -> Result<Arc<SharedSession>> {
        let mut member = Some(member);
        if let Some(s) = self.join_live(ttl, None, id, &mut member) {
            return Ok(s);
        }
        let session = open_session(client.config(), ttl, limit).await?;
        let fresh = Arc::new(SharedSession {
            granted_timeout: session.session_timeout(),
            session: Mutex::new(Some(session.clone())),
            asked: Mutex::new(vec![ttl]),
            members: Mutex::new(HashMap::new()),
            ended: AtomicBool::new(false),
            orphans: Mutex::new(Vec::new()),
            wake: Arc::new(Notify::new()),
        });
        let chosen = self
            .join_live(ttl, Some(&fresh), id, &mut member)
            .unwrap_or_else(|| fresh.clone());
        if Arc::ptr_eq(&chosen, &fresh) {
            monitor(&fresh, &session, client.config(), ttl);
        }
        Ok(chosen)
    }

    /// Joins `id` to a live session whose TTL was asked as `ttl` (or was
    /// granted the same timeout as `fresh`, when given), under the pool's
    /// lock so that a session about to close cannot be joined.
    fn join_live(
        &self,
        ttl: Duration,
        fresh: Option<&Arc<SharedSession>>,
        id: u64,
        member: &mut Option<SessionMember>,
    ) -> Option<Arc<SharedSession>> {
        let mut sessions = self.sessions.lock();
        sessions.retain(|s| !s.has_ended());
        let found = sessions
            .iter()
            .find(|s| {
                s.asked.lock().contains(&ttl)
                    || fresh.is_some_and(|f| f.granted_timeout == s.granted_timeout)
            })
            .cloned();
        let chosen = match (found, fresh) {
            (Some(s), _) => {
                {
                    let mut asked = s.asked.lock();
                    if !asked.contains(&ttl) {
                        asked.push(ttl);
                    }
                }
                s
            }
            (None, Some(f)) => {
                sessions.push(f.clone());
                f.clone()
            }
            (None, None) => return None,
        };
        if let Some(m) = member.take() {
            chosen.members.lock().insert(id, m);
        }
        Some(chosen)
    }

    /// Removes member `id` from `session`; closes the session when it was
    /// the last one.
    pub(crate) fn leave(&self, session: &Arc<SharedSession>, id: u64) {
        let mut sessions = self.sessions.lock();
        let mut members = session.members.lock();
        members.remove(&id);
        if members.is_empty() {
            drop(members);
            sessions.retain(|s| !Arc::ptr_eq(s, session));
            session.ended.store(true, Ordering::SeqCst);
            session.session.lock().take();
        }
    }

    /// Closes every session (the store closes).
    pub(crate) fn close_all(&self) {
        let sessions: Vec<_> = self.sessions.lock().drain(..).collect();
        for s in sessions {
            s.end();
        }
    }
}

/// Watches a shared session (see the module's documentation): on a
/// suspension, fires the locks under [`LossPolicy::Connection`]; when the
/// connection stays down for [`silence_grace`] after the client noticed,
/// or the session ends, fires every member and closes the session; while
/// connected, deletes the orphans. `ttl` is the session timeout asked for
/// (the client's connection timeout derives from it).
fn monitor(shared: &Arc<SharedSession>, session: &zk::Client, config: &ZkConfig, ttl: Duration) {
    let weak = Arc::downgrade(shared);
    let wake = shared.wake.clone();
    let mut states = session.state_watcher();
    let grace = silence_grace(session.session_timeout(), connection_timeout(config, ttl));
    let policy = config.loss_policy;
    let limit = config.request_timeout;
    let mut connected = session.state() == zk::SessionState::SyncConnected;
    tokio::spawn(async move {
        let mut down_since: Option<Instant> = None;
        loop {
            if !connected {
                let since = *down_since.get_or_insert_with(Instant::now);
                if policy == LossPolicy::Connection {
                    let Some(s) = live(&weak) else { return };
                    s.suspend_locks();
                }
                let news = tokio::time::timeout_at(since + grace, states.changed()).await;
                let Some(s) = live(&weak) else { return };
                match news {
                    Ok(zk::SessionState::SyncConnected) => {
                        connected = true;
                        down_since = None;
                        count_reconnect("a lease and lock session's connection");
                    }
                    Ok(st) if !st.is_terminated() => {}
                    // Expired, closed, or down for so long that the server
                    // may expire it any moment.
                    _ => {
                        count_keepalive_failure("a lease and lock session lost");
                        s.end();
                        return;
                    }
                }
                continue;
            }
            let retry = match live(&weak) {
                Some(s) => delete_orphans(&s, limit).await,
                None => return,
            };
            tokio::select! {
                st = states.changed() => {
                    if st.is_terminated() {
                        if let Some(s) = live(&weak) {
                            count_keepalive_failure("a lease and lock session lost");
                            s.end();
                        }
                        return;
                    }
                    connected = st == zk::SessionState::SyncConnected;
                    if !connected {
                        count_keepalive_failure("a lease and lock session's connection lost");
                    }
                }
                () = wake.notified() => {}
                () = tokio::time::sleep(ORPHAN_RETRY), if retry => {}
            }
        }
    });
}

/// The session, unless it is gone or ended.
fn live(weak: &Weak<SharedSession>) -> Option<Arc<SharedSession>> {
    weak.upgrade().filter(|s| !s.has_ended())
}

/// Deletes the session's orphans; those whose delete is not confirmed
/// stay for another try. Whether any stayed.
async fn delete_orphans(s: &SharedSession, limit: Duration) -> bool {
    let orphans = std::mem::take(&mut *s.orphans.lock());
    if orphans.is_empty() {
        return false;
    }
    let Some(client) = s.session() else {
        return false;
    };
    let mut failed = Vec::new();
    for node in orphans {
        match with_deadline(limit, "release", client.delete(&node, None)).await {
            Ok(Ok(())) => {}
            // Lost with the reply, or the connection went down: the node
            // may be there still.
            Err(_)
            | Ok(Err(zk::Error::ConnectionLoss | zk::Error::Timeout | zk::Error::Custom(_))) => {
                failed.push(node)
            }
            // Gone already, or refused for good (retrying cannot help).
            Ok(Err(e)) => {
                if e != zk::Error::NoNode && e != zk::Error::SessionExpired {
                    tracing::warn!(target: TARGET, node, error = %e, "zookeeper: cannot delete a lock node given up");
                }
            }
        }
    }
    let retry = !failed.is_empty();
    if retry && !s.has_ended() {
        s.orphans.lock().extend(failed);
    }
    retry
}

#[cfg(test)]
mod tests {
    use crate::client::silence_grace;
    use std::time::Duration;

    #[test]
    fn silence_grace_leaves_the_loss_margin() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // Noticed within 2/5 of 2 s and a tick; lost 1.5 s after the last
        // contact.
        assert_eq!(silence_grace(s(2), s(5)), ms(600));
        // Noticed within the 1 s connection timeout and a tick.
        assert_eq!(silence_grace(s(2), s(1)), ms(375));
        assert_eq!(silence_grace(s(10), s(5)), ms(3875));
        assert_eq!(silence_grace(s(15), s(5)), ms(8875));
        assert_eq!(silence_grace(s(1), ms(900)), ms(300));
    }
}
