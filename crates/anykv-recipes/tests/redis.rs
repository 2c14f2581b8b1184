//! Every recipe case on a real Redis (at `ANYKV_REDIS_URL`, or started on
//! a free loopback port from Debian's `redis-server` package, with
//! append-only persistence): `cargo test -p anykv-recipes --test redis`.
//! The factory compacts the change stream (`XTRIM`) and restarts or
//! freezes the shared server when the tests own it.

use std::sync::Arc;

use anykv_core::{async_trait, Error, Result, Store};
use anykv_recipes::cases::RecipeFactory;
use anykv_redis::RedisStore;
use anykv_testserver::redis::{pause_shared, restart_shared, shared_url};

struct Redis;

fn hook(name: &'static str, r: std::result::Result<(), String>) -> Result<()> {
    r.map_err(|e| Error::unsupported("redis tests", name, e))
}

#[async_trait]
impl RecipeFactory for Redis {
    async fn open(&self, root: &str) -> Result<Arc<dyn Store>> {
        let url = format!("{}/0/{root}?request_timeout=2s", shared_url());
        Ok(Arc::new(RedisStore::open_url(&url).await?))
    }

    async fn compact(&self, store: &Arc<dyn Store>, revision: u64) -> Result<()> {
        anykv_redis::compact(store.as_ref(), revision).await
    }

    async fn restart_server(&self) -> Result<()> {
        let restarted = tokio::task::spawn_blocking(restart_shared)
            .await
            .unwrap_or_else(|e| Err(format!("the restart panicked: {e}")));
        hook("restart_server", restarted)
    }

    async fn pause_server(&self) -> Result<()> {
        hook("pause_server", pause_shared(true))
    }

    async fn resume_server(&self) -> Result<()> {
        hook("resume_server", pause_shared(false))
    }
}

anykv_recipes::recipe_tests!(Redis);
