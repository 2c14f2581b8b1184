//! The threads an open file's blocking work runs on, so none of it runs on
//! an async runtime's threads: one writer (writes are serialized anyway,
//! and run in the order they were asked) and a few readers (reads run
//! beside a write's sync).
//!
//! A handoff to a thread of our own and back costs a few microseconds; to
//! Tokio's `spawn_blocking` pool about four times as much (measured in
//! `PERF.md`), which is most of a read's cost.

use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc};

use anykv_core::{Error, Result};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::config::BACKEND;

type Job = Box<dyn FnOnce() + Send>;

/// A queue and the threads that take work from it, which end when it is
/// dropped and the work queued before is done.
pub(crate) struct Workers {
    queue: Mutex<mpsc::Sender<Job>>,
}

impl Workers {
    /// `threads` threads named `name`; `None` if none could be started.
    pub(crate) fn start(name: &str, threads: usize) -> Option<Workers> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for _ in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || work(&rx));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::error!("anykv-redb: could not start a {name} thread: {e}"),
            }
        }
        (started > 0).then(|| Workers {
            queue: Mutex::new(tx),
        })
    }

    /// A handle on the queue, to send work to it.
    pub(crate) fn queue(&self) -> Queue {
        Queue(self.queue.lock().clone())
    }

    /// Runs `f` on one of the threads and waits for its result without
    /// blocking the caller's thread.
    #[cfg(test)]
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.queue().run(f).await
    }
}

/// A handle on a [`Workers`] queue.
pub(crate) struct Queue(mpsc::Sender<Job>);

impl Queue {
    /// Runs `f` on one of the threads and waits for its result without
    /// blocking the caller's thread. Nothing of `f` stays with the caller.
    pub(crate) async fn run<T: Send + 'static>(
        self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(f());
        });
        let sent = self.0.send(job);
        drop(self);
        if sent.is_err() {
            return Err(gone());
        }
        // The reply is dropped unanswered only if the work panicked.
        answer.await.map_err(|_| gone())?
    }
}

/// Runs blocking file work off the async runtime (on Tokio's blocking
/// threads), or right here outside a Tokio runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.spawn_blocking(f).await.map_err(|e| Error::Backend {
            backend: BACKEND,
            message: format!("a call on the file did not finish: {e}"),
            source: Some(Box::new(e)),
        })?,
        Err(_) => f(),
    }
}

fn work(rx: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = rx.lock().recv();
        let Ok(job) = job else {
            return;
        };
        // A panic must not stop the thread; the caller sees an error.
        if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("anykv-redb: a call on the file panicked");
        }
    }
}

fn gone() -> Error {
    Error::Backend {
        backend: BACKEND,
        message: "a call on the file did not finish".into(),
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_threads_and_a_panic_is_an_error() {
        let w = Workers::start("t-workers", 2).unwrap();
        let name = w
            .run(|| Ok(std::thread::current().name().map(str::to_owned)))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("t-workers"));
        let e = w
            .run(|| -> Result<()> { panic!("on purpose") })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), anykv_core::ErrorKind::Backend);
        assert_eq!(w.run(|| Ok(1)).await.unwrap(), 1);
    }
}
