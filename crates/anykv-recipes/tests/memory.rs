//! Every recipe case on the in-process backend: `cargo test -p
//! anykv-recipes --test memory`. Named stores play separate clients; a
//! restart is `anykv_memory::restart_named` (a short freeze that loses
//! nothing) and a pause is `pause_named`.

use std::sync::Arc;
use std::time::Duration;

use anykv_core::{async_trait, Result, Store};
use anykv_recipes::cases::RecipeFactory;

/// The named store every case's clients share.
const NAME: &str = "recipes-memory";

struct Memory;

#[async_trait]
impl RecipeFactory for Memory {
    async fn open(&self, root: &str) -> Result<Arc<dyn Store>> {
        let url = format!("memory://{NAME}/{root}?request_timeout=1s");
        Ok(anykv_memory::MemoryStore::open_url(&url)?.into_dyn())
    }

    async fn compact(&self, store: &Arc<dyn Store>, revision: u64) -> Result<()> {
        anykv_memory::compact(store.as_ref(), revision)
    }

    async fn restart_server(&self) -> Result<()> {
        anykv_memory::restart_named(NAME, Duration::from_secs(1)).await
    }

    async fn pause_server(&self) -> Result<()> {
        anykv_memory::pause_named(NAME)
    }

    async fn resume_server(&self) -> Result<()> {
        anykv_memory::resume_named(NAME)
    }
}

anykv_recipes::recipe_tests!(Memory);
