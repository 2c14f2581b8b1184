//! Observability: a `tracing` span on every [`Store`] call and metrics
//! through the [`metrics`] facade, for every backend.
//!
//! [`crate::open`] returns stores wrapped by [`observe`]; wrap a store you
//! built yourself the same way. The wrapper forwards everything —
//! [`Store::as_any`] included, so downcasts to the backend's type still
//! work — and adds:
//!
//! **Spans** (target `anykv`, level `DEBUG`): one `anykv.op` span per call
//! with the fields `backend`, `op`, `key` (the key or prefix, when the call
//! has one), then `revision` (what a write returned, or a transaction's
//! revision) and `outcome` (`ok` or the error kind, `KeyModified`,
//! `Timeout`, …). Failed calls also log one `DEBUG` event with the error.
//! Backends add their own events for background work: reconnects,
//! keep-alive failures, watch resumes.
//!
//! **Metrics** (install any `metrics` recorder, such as
//! `metrics-exporter-prometheus`, before opening stores: each store takes
//! its handles when it opens; without a recorder they cost next to
//! nothing, and when neither a recorder nor a `tracing` subscriber that
//! takes `DEBUG` is there, `get`, `put`, `delete`, `exists`, `list` and
//! `atomic_put` are not even timed: the backend's call is returned as it
//! is):
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `anykv_operations_total` | counter | `backend`, `op`, `outcome` | calls, by result (`ok` or the error kind) |
//! | `anykv_operation_duration_seconds` | histogram | `backend`, `op` | how long each call took |
//! | `anykv_watches_open` | gauge | `backend` | watch streams open now |
//! | `anykv_watch_events_total` | counter | `backend` | events delivered to watch streams |
//! | `anykv_watch_errors_total` | counter | `backend`, `kind` | errors watch streams yielded (`WatchLagged`: a consumer fell behind; `Compacted`, `Unavailable`, …) |
//! | `anykv_reconnects_total` | counter | `backend` | connections or sessions the backend re-established (etcd, Redis, ZooKeeper) |
//! | `anykv_keepalive_failures_total` | counter | `backend` | lease, lock or session keep-alives that failed or timed out |
//! | `anykv_watch_resumes_total` | counter | `backend` | watches resumed or re-synced after their connection failed |
//!
//! The last three come from the backends' background work, which also logs
//! `tracing` events under each backend crate's name (`anykv_etcd`,
//! `anykv_redis`, `anykv_zookeeper`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anykv_core::Result<()> {
//! use anykv_core::{PutOptions, Store};
//! let store = anykv_core::observe::observe(anykv_memory::MemoryStore::new().into_dyn());
//! store.put("k", "v".into(), PutOptions::new()).await?; // one span, two metrics
//! // Downcasts reach the backend's own type through the wrapper.
//! assert!(store.as_any().downcast_ref::<anykv_memory::MemoryStore>().is_some());
//! # Ok(())
//! # }
//! ```

use std::any::Any;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::Stream;
use tracing::Instrument;

use crate::error::Result;
use crate::handles::{Lease, LockGuard};
use crate::store::Store;
use crate::txn::{Txn, TxnResponse};
use crate::types::{
    Capabilities, KvPair, ListOptions, LockOptions, PutOptions, StoreStats, StoreStatus,
    WatchEvent, WatchOptions, WatchStream,
};

/// Wraps `store` so every call gets a span and metrics (see the module
/// documentation). Wrapping a store twice is harmless but counts twice.
///
/// The metrics' handles are taken from the recorder installed when the
/// store is wrapped (when it is opened): install a recorder before opening
/// stores.
pub fn observe(store: Arc<dyn Store>) -> Arc<dyn Store> {
    let backend = store.capabilities().backend;
    let meters = OPS
        .iter()
        .map(|op| Meter {
            ok: metrics::counter!(
                "anykv_operations_total",
                "backend" => backend,
                "op" => *op,
                "outcome" => "ok",
            ),
            duration: metrics::histogram!(
                "anykv_operation_duration_seconds",
                "backend" => backend,
                "op" => *op,
            ),
        })
        .collect();
    // The no-op recorder (none installed) is the only one without state
    // of its own.
    let metrics_live = metrics::with_recorder(|r| std::mem::size_of_val(r) != 0);
    Arc::new(Observed {
        inner: store,
        backend,
        meters,
        metrics_live,
    })
}

/// The operations, in the order of [`Op`].
const OPS: [&str; 17] = [
    "get",
    "put",
    "delete",
    "exists",
    "list",
    "delete_tree",
    "atomic_put",
    "atomic_delete",
    "txn",
    "watch",
    "watch_tree",
    "grant_lease",
    "lock",
    "try_lock",
    "status",
    "close",
    "list_with",
];

/// An operation: an index into [`OPS`] and the store's meters.
#[derive(Clone, Copy)]
enum Op {
    Get,
    Put,
    Delete,
    Exists,
    List,
    DeleteTree,
    AtomicPut,
    AtomicDelete,
    Txn,
    Watch,
    WatchTree,
    GrantLease,
    Lock,
    TryLock,
    Status,
    Close,
    ListWith,
}

impl Op {
    fn name(self) -> &'static str {
        OPS[self as usize]
    }
}

/// One operation's metric handles, registered once per store so a call
/// pays no lookup or allocation for them.
struct Meter {
    ok: metrics::Counter,
    duration: metrics::Histogram,
}

/// A store with spans and metrics around every call: see [`observe`].
pub struct Observed {
    inner: Arc<dyn Store>,
    backend: &'static str,
    meters: Vec<Meter>,
    /// Whether a metrics recorder was installed when the store was
    /// wrapped.
    metrics_live: bool,
}

impl Observed {
    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    /// Whether a call would record nothing: no metrics recorder, and no
    /// `tracing` subscriber that takes `DEBUG`. The hot calls then hand
    /// the backend's future back as it is, without timing it.
    fn quiet(&self) -> bool {
        !self.metrics_live && !tracing::level_enabled!(tracing::Level::DEBUG)
    }

    /// `future` as it is when [`Observed::quiet`], else inside
    /// [`Observed::call`].
    fn hot<'f, T: Send + 'f>(
        &'f self,
        op: Op,
        key: &'f str,
        revision: impl FnOnce(&T) -> Option<u64> + Send + 'f,
        future: BoxFuture<'f, Result<T>>,
    ) -> BoxFuture<'f, Result<T>> {
        if self.quiet() {
            return future;
        }
        Box::pin(self.call(op, Some(key), revision, future))
    }

    /// Runs one call inside its span and records it; `revision` picks
    /// the revision to report from a successful result.
    async fn call<T, F>(
        &self,
        op: Op,
        key: Option<&str>,
        revision: impl FnOnce(&T) -> Option<u64>,
        future: F,
    ) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let span = tracing::debug_span!(
            target: "anykv",
            "anykv.op",
            backend = self.backend,
            op = op.name(),
            key = key.unwrap_or(""),
            revision = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = if span.is_disabled() {
            future.await
        } else {
            future.instrument(span.clone()).await
        };
        let meter = &self.meters[op as usize];
        meter.duration.record(started.elapsed().as_secs_f64());
        match &result {
            Ok(value) => {
                meter.ok.increment(1);
                if !span.is_disabled() {
                    if let Some(r) = revision(value) {
                        span.record("revision", r);
                    }
                    span.record("outcome", "ok");
                }
            }
            Err(e) => {
                let kind = format!("{:?}", e.kind());
                if !span.is_disabled() {
                    span.record("outcome", kind.as_str());
                    span.in_scope(
                        || tracing::debug!(target: "anykv", error = %e, "{} failed", op.name()),
                    );
                }
                metrics::counter!(
                    "anykv_operations_total",
                    "backend" => self.backend,
                    "op" => op.name(),
                    "outcome" => kind,
                )
                .increment(1);
            }
        }
        result
    }
}

impl fmt::Debug for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The wrapper is an implementation detail: show the store.
        self.inner.fmt(f)
    }
}

fn none<T>(_: &T) -> Option<u64> {
    None
}

/// A watch stream that keeps the watch metrics.
struct ObservedStream {
    inner: WatchStream,
    backend: &'static str,
}

impl ObservedStream {
    fn new(inner: WatchStream, backend: &'static str) -> Self {
        metrics::gauge!("anykv_watches_open", "backend" => backend).increment(1.0);
        ObservedStream { inner, backend }
    }
}

impl Drop for ObservedStream {
    fn drop(&mut self) {
        metrics::gauge!("anykv_watches_open", "backend" => self.backend).decrement(1.0);
    }
}

impl Stream for ObservedStream {
    type Item = Result<WatchEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let backend = self.backend;
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                metrics::counter!("anykv_watch_events_total", "backend" => backend).increment(1);
            }
            Poll::Ready(Some(Err(e))) => {
                let kind = format!("{:?}", e.kind());
                tracing::debug!(target: "anykv", backend, error = %e, "a watch stream yielded an error");
                metrics::counter!("anykv_watch_errors_total", "backend" => backend, "kind" => kind)
                    .increment(1);
            }
            _ => {}
        }
        polled
    }
}

#[async_trait]
impl Store for Observed {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }

    fn as_any(&self) -> &dyn Any {
        self.inner.as_any()
    }

    fn get<'a, 'k, 'f>(&'a self, key: &'k str) -> BoxFuture<'f, Result<Option<KvPair>>>
    where
        'a: 'f,
        'k: 'f,
        Self: 'f,
    {
        let rev = |p: &Option<KvPair>| p.as_ref().map(|p| p.revision);
        self.hot(Op::Get, key, rev, self.inner.get(key))
    }

    fn put<'a, 'k, 'f>(
        &'a self,
        key: &'k str,
        value: Bytes,
        options: PutOptions,
    ) -> BoxFuture<'f, Result<u64>>
    where
        'a: 'f,
        'k: 'f,
        Self: 'f,
    {
        let f = self.inner.put(key, value, options);
        self.hot(Op::Put, key, |r| Some(*r), f)
    }

    fn delete<'a, 'k, 'f>(&'a self, key: &'k str) -> BoxFuture<'f, Result<bool>>
    where
        'a: 'f,
        'k: 'f,
        Self: 'f,
    {
        self.hot(Op::Delete, key, none, self.inner.delete(key))
    }

    fn exists<'a, 'k, 'f>(&'a self, key: &'k str) -> BoxFuture<'f, Result<bool>>
    where
        'a: 'f,
        'k: 'f,
        Self: 'f,
    {
        self.hot(Op::Exists, key, none, self.inner.exists(key))
    }

    fn list<'a, 'k, 'f>(&'a self, prefix: &'k str) -> BoxFuture<'f, Result<Vec<KvPair>>>
    where
        'a: 'f,
        'k: 'f,
        Self: 'f,
    {
        self.hot(Op::List, prefix, none, self.inner.list(prefix))
    }

    async fn list_with(&self, prefix: &str, options: ListOptions) -> Result<Vec<KvPair>> {
        let f = self.inner.list_with(prefix, options);
        self.call(Op::ListWith, Some(prefix), none, f).await
    }

    async fn delete_tree(&self, prefix: &str) -> Result<u64> {
        let f = self.inner.delete_tree(prefix);
        self.call(Op::DeleteTree, Some(prefix), none, f).await
    }

    fn atomic_put<'a, 'k, 'f>(
        &'a self,
        key: &'k str,
        value: Bytes,
        expected: Option<u64>,
        options: PutOptions,
    ) -> BoxFuture<'f, Result<u64>>
    where
        'a: 'f,
        'k: 'f,
        Self: 'f,
    {
        let f = self.inner.atomic_put(key, value, expected, options);
        self.hot(Op::AtomicPut, key, |r| Some(*r), f)
    }

    async fn atomic_delete(&self, key: &str, expected: u64) -> Result<()> {
        let f = self.inner.atomic_delete(key, expected);
        self.call(Op::AtomicDelete, Some(key), none, f).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let rev = |r: &TxnResponse| r.revision;
        self.call(Op::Txn, None, rev, self.inner.txn(txn)).await
    }

    async fn watch(&self, key: &str, options: WatchOptions) -> Result<WatchStream> {
        let f = self.inner.watch(key, options);
        let s = self.call(Op::Watch, Some(key), none, f).await?;
        Ok(Box::pin(ObservedStream::new(s, self.backend)))
    }

    async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream> {
        let f = self.inner.watch_tree(prefix, options);
        let s = self.call(Op::WatchTree, Some(prefix), none, f).await?;
        Ok(Box::pin(ObservedStream::new(s, self.backend)))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        let f = self.inner.grant_lease(ttl);
        self.call(Op::GrantLease, None, none, f).await
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<LockGuard> {
        let f = self.inner.lock(key, options);
        let rev = |g: &LockGuard| Some(g.fencing_token());
        self.call(Op::Lock, Some(key), rev, f).await
    }

    async fn try_lock(&self, key: &str, options: LockOptions) -> Result<Option<LockGuard>> {
        let f = self.inner.try_lock(key, options);
        let rev = |g: &Option<LockGuard>| g.as_ref().map(LockGuard::fencing_token);
        self.call(Op::TryLock, Some(key), rev, f).await
    }

    async fn status(&self) -> Result<StoreStatus> {
        self.call(
            Op::Status,
            None,
            |s: &StoreStatus| s.revision,
            self.inner.status(),
        )
        .await
    }

    async fn close(&self) -> Result<()> {
        self.call(Op::Close, None, none, self.inner.close()).await
    }
}
