//! Writes sent together: `put` and `atomic_put` calls that arrive while
//! earlier ones are on their way to the server go in one run of the
//! write script (group commit).
//!
//! A write script costs the server a fixed amount per run (the script
//! call, the failover check's `INFO`) on top of each write's own work,
//! and at high concurrency the server's one core is the limit. So at most
//! [`MAX_IN_FLIGHT`] runs are on their way at once; a write that finds
//! them all busy waits in a queue, and the queue goes out as one run as
//! soon as a run comes back. A lone writer never waits: its write is sent
//! at once, alone, as before.
//!
//! Each write keeps its own revision, change record and result (a
//! refused compare-and-swap refuses that write only); a run is atomic, so
//! writes sent together are also applied together. A write waits in the
//! queue for at most its request timeout, then fails with `Timeout`
//! (it may still be applied, as any timed-out write may).

use std::sync::Arc;
use std::time::Instant;

use anykv_core::{Bytes, Error, Result};
use parking_lot::Mutex;
use redis::Value;
use tokio::sync::oneshot;

use crate::client::{Durability, RedisClient, Replicas, Written};
use crate::config::BACKEND;
use crate::reply::{as_array, unexpected_reply};
use crate::scripts;

/// Script runs on their way to the server at once; further writes queue.
pub(crate) const MAX_IN_FLIGHT: usize = 2;

/// At most this many writes in one run…
const MAX_WRITES: usize = 256;

/// …and at most about this many bytes of keys and values (a larger write
/// goes alone).
const MAX_BYTES: usize = 1 << 20;

/// One `put` or `atomic_put`, as the write script takes it.
pub(crate) struct PutWrite {
    /// The full key (`root/key`).
    pub(crate) full: String,
    /// The key as the caller named it, canonical, for error messages.
    pub(crate) canonical: String,
    pub(crate) value: Bytes,
    /// `put`, `create` or `cas`.
    pub(crate) mode: &'static str,
    /// The expected revision (`cas`), else 0.
    pub(crate) expected: u64,
    /// The TTL in ms, 0 for none.
    pub(crate) ttl_ms: u64,
    /// The lease id, 0 for none.
    pub(crate) lease: u64,
}

impl PutWrite {
    fn size(&self) -> usize {
        self.full.len() + self.value.len() + 64
    }

    fn describe(&self) -> String {
        format!("put {:?}", self.canonical)
    }
}

/// A write's outcome: the script's `{code, n}` for it, and what `WAIT`
/// said of its run.
pub(crate) type PutOutcome = Result<(Value, Replicas)>;

struct Waiting {
    write: PutWrite,
    reply: oneshot::Sender<PutOutcome>,
    /// When its caller gives up; a write still queued then is not sent.
    deadline: Instant,
}

/// The queue of a store's writes, and the client that sends them.
pub(crate) struct Batcher {
    client: Arc<RedisClient>,
    inner: Mutex<Queue>,
}

impl Batcher {
    /// An empty queue in front of `client`.
    pub(crate) fn new(client: Arc<RedisClient>) -> Self {
        Batcher {
            client,
            inner: Mutex::default(),
        }
    }
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    in_flight: usize,
}

/// Sends `write`, alone at once if a run is free, else with the writes
/// queued beside it when one comes back.
pub(crate) async fn put(batcher: &Arc<Batcher>, write: PutWrite) -> PutOutcome {
    let timeout = batcher.client.request_timeout();
    let rx = {
        let mut q = batcher.inner.lock();
        if q.in_flight < MAX_IN_FLIGHT {
            q.in_flight += 1;
            Turn::Now(write)
        } else {
            let (tx, rx) = oneshot::channel();
            q.waiting.push(Waiting {
                write,
                reply: tx,
                deadline: Instant::now() + timeout,
            });
            Turn::Queued(rx)
        }
    };
    let rx = match rx {
        Turn::Queued(rx) => rx,
        Turn::Now(write) => {
            let slot = Slot(batcher.clone());
            let mut outcome = run(&batcher.client, vec![write]).await;
            drop(slot);
            return outcome
                .pop()
                .unwrap_or_else(|| Err(unexpected_reply("put")));
        }
    };
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(outcome)) => outcome,
        // The run was dropped unanswered: its runtime is shutting down.
        Ok(Err(_)) => Err(Error::Unavailable {
            backend: BACKEND,
            message: "put: the write was queued and its run stopped (the runtime is \
                      shutting down); it was not applied"
                .into(),
            source: None,
        }),
        Err(_) => Err(Error::Timeout {
            backend: BACKEND,
            operation: "put (queued behind other writes; may have been applied)".into(),
            after: timeout,
        }),
    }
}

/// What a write does: run at once, or wait in the queue for its outcome.
enum Turn {
    Now(PutWrite),
    Queued(oneshot::Receiver<PutOutcome>),
}

/// A run's place: given back when the run ends or is dropped (its caller
/// cancelled, its runtime shut down), which sends what queued meanwhile.
struct Slot(Arc<Batcher>);

impl Drop for Slot {
    fn drop(&mut self) {
        next(&self.0);
    }
}

/// After a run: sends what queued meanwhile as the next run, or frees the
/// run's place.
fn next(batcher: &Arc<Batcher>) {
    let batch = {
        let mut q = batcher.inner.lock();
        let now = Instant::now();
        // Writes whose callers gave up are not sent.
        q.waiting
            .retain(|w| w.deadline > now && !w.reply.is_closed());
        if q.waiting.is_empty() {
            q.in_flight -= 1;
            return;
        }
        let mut bytes = 0;
        let mut n = 0;
        for w in &q.waiting {
            bytes += w.write.size();
            if n > 0 && (n == MAX_WRITES || bytes > MAX_BYTES) {
                break;
            }
            n += 1;
        }
        q.waiting.drain(..n).collect::<Vec<_>>()
    };
    let slot = Slot(batcher.clone());
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // No runtime to send them on: their callers hear that the run
        // stopped, and the place passes on.
        drop(batch);
        return;
    };
    runtime.spawn(async move {
        let (writes, replies): (Vec<PutWrite>, Vec<oneshot::Sender<PutOutcome>>) =
            batch.into_iter().map(|w| (w.write, w.reply)).unzip();
        let outcomes = run(&slot.0.client, writes).await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
        drop(slot);
    });
}

/// One run of the write script for `writes`: one outcome per write.
async fn run(client: &RedisClient, writes: Vec<PutWrite>) -> Vec<PutOutcome> {
    let n = writes.len();
    let count = n.to_string();
    let numbers: Vec<[String; 3]> = writes
        .iter()
        .map(|w| {
            [
                w.expected.to_string(),
                w.ttl_ms.to_string(),
                w.lease.to_string(),
            ]
        })
        .collect();
    let mut args: Vec<&[u8]> = Vec::with_capacity(1 + 6 * n);
    args.push(count.as_bytes());
    for (w, [expected, ttl, lease]) in writes.iter().zip(&numbers) {
        args.extend_from_slice(&[
            w.full.as_bytes(),
            &w.value,
            w.mode.as_bytes(),
            expected.as_bytes(),
            ttl.as_bytes(),
            lease.as_bytes(),
        ]);
    }
    // The run's name, for its errors only.
    let name = || {
        if n == 1 {
            writes[0].describe()
        } else {
            format!("{n} writes sent together")
        }
    };
    let result = client
        .write_script(&scripts::PUT, &args, name, Durability::Replicated)
        .await;
    match result {
        Ok(Written { value, replicas }) => match as_array(value) {
            Some(codes) if codes.len() == n => {
                codes.into_iter().map(|code| Ok((code, replicas))).collect()
            }
            _ => (0..n).map(|_| Err(unexpected_reply("put"))).collect(),
        },
        Err(e) if n == 1 => vec![Err(e)],
        Err(e) => {
            let name = name();
            writes
                .iter()
                .map(|w| Err(for_one(&e, &name, &w.describe())))
                .collect()
        }
    }
}

/// A run's error as one of its writes reports it: the same kind, its own
/// name in the message in place of the run's.
fn for_one(e: &Error, run: &str, one: &str) -> Error {
    let text = |s: &str| s.replace(run, &format!("{one} (sent with other writes)"));
    match e {
        Error::Timeout {
            backend,
            operation,
            after,
        } => Error::Timeout {
            backend,
            operation: text(operation),
            after: *after,
        },
        Error::Unavailable {
            backend, message, ..
        } => Error::Unavailable {
            backend,
            message: text(message),
            source: None,
        },
        Error::PermissionDenied { backend, message } => Error::PermissionDenied {
            backend,
            message: text(message),
        },
        Error::Unauthenticated { backend, message } => Error::Unauthenticated {
            backend,
            message: text(message),
        },
        Error::Closed { backend } => Error::Closed { backend },
        Error::Config(m) => Error::Config(text(m)),
        other => Error::Backend {
            backend: BACKEND,
            message: text(&other.to_string()),
            source: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anykv_core::ErrorKind;

    #[test]
    fn a_runs_error_names_each_write() {
        let run = "3 writes sent together";
        let e = Error::Timeout {
            backend: BACKEND,
            operation: format!("{run} (may have been applied)"),
            after: std::time::Duration::from_secs(1),
        };
        let one = for_one(&e, run, "put \"a\"");
        assert_eq!(one.kind(), ErrorKind::Timeout);
        assert_eq!(
            one.to_string(),
            "redis: put \"a\" (sent with other writes) (may have been applied) timed out after 1s"
        );
        let e = Error::Unavailable {
            backend: BACKEND,
            message: format!("{run}: connection refused"),
            source: None,
        };
        let one = for_one(&e, run, "put \"b\"");
        assert_eq!(one.kind(), ErrorKind::Unavailable);
        assert!(one
            .to_string()
            .contains("put \"b\" (sent with other writes): connection refused"));
        let e = Error::Backend {
            backend: BACKEND,
            message: format!("{run}: ERR something"),
            source: None,
        };
        assert_eq!(for_one(&e, run, "put \"c\"").kind(), ErrorKind::Backend);
    }
}
