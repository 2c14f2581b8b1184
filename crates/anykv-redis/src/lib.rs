//! The Redis backend of anykv.
//!
//! Redis has no revisions, no prefix index and no reliable change feed, so
//! this backend builds them on the server, atomically, with Lua scripts:
//! every write is one script that bumps a revision counter, stores the
//! value with its revision, maintains a sorted index of the keys and
//! appends a change record to a Redis stream. Nothing depends on keyspace
//! notifications or `CONFIG SET`, and nothing ever scans the keyspace.
//!
//! A key is one Redis string: a short header (revision, TTL deadline,
//! lease) and then the value, so `get` is a single plain `GET`. Writes
//! that arrive while earlier ones are on their way to the server (at most
//! two script runs at once) go out together in one run of the write
//! script, each with its own revision, change record and result: at high
//! concurrency the server pays the script's fixed cost and the failover
//! check once per run, not once per write. A namespace written by an
//! earlier version in its earlier layout (a hash per key) is refused at
//! open with a `Config` error that names the layout; it is left as it was.
//!
//! Open a store by URL, write and read, watch a tree and take a lock
//! (`tests/front_page.rs` runs this same code against a real server):
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use anykv_core::{LockOptions, PutOptions, Store, WatchEvent, WatchOptions};
//! use anykv_redis::RedisStore;
//! use futures::StreamExt;
//!
//! async fn front_page(url: &str) -> anykv_core::Result<()> {
//!     let store = RedisStore::open_url(url).await?;
//!
//!     // Every write returns the revision it made; reads return it too.
//!     let first = store
//!         .put("config/mode", "fast".into(), PutOptions::new())
//!         .await?;
//!     let pair = store.get("config/mode").await?.expect("just written");
//!     assert_eq!((&pair.value[..], pair.revision), (&b"fast"[..], first));
//!
//!     // A watch of a tree: its current keys, `Synced`, then every change.
//!     let mut changes = store.watch_tree("config", WatchOptions::new()).await?;
//!     assert!(matches!(changes.next().await, Some(Ok(WatchEvent::Put(kv))) if kv.revision == first));
//!     assert!(matches!(
//!         changes.next().await,
//!         Some(Ok(WatchEvent::Synced { .. }))
//!     ));
//!     let second = store
//!         .put("config/mode", "safe".into(), PutOptions::new())
//!         .await?;
//!     match changes.next().await {
//!         Some(Ok(WatchEvent::Put(kv))) => {
//!             assert_eq!((kv.key.as_str(), kv.revision), ("config/mode", second))
//!         }
//!         other => panic!("expected the change, got {other:?}"),
//!     }
//!
//!     // A lock: held (and kept alive) until released; waiting at most 5 s.
//!     let options = LockOptions::new()
//!         .with_ttl(Duration::from_secs(10))
//!         .with_timeout(Duration::from_secs(5));
//!     let guard = store.lock("jobs/nightly", options).await?;
//!     assert!(store
//!         .try_lock("jobs/nightly", LockOptions::new())
//!         .await?
//!         .is_none());
//!     guard.release().await?;
//!
//!     store.close().await
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anykv_core::Result<()> {
//! #     front_page("redis://127.0.0.1:6379/0/app?request_timeout=2s").await
//! # }
//! ```
//!
//! # URLs
//!
//! One server:
//! `redis[s]://[user:password@]host[:port][/db[/root...]][?params]`
//!
//! Sentinel (the primary the Sentinels know as `master-name`, found again
//! after every failover):
//! `redis[s]+sentinel://[user:password@]sentinel[:port][,sentinel[:port]...]/master-name[/db[/root...]][?params]`
//! (a Sentinel's port defaults to 26379)
//!
//! Cluster (database 0 only; the nodes are seeds, the rest is found):
//! `redis[s]+cluster://[user:password@]node[:port][,node[:port]...][/root...][?params]`
//!
//! - The `s` forms are TLS (rustls with the ring provider, which the
//!   backend installs as the process's default if none is installed yet),
//!   for the Sentinels and the data servers alike; `ca_file=/path/ca.pem`
//!   trusts that CA instead of the system's roots.
//! - `user:password` authenticates an ACL user on the data servers;
//!   `:password` (no user) the default user of a server with
//!   `requirepass`. Sentinels with a password of their own take
//!   `sentinel_password=...` (and `sentinel_user=...` for an ACL user); no
//!   message or `Debug` output shows either password.
//! - For one server the first path segment is the database number
//!   (default `0`); for Sentinel the first is the master's name and the
//!   second the database number; the rest is the root. `prefix=a/b` puts
//!   that root under `a/b`.
//! - `namespace=name` (default `anykv`): the key prefix of everything this
//!   backend stores, `{name}:`. Stores of one namespace share revisions,
//!   the key index and the change stream; roots nest inside it.
//! - `request_timeout` (default `5s`): how long one call may take before it
//!   fails with `Timeout`; `connect_timeout` (default `2s`). Durations
//!   carry a unit (`250ms`, `5s`, `1m30s`), as for every backend; a bare
//!   number is a `Config` error.
//! - `wait_replicas=N` (default 0) and `wait_timeout` (default `500ms`,
//!   less than `request_timeout`): every write, lock and lease operation
//!   waits (`WAIT`) until `N` replicas have it. One that gets fewer fails
//!   with `Unavailable` saying it was applied on the primary but may be
//!   lost in a failover (a lock so taken is given back).
//! - `history` (default 10,000): changes kept in the change stream; a watch
//!   can resume from any of them.
//! - `max_value_size` (default 16 MiB).
//! - A `redis://` URL naming several servers (`a:6379,b:6379`) is a
//!   `Config` error: use the Sentinel or Cluster form.
//!
//! [`RedisConfig`] is the same as a typed builder ([`RedisConfig::new`],
//! [`RedisConfig::sentinel`], [`RedisConfig::cluster`]);
//! [`RedisStore::open`] and [`RedisStore::open_url`] open a store, and
//! [`register`] adds the [`SCHEMES`] to `anykv::open`.
//!
//! # What each deployment promises
//!
//! "Lost" below means the primary dies (or restarts) before its replica
//! or its append-only file has a write. A failover is the promotion of a
//! replica by the Sentinels or the Cluster.
//!
//! | | one server | Sentinel | Sentinel, `wait_replicas=1` | Cluster (with or without `wait_replicas`, as Sentinel) |
//! |---|---|---|---|---|
//! | after a failover | — (the store reconnects to the same address) | the store finds the new primary by itself: `READONLY` or a dropped connection is a retryable `Unavailable`, writes the server refused unexecuted are sent again within the timeout | the same | the cluster client follows the slot map (`MOVED` is retried the same way) |
//! | an acknowledged write survives the primary's loss | only with `appendfsync always`; with `everysec` the last second can be lost in a crash | **no**: what the replica had not received is lost | **yes**, when the promoted replica is one that acknowledged it (with one replica, always); a write whose `WAIT` fell short fails with `Unavailable` ("applied on the primary, may be lost") | as Sentinel without / with `wait_replicas` |
//! | a revision, fencing token or lease id is never handed out twice | yes, also after a restart that lost writes (while the user may run `INFO`; see below) | yes (the failover check) | yes | yes |
//! | a compare-and-swap expecting a revision that the lost writes had handed out | fails (`KeyModified`/`KeyNotFound`) | fails | fails | fails |
//! | watches | deliver every change, or end with an error: `Compacted` when they saw revisions that were lost | the same | the same | the same |
//! | two holders of a lock never both believe they hold it | yes while the lock's key lives; a lock taken or extended in the second before a crash may be lost with it | **no** for a lock taken or extended just before the loss: another client can take it on the new primary before the holder's store reaches it (which then checks every lock at once, and `lost()` fires: in the tests 2.3-2.4 s after the kill, up to 95 ms after another client took the lock) | **yes**: a lock, and each extension, counts only once a replica has it; after a failover the key is still there, so nobody else gets it before its holder lost it | as Sentinel without / with `wait_replicas` |
//! | unavailable during a failover | until the server is back | until the Sentinels promote the replica (`down-after-milliseconds` plus the election) and the store asks them again: 2.2-2.3 s in the tests (1 s down-after) | also while no replica acknowledges: with one replica, writes, locks and leases fail until the old primary is back as a replica (12.4 s in the tests, most of it the Sentinels' 10 s `INFO` period before they reconfigure it) | until the cluster promotes the replica (`cluster-node-timeout` plus the election): 2.2-2.6 s in the tests (1 s node timeout); with `wait_replicas=1`, also until the old primary is back as a replica (2.4-3.0 s) |
//! | capacity | one server | one primary | one primary | **one shard per namespace**: every key of a namespace carries its `{ns}` hash tag, so it lives in one hash slot and its scripts run atomically on one node; spread load over shards with several namespaces |
//!
//! Not promised anywhere: a split brain. An old primary that still takes
//! writes while the Sentinels promote another (a network partition, or a
//! restarted old primary before the Sentinels turn it into a replica)
//! acknowledges writes that the promotion discards, and the revisions it
//! hands out may be handed out again by the new primary; with
//! `wait_replicas` such writes are never acknowledged (the isolated
//! primary has no replica), but reads and watches on it may show them.
//! Lock safety also assumes that the servers' and the clients' clocks run
//! at the same rate (a lock's expiry is the server's, its holder's
//! deadline the client's).
//!
//! # The failover check
//!
//! Before a script hands out a revision, a fencing token or a lease id,
//! it reads the server's replication id (`master_replid` of `INFO
//! replication`) and compares it with the one the namespace's counters
//! were last checked under (`{ns}:replid`). A different one means the
//! server may lack history other servers acknowledged (a promoted replica
//! that lagged, a restart that lost the end of the append-only file): the
//! revision counter, the fencing token counter and the lease id counter
//! then jump by [`FAILOVER_GAP`] (2^32), past anything the lost history
//! can have handed out, and a fence record in the change stream tells
//! watches which revisions were lost: a watch that saw any of them ends
//! with `Compacted`, the others go on. Redis gives a server a new
//! replication id on every promotion and every restart, so revisions jump
//! after each, whether or not anything was lost. A holder learns that its
//! lock or lease is gone as soon as its store's calls succeed again after
//! failing: every keep-alive then refreshes at once. Revisions stay exact
//! (Lua's numbers are doubles) below 2^53: about two million failovers or
//! restarts.
//!
//! The check costs one `INFO replication` and one `GET` inside each script
//! that hands out a number: about 2 µs of server time. Measured on a
//! shared two-core machine (`redis-benchmark`, the put script alone): 5.6
//! to 6.3 µs of server time per put without the check, 7.5 to 8.2 µs with
//! it; `anykv-bench` put at 64 tasks, where the server is the limit, moved
//! within that machine's noise (84,000-96,000 puts a second before, 89,000
//! to 91,000 after). `INFO` is the only way a script can learn the
//! replication id; a cheaper check that trusts the client to know when its
//! connection reached another server would miss a Cluster that moved a
//! slot without any of the store's calls failing, so it is not exact.
//!
//! `wait_replicas` costs a round trip to the replicas per write: with one
//! replica on the same machine, a put at one task took about 120 µs
//! instead of 75, and at 64 tasks about half as many puts a second went
//! through (31,000 against 58,000-60,000).
//!
//! # Capabilities and why
//!
//! Everything is on: `watch`, `watch_every_revision` (the stream records
//! every put with its value), `watch_resume` (a watch resumes from any
//! revision still in the stream; older starts yield `Compacted`), `ttl`,
//! `leases`, `locks`, `transactions` (see below). `min_ttl` is 1 s ([`MIN_TTL`]): TTLs are enforced by
//! the server's clock for every read at once, but keys are removed (and
//! their `Delete` events written) by a sweep that each open store runs
//! every [`SWEEP_INTERVAL`], and leases and locks are kept alive every
//! third of their TTL. `max_value_size` is the configured maximum (16 MiB
//! by default); values are also kept in the change stream, so
//! `history * typical value size` is the stream's memory.
//!
//! The `Delete` events (and the memory) of expired keys wait until some
//! store of that namespace is open; reads never see expired keys.
//!
//! Each store keeps one connection for calls and, while it has a watch or
//! a waiting `lock()`, one for the change-stream reader that serves all of
//! its watches (for a Cluster: a cluster connection each, which holds one
//! per node). With `wait_replicas` it keeps eight more for the writes that
//! wait, taken in turn: `WAIT` holds up every later command of its
//! connection until the replicas answer, so reads and other writes do not
//! queue behind it. A server that lost all its writes (restarted without
//! persistence, flushed) starts the namespace over: every watch then ends
//! with `Compacted`. A reader that cannot read for the larger of three
//! `request_timeout`s and 15 s ends every watch with `Unavailable`.
//!
//! # Transactions
//!
//! [`Store::txn`] is native: one Lua script, so
//! atomic on the server like every write. It evaluates the compares in
//! order, picks the branch (both are sent), checks that the lease of
//! every leased put is live (else `LeaseLost`, nothing written), and
//! only then writes: the revision counter moves once, every put and
//! delete is stored at that revision (TTLs and leases exactly as `put`
//! stores them), and each written key gets its own change record,
//! `{rev}-0`, `{rev}-1`, ... in the branch's order, contiguous in the
//! stream, so watches deliver a transaction's changes together and a
//! resume from its revision skips all of them. Gets read the keys as they
//! were before it. It runs the failover check and, with `wait_replicas`,
//! waits for the replicas as `atomic_put` does; a reply lost on the way is
//! `Timeout` or `Unavailable` (it may have been applied, wholly or not at
//! all). On a Cluster every key it touches is in the namespace's slot, so
//! any keys of one store can be in one transaction. Limits: 128 compares
//! and 128 operations per branch (`max_txn_ops`; the server has no limit
//! of its own), and [`MAX_TXN_BYTES`] (256 MiB) of keys and values per
//! transaction, both branches counted. A key that the branch puts or
//! deletes while it is past its TTL deadline but not yet swept is first
//! deleted with a revision of its own (its `Delete` event comes just
//! before the transaction's), as `put` does; compares and gets see it as
//! absent.
//!
//! # Server requirements
//!
//! Redis 7.0 or later (scripts that call `TIME` before writing, `XADD`
//! with `<ms>-*` IDs, exclusive stream ranges). An ACL user needs the key
//! pattern `~{ns}:*` and the commands `EVALSHA`, `SCRIPT|LOAD`, `XREAD`,
//! `SELECT` (a database other than 0), `GET` (`get` sends it directly),
//! plus those the scripts call: `TIME INCR GET MGET GETRANGE SET PTTL PEXPIRE
//! DEL ZADD ZREM ZSCORE ZRANGEBYLEX ZRANGEBYSCORE SADD SREM SMEMBERS XADD
//! XRANGE XREVRANGE EXISTS`, and `INFO` for the failover
//! check. On one server `INFO` may be forbidden: the store then opens
//! without the check (and logs a warning), and a restart that loses
//! writes may make it hand out revisions again; Sentinel and Cluster
//! stores refuse to open without it (`PermissionDenied`). With
//! `wait_replicas` the user also needs `WAIT`; Sentinel also needs `INFO`
//! to confirm the primary, and the Sentinels `SENTINEL
//! get-master-addr-by-name`; a Cluster user needs `CLUSTER SLOTS` (the
//! cluster client reads the slot map). [`RedisStore::compact`] also needs
//! `XTRIM`. `KEYS`, `SCAN` and keyspace notifications are never used;
//! `CONFIG GET maxmemory-policy` is tried once at open (not on a Cluster),
//! only to log a warning, and may be forbidden. `open` fails with
//! `PermissionDenied` when the user may not `XREAD` the change stream.
//!
//! The server must not evict the namespace's keys: use
//! `maxmemory-policy noeviction` (or no `maxmemory`). An evicted counter
//! is repaired from the stream, but an evicted value, index or stream
//! loses data.
//!
//! # Reconnects and errors
//!
//! A call that cannot complete within `request_timeout` fails with
//! `Timeout`, a lost connection with `Unavailable`; a write that fails so
//! **may have been applied** and is never retried. A write the server
//! refused without running it (`READONLY`, `MOVED`, `ASK`, `TRYAGAIN`,
//! `CLUSTERDOWN`, `LOADING`, `MASTERDOWN`, `BUSY`, `NOREPLICAS`, a
//! connection that could not be made) is sent again within the timeout,
//! and fails with `Unavailable` when the time runs out. Reads are retried
//! within the timeout. Wrong credentials give `Unauthenticated`, ACL
//! refusals `PermissionDenied`. Neither [`RedisConfig`]'s `Debug` nor any
//! error shows a password, and messages carry the server's text (`NOAUTH
//! Authentication required.`) or the system's, not the client library's
//! `Debug` names.
//!
//! # Status
//!
//! [`Store::status`] reads, never writes: the data server that serves the
//! namespace (the one server, the primary the Sentinels name, or the
//! Cluster node of the namespace's slot) is asked `INFO server`, `INFO
//! replication` and the revision counter (`GET {ns}:rev`) in one round
//! trip within `request_timeout`; it is listed with its version and role
//! (`primary`, `replica`), and the details give `mode` (`standalone`,
//! `sentinel`, `cluster`), `db`, `namespace`, `prefix` (the root),
//! `redis_mode`, `connected_replicas` and `master_replid`, for Sentinel
//! also `sentinel` (the one that named the primary), for a Cluster `slot`.
//! Sentinels are asked `INFO server` at the same time and listed with the
//! role `sentinel`, or with their error. A data server that does not
//! answer fails the call (`Timeout`, or `Unavailable` when it cannot be
//! reached) unless a Sentinel answered; then it is listed with its error.
//!
//! # Observability
//!
//! Background work logs `tracing` events with the target `anykv_redis` and
//! counts, through the `metrics` crate, with the label `backend="redis"`:
//! `anykv_reconnects_total` (the watch reader's connection re-established,
//! or the calls succeeding again after failing for a lost connection),
//! `anykv_keepalive_failures_total` (a lease's or a lock's refresh failed
//! or did not answer in time) and `anykv_watch_resumes_total` (the watch
//! reader went on with open watches after its connection failed).

#![deny(rustdoc::broken_intra_doc_links)]

mod batch;
mod client;
mod config;
mod connection;
mod counters;
mod errors;
mod expiry;
mod feed;
mod keepalive;
mod layout;
mod lease;
mod lock;
mod recovery;
mod reply;
mod scripts;
mod state;
mod status;
mod store;
mod txn;
mod urls;
mod watch;

use std::sync::Arc;

use anykv_core::{Store, Url};

pub use config::{
    RedisConfig, Topology, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HISTORY, DEFAULT_MAX_VALUE_SIZE,
    DEFAULT_NAMESPACE, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SENTINEL_PORT, DEFAULT_WAIT_TIMEOUT,
    MAX_TTL, MIN_TTL,
};
pub use expiry::SWEEP_INTERVAL;
pub use scripts::FAILOVER_GAP;
pub use store::{compact, RedisStore};
pub use txn::MAX_TXN_BYTES;

/// The URL schemes [`register`] adds.
pub const SCHEMES: [&str; 6] = [
    "redis",
    "rediss",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
];

/// Registers the [`SCHEMES`] (`redis`, `rediss`, `redis+sentinel`,
/// `rediss+sentinel`, `redis+cluster`, `rediss+cluster`) with
/// [`anykv_core::registry`].
pub fn register() {
    for scheme in SCHEMES {
        anykv_core::register(scheme, |url: Url| async move {
            let store: Arc<dyn Store> =
                Arc::new(RedisStore::open(RedisConfig::from_url(&url)?).await?);
            Ok(store)
        });
    }
}
