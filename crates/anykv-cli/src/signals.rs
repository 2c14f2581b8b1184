//! Ctrl-C (SIGINT) and SIGTERM: counted, so long-running commands can
//! stop cleanly on the first and give up waiting on the second.

use tokio::sync::watch;

/// SIGINT's number.
pub const SIGINT: i32 = 2;
/// SIGTERM's number.
pub const SIGTERM: i32 = 15;
/// SIGKILL's number (sent, never received).
pub const SIGKILL: i32 = 9;

/// The interruptions received so far. Cheap to clone; every clone sees
/// every signal.
#[derive(Debug, Clone)]
pub struct Interrupts {
    rx: watch::Receiver<(u32, i32)>,
}

impl Interrupts {
    /// Starts listening for SIGINT and SIGTERM (Ctrl-C only, on platforms
    /// without Unix signals). From then on the signals no longer end the
    /// process by themselves: commands select on [`Interrupts::wait`].
    /// Must be called inside a Tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        let (tx, rx) = watch::channel((0u32, 0i32));
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut int = signal(SignalKind::interrupt())?;
            let mut term = signal(SignalKind::terminate())?;
            tokio::spawn(async move {
                loop {
                    let number = tokio::select! {
                        s = int.recv() => s.map(|()| SIGINT),
                        s = term.recv() => s.map(|()| SIGTERM),
                    };
                    let Some(number) = number else { break };
                    tx.send_modify(|(count, last)| {
                        *count += 1;
                        *last = number;
                    });
                }
            });
        }
        #[cfg(not(unix))]
        {
            tokio::spawn(async move {
                while tokio::signal::ctrl_c().await.is_ok() {
                    tx.send_modify(|(count, last)| {
                        *count += 1;
                        *last = SIGINT;
                    });
                }
            });
        }
        Ok(Interrupts { rx })
    }

    /// How many signals have arrived.
    pub fn count(&self) -> u32 {
        self.rx.borrow().0
    }

    /// Waits until at least `n` signals have arrived; returns the number of
    /// the last one (2 for SIGINT, 15 for SIGTERM).
    pub async fn wait(&self, n: u32) -> i32 {
        let mut rx = self.rx.clone();
        let last = rx.wait_for(|(count, _)| *count >= n).await.map(|v| v.1);
        match last {
            Ok(signal) => signal,
            // The listener is gone: no signal will come.
            Err(_) => std::future::pending().await,
        }
    }

    /// Waits for the first signal.
    pub async fn first(&self) -> i32 {
        self.wait(1).await
    }
}
