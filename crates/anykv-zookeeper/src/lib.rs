//! The ZooKeeper (3.6+) backend of anykv.
//!
//! # Example
//!
//! Open a store by URL (its keys live under the znode `/app`), write and
//! read a key, watch it change, and take a lock:
//!
//! ```no_run
//! # async fn demo() -> anykv_core::Result<()> {
//! use anykv_core::{LockOptions, PutOptions, Store, WatchEvent, WatchOptions};
//! use anykv_zookeeper::ZkStore;
//! use futures::StreamExt;
//! use std::time::Duration;
//!
//! let store = ZkStore::open_url("zk://127.0.0.1:2181/app?request_timeout=2s").await?;
//!
//! // Put and get: a pair's revision is the zxid of its last write.
//! let rev = store
//!     .put("config/mode", "fast".into(), PutOptions::new())
//!     .await?;
//! let pair = store.get("config/mode").await?;
//! assert_eq!(
//!     pair.map(|p| (p.value, p.revision)),
//!     Some(("fast".into(), rev))
//! );
//!
//! // A watch: the current state, `Synced`, then every change.
//! let mut watch = store.watch_tree("config", WatchOptions::new()).await?;
//! while let Some(event) = watch.next().await {
//!     if let WatchEvent::Synced { .. } = event? {
//!         break;
//!     }
//! }
//! let rev = store
//!     .put("config/mode", "safe".into(), PutOptions::new())
//!     .await?;
//! while let Some(event) = watch.next().await {
//!     if let WatchEvent::Put(pair) = event? {
//!         assert_eq!((pair.key.as_str(), pair.revision), ("config/mode", rev));
//!         break;
//!     }
//! }
//!
//! // A lock: one holder at a time, with a fencing token for what it guards.
//! let options = LockOptions::new().with_timeout(Duration::from_secs(10));
//! let guard = store.lock("jobs/nightly", options).await?;
//! assert!(guard.fencing_token() > 0);
//! guard.release().await?;
//! store.close().await?;
//! # Ok(()) }
//! ```
//!
//! (`tests/front_page.rs` runs this very code against a real server.)
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
//! own session), as durations (`250ms`, `5s`, `2m`), `max_value_size`
//! (1,000,000 bytes) and `loss_policy` (`session`, the default, or
//! `connection`: when a lock counts as lost, see [`LossPolicy`] and Locks
//! below).
//!
//! [`ZkStore::open_url`] takes everything `anykv::open` takes, several
//! servers included; the same settings are a typed builder, [`ZkConfig`],
//! whose fields are public and documented. A password never appears in
//! `Debug` output or in errors.
//!
//! ```no_run
//! # async fn demo() -> anykv_core::Result<()> {
//! use std::time::Duration;
//! use anykv_core::Store;
//! use anykv_zookeeper::{ZkConfig, ZkStore};
//! let store = ZkStore::open(
//!     ZkConfig::new(["127.0.0.1:2181"])
//!         .with_root("app")
//!         .with_user("alice", "secret")
//!         .request_timeout(Duration::from_secs(2)),
//! )
//! .await?;
//! store.put("services/web", "10.0.0.1:80".into(), Default::default()).await?;
//! let same = ZkStore::open_url("zk://alice:secret@127.0.0.1:2181,127.0.0.2:2181/app").await?;
//! assert!(same.get("services/web").await?.is_some());
//! # Ok(()) }
//! ```
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
//! Lock `l` lives under `/r/l/@locks/`: beside key `l`'s value node, so
//! lock and key of one name are independent, and derived from root and
//! name together, so lock `l` of root `r/sub` is lock `sub/l` of root `r`
//! (roots nest for locks as for keys); invisible to `get`, `list` and
//! watches. The key's node carries `t` as its data while the value node
//! is a TTL node (a stat does not tell TTL nodes apart), `d` after a
//! delete (so that its `mzxid` is the delete's zxid), and its data version
//! counts re-creations of the value node.
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
//! notified keys are re-read, in rounds: a round reads every key notified
//! since the last (in multi-read requests) and then delivers each key's
//! newest read up to a watermark, the largest zxid seen in any reply
//! before the round began. ZooKeeper sends the notification of every
//! change before the reply to any later request on the session, so by
//! then every change up to the watermark has been read, and events go out
//! in revision order without ever waiting for the writers to pause. Under
//! continuous writes events keep flowing and a new stream gets its
//! `Synced` within a few rounds; values overwritten within a round are
//! skipped (`watch_every_revision` is false), but never the order, a
//! standing delete or the final state: when writes stop, every key's
//! final state is delivered within two rounds.
//!
//! A `Delete`'s revision is the zxid of the delete itself: every delete
//! (`delete`, `delete_tree`, `atomic_delete`, a lease's revoke) marks the
//! key's node `d` in the same multi-op, so that node's `mzxid` is the
//! delete's zxid. A value node the server removes (a TTL or a session
//! expiring) leaves the key node's `pzxid`. Where neither can be used
//! (the key's node already reaped by the server, at least a second later,
//! or one zxid shared by several keys, as when a session's ephemeral nodes
//! go in one transaction) the revision is a fresh zxid, taken by creating
//! and deleting an ephemeral node under the root: later than the delete,
//! but still above every event before and below every event after. If
//! the key was created again before that zxid, the delete is skipped as
//! superseded and the new value delivered.
//! A delete with its own mark is delivered to every stream that started
//! before it, even one that never got the key's value (skipped as
//! overwritten, as when a transaction deletes the key the one before it
//! wrote): a standing delete is never skipped. The events of one
//! transaction share its zxid and go out together, in key order.
//! `Synced` carries the watermark, which is at least such a fresh zxid
//! taken when the stream was opened, so it is at least the revision of
//! every write completed before. A stream that could not keep its order,
//! or whose reads are refused (permissions), gets an error and ends rather
//! than being silently wrong. After a disconnect the store re-reads
//! everything its streams cover, emits the differences, and sends `Synced`
//! again (events are lost across a reconnect, ZOOKEEPER-4698), so a
//! stream that moves to another server goes on without losing a key's
//! final state or delivering anything twice. The client notices a silent
//! server after its connection timeout (see Sessions below) and moves on;
//! a stream that cannot move (every server down or frozen) ends with a
//! retryable `Unavailable` error once the store has been out of touch for
//! so long that its session could expire, rather than staying silent.
//! ZooKeeper keeps no history, so `from_revision` is refused with
//! `Unsupported` (`watch_resume` is false). `close()` ends the streams at once: once it returned, a stream
//! yields only what it already held, then `None`.
//!
//! # TTL
//!
//! A TTL key's `@v` is a TTL node, re-created on every write so that a
//! re-put refreshes the TTL. The server needs `extendedTypesEnabled=true`
//! in zoo.cfg and the JVM property `-Dznode.container.checkIntervalMs=1000`
//! (the default check runs once a minute, far too late); without the first,
//! a TTL write fails with `Unsupported` naming these settings. `min_ttl` is
//! 1 s, the check interval. The check also reaps empty key nodes, by
//! default at most 10,000 a minute (6 ms each, `znode.container.maxPerMinute`),
//! and an expired TTL node waits behind those found in the same pass: where
//! many keys are deleted, raise that limit (the tests use 600000) or TTL
//! keys outlive their TTL by 6 ms per key node reaped ahead of them.
//!
//! # Leases
//!
//! A lease's keys' `@v` nodes are ephemeral nodes of a session whose
//! timeout is the lease's TTL. Leases do not get a session each: a store
//! shares one session among all its leases and locks whose TTL the server
//! granted the same timeout, opened when the first needs it and closed
//! when the last is gone, so a store holds its own session plus one per
//! distinct TTL in use (`stats().connections` counts them), however many
//! leases and locks it has. A lease remembers the value nodes written with
//! it; revoking it (or dropping its handle, or closing the store) deletes
//! them key by key, each delete checking that the key was not written again
//! since (a key rewritten without the lease, or with another, stays).
//! `lost()` fires when the session expires or is closed, or when its
//! connection stays down until [`anykv_core::backend::loss_deadline`] of
//! its timeout has passed since the client last heard from a server (see
//! Sessions below), so `lost()` comes before the server could expire the
//! session, which removes exactly that session's keys; the session is
//! closed then. A connection that comes back in time (a leader election,
//! a server that went away) loses nothing.
//!
//! **TTLs are what the server grants.** ZooKeeper negotiates a session
//! timeout between its `minSessionTimeout` and `maxSessionTimeout` (by
//! default 2 and 20 times `tickTime`: 4 s to 40 s with the stock
//! `tickTime` of 2000 ms). A lease's keys outlive a client that stopped
//! by that negotiated timeout, and nothing the client does can shorten
//! it (a client that died or lost its connection cannot delete anything),
//! so `Lease::ttl()` reports the granted timeout, not the one asked for:
//! on a stock server a lease asked for 1 s reports, and has, 4 s; one
//! asked for more than `maxSessionTimeout` reports less. Servers meant for
//! short leases lower `tickTime` (the tests use 200 ms).
//!
//! # Transactions
//!
//! `txn` is native: one ZooKeeper `multi`, so all of a transaction's
//! writes (puts and deletes) have one zxid, the multi's, as their
//! revision, and a watcher gets their events together at that revision
//! (in key order, with no event of another
//! revision between them; as for any write, a value overwritten before
//! the watch read it may be skipped). A `multi` cannot read or test that a
//! node is absent, so the transaction first reads every key its compares
//! and branches name (in multi-read requests, without a `sync`), evaluates
//! the compares on what it read and picks the branch; the `multi` then
//! starts with proofs that those reads still hold (a `check` of the
//! version of every key node and value node read; for a key whose node is
//! absent, the create and delete of the first missing node on its path)
//! and goes on with the branch's writes, made exactly as `put` and
//! `delete` make them (parents, TTL nodes, ephemeral nodes of a lease's
//! session, the key node's marks). If another write came in between, a
//! proof fails, nothing is applied, and the transaction reads again
//! (behind a `sync`) and retries, within `request_timeout` (then
//! `Timeout`). A branch that only reads still sends its proofs, a `multi`
//! of checks, so its gets and compares are one state at one point of the
//! store's history. The proofs share the window that compare-and-swap has
//! (see Revisions): a key node reaped and rebuilt to the very same version
//! between the read and the `multi`.
//!
//! Limits: `max_txn_ops` is 128 (compares, and operations per branch). A
//! `multi` is one request, and the server drops the connection of a
//! request over its `jute.maxbuffer` (1 MiB by default), so a branch whose
//! values total more than [`MAX_MULTI_BYTES`], or whose whole `multi`
//! (values, paths, proofs, parents to create) is estimated over it, is
//! refused with `InvalidArgument` before it is sent: 128 small values fit,
//! one value of `max_value_size` fits, two of 600 kB do not. Leased puts
//! are ephemeral nodes of the session that sends the `multi`, so the leased
//! puts of one transaction must use leases that share a session (leases
//! granted the same TTL do): leases of different TTLs in one transaction
//! are `Unsupported`. A lease that is gone fails the transaction with
//! `LeaseLost` before anything is sent; a lease revoked by this store
//! while the `multi` was on its way (the only window left) gets its keys
//! of the transaction deleted again and the call fails with `LeaseLost`,
//! but the transaction's other writes stay, as a `put` with that lease
//! would have.
//!
//! # Locks
//!
//! A lock waiter is an ephemeral sequential node
//! `/r/<name>/@locks/@lock-<token>-<seq>` of the store's shared session for
//! the lock's TTL (as leases). The lowest sequence holds the lock; every
//! other waiter watches only its predecessor, and looks again at least once
//! per `request_timeout`, so a waiter whose server went away fails within
//! about that (and within its own `LockOptions::timeout`, which bounds the
//! whole call). A waiter whose `LockOptions::timeout` runs out while its
//! node waits behind another client's fails with `LockTimeout`; one whose
//! timeout runs out before its node is in the queue (the server slow to
//! open the session or create the node) fails with `Timeout`, and a server
//! that stops answering during the wait with `Timeout` or `Unavailable`
//! within the request timeout, as any call. The fencing token is the holder node's `czxid`, store-wide
//! increasing even if the lock's directory is reaped and re-created.
//! When a lock counts as lost while its session's connection is down is
//! the store's [`LossPolicy`] (`loss_policy` in the URL), as Curator's
//! connection-state error policies:
//!
//! * `Session` (the default): `lost()` fires when the session expires or
//!   is closed, or when the connection stays down until
//!   [`anykv_core::backend::loss_deadline`] of the session timeout (the
//!   lock's TTL as granted) has passed since the client last heard from a
//!   server; the session is closed then. The server expires a session
//!   only a full timeout after it last heard from the client, so `lost()`
//!   fires before another client could get the lock. (Curator's own
//!   simulated loss counts the session timeout from when the client
//!   noticed, which can be after the server expired the session.) A
//!   leader election or a server going away, where the client reconnects
//!   in time, keeps the lock and fires nothing.
//! * `Connection`: `lost()` also fires as soon as the connection is lost
//!   (Curator's SUSPENDED), and the lock is then really given up: its node
//!   is deleted as soon as the connection is back (or goes with the
//!   session), so a holder told "lost" never keeps others waiting.
//!
//! `Session` is the default because it is what a careful user wants in
//! an ensemble: its `lost()` is just as honest (it comes before anyone
//! else can hold the lock), while under `Connection` every leader
//! election, rolling restart or brief network blip costs every holder its
//! lock and sends every waiter back to the queue. Choose `Connection` for
//! a holder that must stop acting at once whenever it cannot confirm the
//! lock with a server, for example one that acts on a system that takes
//! no fencing token. Either way, a holder that sees `lost()` stops.
//!
//! A lock node given up (released, lost, or left by a lock call that
//! failed) that cannot be deleted at once, because the connection is down,
//! is deleted by its session as soon as the connection is back, until the
//! delete is confirmed: a released lock never blocks others for longer
//! than that. A create whose reply is lost is found again by its token (as
//! Curator's protection mode does).
//!
//! # Sessions and servers
//!
//! Before it opens a session (the store's own, or a shared one for leases
//! and locks) the store asks every server in its URL the `srvr`
//! four-letter command (allowed by default), for at most a second, and
//! gives the client only those that answer that they serve, when they are
//! a majority of the URL's servers (else all of them). The client tries
//! its servers in random order and waits its whole connection timeout on
//! one that accepts connections but does not answer (a frozen server), so
//! this keeps opening a store or taking a lock prompt while a server is
//! frozen; a majority is enough, since any quorum that serves later shares
//! a server with it (list every server of the ensemble in the URL).
//!
//! The client's connection timeout is `connect_timeout`, at most a third
//! of the session timeout: it bounds the handshake with one server and the
//! silence after which a connection counts as lost (checked once per
//! eighth of it; idle connections are pinged), so a client whose server
//! froze notices it, tries another (perhaps the frozen one again) and
//! reaches a live one well before its session could expire. The session
//! counts as lost, for leases, locks and watches alike, when its
//! connection stays down until `loss_deadline` of its timeout has passed
//! since the client last heard from a server.
//!
//! # Status
//!
//! `Store::status` asks every server of the
//! URL, at once and each within `request_timeout`, the `srvr` four-letter
//! command (the one ZooKeeper 3.5+ allows by default): its version (as
//! `3.8.4`) and its `Mode:` as the role (`leader`, `follower`, `observer`,
//! `standalone`). A server that does not answer, refuses the command
//! (`4lw.commands.whitelist` without `srvr`) or answers something else is
//! listed with the error; the call fails with `Unavailable` only when no
//! server answers and the store's session cannot read its root either.
//! ZooKeeper's client protocol does not say which server a session is
//! connected to, so that is asked with `cons` where the servers allow it
//! (not by default), as the detail `connected_server`.
//!
//! The revision is `None`. The only store-wide counter ZooKeeper offers
//! is a server's last zxid (in `srvr`'s answer), which counts every
//! transaction of the ensemble, sessions opened and closed and other
//! applications' writes included, and is that one server's, which may lag
//! the leader; it is no revision a pair or a watch of this store ever
//! carries, so it is shown only as the detail `zxid <server>` (hex) for
//! each server that answered. The other details: `session_id` (hex, as
//! ZooKeeper's own logs and `cons` show it), `session_timeout` (as the
//! server granted it), `root` (the store's root znode path),
//! `syncs_reads`, `loss_policy`, and `session_error` when the session
//! could not read its root.
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
//! | `leases` | true | ephemeral nodes of a session shared by the leases and locks of one TTL; `Lease::ttl()` is the timeout the server granted |
//! | `locks` | true | ephemeral sequential nodes on the same shared sessions |
//! | `transactions` | true | one `multi` per transaction, its reads proved by version checks inside it (see Transactions); `max_txn_ops` 128 |
//! | `max_value_size` | 1,000,000 bytes | ZooKeeper's default `jute.maxbuffer` (1 MiB per request); raise both together with the `max_value_size` parameter |
//!
//! `stats().connections` counts the store's session plus its shared
//! sessions (one per distinct lease or lock TTL in use); watches share the
//! store's session.
//!
//! # Errors and retries
//!
//! Every call is bounded by `request_timeout` (one that has to open a
//! shared session for a lease or a lock included): a call that runs out
//! fails with `Timeout`, a lost connection (the client's "no response from
//! connection", a session it could not re-establish) with `Unavailable`;
//! a write that fails so may have been applied and is never retried. The
//! same store recovers by itself when the server is back. Opening a store
//! is bounded by `connect_timeout`, and fails with `Unavailable` at once
//! when no server accepts connections (a refused port). Writes are retried only
//! after a definite refusal that applied nothing (a version moved, a parent
//! node reaped). Reads are preceded by `sync`, so a read that starts after
//! another client's write completed sees it even on a follower; concurrent
//! reads share one `sync` sent after all of them began, and the reads are
//! sent right behind it without waiting for its reply. Against a single
//! standalone server (one server in the URL, whose `srvr` four-letter
//! command, allowed by default, reports `Mode: standalone`; checked on every
//! new session) reads skip the `sync`: such a server applies each write
//! before replying and serves every session from the same data, so a read
//! sees every completed write anyway. [`ZkStore::syncs_reads`] tells which
//! applies. `list` reads a
//! level of the tree (each node's children and value) in multi-read
//! requests. `list_with` walks the tree in key order instead, skipping
//! the subtrees that sort before its `start_after`, and reads only the
//! page: its values in multi-read requests, or with `keys_only` the value
//! nodes' stats (`exists`), which carry the exact revision without the
//! value.
//!
//! # Background work: events and metrics
//!
//! Besides the span and metrics `anykv_core::observe` puts around every
//! call, the backend's background work emits `tracing` events (target
//! `anykv_zookeeper`) and counts, through the `metrics` crate, with the
//! label `backend = "zookeeper"`:
//!
//! * `anykv_reconnects_total`: a lease and lock session's connection back
//!   after it was lost (the client moved to another server, or the server
//!   came back), or the store's own session opened again after it ended;
//! * `anykv_keepalive_failures_total`: a lease and lock session's
//!   connection lost, or the session itself lost (expired, or down past
//!   its loss deadline), which fires its leases' and locks' `lost()`;
//! * `anykv_watch_resumes_total`: the store's shared watch registered
//!   again and its streams re-read after its connection came back or its
//!   session was re-established (the streams go on, without a gap).
//!
//! # Design
//!
//! Each module's documentation says how its part works; each uses only
//! modules listed after it: `store` (the `Store` impl: reads behind a
//! shared `sync`, writes as version-checked multi-ops), `txn` (a
//! transaction's reads, proofs and writes as one `multi`), `watch` (the
//! shared watch and its streams, on core's watch channel) over `rounds`
//! (reading rounds up to a watermark), `lease`, `lock`, `state` (what a
//! store's parts share), `sessions` (the shared sessions of leases and
//! locks: the loss policy, lock nodes given up), `nodes` (parents,
//! listings, deletes), `page` (pages of a listing, walked in key order),
//! `client` (the store's session, which servers a session is given, the
//! connection timeout, deadlines, error mapping), `layout` (keys, locks and
//! bookkeeping as znode paths) and `config`.
//!
//! # Server settings
//!
//! ZooKeeper 3.6+; `extendedTypesEnabled=true` and
//! `-Dznode.container.checkIntervalMs=1000` for TTL keys and prompt removal
//! of empty parents, with `-Dznode.container.maxPerMinute` raised where
//! many keys are deleted (see TTL above); ZooKeeper's stock `maxClientCnxns` (60 per client
//! address) is enough for many stores, each holding a handful of
//! connections; `maxSessionTimeout` at least the longest lease or lock TTL,
//! and `tickTime` small enough for the shortest (sessions are at least two
//! ticks).

#![deny(rustdoc::broken_intra_doc_links)]

mod client;
mod config;
mod layout;
mod lease;
mod lock;
mod nodes;
mod page;
mod rounds;
mod sessions;
mod state;
mod store;
mod txn;
mod watch;

use std::sync::Arc;

use anykv_core::{Store, Url};

pub use config::{
    LossPolicy, ZkConfig, BACKEND, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_VALUE_SIZE,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_SESSION_TIMEOUT, MIN_TTL,
};
pub use store::ZkStore;
pub use txn::MAX_MULTI_BYTES;

/// Registers the `zk` scheme with [`anykv_core::registry`].
pub fn register() {
    anykv_core::register("zk", |url: Url| async move {
        let store: Arc<dyn Store> = Arc::new(ZkStore::open(ZkConfig::from_url(&url)?).await?);
        Ok(store)
    });
}
