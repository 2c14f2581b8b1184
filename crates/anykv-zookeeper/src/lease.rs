//! Leases: a lease's keys are ephemeral value nodes of the shared session
//! for its TTL (see `sessions.rs`). Revoking a lease deletes its keys one
//! by one, each delete checking that the key was not written again since.

use std::sync::{Arc, Weak};
use std::time::Duration;

use anykv_core::backend::{check_lease_ttl, lost_signal, Release};
use anykv_core::{async_trait, Error, Lease, LeaseId, Result};
use futures::FutureExt;
use zookeeper_client as zk;

use crate::client::{multi_err, random_token, with_deadline};
use crate::config::{BACKEND, MIN_TTL};
use crate::layout::DELETED_FLAG;
use crate::sessions::SessionMember;
use crate::state::{LeaseEntry, StoreState};

/// Grants a lease of `ttl` (raised to [`MIN_TTL`]); its TTL is the
/// session timeout the server grants for it, which `Lease::ttl` reports.
pub(crate) async fn grant(state: &Arc<StoreState>, ttl: Duration) -> Result<Lease> {
    state.ensure_open()?;
    check_lease_ttl(ttl)?;
    let ttl = ttl.max(MIN_TTL);
    let id = loop {
        let id = random_token();
        if id != 0 && !state.leases.lock().contains_key(&id) {
            break id;
        }
    };
    let (trigger, signal) = lost_signal();
    let member = SessionMember {
        trigger: trigger.clone(),
        is_lock: false,
        lock_node: None,
    };
    let session = state
        .sessions
        .join(
            &state.client,
            ttl,
            id,
            member,
            state.client.request_timeout(),
        )
        .await?;
    let entry = Arc::new(LeaseEntry::new(id, session.clone(), trigger));
    state.leases.lock().insert(id, entry.clone());
    if state.is_closed() {
        revoke(state, &entry).await;
        return Err(Error::closed(BACKEND));
    }
    Ok(Lease::new(
        LeaseId(id),
        session.granted_timeout,
        signal,
        Box::new(LeaseRelease {
            store: Arc::downgrade(state),
            entry,
        }),
    ))
}

/// Deletes one value node written with a lease, unless the key was
/// written again since (the key node's version moved): one multi-op that
/// marks the key node as deleted and deletes the value node.
pub(crate) async fn delete_leased(
    session: &zk::Client,
    limit: Duration,
    vpath: &str,
    dir: &str,
    version: i32,
) {
    let mut multi = session.new_multi_writer();
    let built = multi
        .add_set_data(dir, DELETED_FLAG, Some(version))
        .and_then(|()| multi.add_delete(vpath, None));
    if built.is_ok() {
        let _ = with_deadline(
            limit,
            "revoke",
            multi.commit().map(|r| r.map_err(multi_err)),
        )
        .await;
    }
}

/// Revokes a lease: deletes its keys one by one (each delete its own
/// zxid), fires its signal and leaves its session.
pub(crate) async fn revoke(state: &StoreState, entry: &Arc<LeaseEntry>) {
    state.leases.lock().remove(&entry.id);
    let nodes = entry.take_nodes();
    entry.trigger.fire();
    if let (Some(nodes), Some(session)) = (nodes, entry.session.session()) {
        let mut nodes: Vec<_> = nodes.into_iter().collect();
        nodes.sort();
        let limit = state.client.request_timeout();
        for (vpath, (dir, version)) in nodes {
            delete_leased(&session, limit, &vpath, &dir, version).await;
        }
    }
    state.sessions.leave(&entry.session, entry.id);
}

/// Revokes every lease of a closing store.
pub(crate) async fn revoke_all(state: &StoreState) {
    let leases: Vec<_> = state.leases.lock().values().cloned().collect();
    for l in leases {
        revoke(state, &l).await;
    }
}

/// What a [`Lease`] handle does on revoke and drop.
struct LeaseRelease {
    store: Weak<StoreState>,
    entry: Arc<LeaseEntry>,
}

#[async_trait]
impl Release for LeaseRelease {
    async fn release(&self) -> Result<()> {
        match self.store.upgrade() {
            Some(state) => revoke(&state, &self.entry).await,
            None => self.entry.trigger.fire(),
        }
        Ok(())
    }

    fn release_in_background(&self) {
        let Some(state) = self.store.upgrade() else {
            self.entry.trigger.fire();
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                let entry = self.entry.clone();
                h.spawn(async move { revoke(&state, &entry).await });
            }
            Err(_) => {
                // No runtime: give the session back without deleting key
                // by key (closing it removes the lease's nodes at once).
                state.leases.lock().remove(&self.entry.id);
                self.entry.take_nodes();
                self.entry.trigger.fire();
                state.sessions.leave(&self.entry.session, self.entry.id);
            }
        }
    }
}
