//! Every recipe case on a real etcd (at `ANYKV_ETCD_URL`, or started on a
//! free loopback port from Debian's `etcd` package): `cargo test -p
//! anykv-recipes --test etcd`. The factory compacts through the store and
//! restarts or freezes the shared server when the tests own it.

use std::sync::Arc;

use anykv_core::{async_trait, Error, Result, Store};
use anykv_etcd::EtcdStore;
use anykv_recipes::cases::RecipeFactory;
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
