//! One client's share of an in-process backend: whether it is closed, what
//! it holds, and giving all of that back on close or drop.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::{Error, Result, StoreStats};

/// One client (one store handle and its clones) of a backend whose state
/// lives in the process: whether it is closed, and what it holds —
/// watches, leases, locks and lock waits — so that [`Owner::stats`]
/// counts them and [`Owner::close`] gives them back.
///
/// The backend's tables ([`crate::backend::ChangeLog`],
/// [`crate::backend::LeaseTable`], [`crate::backend::LockTable`]) register
/// what they give an owner with [`Owner::hold`]; a backend with resources
/// of its own does the same. Dropping the owner closes it, so a store that
/// keeps its `Owner` in the value its last handle drops gets the
/// contract's close-on-drop for free.
///
/// ```
/// use anykv_core::backend::{HoldKind, Owner};
/// use anykv_core::ErrorKind;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
///
/// let owner = Owner::new("mykv");
/// let given_back = Arc::new(AtomicBool::new(false));
/// let flag = given_back.clone();
/// let hold = owner.hold(HoldKind::Lease, move || flag.store(true, Ordering::SeqCst))?;
/// assert_eq!(owner.stats().leases, 1);
/// assert!(owner.close());                     // gives the lease back
/// assert!(given_back.load(Ordering::SeqCst));
/// assert_eq!(owner.stats().leases, 0);
/// assert_eq!(owner.ensure_open().unwrap_err().kind(), ErrorKind::Closed);
/// assert_eq!(owner.hold(HoldKind::Watch, || {}).unwrap_err().kind(), ErrorKind::Closed);
/// drop(hold);
/// # Ok::<(), anykv_core::Error>(())
/// ```
pub struct Owner {
    inner: Arc<OwnerInner>,
}

/// A weak handle on an [`Owner`], for tables that must hold something for
/// it later (a lock handed to a waiter) without keeping it alive.
#[derive(Clone)]
pub struct WeakOwner {
    inner: Weak<OwnerInner>,
    backend: &'static str,
}

/// What an owner holds, as [`Owner::stats`] counts it. On close the holds
/// are given back in this order: waits first, so a lock the close releases
/// never goes to a waiter of the same owner; then leases, whose keys'
/// deletes still reach the owner's own watches; then locks; then watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HoldKind {
    /// A lock call waiting in a queue (not counted by `stats`).
    Waiting,
    /// A lease.
    Lease,
    /// A held lock.
    Lock,
    /// An open watch stream.
    Watch,
}

/// One thing an owner holds. Dropping it tells the owner the thing was
/// given back another way (released, revoked, its stream dropped), so the
/// owner no longer counts it and its close no longer runs its give-back.
pub struct Hold {
    owner: Weak<OwnerInner>,
    id: u64,
}

type GiveBack = Box<dyn FnOnce() + Send>;

struct OwnerInner {
    backend: &'static str,
    closed: AtomicBool,
    holds: Mutex<Holds>,
}

#[derive(Default)]
struct Holds {
    closed: bool,
    next: u64,
    held: BTreeMap<u64, (HoldKind, GiveBack)>,
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Owner")
            .field("backend", &self.inner.backend)
            .field("closed", &self.is_closed())
            .field("stats", &self.stats())
            .finish()
    }
}

impl fmt::Debug for WeakOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakOwner")
            .field("backend", &self.backend)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hold").field("id", &self.id).finish()
    }
}

impl Owner {
    /// An open owner of `backend` (the name its `Closed` errors carry).
    pub fn new(backend: &'static str) -> Self {
        Owner {
            inner: Arc::new(OwnerInner {
                backend,
                closed: AtomicBool::new(false),
                holds: Mutex::new(Holds::default()),
            }),
        }
    }

    /// The backend's name.
    pub fn backend(&self) -> &'static str {
        self.inner.backend
    }

    /// `Err(Closed)` once the owner is closed: what every call checks first.
    pub fn ensure_open(&self) -> Result<()> {
        if self.is_closed() {
            Err(Error::closed(self.inner.backend))
        } else {
            Ok(())
        }
    }

    /// Whether the owner is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// Closes the owner and gives back everything it holds (see
    /// [`HoldKind`] for the order). `true` only for the call that closed
    /// it; later calls, and [`Owner::hold`] from then on, do nothing but
    /// say so.
    pub fn close(&self) -> bool {
        let held = {
            let mut holds = self.inner.holds.lock();
            if holds.closed {
                return false;
            }
            holds.closed = true;
            self.inner.closed.store(true, Ordering::SeqCst);
            std::mem::take(&mut holds.held)
        };
        // Outside the lock: giving back takes the tables' locks, which may
        // drop holds of this owner.
        let mut held: Vec<(u64, (HoldKind, GiveBack))> = held.into_iter().collect();
        held.sort_by_key(|(id, (kind, _))| (*kind, *id));
        for (_, (_, give_back)) in held {
            give_back();
        }
        true
    }

    /// What the owner holds now: watches, leases and locks (no
    /// connections; waits are not counted).
    pub fn stats(&self) -> StoreStats {
        let holds = self.inner.holds.lock();
        let count = |k| holds.held.values().filter(|(kind, _)| *kind == k).count();
        StoreStats::new(
            count(HoldKind::Watch),
            count(HoldKind::Lease),
            count(HoldKind::Lock),
            0,
        )
    }

    /// Registers something the owner holds; `give_back` runs if the owner
    /// closes while the returned [`Hold`] lives. `Err(Closed)` if the owner
    /// is closed: the caller undoes what it was about to hand out. Call it
    /// under the lock of the table that records the thing, so a close
    /// cannot run between the two.
    pub fn hold(&self, kind: HoldKind, give_back: impl FnOnce() + Send + 'static) -> Result<Hold> {
        hold(&self.inner, kind, Box::new(give_back))
    }

    /// A weak handle, for holding something for this owner later.
    pub fn downgrade(&self) -> WeakOwner {
        WeakOwner {
            inner: Arc::downgrade(&self.inner),
            backend: self.inner.backend,
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.close();
    }
}

impl WeakOwner {
    /// [`Owner::hold`] on the owner, or `Err(Closed)` if it is closed or
    /// gone.
    pub fn hold(&self, kind: HoldKind, give_back: impl FnOnce() + Send + 'static) -> Result<Hold> {
        match self.inner.upgrade() {
            Some(inner) => hold(&inner, kind, Box::new(give_back)),
            None => Err(Error::closed(self.backend)),
        }
    }

    /// Whether the owner is closed or gone.
    pub fn is_closed(&self) -> bool {
        self.inner
            .upgrade()
            .is_none_or(|i| i.closed.load(Ordering::SeqCst))
    }
}

fn hold(inner: &Arc<OwnerInner>, kind: HoldKind, give_back: GiveBack) -> Result<Hold> {
    let mut holds = inner.holds.lock();
    if holds.closed {
        return Err(Error::closed(inner.backend));
    }
    holds.next += 1;
    let id = holds.next;
    holds.held.insert(id, (kind, give_back));
    Ok(Hold {
        owner: Arc::downgrade(inner),
        id,
    })
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.upgrade() {
            let removed = owner.holds.lock().held.remove(&self.id);
            // The give-back may own table handles; drop it outside the lock.
            drop(removed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn close_gives_back_in_kind_order_once() {
        let owner = Owner::new("t");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut holds = Vec::new();
        for kind in [
            HoldKind::Watch,
            HoldKind::Lock,
            HoldKind::Lease,
            HoldKind::Waiting,
        ] {
            let order = order.clone();
            holds.push(owner.hold(kind, move || order.lock().push(kind)).unwrap());
        }
        assert_eq!(owner.stats(), StoreStats::new(1, 1, 1, 0));
        assert!(owner.close());
        assert!(!owner.close());
        assert_eq!(
            *order.lock(),
            [
                HoldKind::Waiting,
                HoldKind::Lease,
                HoldKind::Lock,
                HoldKind::Watch
            ]
        );
    }

    #[test]
    fn a_dropped_hold_is_not_given_back() {
        let owner = Owner::new("t");
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let hold = owner
            .hold(HoldKind::Lock, move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        drop(hold);
        assert_eq!(owner.stats().locks, 0);
        let weak = owner.downgrade();
        drop(owner);
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        assert!(weak.is_closed());
        assert!(weak.hold(HoldKind::Lock, || {}).is_err());
    }
}
