//! anykv: one async key-value [`Store`] trait over etcd, ZooKeeper, Redis
//! and an in-process store, chosen at run time by URL, with one conformance
//! suite that proves every backend behaves the same.
//!
//! ```
//! use std::time::Duration;
//! use anykv::{PutOptions, WatchEvent, WatchOptions};
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anykv::Result<()> {
//! // Pick the backend at run time: memory://, etcd://, redis://, zk://, redb://.
//! let store = anykv::open("memory://docs/app").await?;
//!
//! let rev = store.put("services/web/1", "10.0.0.1:80".into(), PutOptions::new()).await?;
//! assert_eq!(store.get("services/web/1").await?.unwrap().revision, rev);
//!
//! // Watch a tree: current state, Synced, then every change.
//! let mut watch = store.watch_tree("services", WatchOptions::new()).await?;
//! assert!(matches!(watch.next().await, Some(Ok(WatchEvent::Put(_)))));
//! assert!(matches!(watch.next().await, Some(Ok(WatchEvent::Synced { .. }))));
//!
//! // A key bound to a lease vanishes with it.
//! let lease = store.grant_lease(Duration::from_secs(10)).await?;
//! store.put("services/web/2", "10.0.0.2:80".into(), PutOptions::new().with_lease(lease.id())).await?;
//! assert!(matches!(watch.next().await, Some(Ok(WatchEvent::Put(_)))));
//! lease.revoke().await?;
//! assert!(matches!(watch.next().await, Some(Ok(WatchEvent::Delete { .. }))));
//!
//! // Compare-and-swap, locks with fencing tokens.
//! let err = store.atomic_put("services/web/1", "x".into(), Some(rev + 100), PutOptions::new()).await.unwrap_err();
//! assert_eq!(err.kind(), anykv::ErrorKind::KeyModified);
//! let guard = store.lock("jobs/nightly", Default::default()).await?;
//! println!("holding the lock with fencing token {}", guard.fencing_token());
//! guard.release().await?;
//! store.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! The contract every backend keeps is described in the
//! [`anykv_core`] documentation and in `docs/contract.md`.
//!
//! # Features
//!
//! - `memory` (default): the in-process backend, `memory://name/root`.
//! - `etcd`: etcd v3, `etcd://host:port[,host:port...]/root`.
//! - `redis`: Redis, `redis://host:port/db/root`; with Sentinels
//!   `redis+sentinel://s1:26379,s2:26379/master/db/root`; a Cluster
//!   `redis+cluster://h1:7000,h2:7001/root`; `rediss…` for TLS.
//! - `zookeeper`: ZooKeeper 3.6+, `zk://host:port[,host:port...]/chroot`.
//! - `recipes` (default): [`recipes`], a list-then-watch cache, leader
//!   election, a service registry and discovery, and on transactions a
//!   queue, a semaphore, a double barrier and a counter, on every backend.
//! - `redb`: a redb file, no server, `redb:///abs/dir/file.redb/root` or
//!   `redb://./rel/dir/file.redb/root` (needs Rust 1.90).

#![deny(rustdoc::broken_intra_doc_links)]

use std::sync::{Arc, Once};

pub use anykv_core::*;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The in-process backend.
#[cfg(feature = "memory")]
pub use anykv_memory as memory;

/// The etcd backend.
#[cfg(feature = "etcd")]
pub use anykv_etcd as etcd;

/// The Redis backend.
#[cfg(feature = "redis")]
pub use anykv_redis as redis;

/// The ZooKeeper backend.
#[cfg(feature = "zookeeper")]
pub use anykv_zookeeper as zookeeper;

/// Recipes over any [`Store`]: a list-then-watch cache, leader election,
/// a service registry and discovery; a FIFO queue, a counting semaphore, a
/// double barrier and an atomic counter.
#[cfg(feature = "recipes")]
pub use anykv_recipes as recipes;
/// The redb (file) backend.
#[cfg(feature = "redb")]
pub use anykv_redb as redb;

/// Registers the backends this build of anykv was compiled with (see the
/// crate's features). [`open`] calls it; call it yourself only before using
/// [`anykv_core::registry`] directly.
pub fn register_builtin_backends() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(feature = "memory")]
        anykv_memory::register();
        #[cfg(feature = "etcd")]
        anykv_etcd::register();
        #[cfg(feature = "redis")]
        anykv_redis::register();
        #[cfg(feature = "zookeeper")]
        anykv_zookeeper::register();
        #[cfg(feature = "redb")]
        anykv_redb::register();
    });
}

/// Opens the store a URL names: `memory://name/root`, or any scheme a
/// third-party backend registered with [`register`]. Bad URLs fail with
/// [`Error::Config`] saying what is wrong, never showing a password.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    register_builtin_backends();
    anykv_core::open(url).await
}
