//! The etcd v3 backend of anykv.
//!
//! # Example
//!
//! Open a store by URL, put and get, watch a tree, take a lock (the same
//! code runs against a real server in `tests/front_page.rs`):
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use anykv_core::{LockOptions, PutOptions, Store, WatchEvent, WatchOptions};
//! use anykv_etcd::EtcdStore;
//! use futures::StreamExt;
//!
//! # #[tokio::main]
//! # async fn main() -> anykv_core::Result<()> {
//! #     front_page("etcd://127.0.0.1:2379/app?request_timeout=2s").await
//! # }
//! async fn front_page(url: &str) -> anykv_core::Result<()> {
//!     // The typed store, with etcd's own extras (members, compact, config).
//!     let store = EtcdStore::open_url(url).await?;
//!     // Or any backend by its URL, as `anykv::open` does: an `Arc<dyn
//!     // Store>` with a tracing span and metrics around every call.
//!     anykv_etcd::register();
//!     let shared = anykv_core::open(url).await?;
//!
//!     // Put and get: every write returns its revision.
//!     let rev = store
//!         .put("config/mode", "fast".into(), PutOptions::new())
//!         .await?;
//!     let pair = shared.get("config/mode").await?;
//!     assert_eq!(
//!         pair.map(|p| (p.value, p.revision)),
//!         Some(("fast".into(), rev))
//!     );
//!
//!     // Watch a tree: its current state (a `Put` per key), `Synced`,
//!     // then every change after it.
//!     let mut changes = shared.watch_tree("config", WatchOptions::new()).await?;
//!     let first = changes.next().await;
//!     assert!(matches!(first, Some(Ok(WatchEvent::Put(p))) if p.key == "config/mode"));
//!     let synced = changes.next().await;
//!     assert!(matches!(synced, Some(Ok(WatchEvent::Synced { .. }))));
//!     let rev = store
//!         .put("config/mode", "safe".into(), PutOptions::new())
//!         .await?;
//!     match changes.next().await {
//!         Some(Ok(WatchEvent::Put(pair))) => {
//!             assert_eq!((pair.key.as_str(), pair.revision), ("config/mode", rev));
//!         }
//!         other => panic!("expected the put, got {other:?}"),
//!     }
//!
//!     // A lock: held until released (or its lease is lost), exclusive
//!     // against every other client; its fencing token grows with each
//!     // holder.
//!     let options = LockOptions::new()
//!         .with_ttl(Duration::from_secs(10))
//!         .with_timeout(Duration::from_secs(5));
//!     let guard = store.lock("jobs/nightly", options).await?;
//!     let other = shared.try_lock("jobs/nightly", LockOptions::new()).await?;
//!     assert!(other.is_none());
//!     let token = guard.fencing_token();
//!     guard.release().await?;
//!     let next = shared.lock("jobs/nightly", LockOptions::new()).await?;
//!     assert!(next.fencing_token() > token);
//!     next.release().await?;
//!
//!     store.close().await?;
//!     shared.close().await
//! }
//! ```
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
//! | `connect_timeout=5s` | time to establish a connection (with a unit: `500ms`, `5s`, `1m30s`; a bare number is refused) |
//! | `request_timeout=5s` | time one request may take before it fails with `Timeout` |
//! | `tls=true` | TLS with the `etcd://` scheme (the same as `etcds://`) |
//! | `ca_file=/path/ca.pem` | the CA that signs the server's certificate |
//! | `cert_file=…&key_file=…` | a client certificate and its key, for mutual TLS |
//! | `domain=name` | the name the server's certificate is checked against |
//! | `max_txn_ops=64` | the most compares, and operations per branch, of one transaction: at most half the server's `--max-txn-ops` (see [Transactions](#transactions)) |
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
//! # A cluster
//!
//! List every member: `etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/app`.
//! The store keeps a connection to each member and, with more than one
//! endpoint, asks each for its status every [`PROBE_INTERVAL`] (500 ms):
//!
//! - Requests go to the leader while it answers (etcd serves every write
//!   and linearizable read through the leader anyway), else to the other
//!   members that answer, in turn. [`EtcdStore::members`] shows what the
//!   store knows of each endpoint.
//! - A member that does not answer its probe within [`PROBE_TIMEOUT`]
//!   (1 s), refuses connections, or has no leader is *down*: a member that
//!   freezes (a stopped process still accepts TCP connections, so nothing
//!   fails fast) is found down 1 to 1.5 s after it froze, and from then on
//!   costs nothing. A member that comes back is used again within about
//!   half a second.
//! - Before it is found down, a frozen member costs a read [`HEDGE_AFTER`]
//!   (250 ms): a read not answered by then is also sent to another member,
//!   and the first answer wins (and it is sent again when the members'
//!   health changes, e.g. a new leader is known). A *write* sent to it
//!   cannot be sent again (the member may still apply it when it
//!   resumes): it fails with `Unavailable` once the member is found down,
//!   or names a new leader (a write it forwarded to the old one is lost),
//!   and the write waited at least [`PROBE_TIMEOUT`] (or with `Timeout` if
//!   the request timeout comes first). A write
//!   is sent again, to another member, only when it certainly was not
//!   applied: it could not be sent, or the member refused it for want of
//!   a leader.
//! - A frozen *follower* costs nothing at all while the leader answers:
//!   no request goes to it (measured: get p99 the same as with every
//!   member up). A killed or frozen *leader* costs what the election costs
//!   (measured with etcd's default 1 s election timeout: writes land again
//!   1 to 2.6 s after a kill, about as long as the election; about 2.3 s
//!   after a freeze, as the other members first wait out the election
//!   timeout): writes in flight fail with `Timeout` or `Unavailable`, and
//!   no linearizable read can be served anywhere until a new leader is
//!   elected (reads wait for it, within the request timeout).
//! - Watches and lease keep-alives each use one stream on one member; when
//!   it breaks or its member is found down, the stream moves to another
//!   member: every watch resumes after the last revision it delivered
//!   (nothing lost, nothing twice), and keep-alives go on, so leases and
//!   locks outlive a frozen follower and a leader change.
//! - `open` tries every endpoint at once and succeeds as soon as one
//!   member answers, so a first endpoint that is dead or frozen costs it
//!   nothing.
//!
//! With a single endpoint nothing is probed, and every request goes to it.
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
//! Every capability is on, transactions included (`max_txn_ops` is
//! [`EtcdConfig::max_txn_ops`], see below). `min_ttl` is [`MIN_TTL`] (2 s), etcd's smallest
//! lease (TTLs are rounded up to whole seconds). `max_value_size` is
//! [`MAX_VALUE_SIZE`], below etcd's default request limit of 1.5 MiB with
//! room for the key. Revisions are etcd's mod revisions, so
//! `watch_every_revision` and `watch_resume` hold.
//!
//! # Transactions
//!
//! `Store::txn` is native: one etcd `Txn`, so
//! every write of a transaction has the one etcd revision and a watcher
//! receives its events together, in one watch response. Compares map to
//! etcd compares (`Revision` on the mod revision, `Absent`/`Present` on the
//! create revision, `Value` on the value). etcd does not say which compare
//! failed, so the failure branch also reads each compared key, atomically
//! with its own operations; the first compare that does not hold on those
//! reads is `failed_compare` (the reads are not among the results). A TTL
//! put gets its own lease, granted before the transaction for both
//! branches; the leases of the branch that did not run are revoked. A put
//! on a lease that is gone makes etcd refuse the whole transaction:
//! `LeaseLost`, nothing written. A transaction with no put or delete is
//! sent as a read (hedged, retried).
//!
//! Limits and costs:
//!
//! - At most [`DEFAULT_MAX_TXN_OPS`] (64) compares, and as many operations
//!   per branch: half of etcd's default `--max-txn-ops` of 128, which etcd
//!   counts per branch and which the failure branch's reads of the
//!   compared keys share. For a server run with another `--max-txn-ops`,
//!   set the `max_txn_ops` URL parameter ([`EtcdConfig::max_txn_ops`]) to
//!   half of it; a server whose limit is below twice that refuses large
//!   transactions with `InvalidArgument`.
//! - All keys and values of one transaction travel in one request of at
//!   most etcd's default `--max-request-bytes` (1.5 MiB): two values near
//!   [`MAX_VALUE_SIZE`] do not fit one transaction (`InvalidArgument`,
//!   before anything is sent).
//! - Each TTL put costs a lease grant before the transaction; with many
//!   compares and many TTL puts in the failure branch, their TTL markers
//!   are written in one more request just before it.
//!
//! # Status and metrics
//!
//! `Store::status` asks every endpoint for etcd's maintenance `Status` at
//! once, each within the request timeout: its version and role (`leader`,
//! `follower`, `learner`), or the error of one that did not answer (the
//! call fails only when none does). The details carry the cluster id, the
//! leader, and per member (prefixed with its address) its member id,
//! database size, raft term and indexes. The background work counts
//! `anykv_reconnects_total`, `anykv_keepalive_failures_total` and
//! `anykv_watch_resumes_total` (label `backend="etcd"`) through the
//! `metrics` crate and logs with target `anykv_etcd`.
//!
//! # Design
//!
//! Each module's documentation says how its part works: `members` (a
//! connection and a health probe per endpoint, and the choice of member),
//! `client` (deadlines, retries and hedged reads), `store` (writes
//! as single puts or transactions, `delete_tree` key by key), `txn`
//! (multi-key transactions as one etcd `Txn`), `watch` (one
//! multiplexed etcd watch stream per store, shared feeds, resuming after a
//! reconnect), `lease` (keep-alives, `lost()` before the server can expire
//! a lease, TTL keys) and `lock` (etcd's mutex recipe, fencing tokens).
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
//! - A TTL key has a lease of its own. A plain `put` over it retires that
//!   lease at once when this store wrote the TTL (it then asks etcd for
//!   the previous pair, which names the lease; other plain puts do not,
//!   as that costs a put about a tenth of its speed). Over a TTL key that
//!   another store wrote, the old lease stays until its TTL ends, bound
//!   to nothing but its marker, and then expires.
//! - [`compact`] (the conformance suite's hook) compacts the whole etcd
//!   cluster, not just the store's root.
//! - A write whose outcome is unknown (it timed out, or its connection
//!   broke) is never sent again: it fails with `Timeout` or
//!   `Unavailable`. One that certainly was not applied (it could not be
//!   sent, or the member had no leader) is tried again, on another member
//!   when there is one, within the request timeout, as are reads that fail
//!   with `Unavailable`.
//! - Each store probes each of its members twice a second (with several
//!   endpoints): a process with many stores on one cluster sends that
//!   many status requests.

#![deny(rustdoc::broken_intra_doc_links)]

mod background;
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
mod txn;
mod watch;

use std::sync::Arc;

use anykv_core::{Store, Url};

pub use client::HEDGE_AFTER;
pub use config::{
    EtcdConfig, TlsConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_TXN_OPS, DEFAULT_REQUEST_TIMEOUT,
};
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
