//! Every recipe case on a real etcd (at `ANYKV_ETCD_URL`, or started on a
//! free loopback port from Debian's `etcd` package): `cargo test -p
//! anykv-recipes --test etcd`. The factory compacts through the store and
//! restarts or freezes the shared server when the tests own it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_core::{async_trait, Error, Result, Store};
use anykv_etcd::EtcdStore;
use anykv_recipes::cases::RecipeFactory;
use anykv_recipes::{Instance, Registry, RegistryOptions, RegistryState};
use anykv_testserver::etcd::{pause_shared, shared, shared_url};

struct Etcd;

fn hook(name: &'static str, r: std::result::Result<(), String>) -> Result<()> {
    r.map_err(|e| Error::unsupported("etcd tests", name, e))
}

#[async_trait]
impl RecipeFactory for Etcd {
    async fn open(&self, root: &str) -> Result<Arc<dyn Store>> {
        let url = format!("{}/{root}?request_timeout=2s", shared_url());
        Ok(Arc::new(EtcdStore::open_url(&url).await?))
    }

    async fn compact(&self, store: &Arc<dyn Store>, revision: u64) -> Result<()> {
        anykv_etcd::compact(store.as_ref(), revision).await
    }

    async fn restart_server(&self) -> Result<()> {
        let _ = shared_url();
        let Some(server) = shared() else {
            return hook(
                "restart_server",
                Err("ANYKV_ETCD_URL's server is not ours".into()),
            );
        };
        let restarted = tokio::task::spawn_blocking(move || {
            let mut s = server.lock().unwrap_or_else(|e| e.into_inner());
            s.stop();
            s.start();
        })
        .await;
        hook("restart_server", restarted.map_err(|e| e.to_string()))
    }

    async fn pause_server(&self) -> Result<()> {
        hook("pause_server", pause_shared(true))
    }

    async fn resume_server(&self) -> Result<()> {
        hook("resume_server", pause_shared(false))
    }
}

anykv_recipes::recipe_tests!(Etcd);

/// A registry whose lease another client revokes (through etcd's gateway,
/// by its id) grants a new lease and writes its instance again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_fails_back_after_its_lease_is_revoked() {
    let root = anykv_testserver::unique_name("anykv-recipes-revoke");
    let store = Etcd.open(&root).await.expect("a client");
    let other = Etcd.open(&root).await.expect("another client");
    let options = RegistryOptions::new().with_ttl(Duration::from_secs(3));
    let registry = Registry::new(store, options).expect("a registry");
    let instance = Instance::new("web", "a", "10.0.0.1", 80);
    let _a = registry
        .register(instance.clone())
        .await
        .expect("registered");
    let lease = registry.status().lease.expect("a lease");
    let Some(server) = shared() else {
        panic!("set no ANYKV_ETCD_URL for this test: it revokes a lease through the test server's gateway");
    };
    // Other tests restart and freeze the shared server (the exclusive
    // cases): retry the revoke until the server answers.
    let body = format!("{{\"ID\":{}}}", lease.0 as i64);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = body.clone();
        let revoked = tokio::task::spawn_blocking(move || {
            let s = server.lock().unwrap_or_else(|e| e.into_inner());
            s.gateway("/v3/lease/revoke", &body)
        })
        .await
        .expect("the revoke ran");
        match revoked {
            Ok(_) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "etcd did not revoke the lease: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let key = instance.key("services").expect("a key");
    let record = instance.to_json().expect("a record");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = registry.status();
        let stored = other.get(&key).await.expect("a read").map(|kv| kv.value);
        if status.generation >= 2
            && status.state == RegistryState::Registered
            && status.lease != Some(lease)
            && stored.as_ref() == Some(&record)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failback: {status:?}, stored {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    registry.close().await.expect("closed");
}
