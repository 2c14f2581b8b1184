//! Leases and lock guards: handles that own something on the server and
//! give it back when released or dropped.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::Result;
use crate::types::LeaseId;

/// Fires a [`LostSignal`]. Firing is final. Dropping every clone of the
/// trigger fires it too, so a backend task that dies cannot leave a holder
/// believing it still holds something.
#[derive(Clone, Debug)]
pub struct LostTrigger {
    tx: Arc<watch::Sender<bool>>,
}

/// Completes when a lease or lock is lost. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LostSignal {
    rx: watch::Receiver<bool>,
}

/// A new trigger and the signal it fires.
pub fn lost_signal() -> (LostTrigger, LostSignal) {
    let (tx, rx) = watch::channel(false);
    (LostTrigger { tx: Arc::new(tx) }, LostSignal { rx })
}

impl LostTrigger {
    /// Fires the signal.
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the signal has fired.
    pub fn is_fired(&self) -> bool {
        *self.tx.borrow()
    }
}

impl LostSignal {
    /// Whether the signal has fired (or its trigger is gone).
    pub fn is_lost(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }

    /// A future that completes when the signal fires; `Send` and `'static`.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            // An error means every trigger is gone: lost as well.
            let _ = rx.wait_for(|lost| *lost).await;
        }
    }
}

/// What a backend does to give a lease or a lock back.
#[async_trait]
pub trait Release: Send + Sync + 'static {
    /// Gives it back and waits for the server to confirm.
    async fn release(&self) -> Result<()>;

    /// Gives it back without waiting (called from `Drop`): must not block
    /// and must not panic, even outside a runtime.
    fn release_in_background(&self);
}

/// What a lease and a lock guard share: the loss signal and the release,
/// run once, by `release()` or else on drop.
struct Held {
    lost: LostSignal,
    release: Option<Box<dyn Release>>,
}

impl Held {
    fn new(lost: LostSignal, release: Box<dyn Release>) -> Self {
        Held {
            lost,
            release: Some(release),
        }
    }

    async fn release(&mut self) -> Result<()> {
        match self.release.take() {
            Some(release) => release.release().await,
            None => Ok(()),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release.release_in_background();
        }
    }
}

/// A TTL shared by many keys and kept alive by the client while this handle
/// lives (an etcd lease, a ZooKeeper session).
///
/// Keys written with [`crate::PutOptions::with_lease`] vanish when the lease
/// is revoked, when this handle is dropped, when its store is closed, and,
/// if the keep-alive stops, within the TTL plus slack.
#[must_use = "dropping a Lease revokes it at once: keep it while its keys must live"]
pub struct Lease {
    id: LeaseId,
    ttl: Duration,
    held: Held,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.id)
            .field("ttl", &self.ttl)
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl Lease {
    /// For backends: a lease handle.
    pub fn new(id: LeaseId, ttl: Duration, lost: LostSignal, release: Box<dyn Release>) -> Self {
        Lease {
            id,
            ttl,
            held: Held::new(lost, release),
        }
    }

    /// The lease's id, for [`crate::PutOptions::with_lease`].
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// The lease's TTL as granted by the backend.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Completes when the lease has expired, was revoked, or can no longer
    /// be kept alive.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.held.lost.wait()
    }

    /// Whether the lease is lost.
    pub fn is_lost(&self) -> bool {
        self.held.lost.is_lost()
    }

    /// A signal that outlives this handle.
    pub fn lost_signal(&self) -> LostSignal {
        self.held.lost.clone()
    }

    /// Revokes the lease: its keys vanish.
    pub async fn revoke(mut self) -> Result<()> {
        self.held.release().await
    }
}

/// Proof of holding a lock. Release it with [`LockGuard::release`]; dropping
/// it releases it in the background.
#[must_use = "dropping a LockGuard releases the lock at once: keep it while you need the lock"]
pub struct LockGuard {
    key: String,
    fencing_token: u64,
    held: Held,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.key)
            .field("fencing_token", &self.fencing_token)
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl LockGuard {
    /// For backends: a guard for a lock the server has confirmed.
    pub fn new(
        key: String,
        fencing_token: u64,
        lost: LostSignal,
        release: Box<dyn Release>,
    ) -> Self {
        LockGuard {
            key,
            fencing_token,
            held: Held::new(lost, release),
        }
    }

    /// The lock's canonical key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// A number that strictly increases from one holder of this lock to
    /// the next: hand it to the protected resource so it can refuse a
    /// stale holder.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// Completes if the lock is lost (its lease or session is gone).
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.held.lost.wait()
    }

    /// Whether the lock is lost.
    pub fn is_lost(&self) -> bool {
        self.held.lost.is_lost()
    }

    /// A signal that outlives this guard.
    pub fn lost_signal(&self) -> LostSignal {
        self.held.lost.clone()
    }

    /// Releases the lock. After a loss this never removes the next holder's
    /// lock.
    pub async fn release(mut self) -> Result<()> {
        self.held.release().await
    }
}

/// For backends that implement `lock` and `try_lock` with one routine that
/// returns `Option<LockGuard>`: the guard of a lock call that waited, or
/// [`crate::Error::Backend`] if the routine returned without one (which a
/// correct waiting routine never does).
pub fn waited_for(backend: &'static str, guard: Option<LockGuard>) -> Result<LockGuard> {
    guard.ok_or_else(|| crate::Error::Backend {
        backend,
        message: "a waiting lock returned without the lock".into(),
        source: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signal_fires_on_fire_and_on_drop() {
        let (t, s) = lost_signal();
        assert!(!s.is_lost());
        t.fire();
        assert!(s.is_lost());
        s.wait().await;

        let (t, s) = lost_signal();
        let w = s.wait();
        drop(t);
        w.await;
        assert!(s.is_lost());
    }
}
