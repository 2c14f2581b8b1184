//! Leases, and the shared sessions that leases and locks live on.
//!
//! A store keeps a small pool of extra ZooKeeper sessions, one per
//! session timeout the server granted (a lease's or lock's TTL becomes a
//! session timeout, which the server may raise or lower). Every lease and
//! lock with that TTL lives on that session: a lease's keys and a lock's
//! waiter node are its ephemeral nodes. A session is opened when the first
//! lease or lock needs it and closed when the last one is gone, so a store
//! holds its own session plus one per distinct TTL in use, however many
//! leases and locks it has.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anykv_core::{async_trait, lost_signal, Error, LostTrigger, Release, Result};
use futures::FutureExt;
use parking_lot::Mutex;
use zookeeper_client as zk;

use crate::client::{connect, multi_err, timed};
use crate::store::{Inner, ZkStore};
use crate::BACKEND;

/// The data a key's node gets from a delete: it tells the watch that the
/// node's `mzxid` is the zxid of the delete (see `watch.rs`).
pub(crate) const DELETED_FLAG: &[u8] = b"d";

/// One member of a shared session: a lease, or a lock (held or waiting).
pub(crate) struct Member {
    /// Fired when the member is lost (or given back).
    pub(crate) trigger: LostTrigger,
    /// Whether this is a lock (lost as soon as the session disconnects).
    pub(crate) is_lock: bool,
    /// A lock's waiter node, once created.
    pub(crate) lock_node: Option<String>,
}

/// A shared session and its members.
pub(crate) struct Shared {
    client: Mutex<Option<zk::Client>>,
    /// The session timeout the server granted.
    pub(crate) granted: Duration,
    /// The TTLs asked for that were granted this session's timeout.
    asked: Mutex<Vec<Duration>>,
    members: Mutex<HashMap<u64, Member>>,
    dead: AtomicBool,
}

impl Shared {
    /// The session's client, unless it is closed or lost.
    pub(crate) fn client(&self) -> Option<zk::Client> {
        if self.dead.load(Ordering::SeqCst) {
            return None;
        }
        self.client.lock().clone()
    }

    /// Notes the waiter node of lock member `id`.
    pub(crate) fn set_node(&self, id: u64, node: &str) {
        if let Some(m) = self.members.lock().get_mut(&id) {
            m.lock_node = Some(node.to_owned());
        }
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Fires every member and closes the session (the server deletes its
    /// ephemeral nodes).
    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        for (_, m) in self.members.lock().drain() {
            m.trigger.fire();
        }
        self.client.lock().take();
    }
}

/// The store's shared sessions.
#[derive(Default)]
pub(crate) struct Pool {
    sessions: Mutex<Vec<Arc<Shared>>>,
}

impl Pool {
    /// How many sessions are open.
    pub(crate) fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Joins `id` to a live session whose TTL was asked as `ttl` (or was
    /// granted the same timeout as `fresh`, when given), under the pool's
    /// lock so that a session about to close cannot be joined.
    fn join(
        &self,
        ttl: Duration,
        fresh: Option<&Arc<Shared>>,
        id: u64,
        member: &mut Option<Member>,
    ) -> Option<Arc<Shared>> {
        let mut sessions = self.sessions.lock();
        sessions.retain(|s| !s.is_dead());
        let found = sessions
            .iter()
            .find(|s| {
                s.asked.lock().contains(&ttl) || fresh.is_some_and(|f| f.granted == s.granted)
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
    pub(crate) fn leave(&self, session: &Arc<Shared>, id: u64) {
        let mut sessions = self.sessions.lock();
        let mut members = session.members.lock();
        members.remove(&id);
        if members.is_empty() {
            drop(members);
            sessions.retain(|s| !Arc::ptr_eq(s, session));
            session.dead.store(true, Ordering::SeqCst);
            session.client.lock().take();
        }
    }

    /// Closes every session (the store closes).
    pub(crate) fn close_all(&self) {
        let sessions: Vec<_> = self.sessions.lock().drain(..).collect();
        for s in sessions {
            s.kill();
        }
    }
}

impl ZkStore {
    /// A session for a lease or lock of `ttl`, with `member` joined to it
    /// as `id`: a live session of the pool, or a new one (opened within
    /// `limit`).
    pub(crate) async fn shared_session(
        &self,
        ttl: Duration,
        id: u64,
        member: Member,
        limit: Duration,
    ) -> Result<Arc<Shared>> {
        let mut member = Some(member);
        if let Some(s) = self.inner.pool.join(ttl, None, id, &mut member) {
            return Ok(s);
        }
        let client = connect(&self.inner.config, ttl, limit).await?;
        let fresh = Arc::new(Shared {
            granted: client.session_timeout(),
            client: Mutex::new(Some(client.clone())),
            asked: Mutex::new(vec![ttl]),
            members: Mutex::new(HashMap::new()),
            dead: AtomicBool::new(false),
        });
        let chosen = self
            .inner
            .pool
            .join(ttl, Some(&fresh), id, &mut member)
            .unwrap_or_else(|| fresh.clone());
        if Arc::ptr_eq(&chosen, &fresh) {
            monitor(Arc::downgrade(&fresh), &client);
        }
        Ok(chosen)
    }

    /// Grants a lease of `ttl` (the session timeout the server grants for
    /// it, which `Lease::ttl` reports).
    pub(crate) async fn grant(&self, ttl: Duration) -> Result<anykv_core::Lease> {
        let id = loop {
            let id = crate::client::token();
            if id != 0 && !self.inner.leases.lock().contains_key(&id) {
                break id;
            }
        };
        let (trigger, signal) = lost_signal();
        let member = Member {
            trigger: trigger.clone(),
            is_lock: false,
            lock_node: None,
        };
        let session = self.shared_session(ttl, id, member, self.limit()).await?;
        let entry = Arc::new(LeaseEntry {
            id,
            session: session.clone(),
            trigger,
            nodes: Mutex::new(Some(HashMap::new())),
        });
        self.inner.leases.lock().insert(id, entry.clone());
        if self.inner.closed.load(Ordering::SeqCst) {
            revoke(&self.inner, &entry).await;
            return Err(Error::closed(BACKEND));
        }
        Ok(anykv_core::Lease::new(
            anykv_core::LeaseId(id),
            session.granted,
            signal,
            Box::new(LeaseRelease {
                store: Arc::downgrade(&self.inner),
                entry,
            }),
        ))
    }
}

/// A live lease: its session and the value nodes written with it.
pub(crate) struct LeaseEntry {
    pub(crate) id: u64,
    pub(crate) session: Arc<Shared>,
    pub(crate) trigger: LostTrigger,
    /// Value node path -> (key node path, the key node's version after
    /// the write); `None` once the lease is revoked.
    nodes: Mutex<Option<HashMap<String, (String, i32)>>>,
}

impl LeaseEntry {
    /// Whether the lease can take writes.
    pub(crate) fn is_live(&self) -> bool {
        !self.trigger.is_fired() && !self.session.is_dead() && self.nodes.lock().is_some()
    }

    /// Notes a value node written with the lease (the key node's version
    /// after the write, which any later rewrite of the key changes).
    /// `false` if the lease was revoked meanwhile: the caller deletes
    /// what it wrote.
    pub(crate) fn record(&self, vpath: &str, dir: &str, version: i32) -> bool {
        match self.nodes.lock().as_mut() {
            Some(nodes) => {
                nodes.insert(vpath.to_owned(), (dir.to_owned(), version));
                true
            }
            None => false,
        }
    }
}

/// Deletes one value node written with a lease, unless the key was
/// written again since (the key node's version moved): one multi-op that
/// marks the key node as deleted and deletes the value node.
pub(crate) async fn delete_leased(
    client: &zk::Client,
    limit: Duration,
    vpath: &str,
    dir: &str,
    version: i32,
) {
    let mut multi = client.new_multi_writer();
    let built = multi
        .add_set_data(dir, DELETED_FLAG, Some(version))
        .and_then(|()| multi.add_delete(vpath, None));
    if built.is_ok() {
        let _ = timed(
            limit,
            "revoke",
            multi.commit().map(|r| r.map_err(multi_err)),
        )
        .await;
    }
}

/// Revokes a lease: deletes its keys one by one (each delete its own
/// zxid), fires its signal and leaves its session.
pub(crate) async fn revoke(inner: &Arc<Inner>, entry: &Arc<LeaseEntry>) {
    inner.leases.lock().remove(&entry.id);
    let nodes = entry.nodes.lock().take();
    entry.trigger.fire();
    if let (Some(nodes), Some(client)) = (nodes, entry.session.client()) {
        let mut nodes: Vec<_> = nodes.into_iter().collect();
        nodes.sort();
        let limit = inner.config.request_timeout;
        for (vpath, (dir, version)) in nodes {
            delete_leased(&client, limit, &vpath, &dir, version).await;
        }
    }
    inner.pool.leave(&entry.session, entry.id);
}

struct LeaseRelease {
    store: Weak<Inner>,
    entry: Arc<LeaseEntry>,
}

#[async_trait]
impl Release for LeaseRelease {
    async fn release(&self) -> Result<()> {
        match self.store.upgrade() {
            Some(inner) => revoke(&inner, &self.entry).await,
            None => self.entry.trigger.fire(),
        }
        Ok(())
    }

    fn release_in_background(&self) {
        let Some(inner) = self.store.upgrade() else {
            self.entry.trigger.fire();
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                let entry = self.entry.clone();
                h.spawn(async move { revoke(&inner, &entry).await });
            }
            Err(_) => {
                // No runtime: give the session back without deleting key
                // by key (closing it removes the lease's nodes at once).
                inner.leases.lock().remove(&self.entry.id);
                self.entry.nodes.lock().take();
                self.entry.trigger.fire();
                inner.pool.leave(&self.entry.session, self.entry.id);
            }
        }
    }
}

/// Watches a shared session. Locks are lost as soon as it is
/// disconnected, as Curator treats SUSPENDED (the server may expire the
/// session and give the lock to the next waiter before the client could
/// learn it); their nodes are deleted if the session comes back. Leases
/// are lost when the disconnect lasts three fifths of the session timeout
/// (the client notices a silent server after at most two fifths, so this
/// comes before the server expires the session), or when the session
/// ends; the session is closed then.
fn monitor(weak: Weak<Shared>, client: &zk::Client) {
    let mut states = client.state_watcher();
    let grace = client.session_timeout() * 3 / 5;
    let mut disconnected = client.state() != zk::SessionState::SyncConnected;
    tokio::spawn(async move {
        let mut orphans: Vec<String> = Vec::new();
        loop {
            if disconnected {
                if let Some(s) = weak.upgrade() {
                    let members = s.members.lock();
                    let locks: Vec<u64> = members
                        .iter()
                        .filter(|(_, m)| m.is_lock)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in locks {
                        if let Some(m) = members.get(&id) {
                            m.trigger.fire();
                            orphans.extend(m.lock_node.clone());
                        }
                    }
                }
                let back = matches!(
                    tokio::time::timeout(grace, states.changed()).await,
                    Ok(zk::SessionState::SyncConnected)
                );
                let Some(s) = weak.upgrade() else { return };
                if !back {
                    s.kill();
                    return;
                }
                disconnected = false;
                if let Some(client) = s.client() {
                    let limit = s.granted;
                    for node in orphans.drain(..) {
                        let _ = timed(limit, "release", client.delete(&node, None)).await;
                    }
                }
                continue;
            }
            let state = states.changed().await;
            let Some(s) = weak.upgrade() else { return };
            match state {
                zk::SessionState::Disconnected => disconnected = true,
                st if st.is_terminated() => {
                    s.kill();
                    return;
                }
                _ => {}
            }
        }
    });
}
