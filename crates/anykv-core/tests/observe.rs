//! The spans and metrics of `anykv_core::observe` appear, with the fields
//! and labels its documentation promises.

use std::io::Write;
use std::sync::{Arc, Mutex};

use anykv_core::{Compare, ErrorKind, PutOptions, Txn, TxnOp, WatchOptions};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use tracing_subscriber::fmt::format::FmtSpan;

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn label(key: &CompositeKey, name: &str) -> Option<String> {
    key.key()
        .labels()
        .find(|l| l.key() == name)
        .map(|l| l.value().to_owned())
}

#[test]
fn spans_and_metrics_appear() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();

    metrics::with_local_recorder(&recorder, || {
        tracing::subscriber::with_default(subscriber, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let store =
                    anykv_core::observe::observe(anykv_memory::MemoryStore::new().into_dyn());
                let rev = store
                    .put("app/k", "v".into(), PutOptions::new())
                    .await
                    .unwrap();
                assert_eq!(rev, 1);
                store.get("app/k").await.unwrap();
                let stale = store
                    .atomic_put("app/k", "w".into(), Some(99), PutOptions::new())
                    .await;
                assert_eq!(stale.unwrap_err().kind(), ErrorKind::KeyModified);
                let t = store
                    .txn(
                        Txn::new()
                            .when(Compare::present("app/k"))
                            .then(TxnOp::put("app/t", "x")),
                    )
                    .await
                    .unwrap();
                assert_eq!(t.revision, Some(2));
                let w = store.watch_tree("app", WatchOptions::new()).await.unwrap();
                drop(w);
            });
        });
    });

    let out = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for expected in [
        "anykv.op{backend=\"memory\" op=\"put\" key=\"app/k\" revision=1 outcome=\"ok\"}",
        "anykv.op{backend=\"memory\" op=\"get\" key=\"app/k\" revision=1 outcome=\"ok\"}",
        "anykv.op{backend=\"memory\" op=\"atomic_put\" key=\"app/k\" outcome=\"KeyModified\"}",
        "anykv.op{backend=\"memory\" op=\"txn\" key=\"\" revision=2 outcome=\"ok\"}",
    ] {
        assert!(out.contains(expected), "no span {expected} in:\n{out}");
    }
    assert!(
        out.contains("atomic_put failed"),
        "no failure event in:\n{out}"
    );

    let metrics = snapshotter.snapshot().into_vec();
    let counter = |op: &str, outcome: &str| {
        metrics.iter().find_map(|(k, _, _, v)| {
            (k.kind() == MetricKind::Counter
                && k.key().name() == "anykv_operations_total"
                && label(k, "op").as_deref() == Some(op)
                && label(k, "outcome").as_deref() == Some(outcome)
                && label(k, "backend").as_deref() == Some("memory"))
            .then_some(v)
        })
    };
    assert_eq!(counter("put", "ok"), Some(&DebugValue::Counter(1)));
    assert_eq!(counter("get", "ok"), Some(&DebugValue::Counter(1)));
    assert_eq!(
        counter("atomic_put", "KeyModified"),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(counter("txn", "ok"), Some(&DebugValue::Counter(1)));
    let histogram = metrics.iter().find_map(|(k, _, _, v)| {
        (k.key().name() == "anykv_operation_duration_seconds"
            && label(k, "op").as_deref() == Some("put"))
        .then_some(v)
    });
    assert!(
        matches!(&histogram, Some(DebugValue::Histogram(h)) if h.len() == 1),
        "{histogram:?}"
    );
    let watches = metrics
        .iter()
        .find_map(|(k, _, _, v)| (k.key().name() == "anykv_watches_open").then_some(v));
    // Opened and dropped: back to zero.
    assert!(
        matches!(watches, Some(DebugValue::Gauge(g)) if g.into_inner() == 0.0),
        "{watches:?}"
    );
}
