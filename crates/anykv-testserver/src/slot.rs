//! One server process of a cluster fixture, by index: what every fixture
//! does with its members (kill, pause, resume, logs, memory) written once.

use crate::Process;

/// A member's process while it runs; empty after a kill. Dropping it kills
/// the process (SIGKILL also ends a paused one at once).
#[derive(Debug)]
pub(crate) struct Slot {
    /// How errors name the member (`etcd member 2`).
    what: String,
    process: Option<Process>,
}

impl Slot {
    /// An empty slot for the member errors call `what`.
    pub(crate) fn new(what: String) -> Slot {
        Slot {
            what,
            process: None,
        }
    }

    /// Holds a newly started process.
    pub(crate) fn set(&mut self, process: Process) {
        self.process = Some(process);
    }

    /// The process, while it runs.
    pub(crate) fn process(&self) -> Option<&Process> {
        self.process.as_ref()
    }

    /// Whether a process was started and not killed since (it may be
    /// paused, or have died by itself).
    pub(crate) fn is_started(&self) -> bool {
        self.process.is_some()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub(crate) fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Whether the process runs (it may be paused).
    pub(crate) fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.is_running())
    }

    /// Sends `STOP` (waiting until every thread has stopped) or `CONT`.
    pub(crate) fn signal(&self, signal: &str) -> Result<(), String> {
        match &self.process {
            Some(p) => p.signal(signal),
            None => Err(format!("{} is not running", self.what)),
        }
    }

    /// The process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// The resident memory in KiB, while it runs.
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        self.pid().and_then(crate::rss_kib)
    }

    /// The last `bytes` of its log since it was last started.
    pub(crate) fn log_tail(&self, bytes: usize) -> String {
        self.process
            .as_ref()
            .map(|p| p.log_tail(bytes))
            .unwrap_or_default()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.kill();
    }
}
