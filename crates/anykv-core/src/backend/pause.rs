//! Freezing an in-process backend, as a paused server freezes.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::{Error, Result};

/// A gate every call of an in-process backend passes first, closed while
/// the backend plays a frozen server: for the conformance suite's fault
/// hooks (`pause_server`, `resume_server`, `restart_server`) and for
/// testing how a program copes with a store that stops answering.
///
/// While paused, [`PauseGate::pass`] waits until [`PauseGate::resume`] or
/// the caller's request timeout, then fails with `Timeout` (the outcome
/// of a write is then unknown to the caller, as with a real server; here
/// it was not applied). Nothing is lost by a pause: the data, leases and
/// locks live in the process.
///
/// ```
/// use std::time::Duration;
/// use anykv_core::backend::PauseGate;
/// use anykv_core::ErrorKind;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let gate = PauseGate::new();
/// gate.pass("mykv", Duration::from_secs(1)).await.unwrap();
/// gate.pause();
/// let e = gate.pass("mykv", Duration::from_millis(20)).await.unwrap_err();
/// assert_eq!(e.kind(), ErrorKind::Timeout);
/// gate.resume();
/// gate.pass("mykv", Duration::from_millis(20)).await.unwrap();
/// # }
/// ```
#[derive(Default)]
pub struct PauseGate {
    paused: AtomicBool,
    resumed: Notify,
}

impl fmt::Debug for PauseGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PauseGate")
            .field("paused", &self.is_paused())
            .finish()
    }
}

impl PauseGate {
    /// An open gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Closes the gate: calls wait.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Opens the gate: the waiting calls go on.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.resumed.notify_waiters();
    }

    /// Whether the gate is closed.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// What a restart is for an in-process store: a freeze of `outage`
    /// with nothing lost.
    pub async fn restart(&self, outage: Duration) {
        self.pause();
        tokio::time::sleep(outage).await;
        self.resume();
    }

    /// Returns at once while the gate is open; while it is closed, waits
    /// until it opens, or fails with `Timeout` of `backend` after
    /// `timeout`.
    pub async fn pass(&self, backend: &'static str, timeout: Duration) -> Result<()> {
        if !self.is_paused() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let resumed = self.resumed.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            if !self.is_paused() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, resumed).await.is_err() {
                return Err(Error::Timeout {
                    backend,
                    operation: "a call on a paused store".into(),
                    after: timeout,
                });
            }
        }
    }
}
