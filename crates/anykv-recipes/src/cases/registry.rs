//! Cases of the service [`Registry`].

use std::sync::Arc;
use std::time::Duration;

use anykv_core::{ErrorKind, PutOptions, Store};

use super::{ensure, ensure_eq, eventually, CaseResult, Ctx, Failure, WAIT};
use crate::{Instance, Registry, RegistryState};

fn web(id: &str) -> Instance {
    Instance::new("web", id, "127.0.0.1", 8080).with_metadata("case", "registry")
}

/// Waits until `store` holds `instance`'s record, exactly.
async fn present(store: &Arc<dyn Store>, instance: &Instance, within: Duration) -> CaseResult {
    let key = instance.key("services")?;
    let body = instance.to_json()?;
    eventually(within, &format!("{key} to hold its record"), || {
        let (store, key, body) = (store.clone(), key.clone(), body.clone());
        async move {
            let kv = store.get(&key).await.ok()??;
            (kv.value == body).then_some(())
        }
    })
    .await
}

/// Waits until `store` no longer holds `instance`'s key.
async fn absent(store: &Arc<dyn Store>, instance: &Instance) -> CaseResult {
    let key = instance.key("services")?;
    eventually(WAIT, &format!("{key} to be gone"), || {
        let (store, key) = (store.clone(), key.clone());
        async move { matches!(store.get(&key).await, Ok(None)).then_some(()) }
    })
    .await
}

/// Records deleted or overwritten behind the registry's back (another
/// client's delete, put, or `delete_tree`) are written again, under the
/// same lease, and the status counts the repairs.
pub async fn registry_repairs_deleted_records(ctx: &Ctx) -> CaseResult {
    let store = ctx.open().await?;
    let other = ctx.open().await?;
    let registry = Registry::new(store, ctx.registry_options())?;
    let (a, b) = (web("a"), web("b"));
    let _ra = registry.register(a.clone()).await?;
    let _rb = registry.register(b.clone()).await?;
    present(&other, &a, WAIT).await?;
    other.delete(&a.key("services")?).await?;
    present(&other, &a, WAIT).await?;
    other
        .put(
            &b.key("services")?,
            "not a record".into(),
            PutOptions::new(),
        )
        .await?;
    present(&other, &b, WAIT).await?;
    other.delete_tree("services").await?;
    present(&other, &a, WAIT).await?;
    present(&other, &b, WAIT).await?;
    let status = registry.status();
    ensure(status.repairs >= 3, || {
        format!("repairs not counted: {status:?}")
    })?;
    ensure_eq(
        status.generation,
        1,
        "leases granted (the lease was never lost)",
    )?;
    ensure_eq(status.instances, 2, "instances registered")?;
    registry.close().await?;
    absent(&other, &a).await?;
    absent(&other, &b).await
}

/// Instances leave on `deregister`, when their registration is dropped,
/// on `close`, and when the last registry handle is dropped; a closed
/// registry refuses new instances with `Closed`.
pub async fn registry_instances_leave(ctx: &Ctx) -> CaseResult {
    let other = ctx.open().await?;
    let registry = Registry::new(ctx.open().await?, ctx.registry_options())?;
    let (a, b, c, d) = (web("a"), web("b"), web("c"), web("d"));
    let ra = registry.register(a.clone()).await?;
    let rb = registry.register(b.clone()).await?;
    let _rc = registry.register(c.clone()).await?;
    present(&other, &c, WAIT).await?;
    ensure_eq(ra.instance(), &a, "the registration's instance")?;
    ra.deregister().await?;
    ensure_eq(
        other.get(&a.key("services")?).await?,
        None,
        "a after deregister",
    )?;
    drop(rb);
    absent(&other, &b).await?;
    present(&other, &c, WAIT).await?;
    registry.close().await?;
    absent(&other, &c).await?;
    ensure_eq(
        registry.status().state,
        RegistryState::Closed,
        "the state after close",
    )?;
    let refused = registry
        .register(d.clone())
        .await
        .map(|_| ())
        .map_err(|e| e.kind());
    ensure_eq(refused, Err(ErrorKind::Closed), "register after close")?;

    let second = Registry::new(ctx.open().await?, ctx.registry_options())?;
    let rd = second.register(d.clone()).await?;
    present(&other, &d, WAIT).await?;
    drop(second);
    absent(&other, &d).await?;
    drop(rd);
    Ok(())
}

/// After the server restarts, the registry's instances are in the store
/// again (the same lease kept alive, or a new one granted and everything
/// written again) and the registry goes on repairing its records.
pub async fn registry_fails_back_after_restart(ctx: &Ctx) -> CaseResult {
    let other = ctx.open().await?;
    let registry = Registry::new(ctx.open().await?, ctx.registry_options())?;
    let a = web("a");
    let _ra = registry.register(a.clone()).await?;
    present(&other, &a, WAIT).await?;
    super::hook(ctx.factory().restart_server().await)?;
    recovered(&registry, &other, &a).await
}

/// After an outage longer than the lease's TTL (the server frozen), the
/// registry's instances are in the store again: where the lease was lost,
/// a new one was granted and everything written again.
pub async fn registry_fails_back_after_outage(ctx: &Ctx) -> CaseResult {
    let other = ctx.open().await?;
    let options = ctx.registry_options();
    let ttl = options.ttl;
    let registry = Registry::new(ctx.open().await?, options)?;
    let a = web("a");
    let _ra = registry.register(a.clone()).await?;
    present(&other, &a, WAIT).await?;
    super::hook(ctx.factory().pause_server().await)?;
    tokio::time::sleep(ttl + Duration::from_secs(2)).await;
    ctx.factory().resume_server().await?;
    recovered(&registry, &other, &a).await
}

async fn recovered(registry: &Registry, other: &Arc<dyn Store>, a: &Instance) -> CaseResult {
    present(other, a, Duration::from_secs(60)).await?;
    let registered = tokio::time::timeout(
        WAIT,
        registry.wait_for(|s| s.state == RegistryState::Registered),
    )
    .await;
    ensure(registered == Ok(true), || {
        format!("the registry did not settle: {:?}", registry.status())
    })?;
    // The registry still repairs after the outage.
    eventually(WAIT, "a delete after the outage", || {
        let (other, key) = (other.clone(), a.key("services").ok());
        async move { other.delete(&key?).await.ok() }
    })
    .await?;
    present(other, a, WAIT)
        .await
        .map_err(|f| Failure::Failed(format!("after the outage: {f}")))
}
