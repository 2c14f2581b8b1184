//! Leases: records in the store's state owned by the handle that granted
//! them; revoked on `revoke`, on drop and when the handle closes.

use std::sync::Arc;
use std::time::Duration;

use anykv_core::{async_trait, Lease, LeaseId, Release, Result};

use crate::config::MIN_TTL;
use crate::state::Shared;

/// Grants a lease of `ttl` owned by `owner`.
pub(crate) fn grant(shared: &Arc<Shared>, owner: u64, ttl: Duration) -> Result<Lease> {
    anykv_core::backend::check_lease_ttl(ttl)?;
    let (id, lost) = shared.state.write().grant_lease(owner)?;
    Ok(Lease::new(
        LeaseId(id),
        ttl.max(MIN_TTL),
        lost,
        Box::new(LeaseRelease {
            shared: shared.clone(),
            id,
        }),
    ))
}

/// Revokes a lease.
struct LeaseRelease {
    shared: Arc<Shared>,
    id: u64,
}

#[async_trait]
impl Release for LeaseRelease {
    async fn release(&self) -> Result<()> {
        self.release_in_background();
        Ok(())
    }

    fn release_in_background(&self) {
        self.shared.state.write().revoke_lease(self.id);
    }
}
