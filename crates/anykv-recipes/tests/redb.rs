//! Every recipe case on a redb file: `cargo test -p anykv-recipes --test
//! redb`. Each test has a file of its own; its clients are stores opened on
//! that file. A restart closes the file and opens it again; a pause
//! freezes it.

use std::sync::Arc;
use std::time::Duration;

use anykv_core::{async_trait, Error, Result, Store};
use anykv_recipes::cases::RecipeFactory;
use anykv_redb::{RedbConfig, RedbStore};
use parking_lot::Mutex;

/// How long a call waits out a paused file before `Timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

struct Redb {
    dir: tempfile::TempDir,
    paused: Mutex<Option<RedbStore>>,
}

impl Redb {
    fn new() -> Self {
        Redb {
            dir: tempfile::tempdir().expect("a temporary directory"),
            paused: Mutex::new(None),
        }
    }

    fn config(&self) -> RedbConfig {
        RedbConfig::new(self.dir.path().join("recipes.redb")).with_request_timeout(REQUEST_TIMEOUT)
    }
}

#[async_trait]
impl RecipeFactory for Redb {
    async fn open(&self, root: &str) -> Result<Arc<dyn Store>> {
        Ok(RedbStore::open(self.config().with_root(root))
            .await?
            .into_dyn())
    }

    async fn compact(&self, store: &Arc<dyn Store>, revision: u64) -> Result<()> {
        anykv_redb::compact(store.as_ref(), revision).await
    }

    async fn pause_server(&self) -> Result<()> {
        let hooks = RedbStore::open(self.config()).await?;
        hooks.pause()?;
        *self.paused.lock() = Some(hooks);
        Ok(())
    }

    async fn resume_server(&self) -> Result<()> {
        let hooks = self.paused.lock().take();
        match hooks {
            Some(hooks) => hooks.resume(),
            None => Err(Error::InvalidArgument("the file is not paused".into())),
        }
    }

    async fn restart_server(&self) -> Result<()> {
        let hooks = RedbStore::open(self.config()).await?;
        hooks.restart(Duration::from_millis(300)).await
    }
}

anykv_recipes::recipe_tests!(Redb::new());
