//! What a store does when its calls succeed again after failing: perhaps
//! on a new connection to a new primary (a failover), which may lack
//! leases and locks the store holds. Every keep-alive refreshes at once,
//! so a lost lease or lock fires its `lost()` without waiting for its next
//! refresh.

use std::sync::Arc;

use crate::state::StoreState;

/// Runs until the store closes: on every recovery of the store's calls,
/// wakes every keep-alive.
pub(crate) async fn run_recheck(state: Arc<StoreState>) {
    let mut shutdown = state.shutdown.subscribe();
    let mut recoveries = state.client.recoveries();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            r = recoveries.changed() => {
                if r.is_err() {
                    break;
                }
            }
        }
        if *shutdown.borrow() {
            break;
        }
        tracing::debug!(target: "anykv_redis", "anykv-redis: calls succeed again; checking leases and locks at once");
        state.recheck.notify_waiters();
    }
}
