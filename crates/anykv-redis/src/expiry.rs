//! The expiry sweep: every open store deletes due TTL keys and the keys
//! of lapsed leases, each with its own revision and change record, so
//! watchers see a `Delete`.
//!
//! A TTL is a deadline in the key's hash and in `{ns}:ttl`, computed with
//! the server's `TIME`. Reads treat a key past its deadline as absent at
//! once; the sweep only removes it (and writes its `Delete`). The design
//! uses neither keyspace notifications nor `CONFIG SET`, so a server that
//! forbids `CONFIG` behaves exactly the same. The one condition: the
//! `Delete` events (and the memory) of expired keys wait until some store
//! of that namespace is open; reads never see them.

use std::sync::Arc;
use std::time::Duration;

use crate::client::Durability;
use crate::scripts;
use crate::state::StoreState;

/// How often each store sweeps expired keys and lapsed leases.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(200);

/// Keys one sweep deletes at most; the next sweep goes on.
const SWEEP_BATCH: usize = 500;

/// The store's sweep: runs every [`SWEEP_INTERVAL`] until the store
/// closes.
pub(crate) async fn run_sweep(state: Arc<StoreState>) {
    let mut shutdown = state.shutdown.subscribe();
    let batch = SWEEP_BATCH.to_string();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
        if *shutdown.borrow() {
            break;
        }
        if let Err(e) = state
            .client
            .write_script(
                &scripts::SWEEP,
                &[batch.as_bytes()],
                "expiry sweep",
                Durability::Primary,
            )
            .await
        {
            tracing::debug!(target: "anykv_redis", "anykv-redis expiry sweep failed: {e}");
        }
    }
}
