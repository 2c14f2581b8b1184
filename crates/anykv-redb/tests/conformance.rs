//! The whole conformance suite on redb files: each case on a file of its
//! own, with every hook — compact, pause and resume, and a restart that
//! closes the file and opens it again.
//!
//! `cargo test -p anykv-redb --test conformance`; with
//! `ANYKV_REDB_DURABILITY=eventual` the files use `Durability::Eventual`.

use std::sync::Arc;
use std::time::Duration;

use anykv_conformance::{conformance_tests, StoreFactory};
use anykv_core::{async_trait, Error, Result, Store};
use anykv_redb::{Durability, RedbConfig, RedbStore};
use parking_lot::Mutex;

/// How long a call waits out a paused file before `Timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A temporary file for one case. The file closes whenever the case's
/// stores are all closed, so a store opened after that reads it back from
/// disk; a paused file is kept open by a store of the hooks' own until it
/// resumes.
struct RedbFactory {
    dir: tempfile::TempDir,
    paused: Mutex<Option<RedbStore>>,
}

impl RedbFactory {
    fn new() -> Self {
        RedbFactory {
            dir: tempfile::tempdir().expect("a temporary directory"),
            paused: Mutex::new(None),
        }
    }

    fn config(&self) -> RedbConfig {
        let eventual = std::env::var("ANYKV_REDB_DURABILITY").is_ok_and(|d| d == "eventual");
        let durability = if eventual {
            Durability::Eventual
        } else {
            Durability::Immediate
        };
        RedbConfig::new(self.dir.path().join("suite.redb"))
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_durability(durability)
    }
}

#[async_trait]
impl StoreFactory for RedbFactory {
    async fn open(&self, root: &str) -> Result<Arc<dyn Store>> {
        let store = RedbStore::open(self.config().with_root(root)).await?;
        Ok(store.into_dyn())
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

    fn request_timeout(&self) -> Duration {
        REQUEST_TIMEOUT
    }
}

conformance_tests!(RedbFactory::new());
