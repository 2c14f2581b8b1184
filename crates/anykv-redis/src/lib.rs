//! The Redis backend of anykv.
//!
//! Redis has no revisions, no prefix index and no reliable change feed, so
//! this backend builds them on the server, atomically, with Lua scripts:
//! every write is one script that bumps a revision counter, stores the
//! value with its revision, maintains a sorted index of the keys and
//! appends a change record to a Redis stream. Nothing depends on keyspace
//! notifications or `CONFIG SET`, and nothing ever scans the keyspace.
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
//!   backend stores; see below.
//! - `request_timeout` (default `5s`): how long one call may take before it
//!   fails with `Timeout`; `connect_timeout` (default `2s`). Durations are
//!   written `250ms`, `5s`, `2m` or as plain seconds, as for every backend.
//! - `history` (default 10,000): changes kept in the change stream; a watch
//!   can resume from any of them.
//! - `max_value_size` (default 16 MiB).
//!
//! [`RedisConfig`] is the same as a typed builder.
//!
//! # Layout on the server
//!
//! With namespace `ns`, every key begins with `{ns}:` (a hash tag, so all of
//! a namespace's keys live in one slot). User keys are stored as their full
//! canonical key (`root/key`), and user keys contain no control characters,
//! so the internal names below never collide with them:
//!
//! | Redis key | type | holds |
//! |---|---|---|
//! | `{ns}:k:<root/key>` | hash | `v` value, `r` revision, `e` expiry deadline (ms, server clock), `l` lease id |
//! | `{ns}:idx` | sorted set, score 0 | every key; `list` and `delete_tree` read it with `ZRANGEBYLEX [root/prefix/ (root/prefix0` |
//! | `{ns}:rev` | string | the revision counter: one per namespace, shared by all roots, so roots nest |
//! | `{ns}:log` | stream | one entry `{revision}-0` per revision: `k` key, `t` `p`ut or `d`elete, `v` value; lock releases add `{revision}-n` entries with `t` `u` that use no revision |
//! | `{ns}:ttl` | sorted set | TTL keys scored by deadline |
//! | `{ns}:leases` | sorted set | live leases scored by deadline |
//! | `{ns}:lease:<id>` | set | the keys bound to a lease |
//! | `{ns}:lid`, `{ns}:fence` | strings | lease ids and lock fencing tokens |
//! | `{ns}:epoch` | string | a random id set (`NX`) by the first store that opens the namespace; a new one means the server lost the namespace |
//! | `{ns}:lock:<root/name>` | string with `PX` | a lock's holder token |
//!
//! Writes are scripts (`EVALSHA`) that check their conditions (CAS,
//! create-only, the lease) before their first write, so a failed condition
//! writes nothing; every revision handed out gets its change record in the
//! same script, so the stream's `{revision}-0` entries are contiguous and a
//! gap is proof of trimmed history. A script's first revision is never
//! below the stream's last entry: a counter that was evicted or reset
//! continues after the stream's top instead of reusing revisions.
//!
//! Reads take the cheapest path that keeps them exact: `get` is one
//! `HMGET` of the key's hash, and only a key with a TTL deadline (whose
//! liveness needs the server's clock) is read again by the read script;
//! `list` is one script (`ZRANGEBYLEX` and an `HMGET` per key, as of one
//! instant) that reads the clock only if a listed key has a deadline.
//!
//! # Capabilities and why
//!
//! Everything is on: `watch`, `watch_every_revision` (the stream records
//! every put with its value), `watch_resume` (a watch resumes from any
//! revision still in the stream; older starts yield `Compacted`), `ttl`,
//! `leases`, `locks`. `min_ttl` is 1 s: TTLs are enforced by the server's
//! clock for every read at once, but keys are removed (and their `Delete`
//! events written) by a sweep that each open store runs every 200 ms, and
//! leases are kept alive every third of their TTL. `max_value_size` is the
//! configured maximum (16 MiB by default); values are also kept in the
//! change stream, so `history * typical value size` is the stream's memory.
//!
//! # TTL, and servers that forbid `CONFIG SET`
//!
//! A TTL is a deadline in the key's hash and in `{ns}:ttl`, computed with
//! the server's `TIME`. Reads treat a key past its deadline as absent at
//! once. Every open store runs a sweep script every 200 ms that deletes due
//! keys, each with its own revision and change record, so watchers see a
//! `Delete`. The design uses neither keyspace notifications nor
//! `CONFIG SET`, so a server that forbids `CONFIG` behaves exactly the same.
//! The one condition: the `Delete` events (and the memory) of expired keys
//! wait until some store of that namespace is open; reads never see them.
//!
//! # Watches
//!
//! Each store has one reader task on a connection of its own, running
//! `XREAD BLOCK` on the change stream and fanning entries out to the
//! store's watches, so a thousand watches cost one connection; a change is
//! offered only to the watches of its key and of the trees holding it. The
//! reader reads only while the store has a watch or a waiting `lock()`:
//! otherwise it is parked (writes then cost the server no `XREAD`), and
//! the next watch or lock waiter starts it again right after the revision
//! it read itself, so nothing between is missed. A new watch
//! reads its snapshot and the store's revision in one script, then catches
//! up from the stream with `XRANGE` until the reader has not gone past it.
//! After a reconnect the reader continues from the last entry it delivered;
//! a gap in revisions (history trimmed meanwhile) yields `Compacted` to
//! every watch, which then ends. Gaps are measured from the last data
//! entry (`{revision}-0`) seen, so an unlock record cannot hide one.
//!
//! On every (re)connect the reader checks the namespace's epoch and
//! revision. A server that lost writes (restarted without persistence,
//! flushed, or evicting keys) has a new epoch or a revision below the
//! reader's position: it would hand out revisions again, so every watch
//! gets `Compacted` and ends, and the reader starts over at the server's
//! revision. Revisions are never reused across restarts only with
//! persistence (`appendonly yes`, plus `appendfsync always` to lose no
//! acknowledged write; with `everysec` the last second can be lost, which
//! the reader then reports as above). Since the reader is parked while no
//! watch needs it, the loss may be found only when the next watch starts
//! it: that watch then ends with `Compacted` too (open it again).
//!
//! Errors of the reader that would repeat (an ACL without `XREAD`, a
//! `WRONGTYPE` key, an unreadable reply) end every watch with that error
//! (`PermissionDenied` or `Backend`); `open` already fails with
//! `PermissionDenied` when the user may not `XREAD` the stream. Transient
//! errors only make the reader reconnect, but once it has been unable to
//! read for the larger of three `request_timeout`s and 15 s, every watch
//! ends with `Unavailable` rather than waiting in silence.
//!
//! A watch that resumes (`from_revision`) catches up from the stream
//! (`XRANGE`, in pages) before it is returned, and delivers those changes
//! ahead of its channel, like an initial state: resuming over more
//! matching changes than `buffer` does not lag. They are held in memory
//! until consumed, at most `history` of them.
//!
//! # Leases and locks
//!
//! A lease is a record in `{ns}:leases` with a deadline that the client
//! extends every third of the TTL; keys put with it are listed in its set.
//! Revoking it (or its lapse, seen by the sweep) deletes its keys, each with
//! a revision. A lock is `SET {ns}:lock:<name> <token> NX PX <ttl>`, kept
//! alive by the holder with a token-checked `PEXPIRE`, released by a
//! token-checked delete that appends an unlock record to the stream. The
//! fencing token comes from `INCR {ns}:fence`. Waiters sleep until the
//! reader sees an unlock record for their lock, or until the holder's
//! remaining `PTTL` runs out, then try again; every waiter of the store
//! wakes on a release and they race for it (no fairness). While the
//! reader is disconnected, waiters retry at least every second. A `lock()`
//! cancelled while its attempt is in flight gives back whatever that
//! attempt took (a token-checked release in the background).
//!
//! A lock's or a lease's deadline is measured from when the refresh that
//! set it was sent (the server set it later); `lost()` fires a little
//! before that deadline if no refresh has succeeded by then, whatever
//! refresh is still in flight, and each refresh is bounded by the time
//! left.
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
//! once at open, only to log a warning, and may be forbidden. The
//! integration tests run with a user restricted to exactly this list.
//!
//! The server must not evict the namespace's keys: use
//! `maxmemory-policy noeviction` (or no `maxmemory`). An evicted counter
//! is repaired from the stream, but an evicted value, index or stream
//! loses data. Keep persistence on (see [Watches](#watches)) if revisions
//! must survive restarts.
//!
//! # Reconnects and errors
//!
//! Calls go through a `ConnectionManager` that reconnects by itself. A call
//! that cannot complete within `timeout` fails with `Timeout`, a lost
//! connection with `Unavailable`; a write that fails so **may have been
//! applied** and is never retried. Reads are retried within the timeout.
//! Wrong credentials give `Unauthenticated`, ACL refusals
//! `PermissionDenied`. Neither [`RedisConfig`]'s `Debug` nor any error
//! shows the password.

#![deny(rustdoc::broken_intra_doc_links)]

mod config;
mod scripts;

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_core::fanout::{event_channel, EventSender};
use anykv_core::{
    async_trait, key, lost_signal, Bytes, Capabilities, Error, KvPair, Lease, LeaseId, LockGuard,
    LockOptions, LostTrigger, PutOptions, Release, Result, Store, StoreStats, Url, WatchEvent,
    WatchOptions, WatchStream,
};
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError, Value};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

pub use config::{
    RedisConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HISTORY, DEFAULT_MAX_VALUE_SIZE,
    DEFAULT_NAMESPACE, DEFAULT_TIMEOUT,
};

const BACKEND: &str = "redis";

/// The smallest TTL (of keys, leases and locks); smaller ones are raised.
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// The largest TTL (of keys, leases and locks): about a hundred years;
/// larger ones are lowered to it.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How often each store sweeps expired keys and lapsed leases.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(200);

const BLOCK_MS: u64 = 1000;
/// The shortest outage of the watch reader after which watches end with
/// `Unavailable` (the limit is the larger of this and three request
/// timeouts).
const MIN_OUTAGE: Duration = Duration::from_secs(15);
const CATCH_UP_COUNT: usize = 256;
const SWEEP_BATCH: usize = 500;

/// A handle on a Redis-backed store. Cheap to clone; clones are the same
/// client. See the [crate documentation](crate).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let shared = self.shared.clone();
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move { shared.close().await });
            }
            Err(_) => shared.shutdown_local(),
        }
    }
}

struct Shared {
    config: RedisConfig,
    root: String,
    prefix: String,
    history: String,
    client: Client,
    conn: ConnectionManager,
    caps: Capabilities,
    closed: AtomicBool,
    shutdown: watch::Sender<bool>,
    hub: Mutex<Hub>,
    leases: Mutex<HashMap<u64, Held>>,
    locks: Mutex<HashMap<u64, (String, String, Held)>>,
    next_id: AtomicU64,
    uid: String,
    reader_connected: AtomicBool,
    /// Wakes the watch reader when it is parked (see [`Hub::idle`]).
    wake: Notify,
    /// The namespace's epoch (`{ns}:epoch`) as this store knows it.
    epoch: Mutex<String>,
}

struct Held {
    trigger: LostTrigger,
    task: JoinHandle<()>,
}

struct Hub {
    /// The last stream entry the reader dispatched.
    pos: (u64, u64),
    /// The last revision whose data entry (`{rev}-0`) the reader saw (or
    /// the revision it started at). Gaps are measured from here, never
    /// from an unlock record.
    data: u64,
    /// The reader is parked: the store has no watch and no lock waiter,
    /// so it reads nothing (a write then costs the server no `XREAD`),
    /// and `pos` and `data` mean nothing. Whoever needs the reader again
    /// sets them to a revision from the server after which it must
    /// deliver everything, clears this, and wakes the reader.
    idle: bool,
    subs: Subs,
    /// Per lock key: the notifier and how many of this store's `lock()`
    /// calls wait on it.
    lock_waiters: HashMap<String, (Arc<Notify>, usize)>,
}

impl Hub {
    /// Starts the parked reader after revision `rev`; does nothing if it
    /// is reading.
    fn resume_after(&mut self, rev: u64, wake: &Notify) {
        if self.idle {
            self.idle = false;
            self.pos = (rev, 0);
            self.data = rev;
            wake.notify_one();
        }
    }

    /// Ends every watch with `err`, and wakes every lock waiter (the
    /// unlock record it waits for may be lost too; it tries again).
    fn fail_all(&mut self, err: impl Fn() -> Error) {
        for sub in self.subs.drain() {
            // Never silent: a full buffer ends in WatchLagged.
            let _ = sub.events.send(Err(err()));
        }
        for (n, _) in self.lock_waiters.values() {
            n.notify_waiters();
        }
    }
}

#[derive(Clone)]
enum Filter {
    Key(String),
    Tree(String),
}

impl Filter {
    fn matches(&self, full: &str) -> bool {
        match self {
            Filter::Key(k) => k == full,
            Filter::Tree(p) => key::is_in_tree(p, full),
        }
    }
}

struct Sub {
    events: EventSender,
    last: u64,
}

/// A store's watches, grouped by the key or the tree they watch, so a
/// change is offered only to the watches it matches: one lookup for the
/// key and one per tree that could hold it, however many other watches
/// the store has.
#[derive(Default)]
struct Subs {
    /// Watches of one key, by full key.
    keys: HashMap<String, HashMap<u64, Sub>>,
    /// Watches of a tree, by full prefix.
    trees: HashMap<String, HashMap<u64, Sub>>,
    /// What each watch watches.
    filters: HashMap<u64, Filter>,
}

impl Subs {
    fn len(&self) -> usize {
        self.filters.len()
    }

    fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    fn insert(&mut self, id: u64, filter: Filter, sub: Sub) {
        let group = match &filter {
            Filter::Key(k) => self.keys.entry(k.clone()).or_default(),
            Filter::Tree(p) => self.trees.entry(p.clone()).or_default(),
        };
        group.insert(id, sub);
        self.filters.insert(id, filter);
    }

    fn remove(&mut self, id: u64) {
        let Some(filter) = self.filters.remove(&id) else {
            return;
        };
        let (groups, name) = match &filter {
            Filter::Key(k) => (&mut self.keys, k),
            Filter::Tree(p) => (&mut self.trees, p),
        };
        if let Some(group) = groups.get_mut(name) {
            group.remove(&id);
            if group.is_empty() {
                groups.remove(name);
            }
        }
    }

    /// Removes every watch.
    fn drain(&mut self) -> impl Iterator<Item = Sub> + '_ {
        self.filters.clear();
        self.keys
            .drain()
            .chain(self.trees.drain())
            .flat_map(|(_, group)| group.into_values())
    }

    fn clear(&mut self) {
        self.filters.clear();
        self.keys.clear();
        self.trees.clear();
    }

    /// Sends `event`, the change of `full` at `rev`, to every watch of
    /// that key or of a tree holding it that has not seen `rev` yet; drops
    /// the watches that are gone.
    fn deliver(&mut self, full: &str, rev: u64, event: &WatchEvent) {
        let mut gone = Vec::new();
        let mut send = |group: &mut HashMap<u64, Sub>| {
            for (id, sub) in group.iter_mut() {
                if rev <= sub.last {
                    continue;
                }
                sub.last = rev;
                if sub.events.send(Ok(event.clone())).is_err() {
                    gone.push(*id);
                }
            }
        };
        if let Some(group) = self.keys.get_mut(full) {
            send(group);
        }
        if !self.trees.is_empty() && !full.is_empty() {
            // The trees holding `full`: the whole namespace (`""`), and
            // every proper prefix of it that ends before a `/`.
            if let Some(group) = self.trees.get_mut("") {
                send(group);
            }
            for (i, b) in full.bytes().enumerate() {
                if b == b'/' {
                    if let Some(group) = self.trees.get_mut(&full[..i]) {
                        send(group);
                    }
                }
            }
        }
        for id in gone {
            self.remove(id);
        }
    }
}

/// One change record of the stream.
struct Entry {
    rev: u64,
    seq: u64,
    key: String,
    kind: u8,
    value: Bytes,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.inner.shared;
        f.debug_struct("RedisStore")
            .field("config", &s.config)
            .field("closed", &s.closed.load(Ordering::Relaxed))
            .finish()
    }
}

fn map_err(e: RedisError, what: &str) -> Error {
    let code = e.code().unwrap_or("");
    let text = e.to_string();
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || code == "WRONGPASS"
        || code == "NOAUTH"
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
    {
        return Error::Unauthenticated {
            backend: BACKEND,
            message: format!("{what}: {text}"),
        };
    }
    if code == "NOPERM"
        || text.contains("NOPERM")
        || text.contains("can't access at least one of the keys")
        || text.contains("has no permissions")
    {
        return Error::PermissionDenied {
            backend: BACKEND,
            message: format!("{what}: {text}"),
        };
    }
    if e.is_timeout() {
        return Error::Unavailable {
            backend: BACKEND,
            message: format!("{what}: the server did not answer in time (may have been applied)"),
            source: Some(Box::new(e)),
        };
    }
    if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            code,
            "LOADING" | "TRYAGAIN" | "MASTERDOWN" | "BUSY" | "CLUSTERDOWN"
        )
    {
        return Error::Unavailable {
            backend: BACKEND,
            message: format!("{what}: {text}"),
            source: Some(Box::new(e)),
        };
    }
    Error::Backend {
        backend: BACKEND,
        message: format!("{what}: {text}"),
        source: Some(Box::new(e)),
    }
}

fn bad_reply(what: &str) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!("{what}: unexpected reply from the server"),
        source: None,
    }
}

/// What a call is, for its error messages: a fixed text, or a closure
/// that builds one (only when there is an error to report).
trait Label {
    fn text(&self) -> String;
}

impl Label for &str {
    fn text(&self) -> String {
        (*self).to_owned()
    }
}

impl<F: Fn() -> String> Label for F {
    fn text(&self) -> String {
        self()
    }
}

fn as_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        _ => None,
    }
}

/// Like [`as_bytes`], taking the bytes out of the reply without a copy.
fn into_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        other => as_bytes(&other),
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => std::str::from_utf8(&as_bytes(other)?).ok()?.parse().ok(),
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => std::str::from_utf8(&as_bytes(other)?).ok()?.parse().ok(),
    }
}

fn as_array(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

fn code_pair(v: Value, what: &str) -> Result<(i64, i64)> {
    let a = as_array(v).ok_or_else(|| bad_reply(what))?;
    match (a.first().and_then(as_i64), a.get(1).and_then(as_i64)) {
        (Some(c), Some(n)) => Ok((c, n)),
        _ => Err(bad_reply(what)),
    }
}

fn parse_id(id: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(id).ok()?;
    let (a, b) = s.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Parses `[id, [field, value, ...]]` entries. An entry whose fields are
/// not ours (kind 0) is kept, so the reader moves past it.
fn parse_entries(v: Value) -> Option<Vec<Entry>> {
    let mut out = Vec::new();
    for item in as_array(v)? {
        let mut parts = as_array(item)?.into_iter();
        let Some((rev, seq)) = parts
            .next()
            .as_ref()
            .and_then(as_bytes)
            .and_then(|id| parse_id(&id))
        else {
            continue;
        };
        let mut e = Entry {
            rev,
            seq,
            key: String::new(),
            kind: 0,
            value: Bytes::new(),
        };
        let fields = parts.next().and_then(as_array).unwrap_or_default();
        let mut it = fields.into_iter();
        let mut key = None;
        let mut kind = 0;
        while let (Some(f), Some(val)) = (it.next(), it.next()) {
            let (Some(f), Some(val)) = (as_bytes(&f), into_bytes(val)) else {
                continue;
            };
            match f.as_slice() {
                b"k" => key = String::from_utf8(val).ok(),
                b"t" => kind = val.first().copied().unwrap_or(0),
                b"v" => e.value = Bytes::from(val),
                _ => {}
            }
        }
        if let Some(k) = key {
            e.key = k;
            e.kind = kind;
        }
        out.push(e);
    }
    Some(out)
}

/// Parses an `XREAD` reply: `[[stream, entries]]` (RESP2) or a map (RESP3).
fn parse_xread(v: Value) -> Option<Vec<Entry>> {
    match v {
        Value::Nil => Some(Vec::new()),
        Value::Map(m) => {
            let mut out = Vec::new();
            for (_, entries) in m {
                out.extend(parse_entries(entries)?);
            }
            Some(out)
        }
        other => {
            let mut out = Vec::new();
            for stream in as_array(other)? {
                let mut parts = as_array(stream)?.into_iter();
                let _name = parts.next()?;
                out.extend(parse_entries(parts.next()?)?);
            }
            Some(out)
        }
    }
}

impl Shared {
    fn name(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    fn check(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            Err(Error::closed(BACKEND))
        } else {
            Ok(())
        }
    }

    fn relative<'a>(&self, full: &'a str) -> &'a str {
        key::strip_root(&self.root, full).unwrap_or(full)
    }

    /// Runs a script once, within the timeout. For writes. `what` names
    /// the call in errors; it is only built when there is one.
    async fn run(&self, script: &redis::Script, args: &[&[u8]], what: impl Label) -> Result<Value> {
        let mut inv = script.prepare_invoke();
        inv.arg(self.prefix.as_bytes()).arg(self.history.as_bytes());
        for a in args {
            inv.arg(*a);
        }
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.config.timeout, inv.invoke_async::<Value>(&mut conn)).await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_err(e, &what.text())),
            Err(_) => Err(Error::Timeout {
                backend: BACKEND,
                operation: format!("{} (may have been applied)", what.text()),
                after: self.config.timeout,
            }),
        }
    }

    /// Runs a read-only script, retrying transient failures within the
    /// timeout.
    async fn read(&self, script: &redis::Script, args: &[&[u8]], what: &str) -> Result<Value> {
        let mut inv = script.prepare_invoke();
        inv.arg(self.prefix.as_bytes()).arg(self.history.as_bytes());
        for a in args {
            inv.arg(*a);
        }
        let inv = &inv;
        self.retrying(what, move |mut conn| async move {
            inv.invoke_async::<Value>(&mut conn).await
        })
        .await
    }

    /// Sends a read-only command, retrying transient failures within the
    /// timeout.
    async fn read_cmd(&self, cmd: &redis::Cmd, what: &str) -> Result<Value> {
        self.retrying(what, move |mut conn| async move {
            cmd.query_async::<Value>(&mut conn).await
        })
        .await
    }

    /// Calls `call` on the store's connection until it succeeds, fails
    /// for good, or the timeout runs out. For reads only.
    async fn retrying<F, Fut>(&self, what: &str, mut call: F) -> Result<Value>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<Value>>,
    {
        let deadline = Instant::now()
            .checked_add(self.config.timeout)
            .unwrap_or_else(Instant::now);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let err = match tokio::time::timeout(left, call(self.conn.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => map_err(e, what),
                Err(_) => {
                    return Err(Error::Timeout {
                        backend: BACKEND,
                        operation: what.to_owned(),
                        after: self.config.timeout,
                    })
                }
            };
            if !err.is_retryable() || Instant::now() + Duration::from_millis(100) >= deadline {
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.check()?;
        }
    }

    async fn revoke_lease(&self, id: u64) -> Result<()> {
        let held = self.leases.lock().remove(&id);
        if let Some(h) = held {
            h.task.abort();
            h.trigger.fire();
        }
        self.run(
            &scripts::REVOKE,
            &[id.to_string().as_bytes()],
            "revoke lease",
        )
        .await?;
        Ok(())
    }

    async fn unlock(&self, id: u64) -> Result<()> {
        let held = self.locks.lock().remove(&id);
        if let Some((full, token, h)) = held {
            h.task.abort();
            h.trigger.fire();
            self.run(
                &scripts::UNLOCK,
                &[full.as_bytes(), token.as_bytes()],
                "release lock",
            )
            .await?;
        }
        Ok(())
    }

    /// Stops background work without talking to the server.
    fn shutdown_local(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.shutdown.send_replace(true);
        let mut hub = self.hub.lock();
        hub.subs.clear();
        for (n, _) in hub.lock_waiters.values() {
            n.notify_waiters();
        }
        drop(hub);
        for (_, h) in self.leases.lock().drain() {
            h.task.abort();
            h.trigger.fire();
        }
        for (_, (_, _, h)) in self.locks.lock().drain() {
            h.task.abort();
            h.trigger.fire();
        }
    }

    async fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shutdown.send_replace(true);
        let leases: Vec<u64> = self.leases.lock().keys().copied().collect();
        for id in leases {
            let _ = self.revoke_lease(id).await;
        }
        let locks: Vec<u64> = self.locks.lock().keys().copied().collect();
        for id in locks {
            let _ = self.unlock(id).await;
        }
        self.shutdown_local();
    }

    /// Delivers stream entries the reader read, in order.
    fn dispatch(&self, entries: Vec<Entry>) {
        let mut hub = self.hub.lock();
        for e in entries {
            if (e.rev, e.seq) <= hub.pos {
                continue;
            }
            // A data entry must follow the last one seen; an unlock record
            // `{r}-n` (n >= 1) follows `{r}-0`, so one for a revision whose
            // data entry was never seen means that entry was trimmed.
            let gap = if e.seq == 0 {
                e.rev > hub.data.saturating_add(1)
            } else {
                e.rev > hub.data
            };
            if gap {
                // Entries between were trimmed before the reader saw
                // them: every watch may have missed something.
                let requested = hub.data;
                let oldest = e.rev;
                hub.fail_all(|| Error::Compacted {
                    backend: BACKEND,
                    requested,
                    oldest,
                });
            }
            if e.seq == 0 {
                if matches!(e.kind, b'p' | b'd') {
                    let event = self.event(&e);
                    hub.subs.deliver(&e.key, e.rev, &event);
                }
            } else if e.kind == b'u' {
                if let Some((n, _)) = hub.lock_waiters.get(&e.key) {
                    n.notify_waiters();
                }
            }
            hub.data = hub.data.max(e.rev);
            hub.pos = (e.rev, e.seq);
        }
    }

    fn event(&self, e: &Entry) -> WatchEvent {
        let key = self.relative(&e.key).to_owned();
        if e.kind == b'd' {
            WatchEvent::Delete {
                key,
                revision: e.rev,
            }
        } else {
            WatchEvent::Put(KvPair {
                key,
                value: e.value.clone(),
                revision: e.rev,
            })
        }
    }
}

/// A copy of a reader error, for every watch it ends.
fn reader_error(e: &Error) -> impl Fn() -> Error {
    let kind = e.kind();
    let message = format!("the watch reader cannot read the change stream: {e}");
    move || match kind {
        anykv_core::ErrorKind::PermissionDenied => Error::PermissionDenied {
            backend: BACKEND,
            message: message.clone(),
        },
        anykv_core::ErrorKind::Unauthenticated => Error::Unauthenticated {
            backend: BACKEND,
            message: message.clone(),
        },
        _ => Error::Backend {
            backend: BACKEND,
            message: message.clone(),
            source: None,
        },
    }
}

/// Parses the `STATE` script's `{epoch, revision}`.
fn parse_state(v: Value, what: &str) -> Result<(String, u64)> {
    let a = as_array(v).ok_or_else(|| bad_reply(what))?;
    let epoch = a
        .first()
        .and_then(as_bytes)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| bad_reply(what))?;
    let rev = a.get(1).and_then(as_u64).ok_or_else(|| bad_reply(what))?;
    Ok((epoch, rev))
}

/// Checks, on a new reader connection, that the namespace is the one the
/// reader has been following: the same epoch, and a revision not below
/// the last one delivered. Otherwise the server lost writes (a restart
/// without persistence, a flush, eviction): revisions may be handed out
/// again and the reader's position means nothing, so every watch ends with
/// `Compacted` and the reader starts over at the server's revision.
async fn check_state(shared: &Shared, c: &mut MultiplexedConnection) -> Result<()> {
    let candidate = format!(
        "{}-{}",
        shared.uid,
        shared.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let mut inv = scripts::STATE.prepare_invoke();
    inv.arg(shared.prefix.as_bytes())
        .arg(shared.history.as_bytes())
        .arg(candidate.as_bytes());
    let v = match tokio::time::timeout(shared.config.timeout, inv.invoke_async::<Value>(c)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(map_err(e, "watch reader")),
        Err(_) => {
            return Err(Error::Timeout {
                backend: BACKEND,
                operation: "watch reader".into(),
                after: shared.config.timeout,
            })
        }
    };
    let (epoch, rev) = parse_state(v, "watch reader")?;
    let mut hub = shared.hub.lock();
    let mut ours = shared.epoch.lock();
    if *ours != epoch || rev < hub.data {
        let requested = hub.data;
        tracing::warn!(
            "anykv-redis: the server lost writes (epoch {} -> {epoch}, revision {requested} \
             -> {rev}); ending every watch with Compacted",
            *ours
        );
        hub.fail_all(|| Error::Compacted {
            backend: BACKEND,
            requested,
            oldest: rev.saturating_add(1),
        });
        *ours = epoch;
        hub.data = rev;
        hub.pos = (rev, 0);
    }
    Ok(())
}

async fn reader_loop(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let log = shared.name("log");
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(shared.config.connect_timeout))
        .set_response_timeout(Some(
            Duration::from_millis(BLOCK_MS).saturating_add(shared.config.timeout),
        ));
    let outage_limit = shared.config.timeout.saturating_mul(3).max(MIN_OUTAGE);
    let mut conn: Option<MultiplexedConnection> = None;
    // Since when the reader has not been reading (None: it is).
    let mut down_since: Option<Instant> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let parked = {
            let mut hub = shared.hub.lock();
            if hub.subs.is_empty() && hub.lock_waiters.is_empty() {
                hub.idle = true;
            }
            hub.idle
        };
        if parked {
            // Nobody to deliver to: read nothing until a watch or a lock
            // waiter gives the reader a position again.
            down_since = None;
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = shared.wake.notified() => continue,
            }
        }
        if let Some(since) = down_since {
            let down = since.elapsed();
            let mut hub = shared.hub.lock();
            if down >= outage_limit && !hub.subs.is_empty() {
                hub.fail_all(|| Error::Unavailable {
                    backend: BACKEND,
                    message: format!(
                        "the watch reader could not read the change stream for {down:?}"
                    ),
                    source: None,
                });
            }
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => {
                let attempt = tokio::select! {
                    _ = shutdown.changed() => break,
                    r = shared.client.get_multiplexed_async_connection_with_config(&cfg) => r,
                };
                let checked = match attempt {
                    Ok(mut c) => {
                        let r = tokio::select! {
                            _ = shutdown.changed() => break,
                            r = check_state(&shared, &mut c) => r,
                        };
                        r.map(|()| c)
                    }
                    Err(e) => Err(map_err(e, "watch reader connect")),
                };
                match checked {
                    Ok(c) => {
                        shared.reader_connected.store(true, Ordering::SeqCst);
                        conn.insert(c)
                    }
                    Err(e) => {
                        tracing::debug!("anykv-redis watch reader cannot connect: {e}");
                        if !e.is_retryable() {
                            shared.hub.lock().fail_all(reader_error(&e));
                        }
                        down_since.get_or_insert_with(Instant::now);
                        tokio::select! {
                            _ = shutdown.changed() => break,
                            _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                        }
                    }
                }
            }
        };
        let pos = shared.hub.lock().pos;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(128)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(&log)
            .arg(format!("{}-{}", pos.0, pos.1));
        let reply = tokio::select! {
            _ = shutdown.changed() => break,
            r = cmd.query_async::<Value>(c) => r,
        };
        let err = match reply {
            Ok(v) => match parse_xread(v) {
                Some(entries) => {
                    down_since = None;
                    shared.reader_connected.store(true, Ordering::SeqCst);
                    shared.dispatch(entries);
                    continue;
                }
                None => bad_reply("XREAD"),
            },
            Err(e) => map_err(e, "XREAD"),
        };
        // Transient errors: reconnect and go on from the same position.
        // Others (an ACL without XREAD, a key of the wrong type, a reply
        // we cannot read) would repeat: they end every watch, loudly.
        tracing::debug!("anykv-redis watch reader failed: {err}");
        conn = None;
        shared.reader_connected.store(false, Ordering::SeqCst);
        down_since.get_or_insert_with(Instant::now);
        let nap = if err.is_retryable() {
            Duration::from_millis(100)
        } else {
            tracing::warn!("anykv-redis: {err}; ending every watch");
            shared.hub.lock().fail_all(reader_error(&err));
            Duration::from_millis(500)
        };
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep(nap) => {}
        }
    }
    shared.reader_connected.store(false, Ordering::SeqCst);
    shared.hub.lock().subs.clear();
}

/// Warns when the server may evict the namespace's keys. `CONFIG` is
/// optional: a user without it gets a debug message only.
async fn check_eviction_policy(shared: &Shared) {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg("maxmemory-policy");
    let mut conn = shared.conn.clone();
    match tokio::time::timeout(shared.config.timeout, cmd.query_async::<Value>(&mut conn)).await {
        Ok(Ok(v)) => {
            let policy = match v {
                Value::Map(m) => m.into_iter().next().and_then(|(_, v)| as_bytes(&v)),
                other => as_array(other).and_then(|a| a.get(1).and_then(as_bytes)),
            };
            if let Some(p) = policy {
                let p = String::from_utf8_lossy(&p);
                if p != "noeviction" {
                    tracing::warn!(
                        "anykv-redis: the server's maxmemory-policy is {p:?}; evicted keys \
                         lose data and revisions, use noeviction"
                    );
                }
            }
        }
        Ok(Err(e)) => tracing::debug!("anykv-redis: cannot check maxmemory-policy: {e}"),
        Err(_) => tracing::debug!("anykv-redis: cannot check maxmemory-policy: timed out"),
    }
}

async fn sweep_loop(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let batch = SWEEP_BATCH.to_string();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
        if *shutdown.borrow() {
            break;
        }
        if let Err(e) = shared
            .run(&scripts::SWEEP, &[batch.as_bytes()], "expiry sweep")
            .await
        {
            tracing::debug!("anykv-redis expiry sweep failed: {e}");
        }
    }
}

impl RedisStore {
    /// Opens a store as configured: connects, checks the credentials and
    /// the namespace's keys are usable, and starts the store's watch
    /// reader and expiry sweep.
    pub async fn open(config: RedisConfig) -> Result<Self> {
        let root = config.validate()?;
        let scheme = if config.tls { "rediss" } else { "redis" };
        let host = if config.host.contains(':') && !config.host.starts_with('[') {
            format!("[{}]", config.host)
        } else {
            config.host.clone()
        };
        let addr = format!("{scheme}://{host}:{}/{}", config.port, config.db);
        let mut info = redis::IntoConnectionInfo::into_connection_info(addr.as_str())
            .map_err(|e| Error::Config(format!("invalid Redis address: {e}")))?;
        let mut settings = info.redis_settings().clone();
        if let Some(u) = &config.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &config.password {
            settings = settings.set_password(p);
        }
        info = info.set_redis_settings(settings);
        let client = if config.tls {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let root_cert = match &config.ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    Error::Config(format!("cannot read ca_file {}: {e}", path.display()))
                })?),
                None => None,
            };
            Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert,
                },
            )
        } else {
            Client::open(info)
        }
        .map_err(|e| Error::Config(format!("invalid Redis configuration: {e}")))?;
        let mgr_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = match tokio::time::timeout(
            config.connect_timeout.saturating_add(config.timeout),
            ConnectionManager::new_with_config(client.clone(), mgr_config),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(map_err(e, "connect")),
            Err(_) => {
                return Err(Error::Timeout {
                    backend: BACKEND,
                    operation: "connect".into(),
                    after: config.connect_timeout.saturating_add(config.timeout),
                })
            }
        };
        let prefix = format!("{{{}}}:", config.namespace);
        let mut caps = Capabilities::new(BACKEND);
        caps.min_ttl = MIN_TTL;
        caps.max_value_size = config.max_value_size;
        let (shutdown, _) = watch::channel(false);
        static STORES: AtomicU64 = AtomicU64::new(1);
        let uid = format!(
            "{}-{}-{}",
            std::process::id(),
            STORES.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let shared = Arc::new(Shared {
            history: config.history.to_string(),
            config,
            root,
            prefix,
            client,
            conn,
            caps,
            closed: AtomicBool::new(false),
            shutdown,
            hub: Mutex::new(Hub {
                pos: (0, 0),
                data: 0,
                subs: Subs::default(),
                idle: false,
                lock_waiters: HashMap::new(),
            }),
            leases: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            epoch: Mutex::new(uid.clone()),
            uid,
            reader_connected: AtomicBool::new(false),
            wake: Notify::new(),
        });
        // The reader starts at the current revision of the namespace's
        // epoch (stored now if the namespace has none); this also proves
        // the credentials and the ACL allow our keys, and the XREAD that
        // the reader may read the change stream.
        let checked = async {
            let v = shared
                .read(&scripts::STATE, &[shared.uid.as_bytes()], "open")
                .await?;
            let (epoch, rev) = parse_state(v, "open")?;
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(1)
                .arg("STREAMS")
                .arg(shared.name("log"))
                .arg(format!("{rev}-0"));
            let mut conn = shared.conn.clone();
            match tokio::time::timeout(shared.config.timeout, cmd.query_async::<Value>(&mut conn))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(map_err(e, "open (XREAD of the change stream)")),
                Err(_) => {
                    return Err(Error::Timeout {
                        backend: BACKEND,
                        operation: "open".into(),
                        after: shared.config.timeout,
                    })
                }
            }
            Ok((epoch, rev))
        }
        .await;
        let (epoch, rev) = match checked {
            Ok(v) => v,
            Err(e) => {
                shared.shutdown_local();
                return Err(e);
            }
        };
        check_eviction_policy(&shared).await;
        *shared.epoch.lock() = epoch;
        {
            let mut hub = shared.hub.lock();
            hub.pos = (rev, 0);
            hub.data = rev;
        }
        tokio::spawn(reader_loop(shared.clone()));
        tokio::spawn(sweep_loop(shared.clone()));
        Ok(RedisStore {
            inner: Arc::new(Inner { shared }),
        })
    }

    /// Opens a `redis://` or `rediss://` URL (see the crate documentation).
    pub async fn open_url(url: &str) -> Result<Self> {
        let parsed = anykv_core::parse_url(url)?;
        Self::open(RedisConfig::from_url(&parsed)?).await
    }

    /// The store's configuration (its `Debug` hides the password).
    pub fn config(&self) -> &RedisConfig {
        &self.inner.shared.config
    }

    /// Trims the change stream so that watches can no longer resume from
    /// `revision` or before (`XTRIM {ns}:log MINID revision+1`). The
    /// conformance suite's compact hook.
    pub async fn compact(&self, revision: u64) -> Result<()> {
        let s = &self.inner.shared;
        s.check()?;
        let mut cmd = redis::cmd("XTRIM");
        cmd.arg(s.name("log"))
            .arg("MINID")
            .arg(format!("{}-0", revision.saturating_add(1)));
        let mut conn = s.conn.clone();
        match tokio::time::timeout(s.config.timeout, cmd.query_async::<Value>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(map_err(e, "compact")),
            Err(_) => Err(Error::Timeout {
                backend: BACKEND,
                operation: "compact".into(),
                after: s.config.timeout,
            }),
        }
    }

    fn full_key(&self, key: &str) -> Result<(String, String)> {
        let canonical = key::normalize_key(key)?;
        Ok((key::join(&self.inner.shared.root, &canonical), canonical))
    }

    /// The full prefix and the index range of a tree.
    fn tree(&self, prefix: &str) -> Result<(String, String, String, bool)> {
        let p = key::normalize_prefix(prefix)?;
        let full = key::join(&self.inner.shared.root, &p);
        let (min, max) = if full.is_empty() {
            ("-".to_owned(), "+".to_owned())
        } else {
            let (a, b) = key::tree_range(&full);
            (
                format!("[{a}"),
                format!("({}", b.unwrap_or_else(|| format!("{full}0"))),
            )
        };
        Ok((full, min, max, !p.is_empty()))
    }

    fn check_write(&self, key: &str, value: &Bytes, options: &PutOptions) -> Result<String> {
        let s = &self.inner.shared;
        s.check()?;
        let (full, canonical) = self.full_key(key)?;
        options.validate()?;
        if value.len() > s.config.max_value_size {
            return Err(Error::ValueTooLarge {
                backend: BACKEND,
                key: canonical,
                size: value.len(),
                max: s.config.max_value_size,
            });
        }
        Ok(full)
    }

    async fn write(
        &self,
        key: &str,
        value: Bytes,
        mode: &str,
        expected: u64,
        options: PutOptions,
    ) -> Result<u64> {
        let full = self.check_write(key, &value, &options)?;
        let s = &self.inner.shared;
        let ttl = options
            .ttl
            .map(|t| t.clamp(MIN_TTL, MAX_TTL).as_millis().to_string())
            .unwrap_or_else(|| "0".into());
        let lease = options.lease.map(|l| l.0).unwrap_or(0).to_string();
        let v = s
            .run(
                &scripts::PUT,
                &[
                    full.as_bytes(),
                    &value,
                    mode.as_bytes(),
                    expected.to_string().as_bytes(),
                    ttl.as_bytes(),
                    lease.as_bytes(),
                ],
                || format!("put {:?}", s.relative(&full)),
            )
            .await?;
        let (code, n) = code_pair(v, "put")?;
        if code == 0 {
            return u64::try_from(n).map_err(|_| bad_reply("put"));
        }
        let canonical = s.relative(&full).to_owned();
        match code {
            1 => Err(Error::KeyExists {
                backend: BACKEND,
                key: canonical,
            }),
            2 => Err(Error::KeyModified {
                backend: BACKEND,
                key: canonical,
                expected,
                actual: u64::try_from(n).unwrap_or(0),
            }),
            3 => Err(Error::KeyNotFound {
                backend: BACKEND,
                key: canonical,
            }),
            4 => Err(Error::LeaseLost {
                backend: BACKEND,
                lease: options.lease.map(|l| l.0).unwrap_or(0),
            }),
            _ => Err(bad_reply("put")),
        }
    }

    /// Reads pairs: one key, or a range of the index. Returns the store's
    /// revision (0 unless `with_rev`) and the pairs, as of one instant.
    async fn read_pairs(
        &self,
        single: &str,
        min: &str,
        max: &str,
        with_rev: bool,
        what: &str,
    ) -> Result<(u64, Vec<KvPair>)> {
        let s = &self.inner.shared;
        let flag: &[u8] = if with_rev { b"1" } else { b"0" };
        let v = s
            .read(
                &scripts::READ,
                &[single.as_bytes(), min.as_bytes(), max.as_bytes(), flag],
                what,
            )
            .await?;
        let a = as_array(v).ok_or_else(|| bad_reply(what))?;
        let mut it = a.into_iter();
        let rev = it
            .next()
            .as_ref()
            .and_then(as_u64)
            .ok_or_else(|| bad_reply(what))?;
        let mut pairs = Vec::with_capacity(it.len() / 3);
        while let (Some(k), Some(v), Some(r)) = (it.next(), it.next(), it.next()) {
            let k = into_bytes(k)
                .and_then(|k| String::from_utf8(k).ok())
                .ok_or_else(|| bad_reply(what))?;
            let value = into_bytes(v).unwrap_or_default();
            let revision = as_u64(&r).ok_or_else(|| bad_reply(what))?;
            let key = match key::strip_root(&s.root, &k) {
                Some(rel) if rel.len() == k.len() => k,
                Some(rel) => rel.to_owned(),
                None => k,
            };
            pairs.push(KvPair {
                key,
                value: Bytes::from(value),
                revision,
            });
        }
        Ok((rev, pairs))
    }

    /// `get`: one `HMGET` of the key's hash. Only a key with a deadline
    /// needs the server's clock to know whether it is still live; that
    /// one is read again with the read script (one instant, `TIME`).
    async fn get_pair(&self, full: &str, canonical: String) -> Result<Option<KvPair>> {
        let s = &self.inner.shared;
        let mut name = String::with_capacity(s.prefix.len() + 2 + full.len());
        name.push_str(&s.prefix);
        name.push_str("k:");
        name.push_str(full);
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(name).arg("v").arg("r").arg("e");
        let v = s.read_cmd(&cmd, "get").await?;
        let mut it = as_array(v).ok_or_else(|| bad_reply("get"))?.into_iter();
        let (Some(v), Some(r), Some(e)) = (it.next(), it.next(), it.next()) else {
            return Err(bad_reply("get"));
        };
        if !matches!(e, Value::Nil) {
            let (_, mut pairs) = self.read_pairs(full, "", "", false, "get").await?;
            return Ok(pairs.pop());
        }
        if matches!(r, Value::Nil) {
            return Ok(None);
        }
        let revision = as_u64(&r).ok_or_else(|| bad_reply("get"))?;
        Ok(Some(KvPair {
            key: canonical,
            value: Bytes::from(into_bytes(v).unwrap_or_default()),
            revision,
        }))
    }

    async fn watch_filter(
        &self,
        filter: Filter,
        single: &str,
        min: &str,
        max: &str,
        options: WatchOptions,
    ) -> Result<WatchStream> {
        let s = self.inner.shared.clone();
        let buffer = options.buffer.max(1);
        let (start, mut initial) = match options.from_revision {
            Some(r) => (r, Vec::new()),
            None => {
                let (rev, pairs) = self.read_pairs(single, min, max, true, "watch").await?;
                let mut initial: Vec<WatchEvent> = pairs.into_iter().map(WatchEvent::Put).collect();
                initial.push(WatchEvent::Synced { revision: rev });
                (rev, initial)
            }
        };
        let (tx, rx) = event_channel(BACKEND, buffer);
        let id = s.next_id.fetch_add(1, Ordering::Relaxed);
        let mut last = start;
        // Whether `last` is the namespace's revision as of some instant
        // since this call began (a snapshot's, or the end of a catch-up):
        // a parked reader may then start right after it.
        let mut fresh = options.from_revision.is_none();
        // The catch-up from the stream goes into `initial` (not the
        // channel), so resuming over more changes than `buffer` does not
        // lag; it is bounded by the stream's `history`.
        let stream = |registered: bool, initial: Vec<WatchEvent>| -> WatchStream {
            rx.into_stream(
                initial,
                WatchGuard {
                    shared: s.clone(),
                    id: registered.then_some(id),
                },
            )
        };
        loop {
            {
                let mut hub = s.hub.lock();
                if hub.idle && fresh {
                    hub.resume_after(last, &s.wake);
                }
                if !hub.idle && hub.pos.0 <= last {
                    if s.closed.load(Ordering::SeqCst) {
                        drop(hub);
                        drop(tx);
                        return Ok(stream(false, initial));
                    }
                    hub.subs
                        .insert(id, filter.clone(), Sub { events: tx, last });
                    drop(hub);
                    return Ok(stream(true, initial));
                }
            }
            let from = format!("{}-0", last.saturating_add(1));
            let v = s
                .read(
                    &scripts::CATCH_UP,
                    &[from.as_bytes(), CATCH_UP_COUNT.to_string().as_bytes()],
                    "watch catch-up",
                )
                .await?;
            let mut parts = as_array(v).ok_or_else(|| bad_reply("watch"))?.into_iter();
            let current = parts
                .next()
                .as_ref()
                .and_then(as_u64)
                .ok_or_else(|| bad_reply("watch"))?;
            let entries = parts
                .next()
                .and_then(parse_entries)
                .ok_or_else(|| bad_reply("watch"))?;
            let full_page = entries.len() >= CATCH_UP_COUNT;
            fresh = !full_page;
            let mut compacted = None;
            for e in entries {
                if e.seq != 0 {
                    continue;
                }
                if e.rev != last.saturating_add(1) {
                    compacted = Some(e.rev);
                    break;
                }
                last = e.rev;
                if matches!(e.kind, b'p' | b'd') && filter.matches(&e.key) {
                    initial.push(s.event(&e));
                }
            }
            if compacted.is_none() && !full_page && current > last {
                compacted = Some(current);
            }
            if let Some(oldest) = compacted {
                // The channel is empty: this is delivered after `initial`.
                let _ = tx.send(Err(Error::Compacted {
                    backend: BACKEND,
                    requested: start,
                    oldest,
                }));
                drop(tx);
                return Ok(stream(false, initial));
            }
        }
    }

    async fn lock_impl(
        &self,
        key: &str,
        options: LockOptions,
        wait: bool,
    ) -> Result<Option<LockGuard>> {
        let s = self.inner.shared.clone();
        s.check()?;
        let (full, canonical) = self.full_key(key)?;
        let ttl = options.ttl.clamp(MIN_TTL, MAX_TTL);
        let ttl_ms = ttl.as_millis().to_string();
        let deadline = options.timeout.and_then(|t| Instant::now().checked_add(t));
        let id = s.next_id.fetch_add(1, Ordering::Relaxed);
        let token = format!("{}-{id}", s.uid);
        let notify = {
            let mut hub = s.hub.lock();
            let entry = hub
                .lock_waiters
                .entry(full.clone())
                .or_insert_with(|| (Arc::new(Notify::new()), 0));
            entry.1 += 1;
            entry.0.clone()
        };
        let _waiter = WaiterGuard {
            shared: s.clone(),
            full: full.clone(),
        };
        loop {
            s.check()?;
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // If this future is dropped while the script is in flight, or
            // the outcome is unknown, the guard gives back what we may
            // hold (a token-checked UNLOCK) instead of leaving it held for
            // the whole TTL.
            let mut attempt_guard = AttemptGuard {
                shared: Some(s.clone()),
                full: full.clone(),
                token: token.clone(),
            };
            let sent = Instant::now();
            let attempt = s
                .run(
                    &scripts::LOCK,
                    &[full.as_bytes(), token.as_bytes(), ttl_ms.as_bytes()],
                    || format!("lock {canonical:?}"),
                )
                .await;
            let reply = attempt.and_then(|v| as_array(v).ok_or_else(|| bad_reply("lock")))?;
            let (Some(got), Some(n)) = (
                reply.first().and_then(as_i64),
                reply.get(1).and_then(as_i64),
            ) else {
                return Err(bad_reply("lock"));
            };
            if got == 1 {
                let fence = u64::try_from(n).map_err(|_| bad_reply("lock"))?;
                attempt_guard.shared = None;
                return Ok(Some(
                    self.held_lock(full, canonical, token, ttl, fence, id, sent),
                ));
            }
            attempt_guard.shared = None;
            if !wait {
                return Ok(None);
            }
            // A parked reader starts after this attempt, so the release
            // we wait for wakes us.
            if let Some(rev) = reply.get(2).and_then(as_u64) {
                s.hub.lock().resume_after(rev, &s.wake);
            }
            // While the reader is connected, its unlock records wake us;
            // otherwise the holder's remaining PTTL is the only bound, and
            // without the reader we retry at least every second.
            let reading = s.reader_connected.load(Ordering::SeqCst);
            let nap = match n {
                n if n > 0 => {
                    let d = Duration::from_millis(n as u64 + 5);
                    if reading {
                        d
                    } else {
                        d.min(Duration::from_secs(1))
                    }
                }
                // Released between SET and PTTL.
                -2 => Duration::from_millis(5),
                _ => Duration::from_secs(1),
            };
            let until = deadline.map(tokio::time::Instant::from_std);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(nap) => {}
                _ = async {
                    match until {
                        Some(u) => tokio::time::sleep_until(u).await,
                        None => futures::future::pending().await,
                    }
                } => {
                    return Err(Error::Timeout {
                        backend: BACKEND,
                        operation: format!("lock {canonical:?}"),
                        after: options.timeout.unwrap_or_default(),
                    });
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn held_lock(
        &self,
        full: String,
        canonical: String,
        token: String,
        ttl: Duration,
        fence: u64,
        id: u64,
        sent: Instant,
    ) -> LockGuard {
        let s = self.inner.shared.clone();
        let (trigger, signal) = lost_signal();
        let task = {
            let s = s.clone();
            let trigger = trigger.clone();
            let (full, token) = (full.clone(), token.clone());
            let ttl_ms = ttl.as_millis().to_string();
            tokio::spawn(async move {
                let (sr, f, t, m) = (&*s, &full, &token, &ttl_ms);
                keep_alive(sr, ttl, sent, move || async move {
                    sr.run(
                        &scripts::LOCK_REFRESH,
                        &[f.as_bytes(), t.as_bytes(), m.as_bytes()],
                        "keep lock",
                    )
                    .await
                })
                .await;
                s.locks.lock().remove(&id);
                trigger.fire();
            })
        };
        s.locks
            .lock()
            .insert(id, (full, token, Held { trigger, task }));
        LockGuard::new(
            canonical,
            fence,
            signal,
            Box::new(LockRelease { shared: s, id }),
        )
    }
}

/// Keeps a lock or a lease alive until it is lost; returns then. `sent`
/// is when the request that set its current deadline was sent: the server
/// set that deadline later, so `sent + ttl` is never past it. A refresh
/// every third of the TTL moves it on; a refresh that fails or hangs does
/// not delay the verdict, which falls at `sent + ttl - margin` whatever
/// is in flight.
async fn keep_alive<F, Fut>(s: &Shared, ttl: Duration, sent: Instant, mut refresh: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Value>>,
{
    let margin = (ttl / 10).min(Duration::from_millis(250));
    let mut valid_until = tokio::time::Instant::from_std(sent) + ttl - margin;
    let mut wait = ttl / 3;
    loop {
        let next = tokio::time::Instant::now() + wait;
        if next >= valid_until {
            tokio::time::sleep_until(valid_until).await;
            return;
        }
        tokio::time::sleep_until(next).await;
        let sent = tokio::time::Instant::now();
        let bound = s
            .config
            .timeout
            .min(valid_until.saturating_duration_since(sent));
        match tokio::time::timeout(bound, refresh()).await {
            Ok(Ok(v)) if as_i64(&v) == Some(1) => {
                valid_until = sent + ttl - margin;
                wait = ttl / 3;
            }
            // Gone (or an answer we do not understand): lost now.
            Ok(Ok(_)) => return,
            Ok(Err(e)) if !e.is_retryable() => return,
            // Unknown: retry soon, until the deadline.
            Ok(Err(_)) | Err(_) => {
                if tokio::time::Instant::now() >= valid_until {
                    return;
                }
                wait = Duration::from_millis(200);
            }
        }
    }
}

/// Gives back a lock an attempt may have taken, unless disarmed (its
/// `shared` taken) once the outcome is known.
struct AttemptGuard {
    shared: Option<Arc<Shared>>,
    full: String,
    token: String,
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        let Some(s) = self.shared.take() else {
            return;
        };
        let Ok(h) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (full, token) = (
            std::mem::take(&mut self.full),
            std::mem::take(&mut self.token),
        );
        h.spawn(async move {
            let _ = s
                .run(
                    &scripts::UNLOCK,
                    &[full.as_bytes(), token.as_bytes()],
                    "unlock",
                )
                .await;
        });
    }
}

/// Wakes nobody; removes the lock's waiter entry when the last waiter of
/// this store leaves.
struct WaiterGuard {
    shared: Arc<Shared>,
    full: String,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        let mut hub = self.shared.hub.lock();
        if let Some(entry) = hub.lock_waiters.get_mut(&self.full) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                hub.lock_waiters.remove(&self.full);
            }
        }
    }
}

struct LockRelease {
    shared: Arc<Shared>,
    id: u64,
}

#[async_trait]
impl Release for LockRelease {
    async fn release(&self) -> Result<()> {
        self.shared.unlock(self.id).await
    }

    fn release_in_background(&self) {
        let s = self.shared.clone();
        let id = self.id;
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    let _ = s.unlock(id).await;
                });
            }
            Err(_) => {
                if let Some((_, _, h)) = s.locks.lock().remove(&id) {
                    h.task.abort();
                    h.trigger.fire();
                }
            }
        }
    }
}

struct LeaseRelease {
    shared: Arc<Shared>,
    id: u64,
}

#[async_trait]
impl Release for LeaseRelease {
    async fn release(&self) -> Result<()> {
        self.shared.revoke_lease(self.id).await
    }

    fn release_in_background(&self) {
        let s = self.shared.clone();
        let id = self.id;
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    let _ = s.revoke_lease(id).await;
                });
            }
            Err(_) => {
                if let Some(h) = s.leases.lock().remove(&id) {
                    h.task.abort();
                    h.trigger.fire();
                }
            }
        }
    }
}

struct WatchGuard {
    shared: Arc<Shared>,
    id: Option<u64>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.shared.hub.lock().subs.remove(id);
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    fn capabilities(&self) -> &Capabilities {
        &self.inner.shared.caps
    }

    fn stats(&self) -> StoreStats {
        let s = &self.inner.shared;
        let watches = s.hub.lock().subs.len();
        let leases = s.leases.lock().len();
        let locks = s.locks.lock().len();
        let conns = if s.closed.load(Ordering::SeqCst) {
            0
        } else {
            1 + usize::from(s.reader_connected.load(Ordering::SeqCst))
        };
        StoreStats::new(watches, leases, locks, conns)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        self.inner.shared.check()?;
        let (full, canonical) = self.full_key(key)?;
        self.get_pair(&full, canonical).await
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<u64> {
        self.write(key, value, "put", 0, options).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let s = &self.inner.shared;
        s.check()?;
        let (full, _) = self.full_key(key)?;
        let v = s
            .run(&scripts::DELETE, &[full.as_bytes(), b"plain", b"0"], || {
                format!("delete {:?}", s.relative(&full))
            })
            .await?;
        let (_, n) = code_pair(v, "delete")?;
        Ok(n == 1)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.get(key).await?.is_some())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        self.inner.shared.check()?;
        let (_, min, max, _) = self.tree(prefix)?;
        let (_, pairs) = self.read_pairs("", &min, &max, false, "list").await?;
        Ok(pairs)
    }

    async fn delete_tree(&self, prefix: &str) -> Result<u64> {
        let s = &self.inner.shared;
        s.check()?;
        let (full, min, max, has_key) = self.tree(prefix)?;
        let key = if has_key { full.as_str() } else { "" };
        let v = s
            .run(
                &scripts::DELETE_TREE,
                &[key.as_bytes(), min.as_bytes(), max.as_bytes()],
                "delete_tree",
            )
            .await?;
        as_u64(&v).ok_or_else(|| bad_reply("delete_tree"))
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<u64>,
        options: PutOptions,
    ) -> Result<u64> {
        match expected {
            None => self.write(key, value, "create", 0, options).await,
            Some(r) => self.write(key, value, "cas", r, options).await,
        }
    }

    async fn atomic_delete(&self, key: &str, expected: u64) -> Result<()> {
        let s = &self.inner.shared;
        s.check()?;
        let (full, canonical) = self.full_key(key)?;
        let v = s
            .run(
                &scripts::DELETE,
                &[full.as_bytes(), b"cas", expected.to_string().as_bytes()],
                || format!("atomic_delete {canonical:?}"),
            )
            .await?;
        match code_pair(v, "atomic_delete")? {
            (0, _) => Ok(()),
            (2, actual) => Err(Error::KeyModified {
                backend: BACKEND,
                key: canonical,
                expected,
                actual: u64::try_from(actual).unwrap_or(0),
            }),
            (3, _) => Err(Error::KeyNotFound {
                backend: BACKEND,
                key: canonical,
            }),
            _ => Err(bad_reply("atomic_delete")),
        }
    }

    async fn watch(&self, key: &str, options: WatchOptions) -> Result<WatchStream> {
        self.inner.shared.check()?;
        let (full, _) = self.full_key(key)?;
        self.watch_filter(Filter::Key(full.clone()), &full, "", "", options)
            .await
    }

    async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream> {
        self.inner.shared.check()?;
        let (full, min, max, _) = self.tree(prefix)?;
        self.watch_filter(Filter::Tree(full), "", &min, &max, options)
            .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        let s = self.inner.shared.clone();
        s.check()?;
        anykv_core::backend::check_lease_ttl(ttl)?;
        let ttl = ttl.clamp(MIN_TTL, MAX_TTL);
        let ttl_ms = ttl.as_millis().to_string();
        let sent = Instant::now();
        let v = s
            .run(&scripts::GRANT, &[ttl_ms.as_bytes()], "grant lease")
            .await?;
        let id = as_u64(&v).ok_or_else(|| bad_reply("grant lease"))?;
        let (trigger, signal) = lost_signal();
        let task = {
            let s = s.clone();
            let trigger = trigger.clone();
            let id_s = id.to_string();
            tokio::spawn(async move {
                let (sr, i, m) = (&*s, &id_s, &ttl_ms);
                keep_alive(sr, ttl, sent, move || async move {
                    sr.run(
                        &scripts::KEEPALIVE,
                        &[i.as_bytes(), m.as_bytes()],
                        "keep lease",
                    )
                    .await
                })
                .await;
                s.leases.lock().remove(&id);
                trigger.fire();
            })
        };
        s.leases.lock().insert(
            id,
            Held {
                trigger: trigger.clone(),
                task,
            },
        );
        if s.closed.load(Ordering::SeqCst) {
            let _ = s.revoke_lease(id).await;
            return Err(Error::closed(BACKEND));
        }
        Ok(Lease::new(
            LeaseId(id),
            ttl,
            signal,
            Box::new(LeaseRelease { shared: s, id }),
        ))
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<LockGuard> {
        anykv_core::backend::check_lock_options(&options)?;
        match self.lock_impl(key, options, true).await? {
            Some(g) => Ok(g),
            None => Err(bad_reply("lock")),
        }
    }

    async fn try_lock(&self, key: &str, options: LockOptions) -> Result<Option<LockGuard>> {
        anykv_core::backend::check_lock_options(&options)?;
        self.lock_impl(key, options, false).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.shared.close().await;
        Ok(())
    }
}

/// Trims the change stream of the Redis store behind a type-erased handle
/// (see [`RedisStore::compact`]); `InvalidArgument` for any other store.
/// The conformance suite's compact hook.
pub async fn compact(store: &dyn Store, revision: u64) -> Result<()> {
    store
        .as_any()
        .downcast_ref::<RedisStore>()
        .ok_or_else(|| Error::InvalidArgument(format!("{store:?} is not a Redis store")))?
        .compact(revision)
        .await
}

/// Registers the `redis` and `rediss` schemes with
/// [`anykv_core::registry`].
pub fn register() {
    for scheme in ["redis", "rediss"] {
        anykv_core::register(scheme, |url: Url| async move {
            let store: Arc<dyn Store> =
                Arc::new(RedisStore::open(RedisConfig::from_url(&url)?).await?);
            Ok(store)
        });
    }
}
