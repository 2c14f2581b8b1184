//! The core of anykv: the [`Store`] trait every backend implements, its
//! types and errors, the key rules, capabilities, and the URL registry.
//!
//! Applications usually depend on the `anykv` facade crate, which re-exports
//! all of this and registers the built-in backends. Backend authors depend on
//! this crate and prove their backend with `anykv-conformance`.
//!
//! ```
//! use std::time::Duration;
//! use anykv_core::{PutOptions, Store, WatchEvent, WatchOptions};
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anykv_core::Result<()> {
//! let store = anykv_memory::MemoryStore::new();
//! let rev = store.put("config/db/url", "postgres://db".into(), PutOptions::new()).await?;
//! let pair = store.get("/config/db/url/").await?.expect("just written");
//! assert_eq!(pair.revision, rev);
//!
//! // Compare-and-swap on the revision.
//! let rev2 = store.atomic_put("config/db/url", "postgres://db2".into(), Some(rev), PutOptions::new()).await?;
//! assert!(rev2 > rev);
//!
//! // A watch: the current state, `Synced`, then every change.
//! let mut events = store.watch_tree("config", WatchOptions::new()).await?;
//! assert!(matches!(events.next().await, Some(Ok(WatchEvent::Put(_)))));
//! assert!(matches!(events.next().await, Some(Ok(WatchEvent::Synced { .. }))));
//! store.delete("config/db/url").await?;
//! assert!(matches!(events.next().await, Some(Ok(WatchEvent::Delete { .. }))));
//!
//! // A lock with a fencing token.
//! let guard = store.lock("jobs/nightly", Default::default()).await?;
//! assert!(guard.fencing_token() > 0);
//! guard.release().await?;
//! # let _ = Duration::ZERO;
//! # Ok(())
//! # }
//! ```
//!
//! # The contract
//!
//! Every backend behaves as below; the conformance suite checks each rule.
//! A backend that cannot do something says so in its [`Capabilities`] and
//! refuses it with [`Error::Unsupported`]; nothing is silently ignored.
//!
//! ## Keys
//!
//! See [`key`]: canonical form without leading or trailing `/`, strict
//! validation before anything is sent, no character interpreted as a
//! pattern, `a` and `a/b` independent, prefix operations on segment
//! boundaries. Every store is opened on a root; nothing outside it can be
//! read, written or watched through it, and a backend's bookkeeping (locks,
//! leases, change logs) never shows through `get`, `list` or watches.
//!
//! ## Values
//!
//! Arbitrary bytes round-trip exactly. Every backend stores at least
//! 1,000,000 bytes; [`Capabilities::max_value_size`] gives the real maximum,
//! and a larger value fails with [`Error::ValueTooLarge`] before anything is
//! sent.
//!
//! ## Revisions
//!
//! Every pair carries a `revision`, never 0. Each successful write of a key
//! gives it a revision greater than any it ever had, across delete and
//! re-create (no ABA). Revisions of one store are ordered across keys: of two
//! writes where one completed before the other started, the later has the
//! larger revision. `put` and `atomic_put` return the new revision.
//!
//! ## Watch
//!
//! A [`WatchStream`] yields `Result<WatchEvent>`:
//! - without a start revision: one `Put` per existing key in key order,
//!   then `Synced`, then every later change in order; a watch on something
//!   absent delivers just `Synced`, then the key when it appears;
//! - revisions strictly increase after `Synced`, and no event comes twice;
//! - deletes, `delete_tree`, TTL expiry and lease loss are `Delete` events;
//! - when writes stop, the last event of each key is its current state;
//! - with [`Capabilities::watch_every_revision`] every put is delivered;
//!   without it intermediate values may be skipped, never the final state,
//!   never a standing delete, never out of order;
//! - [`WatchOptions::from_revision`] resumes after a revision, or yields
//!   [`Error::Compacted`] and ends when that history is gone;
//! - never silently lossy: after a reconnect the stream resumes, or re-reads
//!   and emits the differences and a new `Synced`, or yields an error and
//!   ends; a consumer that falls behind its buffer gets
//!   [`Error::WatchLagged`] and the stream ends;
//! - dropping the stream frees what it held; [`Store::close`] ends it.
//!
//! ## Transactions
//!
//! [`Store::txn`] runs a [`Txn`]: compares on any keys of the root, then
//! one of two lists of puts, deletes and gets, atomically, every write at
//! one revision, seen by watchers together. See [`txn`] for the rules and
//! [`optimistic`] for read-modify-write on top.
//!
//! ## TTL, leases and locks
//!
//! A TTL key vanishes after its TTL unless written again, and watchers see
//! a `Delete`. A [`Lease`] is a TTL shared by many keys and kept alive while
//! its handle lives. A [`LockGuard`] is held by at most one client at a time
//! while its lease lives, carries a strictly increasing fencing token, and
//! reports loss through [`LockGuard::lost`].
//!
//! ## Errors
//!
//! One [`Error`] type; [`Error::kind`] for comparisons, and
//! [`Error::is_retryable`]. A write that fails with `Timeout` or
//! `Unavailable` may have been applied.

#![deny(rustdoc::broken_intra_doc_links)]

pub mod backend;
mod error;
pub mod fanout;
mod handles;
pub mod key;
pub mod observe;
pub mod optimistic;
pub mod registry;
mod store;
pub mod txn;
mod types;

pub use error::{BoxError, Error, ErrorKind, Result};
pub use handles::{lost_signal, waited_for, Lease, LockGuard, LostSignal, LostTrigger, Release};
pub use registry::{
    open, parse_duration_param, parse_param, parse_url, redact_url, register, url_credentials,
    url_params, url_root,
};
pub use store::Store;
pub use txn::{Compare, Txn, TxnOp, TxnOpResult, TxnResponse, DEFAULT_MAX_TXN_OPS};
pub use types::{
    check_ttl, Capabilities, KvPair, LeaseId, ListOptions, LockOptions, PutOptions, ServerStatus,
    StoreStats, StoreStatus, WatchEvent, WatchOptions, WatchStream, DEFAULT_LOCK_TTL,
    DEFAULT_WATCH_BUFFER, MAX_TTL, MAX_WATCH_BUFFER,
};

/// Re-exported so backends and users name the same versions.
pub use async_trait::async_trait;
/// Re-exported so backends and users name the same versions.
pub use bytes::Bytes;
/// Re-exported so backends and users name the same versions.
pub use url::Url;
