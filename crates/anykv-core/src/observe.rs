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
//! `metrics-exporter-prometheus`; without one they cost next to nothing):
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `anykv_operations_total` | counter | `backend`, `op`, `outcome` | calls, by result (`ok` or the error kind) |
//! | `anykv_operation_duration_seconds` | histogram | `backend`, `op` | how long each call took |
//! | `anykv_watches_open` | gauge | `backend` | watch streams open now |
//! | `anykv_watch_events_total` | counter | `backend` | events delivered to watch streams |
//! | `anykv_watch_errors_total` | counter | `backend`, `kind` | errors watch streams yielded (`WatchLagged`: a consumer fell behind; `Compacted`, `Unavailable`, …) |
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
pub fn observe(store: Arc<dyn Store>) -> Arc<dyn Store> {
    let backend = store.capabilities().backend;
    Arc::new(Observed {
        inner: store,
        backend,
    })
}

/// A store with spans and metrics around every call: see [`observe`].
pub struct Observed {
    inner: Arc<dyn Store>,
    backend: &'static str,
}

impl Observed {
    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }
}

impl fmt::Debug for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The wrapper is an implementation detail: show the store.
        self.inner.fmt(f)
    }
}

fn span(backend: &'static str, op: &'static str, key: Option<&str>) -> tracing::Span {
    tracing::debug_span!(
        target: "anykv",
        "anykv.op",
        backend,
        op,
        key = key.unwrap_or(""),
        revision = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
}

/// The label of an outcome: `ok`, or the error's kind.
fn outcome<T>(result: &Result<T>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("{:?}", e.kind()),
    }
}

fn record<T>(
    backend: &'static str,
    op: &'static str,
    span: &tracing::Span,
    started: Instant,
    result: &Result<T>,
    revision: Option<u64>,
) {
    let outcome = outcome(result);
    if let Some(r) = revision {
        span.record("revision", r);
    }
    span.record("outcome", outcome.as_str());
    if let Err(e) = result {
        span.in_scope(|| tracing::debug!(target: "anykv", error = %e, "{op} failed"));
    }
    metrics::counter!(
        "anykv_operations_total",
        "backend" => backend,
        "op" => op,
        "outcome" => outcome,
    )
    .increment(1);
    metrics::histogram!(
        "anykv_operation_duration_seconds",
        "backend" => backend,
        "op" => op,
    )
    .record(started.elapsed().as_secs_f64());
}

/// Runs one call inside its span and records it; `revision` picks the
/// revision to report from a successful result.
async fn call<T, F>(
    backend: &'static str,
    op: &'static str,
    key: Option<&str>,
    revision: impl FnOnce(&T) -> Option<u64>,
    future: F,
) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    let span = span(backend, op, key);
    let started = Instant::now();
    let result = future.instrument(span.clone()).await;
    let rev = result.as_ref().ok().and_then(revision);
    record(backend, op, &span, started, &result, rev);
    result
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

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        let rev = |p: &Option<KvPair>| p.as_ref().map(|p| p.revision);
        call(self.backend, "get", Some(key), rev, self.inner.get(key)).await
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<u64> {
        let f = self.inner.put(key, value, options);
        call(self.backend, "put", Some(key), |r| Some(*r), f).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        call(
            self.backend,
            "delete",
            Some(key),
            none,
            self.inner.delete(key),
        )
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        call(
            self.backend,
            "exists",
            Some(key),
            none,
            self.inner.exists(key),
        )
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KvPair>> {
        call(
            self.backend,
            "list",
            Some(prefix),
            none,
            self.inner.list(prefix),
        )
        .await
    }

    async fn list_with(&self, prefix: &str, options: ListOptions) -> Result<Vec<KvPair>> {
        let f = self.inner.list_with(prefix, options);
        call(self.backend, "list", Some(prefix), none, f).await
    }

    async fn delete_tree(&self, prefix: &str) -> Result<u64> {
        let f = self.inner.delete_tree(prefix);
        call(self.backend, "delete_tree", Some(prefix), none, f).await
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<u64>,
        options: PutOptions,
    ) -> Result<u64> {
        let f = self.inner.atomic_put(key, value, expected, options);
        call(self.backend, "atomic_put", Some(key), |r| Some(*r), f).await
    }

    async fn atomic_delete(&self, key: &str, expected: u64) -> Result<()> {
        let f = self.inner.atomic_delete(key, expected);
        call(self.backend, "atomic_delete", Some(key), none, f).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let rev = |r: &TxnResponse| r.revision;
        call(self.backend, "txn", None, rev, self.inner.txn(txn)).await
    }

    async fn watch(&self, key: &str, options: WatchOptions) -> Result<WatchStream> {
        let f = self.inner.watch(key, options);
        let s = call(self.backend, "watch", Some(key), none, f).await?;
        Ok(Box::pin(ObservedStream::new(s, self.backend)))
    }

    async fn watch_tree(&self, prefix: &str, options: WatchOptions) -> Result<WatchStream> {
        let f = self.inner.watch_tree(prefix, options);
        let s = call(self.backend, "watch_tree", Some(prefix), none, f).await?;
        Ok(Box::pin(ObservedStream::new(s, self.backend)))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        let f = self.inner.grant_lease(ttl);
        call(self.backend, "grant_lease", None, none, f).await
    }

    async fn lock(&self, key: &str, options: LockOptions) -> Result<LockGuard> {
        let f = self.inner.lock(key, options);
        let rev = |g: &LockGuard| Some(g.fencing_token());
        call(self.backend, "lock", Some(key), rev, f).await
    }

    async fn try_lock(&self, key: &str, options: LockOptions) -> Result<Option<LockGuard>> {
        let f = self.inner.try_lock(key, options);
        let rev = |g: &Option<LockGuard>| g.as_ref().map(LockGuard::fencing_token);
        call(self.backend, "try_lock", Some(key), rev, f).await
    }

    async fn status(&self) -> Result<StoreStatus> {
        call(
            self.backend,
            "status",
            None,
            |s: &StoreStatus| s.revision,
            self.inner.status(),
        )
        .await
    }

    async fn close(&self) -> Result<()> {
        call(self.backend, "close", None, none, self.inner.close()).await
    }
}
