//! Every recipe case on a real ZooKeeper (at `ANYKV_ZOOKEEPER_URL`, or
//! started on a free loopback port from Debian's `zookeeper` package):
//! `cargo test -p anykv-recipes --test zookeeper`. ZooKeeper keeps no
//! change history, so there is nothing to compact: the compaction case is
//! unsupported, and the cache re-lists after every interruption instead.

use std::sync::Arc;

use anykv_core::{async_trait, Error, Result, Store};
use anykv_recipes::cases::RecipeFactory;
use anykv_testserver::zookeeper::{pause_shared, restart_shared, resume_shared, shared_url};
use anykv_zookeeper::ZkStore;

struct ZooKeeper;

fn hook(name: &'static str, r: std::result::Result<(), String>) -> Result<()> {
    r.map_err(|e| Error::unsupported("zookeeper tests", name, e))
}

#[async_trait]
impl RecipeFactory for ZooKeeper {
    async fn open(&self, root: &str) -> Result<Arc<dyn Store>> {
        let url = format!("{}/{root}?request_timeout=2s", shared_url());
        Ok(Arc::new(ZkStore::open_url(&url).await?))
    }

    async fn restart_server(&self) -> Result<()> {
        let restarted = tokio::task::spawn_blocking(restart_shared)
            .await
            .unwrap_or_else(|e| Err(format!("the restart panicked: {e}")));
        hook("restart_server", restarted)
    }

    async fn pause_server(&self) -> Result<()> {
        hook("pause_server", pause_shared())
    }

    async fn resume_server(&self) -> Result<()> {
        hook("resume_server", resume_shared())
    }
}

anykv_recipes::recipe_tests!(ZooKeeper, unsupported = [cache_relists_after_compacted]);
