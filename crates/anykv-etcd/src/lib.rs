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
//! `anykv::open` (through `anykv_core::parse_url`) turns the servers after
//! the first into the `endpoints` parameter, so
//! `etcd://h1:2379,h2:2379/root` and `etcd://h1:2379/root?endpoints=h2:2379`
//! are the same. A server without a port gets 2379.
//!
//! The same settings are available as a typed builder, [`EtcdConfig`]. A
//! password never appears in `Debug` output or in errors.
//!
//! ```no_run
//! # async fn demo() -> anykv_core::Result<()> {
//! use anykv_etcd::{EtcdConfig, EtcdStore};
//! use anykv_core::Store;
//! let store = EtcdStore::connect(
//!     EtcdConfig::new(["127.0.0.1:2379"]).with_root("app").with_user("root", "secret"),
//! )
//! .await?;
//! store.put("services/web", "10.0.0.1:80".into(), Default::default()).await?;
//! # Ok(()) }
//! ```
//!
//! # Key layout
//!
//! - User key `k` of root `app` is the etcd key `app/k`; the empty root
//!   puts keys at the top of etcd's key space. `list(p)` reads the range
//!   `[app/p/, app/p0)`; with the empty root and prefix the range starts at
//!   `" "`, the smallest byte a key may start with.
//! - Bookkeeping lives under `\0anykv/`, a prefix no user key can have
//!   (control characters are invalid in keys), so no `list` or watch of
//!   user keys ever sees it:
//!   - `\0anykv/locks/{root}/{lock}\0/{lease:016x}`: one key per holder or
//!     waiter of a lock, bound to its lease (the `\0` ends the lock's name,
//!     so lock `a` and lock `a/b` never share holders);
//!   - `\0anykv/ttl/{lease:016x}`: marks a lease granted for one TTL put.
//!
//! # Capabilities
//!
//! Every capability is on. `min_ttl` is 2 s, etcd's smallest lease (TTLs
//! are rounded up to whole seconds). `max_value_size` is 1,500,000 bytes,
//! below etcd's default request limit of 1.5 MiB with room for the key.
//! Revisions are etcd's mod revisions, so `watch_every_revision` and
//! `watch_resume` hold.
//!
//! # Design
//!
//! - **Writes**: a plain `put` (no TTL) is one etcd `Put` with `prev_kv`;
//!   compare-and-swap, create-only, compare-and-delete and TTL puts are
//!   single transactions (etcd applies a transaction at about half the
//!   rate of a plain put) whose failure branch reads the key, so the error
//!   (`KeyExists`, `KeyModified`, `KeyNotFound`) is exact. Writes are never
//!   retried. `delete_tree` deletes key by key so each deleted key gets its
//!   own revision.
//! - **Watches**: one etcd watch stream per store carries every watch
//!   (created with client-chosen watch ids). Watches of the same key or
//!   range share one etcd watch when they can start where it stands, and
//!   its events are fanned out in the process, so a thousand watches of one
//!   key cost etcd one watch and one response per change. Each watch
//!   remembers the revision after the last event it delivered (and skips
//!   anything older); when the stream breaks the store reconnects and
//!   recreates every etcd watch from the oldest such revision among the
//!   watches sharing it, so nothing is lost or repeated across a server
//!   restart. A compacted start yields `Compacted` and
//!   ends the stream. Events that share one revision (a multi-key
//!   transaction, a lease expiring) are all delivered.
//! - **Watch buffer**: a watch started with `from_revision` first replays
//!   the history up to the revision current when it started; that replay
//!   is queued without bound (it is bounded by the history it replays) and
//!   does not count as lag, so resuming with more than
//!   `WatchOptions::buffer` matching changes works. From then on at most
//!   `buffer` events are queued, and a consumer that falls further behind
//!   gets `WatchLagged`.
//! - **TTL keys**: each TTL put grants a lease for that key (and a marker
//!   key `\0anykv/ttl/{lease}` on it). The write that replaces the key
//!   reads the previous pair's lease and, if it carries the marker, revokes
//!   it, so rewriting a key never accumulates leases; `delete`,
//!   `delete_tree` and `atomic_delete` retire the deleted pair's lease the
//!   same way.
//! - **Leases**: etcd leases kept alive at a third of their TTL. The lease
//!   is known valid until the instant the last successful keep-alive (or
//!   the grant) was *sent* plus the TTL the server returned; `lost()` fires
//!   when the server says the lease is gone, or a margin (a tenth of the
//!   TTL, at most 500 ms) before that instant, even while a keep-alive is
//!   still in flight. So `lost()` fires before the server can expire the
//!   lease and let another client take its lock. Revoke (and close, and drop) deletes the
//!   lease's keys one by one before revoking it, so watchers see one
//!   revision per key.
//! - **Locks**: etcd's mutex recipe: a key under the lock's directory bound
//!   to a fresh lease; the holder is the key with the smallest create
//!   revision; a waiter watches only its predecessor's delete, then checks
//!   that its own key still exists (so a lock is never granted to an
//!   expired session). The fencing token is the key's create revision.
//!
//! # Limits
//!
//! - A [`Lease`] that *expires* (its keep-alive stopped for longer than
//!   its TTL, so the client could not act) has all its keys deleted by etcd
//!   at one revision; a watcher then receives every one of those `Delete`
//!   events, all with the same revision (as it does for each key of a
//!   multi-key transaction written by another etcd client). Revoke, drop
//!   and close delete the keys one by one first, and TTL keys each have a
//!   lease of their own, so only expiry (and foreign writers) produce such
//!   events.
//! - [`compact`] (the conformance suite's hook) compacts the whole etcd
//!   cluster, not just the store's root.
//! - A write that times out is never retried; one that could not be sent
//!   (no connection to that endpoint) is tried again within the request
//!   timeout, as are reads that fail with `Unavailable`.

#![deny(rustdoc::broken_intra_doc_links)]

mod config;
mod watch;

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anykv_core::{
    async_trait, key, lost_signal, Bytes, Capabilities, Error, KvPair, Lease, LeaseId, LockGuard,
    LockOptions, LostTrigger, PutOptions, Release, Result, Store, StoreStats, Url, WatchEvent,
    WatchOptions, WatchStream,
};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    KvClient, PutOptions as EtcdPutOptions, SortOrder, SortTarget, TlsOptions, Txn, TxnOp,
    TxnOpResponse,
};
use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

pub use config::{EtcdConfig, TlsConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};

const BACKEND: &str = "etcd";
/// etcd's smallest lease TTL.
pub const MIN_TTL: Duration = Duration::from_secs(2);
/// The largest value this backend accepts, in bytes.
pub const MAX_VALUE_SIZE: usize = 1_500_000;
const INTERNAL: &str = "\u{0}anykv/";
const MAX_MESSAGE: usize = usize::MAX >> 1;

/// A store on etcd v3. Open one with [`EtcdStore::connect`] or through
/// `anykv::open("etcd://...")`.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    config: EtcdConfig,
    root: String,
    caps: Capabilities,
    closed: AtomicBool,
    cmds: mpsc::UnboundedSender<watch::Cmd>,
    next_watch: AtomicI64,
    watches: Arc<AtomicUsize>,
    leases: Mutex<HashMap<i64, Held>>,
    locks: Mutex<HashMap<i64, Held>>,
}

/// The etcd range of a tree and the prefix's own key.
struct TreeRange {
    own: Option<String>,
    start: Vec<u8>,
    end: Vec<u8>,
}

/// A lease this store keeps alive.
struct Held {
    trigger: LostTrigger,
    task: AbortHandle,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.config.endpoints())
            .field("root", &self.inner.root)
            .field("closed", &self.inner.closed.load(Ordering::SeqCst))
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.cmds.send(watch::Cmd::Close);
        let held: Vec<(i64, Held)> = self
            .leases
            .lock()
            .drain()
            .chain(self.locks.lock().drain())
            .collect();
        for (id, h) in held {
            h.task.abort();
            h.trigger.fire();
            spawn_revoke(self.client.clone(), id, true, self.config.request_timeout);
        }
    }
}

fn spawn_revoke(client: Client, id: i64, delete_keys: bool, timeout: Duration) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            let _ = revoke_lease(&client, id, delete_keys, timeout).await;
        });
    }
}

/// Deletes a lease's keys one at a time (each gets its own revision), then
/// revokes it.
async fn revoke_lease(
    client: &Client,
    id: i64,
    delete_keys: bool,
    timeout: Duration,
) -> Result<()> {
    if delete_keys {
        let ttl = timed(timeout, "revoke lease", false, || async {
            client
                .lease_client()
                .time_to_live(
                    id,
                    Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
                )
                .await
        })
        .await?;
        let mut keys: Vec<Vec<u8>> = ttl.keys().to_vec();
        keys.sort();
        for k in keys {
            let txn = Txn::new()
                .when([Compare::lease(k.clone(), CompareOp::Equal, id)])
                .and_then([TxnOp::delete(k, None)]);
            timed(timeout, "revoke lease", false, || async {
                kv(client).txn(txn.clone()).await
            })
            .await?;
        }
    }
    match timed(timeout, "revoke lease", false, || async {
        client.lease_client().revoke(id).await
    })
    .await
    {
        Ok(_) => Ok(()),
        Err(Error::LeaseLost { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

fn kv(client: &Client) -> KvClient {
    client
        .kv_client()
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// Runs a request with a deadline, mapping errors. A request that failed
/// before it was sent (no connection to that endpoint) is tried again
/// within the deadline; so is a read that failed with `Unavailable`.
async fn timed<T, F, Fut>(timeout: Duration, op: &str, read: bool, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    let deadline = later(timeout);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, f()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => {
                let again = not_sent(&e) || (read && is_unavailable(&e));
                if again && Instant::now() + Duration::from_millis(100) < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                return Err(map_err(e, op));
            }
            Err(_) => {
                return Err(Error::Timeout {
                    backend: BACKEND,
                    operation: op.to_owned(),
                    after: timeout,
                })
            }
        }
    }
}

/// Whether a request failed before reaching any server.
fn not_sent(e: &etcd_client::Error) -> bool {
    let text = match e {
        etcd_client::Error::GRpcStatus(s) => format!("{}: {:?}", s.message(), s),
        etcd_client::Error::TransportError(t) => format!("{t:?}"),
        _ => return false,
    };
    text.contains("tcp connect error") || text.contains("ConnectError")
}

fn is_unavailable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.code() == tonic::Code::Unavailable,
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let m = x.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = x.source();
    }
    s
}

fn map_err(e: etcd_client::Error, op: &str) -> Error {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let msg = status.message().to_owned();
            let lower = msg.to_ascii_lowercase();
            if lower.contains("authentication failed")
                || lower.contains("invalid auth token")
                || lower.contains("user name is empty")
                || status.code() == Code::Unauthenticated
            {
                return Error::Unauthenticated {
                    backend: BACKEND,
                    message: msg,
                };
            }
            if lower.contains("lease not found") {
                return Error::LeaseLost {
                    backend: BACKEND,
                    lease: 0,
                };
            }
            match status.code() {
                Code::PermissionDenied => Error::PermissionDenied {
                    backend: BACKEND,
                    message: format!("{op}: {msg}"),
                },
                Code::DeadlineExceeded => Error::Timeout {
                    backend: BACKEND,
                    operation: op.to_owned(),
                    after: Duration::ZERO,
                },
                Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Aborted => {
                    Error::Unavailable {
                        backend: BACKEND,
                        message: format!("{op}: {}", chain(&status)),
                        source: None,
                    }
                }
                _ => Error::Backend {
                    backend: BACKEND,
                    message: format!("{op}: {msg}"),
                    source: None,
                },
            }
        }
        etcd_client::Error::TransportError(t) => Error::Unavailable {
            backend: BACKEND,
            message: format!("{op}: {}", chain(&t)),
            source: None,
        },
        etcd_client::Error::IoError(t) => Error::Unavailable {
            backend: BACKEND,
            message: format!("{op}: {t}"),
            source: None,
        },
        other => Error::Backend {
            backend: BACKEND,
            message: format!("{op}: {other}"),
            source: None,
        },
    }
}

fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs)
        .unwrap_or(i64::MAX)
        .max(MIN_TTL.as_secs() as i64)
}

fn to_rev(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

/// The revision in a response header; an error if the server sent none.
fn header_rev(header: Option<&etcd_client::ResponseHeader>) -> Result<i64> {
    match header.map(|h| h.revision()) {
        Some(r) if r > 0 => Ok(r),
        _ => Err(Error::Backend {
            backend: BACKEND,
            message: "the server's response carries no revision".into(),
            source: None,
        }),
    }
}

/// `now + d`, saturating (a server may send any TTL).
fn later(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

/// The comparisons of a write that expects `key` at revision `rev`. An
/// absent key compares as mod revision 0, so for a revision above 0 the
/// one comparison also proves the key exists (etcd reads the key once per
/// comparison); revision 0 also needs the key to exist.
fn at_revision(key: &str, rev: u64) -> Vec<Compare> {
    match i64::try_from(rev) {
        Ok(r) if r > 0 => vec![Compare::mod_revision(key, CompareOp::Equal, r)],
        _ => vec![
            Compare::create_revision(key, CompareOp::Greater, 0),
            Compare::mod_revision(
                key,
                CompareOp::Equal,
                i64::try_from(rev).unwrap_or(i64::MAX),
            ),
        ],
    }
}

fn ttl_marker(lease: i64) -> String {
    format!("{INTERNAL}ttl/{lease:016x}")
}

fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl EtcdStore {
    /// Connects and checks that etcd answers (and accepts the credentials)
    /// within the connect timeout.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdStore> {
        config.validate()?;
        let root = key::normalize_root(&config.root)?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(2), config.request_timeout)
            .with_keep_alive_while_idle(true);
        let scheme = if let Some(tls) = &config.tls {
            install_crypto_provider();
            options = options.with_tls(tls_options(tls)?);
            "https"
        } else {
            "http"
        };
        if let (Some(user), Some(password)) = (&config.user, &config.password) {
            options = options.with_user(user.clone(), password.clone());
        }
        let urls: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect();
        let client = match timed(config.connect_timeout, "connect", false, || async {
            Client::connect(&urls, Some(options.clone())).await
        })
        .await
        {
            Ok(c) => c,
            Err(e) => return Err(diagnose(&config, &urls, e).await),
        };
        // A first request proves the server answers over this transport.
        let probe = timed(config.connect_timeout, "connect", false, || async {
            kv(&client)
                .get(
                    format!("{INTERNAL}probe"),
                    Some(GetOptions::new().with_count_only()),
                )
                .await
        })
        .await;
        if let Err(e) = probe {
            return Err(diagnose(&config, &urls, e).await);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(watch::run(client.clone(), rx, config.request_timeout));
        let mut caps = Capabilities::new(BACKEND);
        caps.min_ttl = MIN_TTL;
        caps.max_value_size = MAX_VALUE_SIZE;
        Ok(EtcdStore {
            inner: Arc::new(Inner {
                client,
                root,
                config,
                caps,
                closed: AtomicBool::new(false),
                cmds: tx,
                next_watch: AtomicI64::new(1),
                watches: Arc::new(AtomicUsize::new(0)),
                leases: Mutex::new(HashMap::new()),
                locks: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Opens the store a URL names (see the crate documentation).
    pub async fn open_url(url: &str) -> Result<Arc<dyn Store>> {
        let parsed = anykv_core::parse_url(url)?;
        let store: Arc<dyn Store> = Arc::new(Self::connect(EtcdConfig::from_url(&parsed)?).await?);
        Ok(store)
    }

    /// The store's root prefix.
    pub fn root(&self) -> &str {
        &self.inner.root
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }

    /// Compacts etcd's history before `revision`: a watch resuming from an
    /// older revision then yields `Compacted`. This compacts the whole
    /// etcd cluster, not just this store's root.
    pub async fn compact(&self, revision: u64) -> Result<()> {
        self.check()?;
        let rev = i64::try_from(revision)
            .map_err(|_| Error::InvalidArgument(format!("revision {revision} is too large")))?;
        self.timed("compact", || async {
            kv(&self.inner.client)
                .compact(
                    rev,
                    Some(etcd_client::CompactionOptions::new().with_physical()),
                )
                .await
        })
        .await
        .map(|_| ())
    }

    fn check(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            Err(Error::closed(BACKEND))
        } else {
            Ok(())
        }
    }

    async fn timed<T, F, Fut>(&self, op: &str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        timed(self.inner.config.request_timeout, op, false, f).await
    }

    async fn read<T, F, Fut>(&self, op: &str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        timed(self.inner.config.request_timeout, op, true, f).await
    }

    fn full_key(&self, key: &str) -> Result<(String, String)> {
        let canonical = key::normalize_key(key)?;
        Ok((key::join(&self.inner.root, &canonical), canonical))
    }

    /// The etcd range `[start, end)` of the tree of `prefix`, and the
    /// prefix's own key (for `delete_tree`).
    fn tree(&self, prefix: &str) -> Result<TreeRange> {
        let p = key::normalize_prefix(prefix)?;
        let full = key::join(&self.inner.root, &p);
        let own = (!p.is_empty()).then(|| full.clone());
        if full.is_empty() {
            // Every key a user can write starts at " " or above; internal
            // keys start with NUL. `\0` as the end means "to the end".
            Ok(TreeRange {
                own,
                start: b" ".to_vec(),
                end: vec![0],
            })
        } else {
            Ok(TreeRange {
                own,
                start: format!("{full}/").into_bytes(),
                end: format!("{full}0").into_bytes(),
            })
        }
    }

    fn relative(&self, full: &[u8]) -> Option<String> {
        let s = std::str::from_utf8(full).ok()?;
        let rel = key::strip_root(&self.inner.root, s)?;
        (!rel.is_empty()).then(|| rel.to_owned())
    }

    /// A pair from an etcd pair, taking its value without a copy.
    fn pair(&self, kv: etcd_client::KeyValue) -> Option<KvPair> {
        let revision = to_rev(kv.mod_revision());
        let (key, value) = kv.into_key_value();
        Some(KvPair::new(self.relative(&key)?, value, revision))
    }

    fn check_value(&self, canonical: &str, value: &Bytes, options: &PutOptions) -> Result<()> {
        options.validate()?;
        if value.len() > MAX_VALUE_SIZE {
            return Err(Error::ValueTooLarge {
                backend: BACKEND,
                key: canonical.to_owned(),
                size: value.len(),
                max: MAX_VALUE_SIZE,
            });
        }
        Ok(())
    }

    /// The lease of a write and the bookkeeping ops that go with it.
    async fn write_lease(&self, options: &PutOptions) -> Result<(i64, Vec<TxnOp>)> {
        if let Some(lease) = options.lease {
            let id = i64::try_from(lease.0).map_err(|_| Error::LeaseLost {
                backend: BACKEND,
                lease: lease.0,
            })?;
            return Ok((id, Vec::new()));
        }
        if let Some(ttl) = options.ttl {
            let secs = ttl_secs(ttl);
            let grant = self
                .timed("put", || async {
                    self.inner.client.lease_client().grant(secs, None).await
                })
                .await?;
            let id = grant.id();
            let marker = TxnOp::put(
                ttl_marker(id),
                Vec::new(),
                Some(EtcdPutOptions::new().with_lease(id)),
            );
            return Ok((id, vec![marker]));
        }
        Ok((0, Vec::new()))
    }

    /// Revokes a lease granted for a TTL write whose transaction failed
    /// its comparison (so nothing is bound to it).
    fn spawn_revoke_ttl(&self, lease: i64) {
        spawn_revoke(
            self.inner.client.clone(),
            lease,
            false,
            self.inner.config.request_timeout,
        );
    }

    /// After a write replaced a pair bound to `lease`: revokes the lease if
    /// it was granted for a TTL put (it binds nothing else).
    fn retire_ttl_lease(&self, lease: i64, own: i64) {
        if lease == 0 || lease == own {
            return;
        }
        let client = self.inner.client.clone();
        let timeout = self.inner.config.request_timeout;
        tokio::spawn(async move {
            let marker = timed(timeout, "retire ttl lease", false, || async {
                kv(&client)
                    .get(ttl_marker(lease), Some(GetOptions::new().with_count_only()))
                    .await
            })
            .await;
            if matches!(marker, Ok(r) if r.count() > 0) {
                let _ = timed(timeout, "retire ttl lease", false, || async {
                    client.lease_client().revoke(lease).await
                })
                .await;
            }
        });
    }

    fn lease_error(&self, e: Error, lease: i64) -> Error {
        match e {
            Error::LeaseLost { .. } => Error::LeaseLost {
                backend: BACKEND,
                lease: to_rev(lease),
            },
            other => other,
        }
    }

    async fn write(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<Option<u64>>,
        options: PutOptions,
    ) -> Result<u64> {
        self.check()?;
        let (full, canonical) = self.full_key(key)?;
        self.check_value(&canonical, &value, &options)?;
        let (lease, mut ops) = self.write_lease(&options).await?;
        let put_opts = {
            let o = EtcdPutOptions::new().with_prev_key();
            if lease != 0 {
                o.with_lease(lease)
            } else {
                o
            }
        };
        if expected.is_none() && ops.is_empty() {
            // Nothing to compare and no TTL marker to write with the key:
            // a plain put, which etcd applies at about twice the rate of a
            // transaction.
            return self.plain_put(full, value, put_opts, lease).await;
        }
        ops.insert(0, TxnOp::put(full.clone(), value.to_vec(), Some(put_opts)));
        let compares = match expected {
            None => Vec::new(),
            Some(None) => vec![Compare::create_revision(full.clone(), CompareOp::Equal, 0)],
            Some(Some(rev)) => at_revision(&full, rev),
        };
        let txn = Txn::new()
            .when(compares)
            .and_then(ops)
            .or_else([TxnOp::get(full.clone(), None)]);
        let resp = self
            .timed("put", || async {
                kv(&self.inner.client).txn(txn.clone()).await
            })
            .await
            .map_err(|e| self.lease_error(e, lease));
        let fresh_ttl_lease = options.ttl.is_some() && lease != 0;
        let resp = match resp {
            Ok(r) => r,
            // The write may have been applied: its lease stays, and expires
            // with the key's TTL.
            Err(e) => return Err(e),
        };
        if !resp.succeeded() {
            if fresh_ttl_lease {
                self.spawn_revoke_ttl(lease);
            }
            return Err(self.cas_error(&canonical, expected.flatten(), &resp));
        }
        let revision = header_rev(resp.header())?;
        for op in resp.op_responses() {
            if let TxnOpResponse::Put(p) = op {
                if let Some(prev) = p.prev_key() {
                    self.retire_ttl_lease(prev.lease(), lease);
                }
                break;
            }
        }
        Ok(to_rev(revision))
    }

    /// An unconditional put without bookkeeping ops: its previous pair
    /// (for `retire_ttl_lease`) comes back with `prev_kv`.
    async fn plain_put(
        &self,
        full: String,
        value: Bytes,
        put_opts: EtcdPutOptions,
        lease: i64,
    ) -> Result<u64> {
        let client = &self.inner.client;
        let resp = self
            .timed("put", || {
                let (k, v, o) = (full.clone(), value.to_vec(), put_opts.clone());
                async move { kv(client).put(k, v, Some(o)).await }
            })
            .await
            .map_err(|e| self.lease_error(e, lease))?;
        let revision = header_rev(resp.header())?;
        if let Some(prev) = resp.prev_key() {
            self.retire_ttl_lease(prev.lease(), lease);
        }
        Ok(to_rev(revision))
    }

    fn cas_error(
        &self,
        canonical: &str,
        expected: Option<u64>,
        resp: &etcd_client::TxnResponse,
    ) -> Error {
        let current = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => Some(g.kvs().first().map(|kv| kv.mod_revision())),
            _ => None,
        });
        let current = current.flatten();
        match (expected, current) {
            (None, _) => Error::KeyExists {
                backend: BACKEND,
                key: canonical.to_owned(),
            },
            (Some(_), None) => Error::KeyNotFound {
                backend: BACKEND,
                key: canonical.to_owned(),
            },
            (Some(e), Some(c)) => Error::KeyModified {
                backend: BACKEND,
                key: canonical.to_owned(),
                expected: e,
                actual: to_rev(c),
            },
        }
    }

    async fn watch_range(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        options: WatchOptions,
    ) -> Result<WatchStream> {
        self.check()?;
        let (initial, next, replay_until) = match options.from_revision {
            Some(r) => {
                let next = i64::try_from(r)
                    .ok()
                    .and_then(|r| r.checked_add(1))
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!("revision {r} is out of range"))
                    })?;
                // The history up to the current revision is replayed
                // without counting against the buffer.
                let resp = self
                    .read("watch", || async {
                        kv(&self.inner.client)
                            .get(start.clone(), Some(GetOptions::new().with_count_only()))
                            .await
                    })
                    .await?;
                (Vec::new(), next, header_rev(resp.header())?)
            }
            None => {
                let opts = (!end.is_empty()).then(|| GetOptions::new().with_range(end.clone()));
                let mut resp = self
                    .read("watch", || async {
                        kv(&self.inner.client)
                            .get(start.clone(), opts.clone())
                            .await
                    })
                    .await?;
                let rev = header_rev(resp.header())?;
                let mut initial: Vec<WatchEvent> = resp
                    .take_kvs()
                    .into_iter()
                    .filter_map(|kv| self.pair(kv))
                    .map(WatchEvent::Put)
                    .collect();
                initial.push(WatchEvent::Synced {
                    revision: to_rev(rev),
                });
                (initial, rev + 1, 0)
            }
        };
        let (rx, replay, lagged, guard) =
            self.register(start, end, next, options.buffer, true, replay_until)?;
        Ok(Box::pin(EtcdWatch {
            initial: initial.into_iter(),
            replay,
            rx,
            lagged,
            buffer: options.buffer,
            done: false,
            root: self.inner.root.clone(),
            _guard: guard,
        }))
    }

    #[allow(clippy::type_complexity)]
    fn register(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        next: i64,
        buffer: usize,
        counted: bool,
        replay_until: i64,
    ) -> Result<(
        mpsc::Receiver<watch::Raw>,
        Option<mpsc::UnboundedReceiver<watch::Raw>>,
        Arc<AtomicBool>,
        WatchGuard,
    )> {
        let id = self.inner.next_watch.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let (replay_tx, replay_rx) = if replay_until >= next {
            let (t, r) = mpsc::unbounded_channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let lagged = Arc::new(AtomicBool::new(false));
        let w = watch::Watcher {
            id,
            key: start,
            range_end: end,
            next,
            tx,
            lagged: lagged.clone(),
            replay: replay_tx,
            replay_until,
        };
        self.inner
            .cmds
            .send(watch::Cmd::Add(w))
            .map_err(|_| Error::closed(BACKEND))?;
        if counted {
            self.inner.watches.fetch_add(1, Ordering::SeqCst);
        }
        Ok((
            rx,
            replay_rx,
            lagged,
            WatchGuard {
                cmds: self.inner.cmds.clone(),
                id,
                count: counted.then(|| self.inner.watches.clone()),
            },
        ))
    }

    /// Grants an etcd lease and keeps it alive in a task.
    async fn new_lease(
        &self,
        ttl: Duration,
    ) -> Result<(i64, Duration, Held, anykv_core::LostSignal)> {
        let secs = ttl_secs(ttl);
        // The lease is valid at least until the grant's send plus its TTL.
        let sent = Instant::now();
        let grant = self
            .timed("grant lease", || async {
                self.inner.client.lease_client().grant(secs, None).await
            })
            .await?;
        let id = grant.id();
        let granted = Duration::from_secs(to_rev(grant.ttl().max(secs)));
        // What the server granted (at least from the grant's send).
        let valid_for = match grant.ttl() {
            t if t > 0 => Duration::from_secs(to_rev(t)),
            _ => granted,
        };
        let (trigger, signal) = lost_signal();
        let task = tokio::spawn(keep_alive(
            self.inner.client.clone(),
            id,
            granted,
            sent.checked_add(valid_for)
                .unwrap_or_else(|| later(valid_for)),
            trigger.clone(),
            self.inner.config.request_timeout,
        ))
        .abort_handle();
        Ok((id, granted, Held { trigger, task }, signal))
    }

    async fn lock_impl(
        &self,
        key: &str,
        options: LockOptions,
        wait: bool,
    ) -> Result<Option<LockGuard>> {
        self.check()?;
        let (full, canonical) = self.full_key(key)?;
        if options.ttl.is_zero() {
            return Err(Error::InvalidArgument(
                "a lock's TTL must be greater than zero".into(),
            ));
        }
        let dir = format!("{INTERNAL}locks/{full}\u{0}/");
        let (id, _ttl, held, signal) = self.new_lease(options.ttl).await?;
        let mut pending = PendingLock {
            client: self.inner.client.clone(),
            id,
            held: Some(held),
            timeout: self.inner.config.request_timeout,
        };
        let mine = format!("{dir}{id:016x}");
        let txn = Txn::new().and_then([
            TxnOp::put(
                mine.clone(),
                Vec::new(),
                Some(EtcdPutOptions::new().with_lease(id)),
            ),
            TxnOp::get(
                dir.clone(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_sort(SortTarget::Create, SortOrder::Ascend)
                        .with_limit(1),
                ),
            ),
        ]);
        let resp = self
            .timed("lock", || async {
                kv(&self.inner.client).txn(txn.clone()).await
            })
            .await?;
        let my_rev = header_rev(resp.header())?;
        let owner = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.create_revision()),
            _ => None,
        });
        if owner != Some(my_rev) {
            if !wait {
                pending.cancel().await;
                return Ok(None);
            }
            let waited = async {
                self.wait_for_predecessors(&dir, my_rev, &signal).await?;
                // Re-check ownership: our key must still exist.
                let me = self
                    .read("lock", || async {
                        kv(&self.inner.client)
                            .get(mine.clone(), Some(GetOptions::new().with_count_only()))
                            .await
                    })
                    .await?;
                if me.count() == 0 || signal.is_lost() {
                    return Err(Error::Unavailable {
                        backend: BACKEND,
                        message: format!(
                            "lock {canonical:?}: the lock's lease expired while waiting"
                        ),
                        source: None,
                    });
                }
                Ok(())
            };
            let outcome = match options.timeout {
                Some(t) => match tokio::time::timeout(t, waited).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::Timeout {
                        backend: BACKEND,
                        operation: format!("lock {canonical:?}"),
                        after: t,
                    }),
                },
                None => waited.await,
            };
            if let Err(e) = outcome {
                pending.cancel().await;
                return Err(e);
            }
        }
        let Some(held) = pending.held.take() else {
            return Err(Error::closed(BACKEND));
        };
        let trigger = held.trigger.clone();
        let task = held.task.clone();
        self.inner.locks.lock().insert(id, held);
        if self.inner.closed.load(Ordering::SeqCst) {
            self.inner.locks.lock().remove(&id);
            pending.held = Some(Held { trigger, task });
            pending.cancel().await;
            return Err(Error::closed(BACKEND));
        }
        Ok(Some(LockGuard::new(
            canonical,
            to_rev(my_rev),
            signal,
            Box::new(LeaseRelease {
                client: self.inner.client.clone(),
                inner: Arc::downgrade(&self.inner),
                id,
                trigger,
                task,
                lock: true,
                timeout: self.inner.config.request_timeout,
            }),
        )))
    }

    async fn wait_for_predecessors(
        &self,
        dir: &str,
        my_rev: i64,
        signal: &anykv_core::LostSignal,
    ) -> Result<()> {
        loop {
            let resp = self
                .read("lock", || async {
                    kv(&self.inner.client)
                        .get(
                            dir.to_owned(),
                            Some(
                                GetOptions::new()
                                    .with_prefix()
                                    .with_max_create_revision(my_rev - 1)
                                    .with_sort(SortTarget::Create, SortOrder::Descend)
                                    .with_limit(1),
                            ),
                        )
                        .await
                })
                .await?;
            let Some(pred) = resp.kvs().first() else {
                return Ok(());
            };
            let rev = header_rev(resp.header())?;
            let (mut rx, _replay, _lagged, _guard) =
                self.register(pred.key().to_vec(), Vec::new(), rev + 1, 16, false, 0)?;
            let lost = signal.wait();
            tokio::pin!(lost);
            loop {
                tokio::select! {
                    item = rx.recv() => match item {
                        Some(watch::Raw::Delete { .. }) => break,
                        Some(_) => continue,
                        // Closed, compacted or cancelled: look again.
                        None => {
                            self.check()?;
                            break;
                        }
                    },
                    _ = &mut lost => {
                        return Err(Error::Unavailable {
                            backend: BACKEND,
                            message: "the lock's lease was lost while waiting".into(),
                            source: None,
                        });
                    }
                }
            }
        }
    }
}

/// Keeps a lease alive at a third of its TTL; fires `trigger` when the
/// server says it is gone, or when the lease may have expired: the lease
/// is known valid until the instant the last successful keep-alive (or the
/// grant) was *sent* plus the TTL the server returned, and `trigger` fires
/// a small margin before that instant whether or not a request is still in
/// flight.
async fn keep_alive(
    client: Client,
    id: i64,
    ttl: Duration,
    valid_until: Instant,
    trigger: LostTrigger,
    timeout: Duration,
) {
    let period = (ttl / 3).max(Duration::from_millis(300));
    let margin = loss_margin(ttl);
    let lost_at = |valid: Instant| valid.checked_sub(margin).unwrap_or(valid);
    let expiry = tokio::time::sleep_until(lost_at(valid_until).into());
    tokio::pin!(expiry);
    // Each attempt is bounded by the request timeout and by the time left.
    let bound = |expiry: Instant| timeout.min(expiry.saturating_duration_since(Instant::now()));
    loop {
        // Opening the stream sends a keep-alive and reads its reply (whose
        // TTL is not exposed), so validity is extended only by the
        // keep-alives sent below.
        let opened = tokio::select! {
            r = tokio::time::timeout(bound(expiry.deadline().into_std()), async {
                client.lease_client().keep_alive(id).await
            }) => r,
            _ = &mut expiry => {
                trigger.fire();
                return;
            }
        };
        if let Ok(Ok((mut keeper, mut stream))) = opened {
            loop {
                // One request in flight at a time, so the reply read
                // answers the request sent at `sent`.
                let sent = Instant::now();
                let attempt = async {
                    keeper.keep_alive().await?;
                    stream.message().await
                };
                let r = tokio::select! {
                    r = tokio::time::timeout(bound(expiry.deadline().into_std()), attempt) => r,
                    _ = &mut expiry => {
                        trigger.fire();
                        return;
                    }
                };
                match r {
                    Ok(Ok(Some(resp))) => {
                        if resp.ttl() <= 0 {
                            trigger.fire();
                            return;
                        }
                        let granted = Duration::from_secs(to_rev(resp.ttl()));
                        let valid = sent.checked_add(granted).unwrap_or_else(|| later(granted));
                        expiry.as_mut().reset(lost_at(valid).into());
                    }
                    _ => break,
                }
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = &mut expiry => {
                        trigger.fire();
                        return;
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            _ = &mut expiry => {
                trigger.fire();
                return;
            }
        }
    }
}

/// How long before a lease's last known expiry `lost()` fires: a tenth of
/// the TTL, at most 500 ms (covering clock-rate differences).
fn loss_margin(ttl: Duration) -> Duration {
    (ttl / 10).min(Duration::from_millis(500))
}

/// A lock attempt that has not been granted: cancelling it (or dropping
/// it) deletes its key by revoking its lease.
struct PendingLock {
    client: Client,
    id: i64,
    held: Option<Held>,
    timeout: Duration,
}

impl PendingLock {
    async fn cancel(&mut self) {
        if let Some(h) = self.held.take() {
            h.task.abort();
            h.trigger.fire();
            let _ = revoke_lease(&self.client, self.id, false, self.timeout).await;
        }
    }
}

impl Drop for PendingLock {
    fn drop(&mut self) {
        if let Some(h) = self.held.take() {
            h.task.abort();
            h.trigger.fire();
            spawn_revoke(self.client.clone(), self.id, false, self.timeout);
        }
    }
}

struct LeaseRelease {
    client: Client,
    inner: Weak<Inner>,
    id: i64,
    trigger: LostTrigger,
    task: AbortHandle,
    lock: bool,
    timeout: Duration,
}

impl LeaseRelease {
    fn forget(&self) {
        self.task.abort();
        self.trigger.fire();
        if let Some(inner) = self.inner.upgrade() {
            if self.lock {
                inner.locks.lock().remove(&self.id);
            } else {
                inner.leases.lock().remove(&self.id);
            }
        }
    }
}

#[async_trait]
impl Release for LeaseRelease {
    async fn release(&self) -> Result<()> {
        let r = revoke_lease(&self.client, self.id, !self.lock, self.timeout).await;
        self.forget();
        r
    }

    fn release_in_background(&self) {
        self.forget();
        spawn_revoke(self.client.clone(), self.id, !self.lock, self.timeout);
    }
}

struct WatchGuard {
    cmds: mpsc::UnboundedSender<watch::Cmd>,
    id: i64,
    /// The store's count of user watches (`None` for internal ones).
    count: Option<Arc<AtomicUsize>>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let _ = self.cmds.send(watch::Cmd::Remove(self.id));
        if let Some(c) = &self.count {
            c.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

struct EtcdWatch {
    initial: std::vec::IntoIter<WatchEvent>,
    /// The replay of a resumed watch, read to its end before `rx`.
    replay: Option<mpsc::UnboundedReceiver<watch::Raw>>,
    rx: mpsc::Receiver<watch::Raw>,
    lagged: Arc<AtomicBool>,
    buffer: usize,
    done: bool,
    root: String,
    _guard: WatchGuard,
}

impl EtcdWatch {
    fn relative(&self, full: &[u8]) -> Option<String> {
        let s = std::str::from_utf8(full).ok()?;
        let rel = key::strip_root(&self.root, s)?;
        (!rel.is_empty()).then(|| rel.to_owned())
    }
}

impl Stream for EtcdWatch {
    type Item = Result<WatchEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(ev) = this.initial.next() {
            return Poll::Ready(Some(Ok(ev)));
        }
        loop {
            let polled = match &mut this.replay {
                Some(replay) => match replay.poll_recv(cx) {
                    Poll::Ready(None) => {
                        this.replay = None;
                        continue;
                    }
                    other => other,
                },
                None => this.rx.poll_recv(cx),
            };
            match polled {
                Poll::Ready(Some(watch::Raw::Put {
                    key,
                    value,
                    revision,
                })) => {
                    if let Some(k) = this.relative(&key) {
                        return Poll::Ready(Some(Ok(WatchEvent::Put(KvPair::new(
                            k,
                            value,
                            to_rev(revision),
                        )))));
                    }
                }
                Poll::Ready(Some(watch::Raw::Delete { key, revision })) => {
                    if let Some(k) = this.relative(&key) {
                        return Poll::Ready(Some(Ok(WatchEvent::Delete {
                            key: k,
                            revision: to_rev(revision),
                        })));
                    }
                }
                Poll::Ready(Some(watch::Raw::Compacted { requested, oldest })) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(Error::Compacted {
                        backend: BACKEND,
                        requested: to_rev(requested),
                        oldest: to_rev(oldest),
                    })));
                }
                Poll::Ready(Some(watch::Raw::Canceled(reason))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(Error::Backend {
                        backend: BACKEND,
                        message: format!("the server cancelled the watch: {reason}"),
                        source: None,
                    })));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if this.lagged.load(Ordering::SeqCst) {
                        return Poll::Ready(Some(Err(Error::WatchLagged {
                            backend: BACKEND,
                            buffer: this.buffer,
                        })));
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn tls_options(tls: &TlsConfig) -> Result<TlsOptions> {
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p)
            .map_err(|e| Error::Config(format!("cannot read the TLS {what} {}: {e}", p.display())))
    };
    let mut o = TlsOptions::new();
    if let Some(ca) = &tls.ca_file {
        o = o.ca_certificate(Certificate::from_pem(read(ca, "CA file")?));
    }
    if let (Some(c), Some(k)) = (&tls.cert_file, &tls.key_file) {
        o = o.identity(Identity::from_pem(
            read(c, "certificate file")?,
            read(k, "key file")?,
        ));
    }
    if let Some(d) = &tls.domain {
        o = o.domain_name(d.clone());
    }
    Ok(o)
}

/// Turns a failed first contact into a clear error: when the balanced
/// channel only says "timed out", a direct connection names the cause
/// (refused, TLS handshake failure, ...).
async fn diagnose(config: &EtcdConfig, urls: &[String], e: Error) -> Error {
    if !matches!(e, Error::Timeout { .. } | Error::Unavailable { .. }) {
        return e;
    }
    let Some(url) = urls.first() else { return e };
    let endpoint = match tonic::transport::Endpoint::from_shared(url.clone()) {
        Ok(ep) => ep.connect_timeout(config.connect_timeout),
        Err(_) => return e,
    };
    let endpoint = match &config.tls {
        Some(tls) => match tls_options(tls)
            .and_then(|o| endpoint.tls_config(o).map_err(|x| Error::Config(chain(&x))))
        {
            Ok(ep) => ep,
            Err(x) => return x,
        },
        None => endpoint,
    };
    match tokio::time::timeout(config.connect_timeout, endpoint.connect()).await {
        Ok(Err(x)) => Error::Unavailable {
            backend: BACKEND,
            message: format!(
                "cannot reach {}{}: {}",
                urls.join(","),
                if config.tls.is_some() {
                    " over TLS"
                } else {
                    ""
                },
                chain(&x)
            ),
            source: None,
        },
        _ => match (&config.tls, e) {
            (Some(tls), Error::Unavailable { message, .. }) if tls.cert_file.is_none() => {
                Error::Unavailable {
                    backend: BACKEND,
                    message: format!(
                        "{message} (the TLS connection was closed by the server: does it \
                         require a client certificate? set cert_file and key_file)"
                    ),
                    source: None,
                }
            }
            (_, e) => e,
        },
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn capabilities(&self) -> &Capabilities {
        &self.inner.caps
    }

    fn stats(&self) -> StoreStats {
        let closed = self.inner.closed.load(Ordering::SeqCst);
        StoreStats::new(
            self.inner.watches.load(Ordering::SeqCst),
            self.inner.leases.lock().len(),
            self.inner.locks.lock().len(),
            usize::from(!closed),
        )
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        self.check()?;
        let (full, canonical) = self.full_key(key)?;
        let mut resp = self
            .read("get", || async {
                kv(&self.inner.client).get(full.clone(), None).await
            })
            .await?;
        // The one pair of the range is the key asked for: its relative key
        // is `canonical`, and its value is taken without a copy.
        Ok(resp.take_kvs().into_iter().next().map(|kv| {
            let revision = to_rev(kv.mod_revision());
            KvPair::new(canonical, kv.into_key_value().1, revision)
        }))
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<u64> {
        self.write(key, value, None, options).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.check()?;
        let (full, _) = self.full_key(key)?;
        let resp = self
            .timed("delete", || async {
                kv(&self.inner.client)
                    .delete(full.clone(), Some(DeleteOptions::new().with_prev_key()))
                    .await
            })
            .await?;
        for prev in resp.prev_kvs() {
            self.retire_ttl_lease(prev.lease(), 0);
        }
        Ok(resp.deleted() > 0)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.check()?;
        let (full, _) = self.full_key(key)?;
        let resp = self
            .read("exists", || async {
                kv(&self.inner.client)
                    .get(full.clone(), Some(GetOptions::new().with_count_only()))
                    .await
            })
            .await?;
        Ok(resp.count() > 0)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        self.check()?;
        let TreeRange { start, end, .. } = self.tree(prefix)?;
        let mut resp = self
            .read("list", || async {
                kv(&self.inner.client)
                    .get(
                        start.clone(),
                        Some(GetOptions::new().with_range(end.clone())),
                    )
                    .await
            })
            .await?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .filter_map(|kv| self.pair(kv))
            .collect())
    }

    async fn delete_tree(&self, prefix: &str) -> Result<u64> {
        self.check()?;
        let TreeRange { own, start, end } = self.tree(prefix)?;
        let resp = self
            .timed("delete_tree", || async {
                kv(&self.inner.client)
                    .get(
                        start.clone(),
                        Some(GetOptions::new().with_range(end.clone()).with_keys_only()),
                    )
                    .await
            })
            .await?;
        let mut keys: Vec<Vec<u8>> = resp.kvs().iter().map(|kv| kv.key().to_vec()).collect();
        if let Some(own) = own {
            keys.push(own.into_bytes());
        }
        keys.sort();
        let mut count = 0;
        for k in keys {
            let r = self
                .timed("delete_tree", || async {
                    kv(&self.inner.client)
                        .delete(k.clone(), Some(DeleteOptions::new().with_prev_key()))
                        .await
                })
                .await?;
            for prev in r.prev_kvs() {
                self.retire_ttl_lease(prev.lease(), 0);
            }
            if r.deleted() > 0 {
                count += 1;
            }
        }
        Ok(count)
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<u64>,
        options: PutOptions,
    ) -> Result<u64> {
        self.write(key, value, Some(expected), options).await
    }

    async fn atomic_delete(&self, key: &str, expected: u64) -> Result<()> {
        self.check()?;
        let (full, canonical) = self.full_key(key)?;
        let txn = Txn::new()
            .when(at_revision(&full, expected))
            .and_then([TxnOp::delete(
                full.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full.clone(), None)]);
        let resp = self
            .timed("atomic_delete", || async {
                kv(&self.inner.client).txn(txn.clone()).await
            })
            .await?;
        if resp.succeeded() {
            // A deleted TTL key's lease (and marker) goes with it.
            for op in resp.op_responses() {
                if let TxnOpResponse::Delete(d) = op {
                    for prev in d.prev_kvs() {
                        self.retire_ttl_lease(prev.lease(), 0);
                    }
                }
            }
            Ok(())
        } else {
            Err(self.cas_error(&canonical, Some(expected), &resp))
        }
    }

    async fn watch(&self, key: &str, options: WatchOptions) -> Result<WatchStream> {
        self.check()?;
        let (full, _) = self.full_key(key)?;
        self.watch_range(full.into_bytes(), Vec::new(), options)
            .await
    }

    async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream> {
        self.check()?;
        let TreeRange { start, end, .. } = self.tree(prefix)?;
        self.watch_range(start, end, options).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        self.check()?;
        anykv_core::backend::check_lease_ttl(ttl)?;
        let (id, granted, held, signal) = self.new_lease(ttl).await?;
        let trigger = held.trigger.clone();
        let task = held.task.clone();
        self.inner.leases.lock().insert(id, held);
        Ok(Lease::new(
            LeaseId(to_rev(id)),
            granted,
            signal,
            Box::new(LeaseRelease {
                client: self.inner.client.clone(),
                inner: Arc::downgrade(&self.inner),
                id,
                trigger,
                task,
                lock: false,
                timeout: self.inner.config.request_timeout,
            }),
        ))
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<LockGuard> {
        anykv_core::backend::check_lock_options(&options)?;
        anykv_core::waited_for(BACKEND, self.lock_impl(key, options, true).await?)
    }

    async fn try_lock(&self, key: &str, options: LockOptions) -> Result<Option<LockGuard>> {
        anykv_core::backend::check_lock_options(&options)?;
        self.lock_impl(key, options, false).await
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let _ = self.inner.cmds.send(watch::Cmd::Close);
        let leases: Vec<(i64, Held)> = self.inner.leases.lock().drain().collect();
        let locks: Vec<(i64, Held)> = self.inner.locks.lock().drain().collect();
        let timeout = self.inner.config.request_timeout;
        let mut result = Ok(());
        for (id, h, delete_keys) in leases
            .into_iter()
            .map(|(i, h)| (i, h, true))
            .chain(locks.into_iter().map(|(i, h)| (i, h, false)))
        {
            h.task.abort();
            let r = revoke_lease(&self.inner.client, id, delete_keys, timeout).await;
            h.trigger.fire();
            if let Err(e) = r {
                result = Err(e);
            }
        }
        result
    }
}

/// The conformance suite's compact hook: compacts etcd's history before
/// `revision` through an etcd store behind `Arc<dyn Store>`; an
/// `InvalidArgument` for any other store.
pub async fn compact(store: &dyn Store, revision: u64) -> Result<()> {
    let etcd = store
        .as_any()
        .downcast_ref::<EtcdStore>()
        .ok_or_else(|| Error::InvalidArgument(format!("{store:?} is not an etcd store")))?;
    etcd.compact(revision).await
}

/// Registers `etcd://` and `etcds://` with `anykv_core::registry`.
pub fn register() {
    for scheme in ["etcd", "etcds"] {
        anykv_core::register(scheme, |url: Url| async move {
            let store: Arc<dyn Store> =
                Arc::new(EtcdStore::connect(EtcdConfig::from_url(&url)?).await?);
            Ok(store)
        });
    }
}
