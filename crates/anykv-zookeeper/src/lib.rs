//! The ZooKeeper (3.6+) backend of anykv.
//!
//! # URL
//!
//! `zk://[user:password@]host:port[,host:port...]/root?params`. The path
//! is the store's root (its keys live under that znode path, and roots nest
//! like prefixes). User and password, if given, are ZooKeeper digest
//! credentials: the store authenticates with them and every node it creates
//! at or under its root carries an ACL giving all rights to those
//! credentials only, so a client without them gets `PermissionDenied`.
//! (Digest auth cannot tell a wrong password at connect time: the server
//! just computes another identity; a wrong password is refused by the
//! ACLs, as `PermissionDenied`.) Nodes above the root that the store has
//! to create are open to anyone, as `mkdir -p` would make them, so other
//! users can have roots beside it.
//!
//! Parameters: `endpoints` (more servers; [`anykv_core::parse_url`] moves
//! every server after the first there), `connect_timeout` (default 5 s),
//! `request_timeout` (5 s per call), `session_timeout` (10 s, the store's
//! own session), as durations (`250ms`, `5s`, `2m`), and `max_value_size`
//! (1,000,000 bytes).
//!
//! # Node layout
//!
//! A key `a/b` of root `r` is the znode `/r/a/b`, a **container** node,
//! and its value is the data of the child `/r/a/b/@v`. A key exists exactly
//! when its `@v` node exists; `@v` holds the value byte for byte, so the
//! empty value is still a key. Nodes such as `/r/a` that exist only because
//! a deeper key was written have no `@v`: `get("a")` is `None` and `list`
//! skips them, and as container nodes the server removes them once their
//! last child is gone. Names starting with `@` are the backend's own; a
//! user segment that starts with `@` is stored with another `@` in front,
//! and a segment with a character beyond the Basic Multilingual Plane
//! (ZooKeeper, in Java's UTF-16, refuses surrogate pairs in paths) or the
//! reserved name `zookeeper` is stored as `@%` and its UTF-8 in hex.
//! Locks live under `/r/@locks/<lock name>/`, invisible to `get`, `list`
//! and watches. The key's node carries `t` as its data while the value
//! node is a TTL node (a stat does not tell TTL nodes apart), and its data
//! version counts re-creations of the value node.
//!
//! # Revisions
//!
//! A pair's revision is the `mzxid` of its `@v` node: store-wide, ordered,
//! and never reused after delete and re-create (the zxid of the re-create is
//! new), so there is no ABA. `atomic_put` and `atomic_delete` read the
//! node's `mzxid` and version, compare the revision, and write with that
//! version in one multi-op that also checks the key node's version, so a
//! concurrent change in between fails them with `KeyModified`, even one
//! that re-created the value node (whose own version restarts). A write
//! that replaces the node (a TTL, a lease, or dropping either) deletes and
//! re-creates `@v` in one multi-op. A plain `put` of a key the store last
//! saw present does that at once, without reading first (one round trip):
//! the key node's data is set (counting the re-creation), `@v` deleted and
//! created with the value, whatever it was before; if the key is gone,
//! nothing is applied and the put reads and writes as above. These reads
//! are not preceded by a `sync`: a stale read only makes the multi-op's
//! version checks fail (nothing applied; read again), and `KeyExists`,
//! `KeyNotFound` or `KeyModified` is reported only from a read behind a
//! `sync`. What is left is a window no real
//! system hits: between the read and the write of one CAS, the key deleted, its
//! empty node reaped by the server (at least one container check, 1 s),
//! re-created and written back to the very same versions.
//!
//! # Watches
//!
//! Each store keeps one persistent recursive watch (ZooKeeper 3.6+) on its
//! root, shared by all its streams. ZooKeeper's events carry no data, so
//! each notification is answered by re-reading the key; intermediate values
//! written faster than that may be skipped (`watch_every_revision` is
//! false), but order, deletes and the final state are never lost: reads are
//! batched until no notification is pending (ZooKeeper sends every
//! notification for a change before the reply to a later read on the same
//! connection), and events are emitted in revision order. A `Delete`'s
//! revision is the `pzxid` of the key's node (the zxid of the last change
//! among its children: the delete itself unless something changed after),
//! or, where that node is gone or the revision would not be unique (a
//! session's ephemeral keys all vanish in one transaction), a fresh zxid
//! taken by creating and deleting an ephemeral node under the root; either
//! way it is above the deleted pair's and events stay strictly increasing.
//! `Synced` carries such a fresh zxid too, so it is at least the revision
//! of every write completed before the watch was opened. A stream that
//! cannot keep its order, or whose reads are refused (permissions), gets an
//! error and ends rather than being silently wrong. After a disconnect the store re-reads everything its
//! streams cover, emits the differences, and sends `Synced` again (events
//! are lost across a reconnect, ZOOKEEPER-4698). ZooKeeper keeps no history,
//! so `from_revision` is refused with `Unsupported` (`watch_resume` is
//! false).
//!
//! # TTL
//!
//! A TTL key's `@v` is a TTL node, re-created on every write so that a
//! re-put refreshes the TTL. The server needs `extendedTypesEnabled=true`
//! in zoo.cfg and the JVM property `-Dznode.container.checkIntervalMs=1000`
//! (the default check runs once a minute, far too late); without the first,
//! a TTL write fails with `Unsupported` naming these settings. `min_ttl` is
//! 1 s, the check interval.
//!
//! # Leases
//!
//! A lease is a ZooKeeper session of its own with the lease's TTL as its
//! session timeout; its keys' `@v` nodes are ephemeral nodes of that
//! session. Revoking deletes them (key by key) and closes the session;
//! losing the session fires `lost()`: on expiry, or when a disconnect lasts
//! three fifths of the timeout (the client notices a silent server after at
//! most two fifths, so `lost()` comes before the server expires the session),
//! and the server removes exactly that session's keys.
//!
//! # Locks
//!
//! A lock waiter is an ephemeral sequential node
//! `/r/@locks/<name>/@lock-<token>-<seq>` of a session of its own (timeout:
//! the lock's TTL). The lowest sequence holds the lock; every other waiter
//! watches only its predecessor. The fencing token is the holder node's
//! `czxid`, store-wide increasing even if the lock's directory is reaped
//! and re-created. `lost()` fires as soon as the lock's session is
//! disconnected (as Curator treats SUSPENDED), and when it expires: the
//! server may expire the session and give the lock to the next waiter
//! before a disconnected client could learn it, so a holder that sees
//! `lost()` stops at once. A create whose reply is lost is found again by
//! its token (as Curator's protection mode does).
//!
//! # Capabilities
//!
//! | capability | value | why |
//! |---|---|---|
//! | `watch` | true | persistent recursive watches (3.6+) |
//! | `watch_every_revision` | false | notifications carry no data; a value overwritten before it is re-read is skipped (never the final state, never a delete, never out of order) |
//! | `watch_resume` | false | ZooKeeper keeps no change history, so `from_revision` is refused with `Unsupported` |
//! | `ttl` | true | TTL nodes; needs `extendedTypesEnabled=true`, else TTL writes are `Unsupported` |
//! | `min_ttl` | 1 s | the server's TTL check interval (with `-Dznode.container.checkIntervalMs=1000`) |
//! | `leases` | true | one session per lease, its keys ephemeral nodes |
//! | `locks` | true | ephemeral sequential nodes, one session per lock |
//! | `max_value_size` | 1,000,000 bytes | ZooKeeper's default `jute.maxbuffer` (1 MiB per request); raise both together with the `max_value_size` parameter |
//!
//! `stats().connections` counts the store's session plus one per lease
//! and per lock; watches share the store's session.
//!
//! # Errors and retries
//!
//! Every call is bounded by `request_timeout`: a call that runs out fails with
//! `Timeout`, a lost connection with `Unavailable`; a write that fails so
//! may have been applied and is never retried. Writes are retried only
//! after a definite refusal that applied nothing (a version moved, a parent
//! node reaped). Reads are preceded by `sync`, so a read that starts after
//! another client's write completed sees it even on a follower; concurrent
//! reads share one `sync` sent after all of them began, and the reads are
//! sent right behind it without waiting for its reply. Against a single
//! standalone server (one server in the URL, whose `srvr` four-letter
//! command, allowed by default, reports `Mode: standalone`; checked on every
//! new session) reads skip the `sync`: such a server applies each write
//! before replying and serves every session from the same data, so a read
//! sees every completed write anyway. `ZkStore::syncs_reads` tells which
//! applies. `list` reads a
//! level of the tree (each node's children and value) in multi-read
//! requests.
//!
//! # Server settings
//!
//! ZooKeeper 3.6+; `extendedTypesEnabled=true` and
//! `-Dznode.container.checkIntervalMs=1000` for TTL keys and prompt removal
//! of empty parents; `maxClientCnxns` high enough for one connection per
//! store, lease and lock; `maxSessionTimeout` at least the longest lease or
//! lock TTL.

#![deny(rustdoc::broken_intra_doc_links)]

mod client;
mod config;
mod paths;
mod store;
mod watch;

pub use config::{
    ZkConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_VALUE_SIZE, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SESSION_TIMEOUT,
};
pub use store::ZkStore;

/// The backend's name, as in error messages.
pub const BACKEND: &str = "zookeeper";

/// The smallest TTL: the server's TTL check runs once a second.
pub const MIN_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Registers the `zk` scheme with [`anykv_core::registry`].
pub fn register() {
    anykv_core::register("zk", |url: anykv_core::Url| async move {
        let store: std::sync::Arc<dyn anykv_core::Store> =
            std::sync::Arc::new(ZkStore::open(ZkConfig::from_url(&url)?).await?);
        Ok(store)
    });
}
