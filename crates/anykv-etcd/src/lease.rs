//! etcd leases: granting, keeping alive, revoking, and the leases behind
//! TTL keys.
//!
//! - A lease is kept alive at [`keepalive_interval`] of its TTL. It is
//!   known valid until the instant the last successful keep-alive (or the
//!   grant) was *sent* plus the TTL the server returned; `lost()` fires
//!   when the server says the lease is gone, or at [`loss_deadline`] of
//!   that TTL after that send, even while a keep-alive is still in flight.
//!   So `lost()` fires before the server can expire the lease and let
//!   another client take its lock.
//! - The keep-alive stream stays on one member until it breaks or the
//!   member is found down (see [`crate::members`]); then the next
//!   keep-alive goes to another member, well within the lease's TTL.
//! - Revoke (and close, and drop) deletes the lease's keys one by one
//!   before revoking it, so watchers see one revision per key.
//! - Each TTL put grants a lease for that key (and a marker key on it, see
//!   [`crate::layout`]). The write that replaces or deletes the key reads
//!   the previous pair's lease and, if it carries the marker, revokes it,
//!   so rewriting a key never accumulates leases.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anykv_core::backend::{keepalive_interval, loss_deadline, lost_signal, Release};
use anykv_core::{async_trait, Error, LostSignal, LostTrigger, Result};
use etcd_client::{
    Compare, CompareOp, GetOptions, LeaseTimeToLiveOptions, PutOptions as EtcdPutOptions, Txn,
    TxnOp,
};
use parking_lot::Mutex;
use tokio::task::AbortHandle;

use crate::background;
use crate::client::{instant_after, revision, EtcdClient, BACKEND};
use crate::layout::ttl_marker;

/// etcd's smallest lease TTL.
pub const MIN_TTL: Duration = Duration::from_secs(2);

/// A lease this store keeps alive: its loss trigger and keep-alive task.
#[derive(Clone)]
pub(crate) struct KeptLease {
    trigger: LostTrigger,
    task: AbortHandle,
}

impl KeptLease {
    /// Stops the keep-alive and fires `lost()`.
    pub fn stop(&self) {
        self.stop_keep_alive();
        self.fire_lost();
    }

    /// Stops the keep-alive task.
    pub fn stop_keep_alive(&self) {
        self.task.abort();
    }

    /// Fires the lease's `lost()`.
    pub fn fire_lost(&self) {
        self.trigger.fire();
    }
}

/// The leases (or the locks' leases) a store keeps alive, by id.
pub(crate) type LeaseTable = Arc<Mutex<HashMap<i64, KeptLease>>>;

/// A lease just granted and kept alive.
pub(crate) struct GrantedLease {
    /// etcd's lease id.
    pub id: i64,
    /// The TTL granted.
    pub ttl: Duration,
    /// Its keep-alive.
    pub kept: KeptLease,
    /// Fires when it is lost.
    pub lost: LostSignal,
}

/// A lease's TTL in etcd's whole seconds: rounded up, at least [`MIN_TTL`].
pub(crate) fn lease_seconds(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs)
        .unwrap_or(i64::MAX)
        .max(MIN_TTL.as_secs() as i64)
}

/// Grants an etcd lease and keeps it alive in a task.
pub(crate) async fn grant(client: &EtcdClient, ttl: Duration) -> Result<GrantedLease> {
    let secs = lease_seconds(ttl);
    // The lease is valid at least until the grant's send plus its TTL.
    let sent = Instant::now();
    let grant = client
        .send("grant lease", |c| {
            let mut leases = c.leases();
            async move { leases.grant(secs, None).await }
        })
        .await?;
    let id = grant.id();
    let granted = Duration::from_secs(revision(grant.ttl().max(secs)));
    // What the server granted (at least from the grant's send).
    let valid_for = match grant.ttl() {
        t if t > 0 => Duration::from_secs(revision(t)),
        _ => granted,
    };
    let (trigger, lost) = lost_signal();
    let task = tokio::spawn(keep_alive(
        client.clone(),
        id,
        granted,
        instant_after(sent, loss_deadline(valid_for)),
        trigger.clone(),
    ))
    .abort_handle();
    Ok(GrantedLease {
        id,
        ttl: granted,
        kept: KeptLease { trigger, task },
        lost,
    })
}

/// Keeps a lease alive at [`keepalive_interval`] of its TTL; fires
/// `trigger` when the server says it is gone, or at `lost_at`: the send of
/// the last successful keep-alive (or of the grant) plus
/// [`loss_deadline`] of the TTL the server returned, whether or not a
/// request is still in flight.
async fn keep_alive(
    client: EtcdClient,
    id: i64,
    ttl: Duration,
    lost_at: Instant,
    trigger: LostTrigger,
) {
    let period = keepalive_interval(ttl);
    let expiry = tokio::time::sleep_until(lost_at.into());
    tokio::pin!(expiry);
    // Each attempt is bounded by the request timeout and by the time left.
    let timeout = client.request_timeout();
    let bound = |expiry: Instant| timeout.min(expiry.saturating_duration_since(Instant::now()));
    // Whether a keep-alive failed since the stream last worked: the next
    // stream opened is a reconnect.
    let mut failed = false;
    loop {
        // The stream stays on one member until it breaks or the member is
        // found down (then it moves to another).
        let conn = client.stream_conn();
        if conn.is_none() {
            failed = true;
            background::keepalive_failed(id, "no etcd member has a connection");
        }
        if let Some(conn) = conn {
            // Opening the stream sends a keep-alive and reads its reply
            // (whose TTL is not exposed), so validity is extended only by
            // the keep-alives sent below.
            let opened = tokio::select! {
                r = tokio::time::timeout(bound(expiry.deadline().into_std()), async {
                    conn.leases().keep_alive(id).await
                }) => match r {
                    Ok(Ok(opened)) => Some(opened),
                    Ok(Err(e)) => {
                        failed = true;
                        background::keepalive_failed(id, &crate::errors::describe(&e));
                        None
                    }
                    Err(_) => {
                        failed = true;
                        background::keepalive_failed(id, "no answer in time");
                        None
                    }
                },
                _ = conn.failed() => {
                    failed = true;
                    background::keepalive_failed(id, "its etcd member is down");
                    None
                }
                _ = &mut expiry => {
                    trigger.fire();
                    return;
                }
            };
            if let Some((mut keeper, mut stream)) = opened {
                // (Every way out of the loop below sets `failed` again.)
                if failed {
                    background::reconnected("a lease keep-alive stream", conn.url());
                }
                loop {
                    // One request in flight at a time, so the reply read
                    // answers the request sent at `sent`.
                    let sent = Instant::now();
                    let attempt = async {
                        keeper.keep_alive().await?;
                        stream.message().await
                    };
                    let r = tokio::select! {
                        r = tokio::time::timeout(bound(expiry.deadline().into_std()), attempt) => r,
                        _ = conn.failed() => {
                            failed = true;
                            background::keepalive_failed(id, "its etcd member is down");
                            break;
                        }
                        _ = &mut expiry => {
                            trigger.fire();
                            return;
                        }
                    };
                    match r {
                        Ok(Ok(Some(resp))) => {
                            if resp.ttl() <= 0 {
                                trigger.fire();
                                return;
                            }
                            let granted = Duration::from_secs(revision(resp.ttl()));
                            let lost_at = instant_after(sent, loss_deadline(granted));
                            expiry.as_mut().reset(lost_at.into());
                        }
                        other => {
                            failed = true;
                            let why = match other {
                                Ok(Err(e)) => crate::errors::describe(&e),
                                Ok(Ok(_)) => "the keep-alive stream ended".to_owned(),
                                Err(_) => "no answer in time".to_owned(),
                            };
                            background::keepalive_failed(id, &why);
                            break;
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(period) => {}
                        _ = &mut expiry => {
                            trigger.fire();
                            return;
                        }
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            _ = &mut expiry => {
                trigger.fire();
                return;
            }
        }
    }
}

/// Revokes a lease; with `delete_keys`, first deletes its keys one at a
/// time (each gets its own revision). A lease already gone is fine.
pub(crate) async fn revoke(client: &EtcdClient, id: i64, delete_keys: bool) -> Result<()> {
    if delete_keys {
        let ttl = client
            .send("revoke lease", |c| {
                let mut leases = c.leases();
                async move {
                    leases
                        .time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
                        .await
                }
            })
            .await?;
        let mut keys: Vec<Vec<u8>> = ttl.keys().to_vec();
        keys.sort();
        for k in keys {
            let txn = Txn::new()
                .when([Compare::lease(k.clone(), CompareOp::Equal, id)])
                .and_then([TxnOp::delete(k, None)]);
            client
                .send("revoke lease", |c| {
                    let (mut kv, txn) = (c.kv(), txn.clone());
                    async move { kv.txn(txn).await }
                })
                .await?;
        }
    }
    let revoked = client
        .send("revoke lease", |c| {
            let mut leases = c.leases();
            async move { leases.revoke(id).await }
        })
        .await;
    match revoked {
        Ok(_) | Err(Error::LeaseLost { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// [`revoke`] in a task, when a runtime is there to run it (drops).
pub(crate) fn revoke_in_background(client: &EtcdClient, id: i64, delete_keys: bool) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        let client = client.clone();
        handle.spawn(async move {
            let _ = revoke(&client, id, delete_keys).await;
        });
    }
}

/// Gives back a lease handed out as a `Lease` or behind a `LockGuard`.
pub(crate) struct LeaseRelease {
    client: EtcdClient,
    /// The table the lease is kept in, to leave when released.
    table: Weak<Mutex<HashMap<i64, KeptLease>>>,
    id: i64,
    kept: KeptLease,
    /// Whether revoking deletes the lease's keys one by one first (a
    /// user's lease) or not (a lock's lease: its one key goes with it).
    delete_keys: bool,
}

impl LeaseRelease {
    /// Keeps `lease` in `table` until it is released.
    pub fn keep(
        client: &EtcdClient,
        table: &LeaseTable,
        id: i64,
        kept: KeptLease,
        delete_keys: bool,
    ) -> Self {
        table.lock().insert(id, kept.clone());
        LeaseRelease {
            client: client.clone(),
            table: Arc::downgrade(table),
            id,
            kept,
            delete_keys,
        }
    }

    fn forget(&self) {
        self.kept.stop();
        if let Some(table) = self.table.upgrade() {
            table.lock().remove(&self.id);
        }
    }
}

#[async_trait]
impl Release for LeaseRelease {
    async fn release(&self) -> Result<()> {
        let r = revoke(&self.client, self.id, self.delete_keys).await;
        self.forget();
        r
    }

    fn release_in_background(&self) {
        self.forget();
        revoke_in_background(&self.client, self.id, self.delete_keys);
    }
}

/// The lease of a TTL put and the marker put to write with the key.
pub(crate) async fn grant_for_ttl_put(client: &EtcdClient, ttl: Duration) -> Result<(i64, TxnOp)> {
    let secs = lease_seconds(ttl);
    let grant = client
        .send("put", |c| {
            let mut leases = c.leases();
            async move { leases.grant(secs, None).await }
        })
        .await?;
    let id = grant.id();
    let marker = TxnOp::put(
        ttl_marker(id),
        Vec::new(),
        Some(EtcdPutOptions::new().with_lease(id)),
    );
    Ok((id, marker))
}

/// After a write replaced or deleted a pair bound to `lease`: revokes the
/// lease in a task if it was granted for a TTL put (it binds nothing
/// else). `own` is the lease of the write itself, kept.
pub(crate) fn retire_ttl_lease(client: &EtcdClient, lease: i64, own: i64) {
    if lease == 0 || lease == own {
        return;
    }
    let client = client.clone();
    tokio::spawn(async move {
        let marker = client
            .read("retire ttl lease", |c| {
                let mut kv = c.kv();
                async move {
                    kv.get(ttl_marker(lease), Some(GetOptions::new().with_count_only()))
                        .await
                }
            })
            .await;
        if matches!(marker, Ok(r) if r.count() > 0) {
            let _ = client
                .send("retire ttl lease", |c| {
                    let mut leases = c.leases();
                    async move { leases.revoke(lease).await }
                })
                .await;
        }
    });
}

/// The error of a write bound to `lease` that the server no longer has.
pub(crate) fn lease_error(e: Error, lease: i64) -> Error {
    match e {
        Error::LeaseLost { .. } => Error::LeaseLost {
            backend: BACKEND,
            lease: revision(lease),
        },
        other => other,
    }
}

/// Keys this store wrote with a TTL, and until when their TTL leases can
/// live. etcd names a key's lease only in the previous pair (`prev_kv`),
/// which costs a plain put about a tenth of its speed; so a plain put asks
/// for it (and retires the TTL lease it replaces) only for the keys listed
/// here. A TTL key another store wrote and this store overwrites keeps its
/// lease until the lease's TTL ends: the lease then binds nothing but its
/// marker, and expires with it.
#[derive(Debug, Default)]
pub(crate) struct TtlKeys {
    deadlines: HashMap<String, Instant>,
    /// The size after the last pruning: the map is pruned of lapsed
    /// entries whenever it has doubled since.
    pruned: usize,
}

impl TtlKeys {
    /// `full` was written with a lease of `ttl` (as granted, at most).
    pub(crate) fn wrote(&mut self, full: &str, ttl: Duration) {
        let now = Instant::now();
        // Granted TTLs are whole seconds, at least `MIN_TTL`: a deadline a
        // little late only costs one more put a previous pair.
        let until = now + ttl.max(MIN_TTL) + Duration::from_secs(1);
        self.deadlines.insert(full.to_owned(), until);
        if self.deadlines.len() > 2 * self.pruned.max(512) {
            self.deadlines.retain(|_, d| *d > now);
            self.pruned = self.deadlines.len();
        }
    }

    /// Whether `full` may still have a TTL lease this store granted.
    pub(crate) fn may_have(&self, full: &str) -> bool {
        !self.deadlines.is_empty()
            && self
                .deadlines
                .get(full)
                .is_some_and(|d| *d > Instant::now())
    }

    /// `full` was written without a TTL (or deleted).
    pub(crate) fn forget(&mut self, full: &str) {
        self.deadlines.remove(full);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_seconds_round_up_to_the_minimum() {
        assert_eq!(lease_seconds(Duration::from_millis(1)), 2);
        assert_eq!(lease_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(lease_seconds(Duration::from_secs(10)), 10);
    }

    #[test]
    fn ttl_keys_are_remembered_until_their_leases_can_lapse() {
        let mut t = TtlKeys::default();
        assert!(!t.may_have("a"));
        t.wrote("a", Duration::from_secs(30));
        assert!(t.may_have("a"));
        assert!(!t.may_have("b"));
        t.forget("a");
        assert!(!t.may_have("a"));
        // Lapsed entries are pruned once the map has doubled.
        for i in 0..2000 {
            t.wrote(&format!("k{i}"), Duration::from_secs(30));
        }
        assert!(t.deadlines.len() <= 2000);
        t.deadlines
            .values_mut()
            .for_each(|d| *d = Instant::now() - Duration::from_secs(1));
        assert!(!t.may_have("k1"));
        for i in 0..3000 {
            t.wrote(&format!("n{i}"), Duration::from_secs(30));
        }
        assert!(t.deadlines.len() <= 3000, "{}", t.deadlines.len());
        assert!(t.may_have("n2999"));
    }
}
