//! Freezing a named store, as a paused server freezes: for testing how a
//! program copes with a store that stops answering.
//!
//! While a named store is paused, every call on every handle of it waits
//! until it is resumed or the handle's request timeout passes, and then
//! fails with `Timeout` (the outcome of a write is then unknown to the
//! caller, as with a real server; here it was not applied). Nothing
//! expires or is lost by a pause: leases and locks live in the process.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anykv_core::Result<()> {
//! use anykv_core::{ErrorKind, PutOptions, Store};
//! let store = anykv_memory::MemoryStore::open_url("memory://frozen-doc?request_timeout=50ms")?;
//! anykv_memory::pause_named("frozen-doc")?;
//! let e = store.put("k", "v".into(), PutOptions::new()).await.unwrap_err();
//! assert_eq!(e.kind(), ErrorKind::Timeout);
//! anykv_memory::resume_named("frozen-doc")?;
//! store.put("k", "v".into(), PutOptions::new()).await?;
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use anykv_core::{Error, Result};

use crate::state::Shared;
use crate::store::NAMED;

fn named(name: &str) -> Result<Arc<Shared>> {
    NAMED.lock().get(name).cloned().ok_or_else(|| {
        Error::Config(format!(
            "there is no process-wide memory store called {name:?}"
        ))
    })
}

/// Freezes the process-wide store `name`: calls on it wait until
/// [`resume_named`] or their request timeout (then `Timeout`). Fails with
/// `Config` when no store has that name.
pub fn pause_named(name: &str) -> Result<()> {
    named(name)?.gate.pause();
    Ok(())
}

/// Lets the store `name` frozen by [`pause_named`] answer again; the calls
/// waiting go on.
pub fn resume_named(name: &str) -> Result<()> {
    named(name)?.gate.resume();
    Ok(())
}

/// What a restart of the store `name` is for an in-process store: a short
/// freeze (`outage`) with nothing lost, since its data, leases and locks
/// live in the process.
pub async fn restart_named(name: &str, outage: Duration) -> Result<()> {
    named(name)?.gate.restart(outage).await;
    Ok(())
}
