//! What a store and everything it hands out share: the connection, the
//! root's layout, the closed flag, the watch multiplexer, and the leases
//! and locks kept alive.

use anykv_core::backend::ClosedFlag;
use anykv_core::Capabilities;

use crate::client::EtcdClient;
use crate::config::EtcdConfig;
use crate::layout::Layout;
use crate::lease::{revoke_in_background, LeaseTable};
use crate::watch::Watches;

/// The state of one open store.
pub(crate) struct StoreState {
    pub client: EtcdClient,
    pub config: EtcdConfig,
    pub layout: Layout,
    pub capabilities: Capabilities,
    pub closed: ClosedFlag,
    pub watches: Watches,
    /// Leases handed out by `grant_lease`.
    pub leases: LeaseTable,
    /// The leases of the locks held.
    pub locks: LeaseTable,
    /// Keys this store wrote with a TTL (see [`crate::lease::TtlKeys`]).
    pub ttl_keys: parking_lot::Mutex<crate::lease::TtlKeys>,
}

impl Drop for StoreState {
    /// The last handle is gone: ends the watches and gives back the leases
    /// and locks in the background.
    fn drop(&mut self) {
        self.watches.close();
        let kept: Vec<_> = self
            .leases
            .lock()
            .drain()
            .chain(self.locks.lock().drain())
            .collect();
        for (id, lease) in kept {
            lease.stop();
            revoke_in_background(&self.client, id, true);
        }
    }
}
