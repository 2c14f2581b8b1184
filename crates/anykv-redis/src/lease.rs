//! Leases: a record in `{ns}:leases` with a deadline that the client
//! extends every [`keepalive_interval`](anykv_core::backend::keepalive_interval);
//! keys put with it are listed in its set `{ns}:lease:<id>`. Revoking it
//! (or its lapse, seen by the sweep) deletes its keys, each with a
//! revision.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_core::backend::{check_lease_ttl, lost_signal, Release};
use anykv_core::{async_trait, Error, Lease, LeaseId, Result};

use crate::client::Durability;
use crate::config::{BACKEND, MAX_TTL, MIN_TTL};
use crate::keepalive::{keep_alive, KeepAliveTask};
use crate::reply::{as_i64, as_u64, unexpected_reply};
use crate::scripts;
use crate::state::StoreState;

/// Grants a lease of `ttl` (raised to [`MIN_TTL`], lowered to [`MAX_TTL`])
/// and keeps it alive until it is revoked, dropped, or lost.
pub(crate) async fn grant(state: &Arc<StoreState>, ttl: Duration) -> Result<Lease> {
    let s = state.clone();
    s.ensure_open()?;
    check_lease_ttl(ttl)?;
    let ttl = ttl.clamp(MIN_TTL, MAX_TTL);
    let ttl_ms = ttl.as_millis().to_string();
    let sent = Instant::now();
    let v = s
        .client
        .write_script(
            &scripts::GRANT,
            &[ttl_ms.as_bytes()],
            "grant lease",
            Durability::Replicated,
        )
        .await?
        .durable("grant lease")?;
    let id = as_u64(&v).ok_or_else(|| unexpected_reply("grant lease"))?;
    let (trigger, signal) = lost_signal();
    let task = {
        let s = s.clone();
        let trigger = trigger.clone();
        let id_arg = id.to_string();
        tokio::spawn(async move {
            let (state, id_arg, ttl_ms) = (&*s, &id_arg, &ttl_ms);
            keep_alive(
                state.client.request_timeout(),
                ttl,
                sent,
                &state.recheck,
                move || async move {
                    let w = state
                        .client
                        .write_script(
                            &scripts::KEEPALIVE,
                            &[id_arg.as_bytes(), ttl_ms.as_bytes()],
                            "keep lease",
                            Durability::Replicated,
                        )
                        .await?;
                    if as_i64(&w.value) == Some(1) {
                        w.replicated("keep lease")?;
                    }
                    Ok(w.value)
                },
            )
            .await;
            s.leases.lock().remove(&id);
            trigger.fire();
        })
    };
    s.leases.lock().insert(
        id,
        KeepAliveTask {
            trigger: trigger.clone(),
            task,
        },
    );
    if s.is_closed() {
        let _ = revoke(&s, id).await;
        return Err(Error::closed(BACKEND));
    }
    Ok(Lease::new(
        LeaseId(id),
        ttl,
        signal,
        Box::new(LeaseRelease { state: s, id }),
    ))
}

/// Stops keeping lease `id` alive (its `lost()` fires) and revokes it on
/// the server: its keys are deleted, each with a revision.
pub(crate) async fn revoke(state: &StoreState, id: u64) -> Result<()> {
    let lease = state.leases.lock().remove(&id);
    if let Some(lease) = lease {
        lease.stop();
    }
    state
        .client
        .write_script(
            &scripts::REVOKE,
            &[id.to_string().as_bytes()],
            "revoke lease",
            Durability::Replicated,
        )
        .await?
        .durable("revoke lease")?;
    Ok(())
}

/// Revokes a lease when its handle is revoked or dropped.
struct LeaseRelease {
    state: Arc<StoreState>,
    id: u64,
}

#[async_trait]
impl Release for LeaseRelease {
    async fn release(&self) -> Result<()> {
        revoke(&self.state, self.id).await
    }

    fn release_in_background(&self) {
        let (s, id) = (self.state.clone(), self.id);
        let state = self.state.clone();
        crate::keepalive::give_back(
            async move {
                let _ = revoke(&s, id).await;
            },
            move || {
                if let Some(lease) = state.leases.lock().remove(&id) {
                    lease.stop();
                }
            },
        );
    }
}
