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
//! ZooKeeper's client keeps the session alive itself. A session's monitor
//! fires `lost()`: at once for locks when the session is disconnected (as
//! Curator treats SUSPENDED), and for leases when the disconnect lasts so
//! long that [`anykv_core::backend::loss_deadline`] of the session timeout
//! has passed since the client last heard from the server, or when the
//! session ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anykv_core::backend::LostTrigger;
use anykv_core::Result;
use parking_lot::Mutex;
use zookeeper_client as zk;

use crate::client::{connection_timeout, open_session, silence_grace, with_deadline, ZkClient};

/// One member of a shared session: a lease, or a lock (held or waiting).
pub(crate) struct SessionMember {
    /// Fired when the member is lost (or given back).
    pub(crate) trigger: LostTrigger,
    /// Whether this is a lock (lost as soon as the session disconnects).
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
}

impl SharedSession {
    /// The session's client, unless it is closed or lost.
    pub(crate) fn session(&self) -> Option<zk::Client> {
        if self.has_ended() {
            return None;
        }
        self.session.lock().clone()
    }

    /// Notes the waiter node of lock member `id`.
    pub(crate) fn set_lock_node(&self, id: u64, node: &str) {
        if let Some(m) = self.members.lock().get_mut(&id) {
            m.lock_node = Some(node.to_owned());
        }
    }

    /// Whether the session was closed or lost.
    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Fires every member and closes the session (the server deletes its
    /// ephemeral nodes).
    fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        for (_, m) in self.members.lock().drain() {
            m.trigger.fire();
        }
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
        });
        let chosen = self
            .join_live(ttl, Some(&fresh), id, &mut member)
            .unwrap_or_else(|| fresh.clone());
        if Arc::ptr_eq(&chosen, &fresh) {
            monitor(
                Arc::downgrade(&fresh),
                &session,
                connection_timeout(client.config(), ttl),
            );
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

/// Watches a shared session. Locks are lost as soon as it is
/// disconnected, as Curator treats SUSPENDED (the server may expire the
/// session and give the lock to the next waiter before the client could
/// learn it); their nodes are deleted if the session comes back. Leases
/// are lost when the disconnect lasts [`silence_grace`], so `lost()` comes
/// [`anykv_core::backend::loss_deadline`] after the client last heard from
/// the server, before the server expires the session; or when the session
/// ends. The session is closed then.
fn monitor(weak: Weak<SharedSession>, session: &zk::Client, connection_timeout: Duration) {
    let mut states = session.state_watcher();
    let grace = silence_grace(session.session_timeout(), connection_timeout);
    let mut disconnected = session.state() != zk::SessionState::SyncConnected;
    tokio::spawn(async move {
        let mut orphans: Vec<String> = Vec::new();
        loop {
            if disconnected {
                if let Some(s) = weak.upgrade() {
                    let members = s.members.lock();
                    for m in members.values().filter(|m| m.is_lock) {
                        m.trigger.fire();
                        orphans.extend(m.lock_node.clone());
                    }
                }
                let back = matches!(
                    tokio::time::timeout(grace, states.changed()).await,
                    Ok(zk::SessionState::SyncConnected)
                );
                let Some(s) = weak.upgrade() else { return };
                if !back {
                    s.end();
                    return;
                }
                disconnected = false;
                if let Some(session) = s.session() {
                    let limit = s.granted_timeout;
                    for node in orphans.drain(..) {
                        let _ = with_deadline(limit, "release", session.delete(&node, None)).await;
                    }
                }
                continue;
            }
            let state = states.changed().await;
            let Some(s) = weak.upgrade() else { return };
            match state {
                zk::SessionState::Disconnected => disconnected = true,
                st if st.is_terminated() => {
                    s.end();
                    return;
                }
                _ => {}
            }
        }
    });
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
