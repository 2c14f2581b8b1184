//! A linearizability checker for recorded histories of anykv calls.
//!
//! Record what concurrent clients did with a [`Recorder`] (or build a
//! [`History`] by hand), then [`History::check`] it against the model of
//! the contract: every key is a *revisioned register*. The answer is a
//! [`Verdict`]: linearizable, a [`Violation`] explaining which calls cannot
//! be ordered, or [`Verdict::TooLarge`] when the search gave up.
//!
//! ```
//! use anykv_conformance::linearizability::{History, Op, Outcome, ViolationKind};
//!
//! // Client 0 writes "a" (revision 5); client 1 reads it afterwards.
//! let mut h = History::new();
//! h.push(0, Op::Put("k".into(), "a".into()), 1, 2, Outcome::Revision(5));
//! h.push(1, Op::Get("k".into()), 3, 4, Outcome::Found { value: "a".into(), revision: 5 });
//! assert!(h.check().is_ok());
//!
//! // A read that starts after the write completed may not miss it.
//! h.push(1, Op::Get("k".into()), 5, 6, Outcome::Absent);
//! let verdict = h.check();
//! let violation = verdict.violation().expect("a stale read");
//! assert_eq!(violation.kind, ViolationKind::NotLinearizable);
//! println!("{verdict}");
//! ```
//!
//! Recording real calls: [`Recorder::begin`] before the call, [`Call::end`]
//! (or [`Call::end_with`] the call's `Result`) after it. `Timeout` and
//! `Unavailable` become [`Outcome::Unknown`]: the write may or may not have
//! taken effect.
//!
//! ```
//! use anykv_conformance::linearizability::{Op, Recorder};
//! use anykv_core::{Bytes, PutOptions, Store};
//!
//! # #[tokio::main]
//! # async fn main() {
//! let store = anykv_memory::MemoryStore::open_url("memory://").unwrap();
//! let recorder = Recorder::new();
//! let value = Bytes::from("v");
//! let call = recorder.begin(0, Op::Put("k".into(), value.clone()));
//! let result = store.put("k", value, PutOptions::new()).await;
//! call.end_with(&result);
//! let call = recorder.begin(1, Op::Get("k".into()));
//! call.end_with(&store.get("k").await);
//! assert!(recorder.history().check().is_ok());
//! # }
//! ```
//!
//! # The model
//!
//! Each key is absent or holds `(value, revision)`; the history starts with
//! every key absent (record on a fresh root). A call takes effect at one
//! instant between its start and its end; a call with an unknown outcome at
//! any instant after its start, or never.
//!
//! - `put`, and a successful `atomic_put`, store the value at the returned
//!   revision, which must be strictly greater than every revision the key
//!   ever had (across delete and re-create: no ABA).
//! - `atomic_put(None)` succeeds exactly when the key is absent, else
//!   `KeyExists`. `atomic_put(Some(r))` and `atomic_delete(r)` succeed
//!   exactly when the key is present **at revision `r`**; otherwise
//!   `KeyNotFound` (absent) or `KeyModified { actual }`, where `actual` is
//!   the key's revision at that instant.
//! - `delete` returns whether the key existed; `get` and `exists` observe
//!   the key at their instant. `list(prefix)` is a read, at one instant, of
//!   every key under the prefix: it is projected onto each key of the
//!   history under the prefix, which must appear (with the right value and
//!   revision) or not appear accordingly.
//! - Revision *values* are chosen by the server, so they are checked as
//!   constraints: reads return exactly the pair of the last write; a write
//!   whose revision is unknown stores "some revision above the key's
//!   highest", pinned by the first call that reports it.
//! - Across keys: a successful write that started after another successful
//!   write (of any key) completed has the larger revision.
//! - Any other error (`Closed`, `Backend`, ...) is a violation by itself,
//!   and so is an outcome that does not fit its operation.
//!
//! # The search
//!
//! Keys are independent registers, so the history is split per key and each
//! part is searched on its own with the Wing–Gong / Lowe algorithm: calls
//! are taken in real-time order, each one tried as the next to take effect,
//! backtracking on a dead end, and every (set of calls taken, key state)
//! pair already explored is remembered so it is never explored twice. A
//! search of `n` calls with at most `c` of them concurrent at any time
//! costs about `n · c` steps when the history is linearizable and nearly
//! sequential; in the worst case it is exponential in `c`, so it is bounded:
//! after [`DEFAULT_MAX_STEPS`] steps (each step tries one call as the next)
//! on one key it stops with [`Verdict::TooLarge`]. [`Checker::with_max_steps`]
//! changes the bound. The memory kept is proportional to the steps taken.

mod history;
mod model;
mod search;

use std::fmt;

pub use history::{Call, History, Observed, Op, Outcome, Record, Recorder};

/// How many search steps [`Checker::new`] allows per key before giving up
/// with [`Verdict::TooLarge`]. A step tries one call as the next to take
/// effect. A linearizable history of 1,000 calls per key with about 16 of
/// them overlapping at any time takes about 4,000 steps; with about 32
/// overlapping, about 130,000. Each step remembers at most one explored
/// state, so the bound also bounds the memory (roughly 100 bytes a state).
pub const DEFAULT_MAX_STEPS: u64 = 2_000_000;

/// The checker, with its search bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checker {
    max_steps: u64,
}

impl Default for Checker {
    fn default() -> Self {
        Checker::new()
    }
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The history is linearizable.
    Ok,
    /// It is not; why.
    Violation(Violation),
    /// The search of one key gave up after its step bound; nothing was
    /// found wrong up to then. Check a shorter history or raise the bound.
    TooLarge {
        /// The key.
        key: String,
        /// How many calls the key's part of the history has.
        calls: usize,
        /// The steps taken.
        steps: u64,
    },
}

impl Verdict {
    /// True for [`Verdict::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, Verdict::Ok)
    }

    /// The violation, if there is one.
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            Verdict::Violation(v) => Some(v),
            _ => None,
        }
    }
}

/// Which rule a history breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// A call failed with an error the model never allows.
    Failed,
    /// An outcome does not fit its call (a `put` returning `KeyExists`, a
    /// revision 0, a `list` showing a key twice or unsorted or outside its
    /// prefix, `KeyModified` reporting the revision it expected, a call
    /// ending before it starts).
    Malformed,
    /// A read or `KeyModified` reported a value or revision that no write of
    /// the key produced.
    NeverWritten,
    /// The calls on one key cannot be put in any order that respects real
    /// time and the model.
    NotLinearizable,
    /// A write that started after another (of any key) completed has a
    /// revision not greater than the other's.
    RevisionOrder,
}

/// Why a history is not linearizable: the rule, the key, and the calls
/// involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule broken.
    pub kind: ViolationKind,
    /// The key, where one key is concerned.
    pub key: Option<String>,
    /// What is wrong, in words.
    pub reason: String,
    /// The calls involved, by start: the smallest window of calls the
    /// checker could point at.
    pub calls: Vec<Record>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Ok => write!(f, "linearizable"),
            Verdict::Violation(v) => write!(f, "{v}"),
            Verdict::TooLarge { key, calls, steps } => write!(
                f,
                "inconclusive: the search of key {key:?} ({calls} calls) gave up after {steps} steps"
            ),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not linearizable ({:?}", self.kind)?;
        if let Some(k) = &self.key {
            write!(f, ", key {k:?}")?;
        }
        write!(f, "): {}", self.reason)?;
        if !self.calls.is_empty() {
            write!(f, "\ncalls involved:")?;
            for r in &self.calls {
                write!(f, "\n  {r}")?;
            }
        }
        Ok(())
    }
}
