//! The in-process anykv backend, and the reference implementation of the
//! anykv contract: every capability on, nothing "unsupported".
//!
//! - `memory://` opens a new private store; `memory://name/root` opens a
//!   handle on the process-wide store `name`, under `root`. Handles on one
//!   name share data, revisions, leases and locks, so one test can play two
//!   processes; each handle owns its own leases, locks and watches, and
//!   closing it gives them back as a process exit would.
//! - Revisions are a store-wide counter. Watches deliver every revision and
//!   can resume from the recent history (see the parameters below); older
//!   starts yield `Compacted` from the stream.
//! - TTL keys expire on time (a thread of the store's own, so a store
//!   outlives the async runtime that created it) and emit `Delete`.
//! - Locks are FIFO queues: a release hands the lock to the next waiter
//!   directly, so waiters never stampede.
//!
//! URL parameters: `history` (changes kept for resuming watches, default
//! [`DEFAULT_HISTORY`]), `history_bytes` (bytes of keys and values kept for
//! them, default [`DEFAULT_HISTORY_BYTES`]) and `max_value_size` (bytes).
//! They apply when the named store is first created; later handles share
//! the store as it is.
//!
//! Like every anykv backend, the store's async calls run on Tokio (a lock
//! wait with a timeout uses Tokio's timer). Most calls never wait, so one
//! call in 1,024 on a thread yields to the runtime first: a task that
//! loops over the store still lets the other tasks of its thread run.
//!
//! ```
//! use anykv_core::{PutOptions, Store};
//! use anykv_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anykv_core::Result<()> {
//! let a = MemoryStore::open_url("memory://doc-shared/app")?;
//! let b = MemoryStore::open_url("memory://doc-shared/app")?;
//! let rev = a.put("greeting", "hello".into(), PutOptions::new()).await?;
//! let seen = b.get("greeting").await?.expect("b shares a's store");
//! assert_eq!((seen.value.as_ref(), seen.revision), (&b"hello"[..], rev));
//! # Ok(())
//! # }
//! ```

#![deny(rustdoc::broken_intra_doc_links)]

mod config;
mod fault;
mod state;
mod store;

use std::sync::Arc;

use anykv_core::{Store, Url};

pub use config::{
    MemoryConfig, DEFAULT_HISTORY, DEFAULT_HISTORY_BYTES, DEFAULT_MAX_VALUE_SIZE,
    DEFAULT_REQUEST_TIMEOUT, MIN_TTL,
};
pub use fault::{pause_named, restart_named, resume_named};
pub use store::{compact, MemoryStore};

/// Registers the `memory` scheme with [`anykv_core::registry`], so
/// `anykv_core::open("memory://...")` opens a [`MemoryStore`].
pub fn register() {
    anykv_core::register("memory", |url: Url| async move {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::open(MemoryConfig::from_url(&url)?)?);
        Ok(store)
    });
}
