//! The leases of an in-process backend.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::owner::{Hold, HoldKind, Owner};
use crate::handles::{lost_signal, LostTrigger, Release};
use crate::{Error, Lease, LeaseId, Result};

/// What a [`LeaseTable`] calls when a lease is revoked: its id and the
/// full names of the keys bound to it, sorted.
type OnRevoke = Box<dyn Fn(LeaseId, Vec<String>) + Send + Sync>;

/// The leases of a backend whose clients share one process, and the keys
/// bound to each.
///
/// [`LeaseTable::grant`] checks the TTL, raises it to the backend's
/// minimum and hands out a [`Lease`] that counts as a lease of its
/// [`Owner`]. Revoking it — [`Lease::revoke`], dropping the handle, or the
/// owner's close — removes it from the table, then calls the backend's
/// `on_revoke` with the keys bound to it, then fires its loss signal. An
/// in-process lease never expires: it lives while its handle and its
/// owner do, as a process's lease lives while the process does.
///
/// The backend binds each key written with a lease ([`LeaseTable::bind`],
/// which refuses a lease that is gone with `LeaseLost`) and unbinds it
/// when the key is rewritten or deleted, both under its data lock. A
/// rewrite may race a revoke that has already taken the key list, so
/// `on_revoke` deletes only the keys still bound to that lease in the
/// backend's data. `on_revoke` takes the backend's data lock: never
/// revoke, or close an owner, while holding it.
///
/// Cloning gives another handle on the same table.
///
/// ```
/// use std::collections::BTreeMap;
/// use std::sync::Arc;
/// use std::time::Duration;
/// use anykv_core::backend::{LeaseTable, Owner};
/// use anykv_core::{ErrorKind, LeaseId};
/// use parking_lot::Mutex;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anykv_core::Result<()> {
/// // key -> the lease it is bound to
/// let data: Arc<Mutex<BTreeMap<String, Option<LeaseId>>>> = Arc::default();
/// let d = data.clone();
/// let leases = LeaseTable::new("mykv", Duration::from_millis(1), move |id, keys| {
///     let mut d = d.lock();
///     for k in keys {
///         if d.get(&k) == Some(&Some(id)) {
///             d.remove(&k);
///         }
///     }
/// });
/// let owner = Owner::new("mykv");
/// let lease = leases.grant(&owner, Duration::from_secs(10))?;
/// {
///     let mut d = data.lock();
///     leases.bind(lease.id(), "a")?;
///     d.insert("a".into(), Some(lease.id()));
/// }
/// assert_eq!(owner.stats().leases, 1);
/// let id = lease.id();
/// lease.revoke().await?;
/// assert!(data.lock().is_empty());
/// assert_eq!(leases.bind(id, "b").unwrap_err().kind(), ErrorKind::LeaseLost);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct LeaseTable {
    shared: Arc<LeaseShared>,
}

struct LeaseShared {
    backend: &'static str,
    min_ttl: Duration,
    state: Mutex<LeaseState>,
    on_revoke: OnRevoke,
}

#[derive(Default)]
struct LeaseState {
    leases: HashMap<u64, LeaseEntry>,
    next_id: u64,
}

struct LeaseEntry {
    keys: BTreeSet<String>,
    trigger: LostTrigger,
    _hold: Hold,
}

impl fmt::Debug for LeaseTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseTable")
            .field("backend", &self.shared.backend)
            .field("leases", &self.shared.state.lock().leases.len())
            .finish()
    }
}

impl LeaseTable {
    /// An empty table of `backend`, granting TTLs of at least `min_ttl`,
    /// calling `on_revoke` with each revoked lease's keys.
    pub fn new(
        backend: &'static str,
        min_ttl: Duration,
        on_revoke: impl Fn(LeaseId, Vec<String>) + Send + Sync + 'static,
    ) -> Self {
        LeaseTable {
            shared: Arc::new(LeaseShared {
                backend,
                min_ttl,
                state: Mutex::new(LeaseState::default()),
                on_revoke: Box::new(on_revoke),
            }),
        }
    }

    /// Grants `owner` a lease of `ttl` (checked, then raised to the
    /// minimum). `Err(Closed)` if the owner is closed.
    pub fn grant(&self, owner: &Owner, ttl: Duration) -> Result<Lease> {
        super::check_lease_ttl(ttl)?;
        owner.ensure_open()?;
        let (trigger, lost) = lost_signal();
        let mut st = self.shared.state.lock();
        st.next_id += 1;
        let id = st.next_id;
        let table = Arc::downgrade(&self.shared);
        let hold = owner.hold(HoldKind::Lease, move || revoke(&table, id))?;
        st.leases.insert(
            id,
            LeaseEntry {
                keys: BTreeSet::new(),
                trigger,
                _hold: hold,
            },
        );
        Ok(Lease::new(
            LeaseId(id),
            ttl.max(self.shared.min_ttl),
            lost,
            Box::new(Revoke {
                table: Arc::downgrade(&self.shared),
                id,
            }),
        ))
    }

    /// Binds the key `full` to `lease`; `LeaseLost` if the lease is gone.
    pub fn bind(&self, lease: LeaseId, full: &str) -> Result<()> {
        match self.shared.state.lock().leases.get_mut(&lease.0) {
            Some(entry) => {
                entry.keys.insert(full.to_owned());
                Ok(())
            }
            None => Err(Error::LeaseLost {
                backend: self.shared.backend,
                lease: lease.0,
            }),
        }
    }

    /// Unbinds the key `full` from `lease` (rewritten or deleted).
    pub fn unbind(&self, lease: LeaseId, full: &str) {
        if let Some(entry) = self.shared.state.lock().leases.get_mut(&lease.0) {
            entry.keys.remove(full);
        }
    }

    /// Whether `lease` is live.
    pub fn is_live(&self, lease: LeaseId) -> bool {
        self.shared.state.lock().leases.contains_key(&lease.0)
    }

    /// Revokes `lease` (see the type's documentation); a lease that is
    /// gone is left alone.
    pub fn revoke(&self, lease: LeaseId) {
        revoke(&Arc::downgrade(&self.shared), lease.0);
    }
}

fn revoke(table: &Weak<LeaseShared>, id: u64) {
    let Some(shared) = table.upgrade() else {
        return;
    };
    let Some(entry) = shared.state.lock().leases.remove(&id) else {
        return;
    };
    let LeaseEntry {
        keys,
        trigger,
        _hold,
    } = entry;
    (shared.on_revoke)(LeaseId(id), keys.into_iter().collect());
    trigger.fire();
}

/// A lease handle's revoke.
struct Revoke {
    table: Weak<LeaseShared>,
    id: u64,
}

#[async_trait]
impl Release for Revoke {
    async fn release(&self) -> Result<()> {
        self.release_in_background();
        Ok(())
    }

    fn release_in_background(&self) {
        revoke(&self.table, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn close_and_drop_revoke_once() {
        let revoked = Arc::new(AtomicUsize::new(0));
        let r = revoked.clone();
        let leases = LeaseTable::new("t", Duration::from_secs(1), move |_, keys| {
            r.fetch_add(keys.len(), Ordering::SeqCst);
        });
        let owner = Owner::new("t");
        let a = leases.grant(&owner, Duration::from_millis(5)).unwrap();
        assert_eq!(a.ttl(), Duration::from_secs(1));
        let b = leases.grant(&owner, Duration::from_secs(5)).unwrap();
        leases.bind(a.id(), "x").unwrap();
        leases.bind(b.id(), "y").unwrap();
        leases.bind(b.id(), "z").unwrap();
        leases.unbind(b.id(), "z");
        drop(a);
        assert_eq!(revoked.load(Ordering::SeqCst), 1);
        assert_eq!(owner.stats().leases, 1);
        owner.close();
        assert!(b.is_lost());
        assert!(!leases.is_live(b.id()));
        assert_eq!(revoked.load(Ordering::SeqCst), 2);
        b.revoke().await.unwrap();
        assert_eq!(revoked.load(Ordering::SeqCst), 2);
        let e = leases.grant(&owner, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Closed);
        let e = leases.grant(&Owner::new("t"), Duration::ZERO).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
    }
}
