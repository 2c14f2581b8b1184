//! The etcd v3 backend of anykv.
//!
//! # URL
//!
//! ```text
//! etcd://[user:password@]host:port[,host:port...]/root[?param=value&...]
//! etcds://[user:password@]host:port[,host:port...]/root[?param=value&...]     (TLS)
//! ```
//!
//! | parameter | meaning |
//! |---|---|
//! | `endpoints=h2:p2,h3:p3` | more endpoints besides the URL's host(s) |
//! | `connect_timeout=5s` | time to establish a connection (`ms`, `s`, `m`; a plain number is seconds) |
//! | `request_timeout=5s` | time one request may take before it fails with `Timeout` |
//! | `tls=true` | TLS with the `etcd://` scheme (the same as `etcds://`) |
//! | `ca_file=/path/ca.pem` | the CA that signs the server's certificate |
//! | `cert_file=…&key_file=…` | a client certificate and its key, for mutual TLS |
//! | `domain=name` | the name the server's certificate is checked against |
//!
//! [`EtcdStore::open_url`] and `anykv::open` (both through
//! `anykv_core::parse_url`) turn the servers after the first into the
//! `endpoints` parameter, so `etcd://h1:2379,h2:2379/root` and
//! `etcd://h1:2379/root?endpoints=h2:2379` are the same. A server without
//! a port gets 2379.
//!
//! The same settings are available as a typed builder, [`EtcdConfig`]. A
//! password never appears in `Debug` output or in errors.
//!
//! ```no_run
//! # async fn demo() -> anykv_core::Result<()> {
//! use std::time::Duration;
//! use anykv_etcd::{EtcdConfig, EtcdStore};
//! use anykv_core::Store;
//! let store = EtcdStore::open(
//!     EtcdConfig::new(["127.0.0.1:2379"])
//!         .with_root("app")
//!         .with_user("root", "secret")
//!         .request_timeout(Duration::from_secs(2)),
//! )
//! .await?;
//! store.put("services/web", "10.0.0.1:80".into(), Default::default()).await?;
//! let same = EtcdStore::open_url("etcd://root:secret@127.0.0.1:2379/app").await?;
//! assert!(same.get("services/web").await?.is_some());
//! # Ok(()) }
//! ```
//!
//! # Key layout
//!
//! User key `k` of root `app` is the etcd key `app/k`. The backend's
//! bookkeeping (lock holders, TTL markers) lives under `\0anykv/`, a
//! prefix no user key can have, so no `list` or watch of user keys ever
//! sees it. The details are in the `layout` module's source.
//!
//! # Capabilities
//!
//! Every capability is on. `min_ttl` is [`MIN_TTL`] (2 s), etcd's smallest
//! lease (TTLs are rounded up to whole seconds). `max_value_size` is
//! [`MAX_VALUE_SIZE`], below etcd's default request limit of 1.5 MiB with
//! room for the key. Revisions are etcd's mod revisions, so
//! `watch_every_revision` and `watch_resume` hold.
//!
//! # Design
//!
//! Each module's documentation says how its part works: `store` (writes
//! as single puts or transactions, `delete_tree` key by key), `watch` (one
//! multiplexed etcd watch stream per store, shared feeds, resuming after a
//! reconnect), `lease` (keep-alives, `lost()` before the server can expire
//! a lease, TTL keys), `lock` (etcd's mutex recipe, fencing tokens) and
//! `client` (deadlines and retries).
//!
//! # Limits
//!
//! - A [`Lease`](anykv_core::Lease) that *expires* (its keep-alive stopped
//!   for longer than its TTL, so the client could not act) has all its
//!   keys deleted by etcd at one revision; a watcher then receives every
//!   one of those `Delete` events, all with the same revision (as it does
//!   for each key of a multi-key transaction written by another etcd
//!   client). Revoke, drop and close delete the keys one by one first, and
//!   TTL keys each have a lease of their own, so only expiry (and foreign
//!   writers) produce such events.
//! - [`compact`] (the conformance suite's hook) compacts the whole etcd
//!   cluster, not just the store's root.
//! - A write that times out is never retried; one that could not be sent
//!   (no connection to that endpoint) is tried again within the request
//!   timeout, as are reads that fail with `Unavailable`.

#![deny(rustdoc::broken_intra_doc_links)]

mod client;
mod config;
mod errors;
mod layout;
mod lease;
mod lock;
mod members;
mod state;
mod store;
mod tls;
mod watch;

use std::sync::Arc;

use anykv_core::{Store, Url};

pub use client::HEDGE_AFTER;
pub use config::{EtcdConfig, TlsConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};
pub use lease::MIN_TTL;
pub use members::{MemberStatus, PROBE_INTERVAL, PROBE_TIMEOUT};
pub use store::{compact, EtcdStore, MAX_VALUE_SIZE};

/// Registers `etcd://` and `etcds://` with `anykv_core::registry`.
pub fn register() {
    for scheme in ["etcd", "etcds"] {
        anykv_core::register(scheme, |url: Url| async move {
            let store: Arc<dyn Store> =
                Arc::new(EtcdStore::open(EtcdConfig::from_url(&url)?).await?);
            Ok(store)
        });
    }
}
