//! Deadlines (TTL keys) of an in-process backend, on a thread of their own.

use std::collections::BTreeSet;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// Calls the backend when deadlines pass — the TTL keys of a backend
/// whose data lives in the process — from a thread of its own, started
/// on the first [`ExpiryTimer::schedule`]. The thread needs no async
/// runtime, so a deadline set from a short-lived runtime (a test's, a
/// `block_on`'s) still fires after that runtime is gone. Dropping the
/// timer ends the thread.
///
/// `on_due(item, deadline)` runs on that thread, without the timer's
/// lock, once per scheduled pair (a panic in it is logged, and later
/// deadlines still fire). A key rewritten since has a new
/// deadline, so the backend deletes the key only if its data still
/// carries that deadline (the check that makes a stale timer harmless);
/// [`ExpiryTimer::cancel`] spares the timer the visit. `on_due` typically
/// holds a `Weak` of the backend's state, which owns the timer.
///
/// ```
/// use std::sync::mpsc;
/// use std::time::{Duration, Instant};
/// use anykv_core::backend::ExpiryTimer;
///
/// let (tx, rx) = mpsc::channel();
/// let tx = std::sync::Mutex::new(tx);
/// let timer = ExpiryTimer::new("doc-ttl", move |key: String, _deadline| {
///     let _ = tx.lock().unwrap().send(key);
/// });
/// let soon = Instant::now() + Duration::from_millis(20);
/// timer.schedule(soon, "a".to_owned());
/// timer.schedule(soon, "b".to_owned());
/// timer.cancel(soon, "b".to_owned());
/// assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "a");
/// assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
/// ```
pub struct ExpiryTimer<K: Ord + Send + 'static> {
    shared: Arc<TimerShared<K>>,
}

struct TimerShared<K> {
    name: String,
    state: Mutex<TimerState<K>>,
    wake: Condvar,
    on_due: Box<dyn Fn(K, Instant) + Send + Sync>,
}

struct TimerState<K> {
    due: BTreeSet<(Instant, K)>,
    started: bool,
    stopped: bool,
}

impl<K: Ord + Send + 'static> fmt::Debug for ExpiryTimer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.state.lock();
        f.debug_struct("ExpiryTimer")
            .field("name", &self.shared.name)
            .field("scheduled", &st.due.len())
            .field("running", &st.started)
            .finish()
    }
}

impl<K: Ord + Send + 'static> ExpiryTimer<K> {
    /// A timer whose thread is called `thread_name`, calling `on_due`.
    pub fn new(thread_name: &str, on_due: impl Fn(K, Instant) + Send + Sync + 'static) -> Self {
        ExpiryTimer {
            shared: Arc::new(TimerShared {
                name: thread_name.to_owned(),
                state: Mutex::new(TimerState {
                    due: BTreeSet::new(),
                    started: false,
                    stopped: false,
                }),
                wake: Condvar::new(),
                on_due: Box::new(on_due),
            }),
        }
    }

    /// Calls `on_due(item, at)` once `at` has passed.
    pub fn schedule(&self, at: Instant, item: K) {
        let mut st = self.shared.state.lock();
        let earliest = st.due.first().is_none_or(|(first, _)| at < *first);
        st.due.insert((at, item));
        if !st.started {
            st.started = true;
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name(self.shared.name.clone())
                .spawn(move || run(&shared));
            if let Err(e) = spawned {
                st.started = false;
                tracing::error!(
                    "{}: could not start the expiry thread: {e}",
                    self.shared.name
                );
            }
        } else if earliest {
            self.shared.wake.notify_all();
        }
    }

    /// Forgets `item` due at `at`, if it is still scheduled.
    pub fn cancel(&self, at: Instant, item: K) {
        self.shared.state.lock().due.remove(&(at, item));
    }
}

impl<K: Ord + Send + 'static> Drop for ExpiryTimer<K> {
    fn drop(&mut self) {
        self.shared.state.lock().stopped = true;
        self.shared.wake.notify_all();
    }
}

fn run<K: Ord>(shared: &TimerShared<K>) {
    let mut st = shared.state.lock();
    loop {
        if st.stopped {
            return;
        }
        let now = Instant::now();
        let mut due = Vec::new();
        while st.due.first().is_some_and(|(at, _)| *at <= now) {
            due.extend(st.due.pop_first());
        }
        if !due.is_empty() {
            drop(st);
            for (at, item) in due {
                // A panicking callback must not stop every later deadline.
                let call = AssertUnwindSafe(|| (shared.on_due)(item, at));
                if std::panic::catch_unwind(call).is_err() {
                    tracing::error!("{}: an expiry callback panicked", shared.name);
                }
            }
            st = shared.state.lock();
            continue;
        }
        match st.due.first().map(|(at, _)| *at) {
            Some(at) => {
                shared.wake.wait_until(&mut st, at);
            }
            None => shared.wake.wait(&mut st),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn deadlines_fire_in_order_and_survive_a_runtime() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let timer = ExpiryTimer::new("t-ttl", move |k: u32, _| {
            let _ = tx.lock().send(k);
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let now = Instant::now();
            timer.schedule(now + Duration::from_millis(60), 2);
            timer.schedule(now + Duration::from_millis(30), 1);
        });
        drop(rt);
        let got: Vec<u32> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(got, [1, 2]);
        drop(timer);
    }

    #[test]
    fn a_panicking_callback_does_not_stop_the_timer() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let timer = ExpiryTimer::new("t-ttl-panic", move |k: u32, _| {
            assert_ne!(k, 1, "the first deadline's callback panics");
            let _ = tx.lock().send(k);
        });
        let now = Instant::now();
        timer.schedule(now + Duration::from_millis(10), 1);
        timer.schedule(now + Duration::from_millis(30), 2);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 2);
    }
}
