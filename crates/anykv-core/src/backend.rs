//! For authors of backends: the checks and helpers every backend needs,
//! written once so that every backend applies the same rule the same way.
//!
//! Application code does not need this module; it is what a `Store`
//! implementation calls. The suite (`anykv-conformance`) checks that the
//! rules hold.
//!
//! ```
//! use anykv_core::backend::{compare_outcome, ClosedFlag};
//! use anykv_core::ErrorKind;
//!
//! let closed = ClosedFlag::new("mykv");
//! closed.ensure_open().unwrap();
//! // A compare-and-swap expecting revision 3 found the key at 5:
//! let e = compare_outcome("mykv", "a/b", Some(3), Some(5)).unwrap_err();
//! assert_eq!(e.kind(), ErrorKind::KeyModified);
//! assert!(closed.close());          // the first close does the work
//! assert!(!closed.close());         // a second one is a no-op
//! assert_eq!(closed.ensure_open().unwrap_err().kind(), ErrorKind::Closed);
//! ```
//!
//! # An in-process engine
//!
//! A backend whose data lives in the process (a map behind a mutex, an
//! embedded database) keeps its data and its revision counter itself and
//! builds the rest of the contract from these pieces:
//!
//! - [`Owner`]: one client — its closed flag, what it holds for
//!   `stats()`, and giving all of it back on `close()` or drop;
//! - [`Root`]: checked keys and prefixes under the store's root, and back;
//! - [`ChangeLog`]: bounded history and the watches — initial state and
//!   `Synced`, resume from a revision, `Compacted`, lagging consumers;
//! - [`LeaseTable`]: leases, the keys bound to them, revoke on drop and
//!   close;
//! - [`LockTable`]: FIFO locks with fencing tokens, cancel-safe waits,
//!   loss signals;
//! - [`ExpiryTimer`]: TTL deadlines on a thread of their own, which
//!   outlives the runtime that set them;
//! - [`PauseGate`]: a frozen server, for the suite's fault hooks.
//!
//! The memory backend is built on them, and
//! `crates/anykv-conformance/tests/small_backend.rs` is a whole backend
//! built this way — a `BTreeMap` behind a mutex, under 300 lines — that
//! passes the entire conformance suite.
//!
//! Lock order: the backend's data lock comes first; the tables take their
//! own locks inside it, and call the backend (the lease table's
//! `on_revoke`, the timer's `on_due`) without holding them. Never close an
//! owner or revoke a lease while holding the data lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::{check_ttl, Error, LockOptions, PutOptions, Result};

mod changelog;
mod expiry;
mod leases;
mod locks;
mod owner;
mod pause;
mod root;

pub use changelog::ChangeLog;
pub use expiry::ExpiryTimer;
pub use leases::LeaseTable;
pub use locks::LockTable;
pub use owner::{Hold, HoldKind, Owner, WeakOwner};
pub use pause::PauseGate;
pub use root::Root;

pub use crate::fanout::{event_channel, EventReceiver, EventSender, Gone};
pub use crate::handles::{lost_signal, waited_for, LostTrigger, Release};

/// Whether a store was closed: every call checks it first, and `close()`
/// sets it once.
#[derive(Debug)]
pub struct ClosedFlag {
    backend: &'static str,
    closed: AtomicBool,
}

impl ClosedFlag {
    /// An open store's flag.
    pub fn new(backend: &'static str) -> Self {
        ClosedFlag {
            backend,
            closed: AtomicBool::new(false),
        }
    }

    /// `Err(Closed)` once the store is closed.
    pub fn ensure_open(&self) -> Result<()> {
        if self.is_closed() {
            Err(Error::closed(self.backend))
        } else {
            Ok(())
        }
    }

    /// Marks the store closed; `true` only for the call that closed it,
    /// which then releases what the store holds.
    pub fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::SeqCst)
    }

    /// Whether the store is closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// `ValueTooLarge` naming the canonical `key` when `size` exceeds `max`.
pub fn check_value_size(backend: &'static str, key: &str, size: usize, max: usize) -> Result<()> {
    if size > max {
        Err(Error::ValueTooLarge {
            backend,
            key: key.to_owned(),
            size,
            max,
        })
    } else {
        Ok(())
    }
}

/// Everything a write checks before anything is sent: the options (a TTL
/// in range, not both TTL and lease) and the value's size.
pub fn check_write(
    backend: &'static str,
    key: &str,
    size: usize,
    max: usize,
    options: &PutOptions,
) -> Result<()> {
    options.validate()?;
    check_value_size(backend, key, size, max)
}

/// A lease's TTL: more than zero and at most [`crate::MAX_TTL`]
/// (`InvalidArgument` otherwise), on every backend.
pub fn check_lease_ttl(ttl: Duration) -> Result<()> {
    check_ttl(ttl)
}

/// A lock's options: its lease TTL more than zero and at most
/// [`crate::MAX_TTL`] (`InvalidArgument` otherwise), on every backend.
/// A TTL below the backend's minimum is then raised to it, as for keys.
pub fn check_lock_options(options: &LockOptions) -> Result<()> {
    check_ttl(options.ttl).map_err(|_| {
        Error::InvalidArgument(format!(
            "a lock's TTL must be more than zero and at most ten years, not {:?}",
            options.ttl
        ))
    })
}

/// The outcome of a compare-and-swap or compare-and-delete on `key`
/// (canonical, relative to the root) that expected `expected` (`None`:
/// absent, for create-only) and found `current`: `Ok` when they match,
/// else `KeyExists`, `KeyNotFound` or `KeyModified` with the revision found.
pub fn compare_outcome(
    backend: &'static str,
    key: &str,
    expected: Option<u64>,
    current: Option<u64>,
) -> Result<()> {
    match (expected, current) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(Error::KeyExists {
            backend,
            key: key.to_owned(),
        }),
        (Some(_), None) => Err(Error::KeyNotFound {
            backend,
            key: key.to_owned(),
        }),
        (Some(e), Some(c)) if e == c => Ok(()),
        (Some(e), Some(c)) => Err(Error::KeyModified {
            backend,
            key: key.to_owned(),
            expected: e,
            actual: c,
        }),
    }
}

/// What a watch covers, in canonical form relative to the root:
/// `watch(key)` covers exactly that key, `watch_tree(prefix)` exactly what
/// `list(prefix)` returns (the prefix key itself excluded; `""` is the
/// whole root).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WatchTarget {
    /// One key.
    Key(String),
    /// Every key under a prefix.
    Tree(String),
}

impl WatchTarget {
    /// Whether the canonical `key` is covered.
    pub fn covers(&self, key: &str) -> bool {
        match self {
            WatchTarget::Key(k) => k == key,
            WatchTarget::Tree(p) => crate::key::is_in_tree(p, key),
        }
    }
}

/// How often to renew a lease or session of `ttl`: a third of it, so two
/// renewals can fail before it runs out.
pub fn keepalive_interval(ttl: Duration) -> Duration {
    ttl / 3
}

/// The most a holder waits between its last successful renewal and
/// firing `lost()`: the TTL less a margin for the clocks and the network
/// (a quarter of the TTL, at most 500 ms), so `lost()` fires before the
/// server can expire the lease and hand its lock to another client.
pub fn loss_deadline(ttl: Duration) -> Duration {
    ttl.saturating_sub((ttl / 4).min(Duration::from_millis(500)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn compare_outcomes() {
        let k = |r: Result<()>| r.map_err(|e| e.kind());
        assert_eq!(k(compare_outcome("t", "a", None, None)), Ok(()));
        assert_eq!(
            k(compare_outcome("t", "a", None, Some(1))),
            Err(ErrorKind::KeyExists)
        );
        assert_eq!(
            k(compare_outcome("t", "a", Some(1), None)),
            Err(ErrorKind::KeyNotFound)
        );
        assert_eq!(k(compare_outcome("t", "a", Some(1), Some(1))), Ok(()));
        assert_eq!(
            k(compare_outcome("t", "a", Some(1), Some(2))),
            Err(ErrorKind::KeyModified)
        );
    }

    #[test]
    fn limits() {
        assert_eq!(
            check_lease_ttl(Duration::ZERO).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert!(check_lease_ttl(crate::MAX_TTL).is_ok());
        assert_eq!(
            check_lease_ttl(crate::MAX_TTL + Duration::from_secs(1))
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidArgument
        );
        let zero = LockOptions::new().with_ttl(Duration::ZERO);
        assert_eq!(
            check_lock_options(&zero).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert!(check_lock_options(&LockOptions::new()).is_ok());
        let e = check_value_size("t", "a/b", 11, 10).unwrap_err();
        assert!(e.to_string().contains("a/b"), "{e}");
        assert_eq!(
            loss_deadline(Duration::from_secs(15)),
            Duration::from_millis(14_500)
        );
        assert_eq!(
            loss_deadline(Duration::from_secs(1)),
            Duration::from_millis(750)
        );
        assert_eq!(
            keepalive_interval(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn watch_targets() {
        assert!(WatchTarget::Key("a".into()).covers("a"));
        assert!(!WatchTarget::Key("a".into()).covers("a/b"));
        assert!(WatchTarget::Tree("a".into()).covers("a/b"));
        assert!(!WatchTarget::Tree("a".into()).covers("a"));
        assert!(!WatchTarget::Tree("a".into()).covers("ab"));
        assert!(WatchTarget::Tree(String::new()).covers("x"));
    }
}
