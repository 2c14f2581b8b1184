//! Locks, with etcd's mutex recipe: a key under the lock's directory bound
//! to a fresh lease; the holder is the key with the smallest create
//! revision; a waiter watches only its predecessor's delete, then checks
//! that its own key still exists (so a lock is never granted to an
//! expired session). The fencing token is the key's create revision.

use anykv_core::{Error, LockGuard, LockOptions, Result, WatchEvent};
use etcd_client::{
    GetOptions, PutOptions as EtcdPutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use futures::StreamExt;

use crate::client::{header_revision, op_responses, revision, EtcdClient, BACKEND};
use crate::layout::lock_holder_key;
use crate::lease::{self, KeptLease, LeaseRelease};
use crate::state::StoreState;

/// Takes lock `key`: waits for it when `wait` (bounded by
/// `options.timeout`), else returns `None` if it is held.
pub(crate) async fn acquire(
    state: &StoreState,
    key: &str,
    options: LockOptions,
    wait: bool,
) -> Result<Option<LockGuard>> {
    state.closed.ensure_open()?;
    let names = state.layout.key(key)?;
    let client = &state.client;
    let dir = state.layout.lock_dir(&names.full);
    let granted = lease::grant(client, options.ttl).await?;
    let (id, lost) = (granted.id, granted.lost);
    let mut pending = PendingLock {
        client: client.clone(),
        id,
        kept: Some(granted.kept),
    };
    let mine = lock_holder_key(&dir, id);
    let txn = Txn::new().and_then([
        TxnOp::put(
            mine.clone(),
            Vec::new(),
            Some(EtcdPutOptions::new().with_lease(id)),
        ),
        TxnOp::get(
            dir.clone(),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Create, SortOrder::Ascend)
                    .with_limit(1),
            ),
        ),
    ]);
    let resp = client
        .send("lock", |c| {
            let (mut kv, txn) = (c.kv(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await?;
    let my_rev = header_revision(resp.header())?;
    let owner = op_responses(&resp)?.into_iter().find_map(|op| match op {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.create_revision()),
        _ => None,
    });
    if owner != Some(my_rev) {
        if !wait {
            pending.cancel().await;
            return Ok(None);
        }
        let canonical = &names.canonical;
        let waited = async {
            wait_for_predecessors(state, &dir, my_rev, &lost).await?;
            // Re-check ownership: our key must still exist.
            let me = client
                .read("lock", |c| {
                    let (mut kv, key) = (c.kv(), mine.clone());
                    async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
                })
                .await?;
            if me.count() == 0 || lost.is_lost() {
                return Err(Error::Unavailable {
                    backend: BACKEND,
                    message: format!("lock {canonical:?}: the lock's lease expired while waiting"),
                    source: None,
                });
            }
            Ok(())
        };
        let outcome = match options.timeout {
            Some(t) => match tokio::time::timeout(t, waited).await {
                Ok(r) => r,
                // Another client held it all along: `LockTimeout`, not
                // the `Timeout` of a server that does not answer.
                Err(_) => Err(Error::LockTimeout {
                    backend: BACKEND,
                    key: canonical.clone(),
                    after: t,
                }),
            },
            None => waited.await,
        };
        if let Err(e) = outcome {
            pending.cancel().await;
            return Err(e);
        }
    }
    let Some(kept) = pending.kept.take() else {
        return Err(Error::closed(BACKEND));
    };
    let release = LeaseRelease::keep(client, &state.locks, id, kept.clone(), false);
    if state.closed.is_closed() {
        // Closed while waiting: `close()` may have missed this lock.
        state.locks.lock().remove(&id);
        pending.kept = Some(kept);
        pending.cancel().await;
        return Err(Error::closed(BACKEND));
    }
    Ok(Some(LockGuard::new(
        names.canonical,
        revision(my_rev),
        lost,
        Box::new(release),
    )))
}

/// Waits until no key of the lock's directory was created before ours:
/// each round watches the newest predecessor until it is deleted.
async fn wait_for_predecessors(
    state: &StoreState,
    dir: &str,
    my_rev: i64,
    lost: &anykv_core::LostSignal,
) -> Result<()> {
    let client = &state.client;
    loop {
        let resp = client
            .read("lock", |c| {
                let (mut kv, dir) = (c.kv(), dir.to_owned());
                async move {
                    kv.get(
                        dir,
                        Some(
                            GetOptions::new()
                                .with_prefix()
                                .with_max_create_revision(my_rev - 1)
                                .with_sort(SortTarget::Create, SortOrder::Descend)
                                .with_limit(1),
                        ),
                    )
                    .await
                }
            })
            .await?;
        let Some(predecessor) = resp.kvs().first() else {
            return Ok(());
        };
        let rev = header_revision(resp.header())?;
        let mut deletes = state
            .watches
            .open_bookkeeping(predecessor.key().to_vec(), rev + 1)?;
        let lost = lost.wait();
        tokio::pin!(lost);
        loop {
            tokio::select! {
                item = deletes.next() => match item {
                    Some(Ok(WatchEvent::Delete { .. })) => break,
                    Some(Ok(_)) => continue,
                    // Closed, compacted, cancelled or lagging: look again.
                    Some(Err(_)) | None => {
                        state.closed.ensure_open()?;
                        break;
                    }
                },
                _ = &mut lost => {
                    return Err(Error::Unavailable {
                        backend: BACKEND,
                        message: "the lock's lease was lost while waiting".into(),
                        source: None,
                    });
                }
            }
        }
    }
}

/// A lock attempt that has not been granted: cancelling it (or dropping
/// it) deletes its key by revoking its lease.
struct PendingLock {
    client: EtcdClient,
    id: i64,
    kept: Option<KeptLease>,
}

impl PendingLock {
    async fn cancel(&mut self) {
        if let Some(kept) = self.kept.take() {
            kept.stop();
            let _ = lease::revoke(&self.client, self.id, false).await;
        }
    }
}

impl Drop for PendingLock {
    fn drop(&mut self) {
        if let Some(kept) = self.kept.take() {
            kept.stop();
            lease::revoke_in_background(&self.client, self.id, false);
        }
    }
}
