//! The anykv backend on a [redb](https://www.redb.org) file: the whole
//! anykv contract with no server, kept across restarts of the process.
//!
//! ```
//! use anykv_core::{PutOptions, Store};
//! use anykv_redb::RedbStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anykv_core::Result<()> {
//! let dir = tempfile::tempdir().expect("a temporary directory");
//! let url = format!("redb://{}/state.redb/app", dir.path().display());
//! let store = RedbStore::open_url(&url).await?;
//! let rev = store.put("greeting", "hello".into(), PutOptions::new()).await?;
//! store.close().await?; // the file closes with its last store
//!
//! // Another run of the program finds the pair, and revisions go on.
//! let again = RedbStore::open_url(&url).await?;
//! let pair = again.get("greeting").await?.expect("kept in the file");
//! assert_eq!((pair.value.as_ref(), pair.revision), (&b"hello"[..], rev));
//! assert!(again.put("greeting", "hi".into(), PutOptions::new()).await? > rev);
//! # Ok(())
//! # }
//! ```
//!
//! # URLs
//!
//! A `redb://` URL names the file, then the root:
//!
//! - `redb:///abs/dir/file.redb/app/x` — the file `/abs/dir/file.redb`,
//!   root `app/x`;
//! - `redb://./rel/dir/file.redb/app/x` — a path relative to the current
//!   directory (the host `.`);
//! - `redb:///abs/dir/file.redb?root=app/x` — the same root as a
//!   parameter.
//!
//! The file's path ends at its one segment ending in `.redb`: a file name
//! without that extension, a path with several such segments, a root
//! given both ways, any host but `.` (`redb://data/x.redb` would name the
//! host `data`), a user, password or port, a `.` or `..` segment, and an
//! unknown or repeated parameter are all `Config` errors saying what is
//! wrong. Path segments and the root are percent-decoded. A file the URL
//! form cannot name opens with [`RedbConfig`].
//!
//! Parameters: `durability` (`immediate`, the default, or `eventual`; see
//! [`Durability`]), `flush_interval` (`eventual`'s flush, default 100 ms),
//! `history` and `history_bytes` (what the file keeps for resuming
//! watches: the last [`DEFAULT_HISTORY`] changes and at most
//! [`DEFAULT_HISTORY_BYTES`] bytes by default), `max_value_size` (bytes,
//! default 16 MiB), `request_timeout` (how long a call waits out a frozen
//! file) and `connect_timeout` (taken, as every backend takes it; there
//! is nothing to connect to). `durability`, `flush_interval`, `history`
//! and `history_bytes` apply when the process first opens the file; later
//! stores on it share it as it is.
//!
//! # What is kept, and where
//!
//! Every store of the process opened on one file shares one open
//! database (a process-wide registry by canonical path): the data,
//! revisions, leases, locks and watches, as stores on one server do. The
//! file closes with its last store. Another process opening a file that is
//! open fails at once with `Unavailable` naming the file (redb's
//! `DatabaseAlreadyOpen`): one process serves a file at a time.
//!
//! Each write, a transaction too, is one redb write transaction,
//! committed with [`Durability::Immediate`] by default (an acknowledged
//! write survives a `kill -9` or a power cut). The file holds five tables: the pairs (value,
//! revision, wall-clock deadline, lease), the last revision and the
//! history's counters, the bounded history (revision → its changes), the TTL
//! deadlines, and the keys bound to leases. So:
//!
//! - revisions go on across restarts: never reused, no ABA;
//! - TTL deadlines are wall-clock times kept with each key: a key due
//!   while no process had the file open goes at the next open, with its
//!   own revision, `Delete` event and history entry (a system clock set
//!   back or forward moves those deadlines with it);
//! - watches resume from the history in the file, across restarts too;
//!   older starts yield `Compacted` from the stream;
//! - leases live in the process that granted them: closing or dropping
//!   the store revokes them, and at the first open of the file in a
//!   process every key still bound to a lease — left by a process that
//!   crashed — is deleted, each with its `Delete`, before the open
//!   returns. Locks are held by stores of one process (only one process
//!   has the file) and are released on close, drop and exit.
//!
//! # Transactions
//!
//! [`Store::txn`] is native: one redb write transaction on the file's
//! writer thread reads the compared keys, picks the branch, and writes all
//! of it at one new revision — pairs, TTL deadlines, lease bindings and one
//! history record holding every change — then commits it with the file's
//! durability. Only after the commit do watchers hear of it, every change
//! in one run under the lock that orders writes, so no event of another
//! revision comes between; TTL timers and lease bindings follow as for
//! `put` and `delete`. A put bound to a lease that is gone fails the whole
//! transaction with `LeaseLost` before anything is written. At most
//! [`MAX_TXN_OPS`] (128) compares, and as many operations per branch;
//! values as large as `put` takes. The first transaction that writes
//! several keys moves the file to anykv layout 2 (those history records),
//! which versions before transactions refuse to open, by name.
//!
//! File work runs on threads of the open file's own — one writer, which
//! keeps writes in the order they were asked, and two readers — never on
//! an async runtime's threads; calls wait for them without blocking. A
//! lease revoked by a drop deletes its keys on the dropping thread, after
//! telling a multi-thread Tokio runtime to move its other tasks away.
//! What this costs beside raw redb is measured in `PERF.md`: a synced
//! write costs what the disk's sync does plus some 70 µs; a read
//! about 5 µs, mostly the handoff to a reader thread. A malformed record
//! in the file is a `Backend` error naming it, never a panic.

#![deny(rustdoc::broken_intra_doc_links)]

mod batch;
mod codec;
mod config;
mod db;
mod read;
mod recover;
mod store;
mod tables;
mod txn;
mod workers;

use std::sync::Arc;

use anykv_core::{Store, Url};

pub use config::{
    Durability, RedbConfig, BACKEND, DEFAULT_FLUSH_INTERVAL, DEFAULT_HISTORY,
    DEFAULT_HISTORY_BYTES, DEFAULT_MAX_VALUE_SIZE, DEFAULT_REQUEST_TIMEOUT, FILE_EXTENSION,
    MAX_TXN_OPS, MIN_TTL,
};
pub use store::{compact, RedbStore};

/// Registers the `redb` scheme with [`anykv_core::registry`], so
/// `anykv_core::open("redb:///path/file.redb/root")` opens a
/// [`RedbStore`].
pub fn register() {
    anykv_core::register("redb", |url: Url| async move {
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(RedbConfig::from_url(&url)?).await?);
        Ok(store)
    });
}
