//! The Redis backend of anykv.
//!
//! Redis has no revisions, no prefix index and no reliable change feed, so
//! this backend builds them on the server, atomically, with Lua scripts:
//! every write is one script that bumps a revision counter, stores the
//! value with its revision, maintains a sorted index of the keys and
//! appends a change record to a Redis stream. Nothing depends on keyspace
//! notifications or `CONFIG SET`, and nothing ever scans the keyspace.
//!
//! ```no_run
//! use anykv_core::{PutOptions, Store, WatchOptions};
//! use anykv_redis::RedisStore;
//!
//! # async fn demo() -> anykv_core::Result<()> {
//! let store = RedisStore::open_url("redis://127.0.0.1:6379/0/app?request_timeout=2s").await?;
//! let revision = store.put("config/mode", "fast".into(), PutOptions::new()).await?;
//! assert_eq!(store.get("config/mode").await?.unwrap().revision, revision);
//! let _changes = store.watch_tree("config", WatchOptions::new()).await?;
//! store.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # URL
//!
//! `redis[s]://[user:password@]host[:port][/db[/root...]][?params]`
//!
//! - `rediss://` is TLS (rustls with the ring provider, which the backend
//!   installs as the process's default if none is installed yet);
//!   `ca_file=/path/ca.pem` trusts that CA instead of the system's roots.
//! - `user:password` authenticates an ACL user; `:password` (no user) the
//!   default user of a server with `requirepass`.
//! - The first path segment is the database number (default `0`); the rest
//!   is the root. `prefix=a/b` puts that root under `a/b`.
//! - `namespace=name` (default `anykv`): the key prefix of everything this
//!   backend stores, `{name}:`. Stores of one namespace share revisions,
//!   the key index and the change stream; roots nest inside it.
//! - `request_timeout` (default `5s`): how long one call may take before it
//!   fails with `Timeout`; `connect_timeout` (default `2s`). Durations are
//!   written `250ms`, `5s`, `2m` or as plain seconds, as for every backend.
//! - `history` (default 10,000): changes kept in the change stream; a watch
//!   can resume from any of them.
//! - `max_value_size` (default 16 MiB).
//! - One server: a URL naming several (`a:6379,b:6379`) is a `Config` error.
//!
//! [`RedisConfig`] is the same as a typed builder; [`RedisStore::open`]
//! and [`RedisStore::open_url`] open a store, and [`register`] adds the
//! `redis` and `rediss` schemes to `anykv::open`.
//!
//! # Capabilities and why
//!
//! Everything is on: `watch`, `watch_every_revision` (the stream records
//! every put with its value), `watch_resume` (a watch resumes from any
//! revision still in the stream; older starts yield `Compacted`), `ttl`,
//! `leases`, `locks`. `min_ttl` is 1 s ([`MIN_TTL`]): TTLs are enforced by
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
//! its watches. A server that lost writes (restarted without persistence,
//! flushed, evicting) would hand out revisions again: every watch then
//! ends with `Compacted`. A reader that cannot read for the larger of
//! three `request_timeout`s and 15 s ends every watch with `Unavailable`.
//!
//! # Server requirements
//!
//! Redis 7.0 or later (scripts that call `TIME` before writing, `XADD`
//! with `<ms>-*` IDs, exclusive stream ranges). A standalone server or a
//! primary (no Cluster mode support beyond the hash tag). An ACL user needs
//! the key pattern `~{ns}:*` and the commands `EVALSHA`, `SCRIPT|LOAD`,
//! `XREAD`, `SELECT` (a database other than 0), `HMGET` (`get` sends it
//! directly), plus those the scripts call: `TIME INCR
//! GET SET PTTL PEXPIRE DEL HMGET HGET HSET HDEL ZADD ZREM ZSCORE
//! ZRANGEBYLEX ZRANGEBYSCORE SADD SREM SMEMBERS XADD XRANGE XREVRANGE EXISTS`.
//! [`RedisStore::compact`] also needs `XTRIM`. `KEYS`, `SCAN` and keyspace
//! notifications are never used; `CONFIG GET maxmemory-policy` is tried
//! once at open, only to log a warning, and may be forbidden. `open` fails
//! with `PermissionDenied` when the user may not `XREAD` the change stream.
//! The integration tests run with a user restricted to exactly this list.
//!
//! The server must not evict the namespace's keys: use
//! `maxmemory-policy noeviction` (or no `maxmemory`). An evicted counter
//! is repaired from the stream, but an evicted value, index or stream
//! loses data. Revisions are never reused across restarts only with
//! persistence (`appendonly yes`, plus `appendfsync always` to lose no
//! acknowledged write; with `everysec` the last second can be lost, which
//! watches then report as `Compacted`).
//!
//! # Reconnects and errors
//!
//! A call that cannot complete within `request_timeout` fails with
//! `Timeout`, a lost connection with `Unavailable`; a write that fails so
//! **may have been applied** and is never retried. Reads are retried
//! within the timeout. Wrong credentials give `Unauthenticated`, ACL
//! refusals `PermissionDenied`. Neither [`RedisConfig`]'s `Debug` nor any
//! error shows the password.

#![deny(rustdoc::broken_intra_doc_links)]

mod client;
mod config;
mod connection;
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
mod store;
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
