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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_core::{key, Bytes, Error, KvPair};
use parking_lot::Mutex;

/// One call on a store, with the arguments that matter to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `get(key)`.
    Get(String),
    /// `exists(key)`.
    Exists(String),
    /// `list(prefix)`.
    List(String),
    /// `put(key, value)`.
    Put(String, Bytes),
    /// `delete(key)`.
    Delete(String),
    /// `atomic_put(key, value, expected)`: `None` creates only.
    AtomicPut {
        /// The key.
        key: String,
        /// The value written.
        value: Bytes,
        /// The revision the key must be at, or `None` for create-only.
        expected: Option<u64>,
    },
    /// `atomic_delete(key, expected)`.
    AtomicDelete {
        /// The key.
        key: String,
        /// The revision the key must be at.
        expected: u64,
    },
}

impl Op {
    /// The key the call is about, or the prefix of a `List`.
    pub fn key(&self) -> &str {
        match self {
            Op::Get(k) | Op::Exists(k) | Op::List(k) | Op::Put(k, _) | Op::Delete(k) => k,
            Op::AtomicPut { key, .. } | Op::AtomicDelete { key, .. } => key,
        }
    }

    fn is_read(&self) -> bool {
        matches!(self, Op::Get(_) | Op::Exists(_) | Op::List(_))
    }
}

/// What a call returned, as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `get` (or a list entry) found the key with this value and revision.
    Found {
        /// The value.
        value: Bytes,
        /// The revision.
        revision: u64,
    },
    /// `get` found the key absent.
    Absent,
    /// `exists` or `delete` returned this.
    Bool(bool),
    /// `list` returned these pairs.
    List(Vec<KvPair>),
    /// `put` or `atomic_put` succeeded with this new revision.
    Revision(u64),
    /// `atomic_delete` succeeded.
    Done,
    /// `atomic_put(None)` found the key present.
    KeyExists,
    /// A compare-and-swap found the key at revision `actual`.
    KeyModified {
        /// The key's revision, as the error reported it.
        actual: u64,
    },
    /// A compare-and-swap found the key absent.
    KeyNotFound,
    /// `Timeout` or `Unavailable`, or a call that never returned: it may
    /// have taken effect at any instant after its start, or never.
    Unknown,
    /// Any other error: the model never allows one.
    Failed(String),
}

impl Outcome {
    /// The outcome of a call's result: typed compare-and-swap errors become
    /// their outcomes, `Timeout` and `Unavailable` become
    /// [`Outcome::Unknown`], other errors [`Outcome::Failed`].
    pub fn of<T: Observed>(result: &anykv_core::Result<T>) -> Outcome {
        match result {
            Ok(v) => v.outcome(),
            Err(e) => Outcome::from_error(e),
        }
    }

    /// The outcome of an error (see [`Outcome::of`]).
    pub fn from_error(error: &Error) -> Outcome {
        match error {
            Error::KeyExists { .. } => Outcome::KeyExists,
            Error::KeyModified { actual, .. } => Outcome::KeyModified { actual: *actual },
            Error::KeyNotFound { .. } => Outcome::KeyNotFound,
            Error::Timeout { .. } | Error::Unavailable { .. } => Outcome::Unknown,
            other => Outcome::Failed(format!("{} error: {other}", other.kind())),
        }
    }
}

/// A successful return value of a store call, as an [`Outcome`].
pub trait Observed {
    /// The outcome this value stands for.
    fn outcome(&self) -> Outcome;
}

impl Observed for Option<KvPair> {
    fn outcome(&self) -> Outcome {
        match self {
            Some(kv) => Outcome::Found {
                value: kv.value.clone(),
                revision: kv.revision,
            },
            None => Outcome::Absent,
        }
    }
}

impl Observed for bool {
    fn outcome(&self) -> Outcome {
        Outcome::Bool(*self)
    }
}

impl Observed for Vec<KvPair> {
    fn outcome(&self) -> Outcome {
        Outcome::List(self.clone())
    }
}

impl Observed for u64 {
    fn outcome(&self) -> Outcome {
        Outcome::Revision(*self)
    }
}

impl Observed for () {
    fn outcome(&self) -> Outcome {
        Outcome::Done
    }
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Who made the call (a client, a task).
    pub client: usize,
    /// The call.
    pub op: Op,
    /// When it started, on the history's clock.
    pub start: u64,
    /// When it returned, on the same clock (`u64::MAX`: never). A call
    /// precedes another when its `end` is less than the other's `start`.
    pub end: u64,
    /// What it returned.
    pub outcome: Outcome,
    /// When it started and ended since the [`Recorder`] was made, if it was
    /// recorded by one (for reading a violation; the checker uses `start`
    /// and `end`).
    pub elapsed: Option<(Duration, Option<Duration>)>,
}

/// A history: calls with their start, end and outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    records: Vec<Record>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        History::default()
    }

    /// Adds a call made by `client` that ran from `start` to `end` on the
    /// history's clock (any increasing numbers).
    pub fn push(
        &mut self,
        client: usize,
        op: Op,
        start: u64,
        end: u64,
        outcome: Outcome,
    ) -> &mut Self {
        self.records.push(Record {
            client,
            op,
            start,
            end,
            outcome,
            elapsed: None,
        });
        self
    }

    /// Adds a record.
    pub fn push_record(&mut self, record: Record) -> &mut Self {
        self.records.push(record);
        self
    }

    /// The calls, in the order they were added.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// How many calls.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Checks the history with the default [`Checker`].
    pub fn check(&self) -> Verdict {
        Checker::new().check(self)
    }
}

/// Records calls from many tasks into one [`History`], on one logical
/// clock. Cheap to clone; every clone records into the same history.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<Mutex<RecorderState>>,
}

#[derive(Debug)]
struct RecorderState {
    clock: u64,
    origin: Instant,
    records: Vec<Record>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// A recorder with an empty history.
    pub fn new() -> Self {
        Recorder {
            inner: Arc::new(Mutex::new(RecorderState {
                clock: 0,
                origin: Instant::now(),
                records: Vec::new(),
            })),
        }
    }

    /// Records the start of a call by `client`; end it with [`Call::end`].
    /// A call dropped without an end is recorded as [`Outcome::Unknown`].
    pub fn begin(&self, client: usize, op: Op) -> Call {
        let mut st = self.inner.lock();
        st.clock += 1;
        let start = st.clock;
        let at = st.origin.elapsed();
        let index = st.records.len();
        st.records.push(Record {
            client,
            op,
            start,
            end: u64::MAX,
            outcome: Outcome::Unknown,
            elapsed: Some((at, None)),
        });
        Call {
            recorder: self.clone(),
            index: Some(index),
        }
    }

    /// The history so far. Calls that have not ended are in it with
    /// [`Outcome::Unknown`] and no end.
    pub fn history(&self) -> History {
        History {
            records: self.inner.lock().records.clone(),
        }
    }

    /// How many calls were begun.
    pub fn len(&self) -> usize {
        self.inner.lock().records.len()
    }

    /// Whether no call was begun.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn finish(&self, index: usize, outcome: Outcome) {
        let mut st = self.inner.lock();
        st.clock += 1;
        let end = st.clock;
        let at = st.origin.elapsed();
        if let Some(r) = st.records.get_mut(index) {
            r.end = end;
            r.outcome = outcome;
            if let Some((_, e)) = &mut r.elapsed {
                *e = Some(at);
            }
        }
    }
}

/// A call in progress, from [`Recorder::begin`].
#[derive(Debug)]
#[must_use = "end the call with its outcome"]
pub struct Call {
    recorder: Recorder,
    index: Option<usize>,
}

impl Call {
    /// Records the call's end and outcome.
    pub fn end(mut self, outcome: Outcome) {
        if let Some(i) = self.index.take() {
            self.recorder.finish(i, outcome);
        }
    }

    /// Records the call's end with the outcome of its result (see
    /// [`Outcome::of`]).
    pub fn end_with<T: Observed>(self, result: &anykv_core::Result<T>) {
        self.end(Outcome::of(result));
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if let Some(i) = self.index.take() {
            self.recorder.finish(i, Outcome::Unknown);
        }
    }
}

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

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = if self.end == u64::MAX {
            "-".to_owned()
        } else {
            self.end.to_string()
        };
        write!(
            f,
            "client {} [{}..{}] {} -> {}",
            self.client, self.start, end, self.op, self.outcome
        )?;
        if let Some((s, e)) = self.elapsed {
            match e {
                Some(e) => write!(
                    f,
                    " (at {:.3} ms to {:.3} ms)",
                    s.as_secs_f64() * 1e3,
                    e.as_secs_f64() * 1e3
                )?,
                None => write!(f, " (at {:.3} ms, never ended)", s.as_secs_f64() * 1e3)?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get(k) => write!(f, "get({k:?})"),
            Op::Exists(k) => write!(f, "exists({k:?})"),
            Op::List(p) => write!(f, "list({p:?})"),
            Op::Put(k, v) => write!(f, "put({k:?}, {})", show(v)),
            Op::Delete(k) => write!(f, "delete({k:?})"),
            Op::AtomicPut {
                key,
                value,
                expected: None,
            } => write!(f, "atomic_put({key:?}, {}, create-only)", show(value)),
            Op::AtomicPut {
                key,
                value,
                expected: Some(r),
            } => write!(f, "atomic_put({key:?}, {}, at revision {r})", show(value)),
            Op::AtomicDelete { key, expected } => {
                write!(f, "atomic_delete({key:?}, at revision {expected})")
            }
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Found { value, revision } => write!(f, "{}@{revision}", show(value)),
            Outcome::Absent => write!(f, "absent"),
            Outcome::Bool(b) => write!(f, "{b}"),
            Outcome::List(pairs) => {
                write!(f, "[")?;
                for (i, kv) in pairs.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{:?}={}@{}", kv.key, show(&kv.value), kv.revision)?;
                }
                write!(f, "]")
            }
            Outcome::Revision(r) => write!(f, "revision {r}"),
            Outcome::Done => write!(f, "ok"),
            Outcome::KeyExists => write!(f, "KeyExists"),
            Outcome::KeyModified { actual } => write!(f, "KeyModified {{ actual: {actual} }}"),
            Outcome::KeyNotFound => write!(f, "KeyNotFound"),
            Outcome::Unknown => write!(f, "unknown (timeout or unavailable)"),
            Outcome::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

/// A value for messages: a quoted string when it is short UTF-8, else the
/// first bytes in hex.
fn show(v: &[u8]) -> String {
    const MAX: usize = 40;
    match std::str::from_utf8(v) {
        Ok(s) if s.len() <= MAX => format!("{s:?}"),
        Ok(s) => {
            let mut end = MAX;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            format!("{:?}...({} bytes)", &s[..end], v.len())
        }
        Err(_) => {
            let hex: String = v.iter().take(16).map(|b| format!("{b:02x}")).collect();
            let more = if v.len() > 16 { "..." } else { "" };
            format!("0x{hex}{more}({} bytes)", v.len())
        }
    }
}

impl Checker {
    /// A checker allowing [`DEFAULT_MAX_STEPS`] search steps per key.
    pub fn new() -> Self {
        Checker {
            max_steps: DEFAULT_MAX_STEPS,
        }
    }

    /// The same checker allowing `max_steps` search steps per key.
    pub fn with_max_steps(mut self, max_steps: u64) -> Self {
        self.max_steps = max_steps;
        self
    }

    /// Checks a history; see [the module documentation](self).
    pub fn check(&self, history: &History) -> Verdict {
        let records = history.records();
        if let Some(v) = check_shapes(records) {
            return Verdict::Violation(v);
        }
        let parts = match partition(records) {
            Ok(p) => p,
            Err(v) => return Verdict::Violation(v),
        };
        let mut too_large = None;
        for part in &parts {
            match search(part, self.max_steps) {
                Searched::Linearizable => {}
                Searched::TooLarge(steps) => {
                    if too_large.is_none() {
                        too_large = Some(Verdict::TooLarge {
                            key: part.key.clone(),
                            calls: part.calls.len(),
                            steps,
                        });
                    }
                }
                Searched::Stuck { order, state } => {
                    return Verdict::Violation(explain(part, records, &order, state));
                }
            }
        }
        if let Some(v) = check_revision_order(records) {
            return Verdict::Violation(v);
        }
        too_large.unwrap_or(Verdict::Ok)
    }
}

fn violation(
    kind: ViolationKind,
    key: Option<&str>,
    reason: String,
    calls: &[&Record],
) -> Violation {
    let mut calls: Vec<Record> = calls.iter().map(|r| (*r).clone()).collect();
    calls.sort_by_key(|r| r.start);
    Violation {
        kind,
        key: key.map(str::to_owned),
        reason,
        calls,
    }
}

/// The canonical form of a key or prefix, or the text as given if it breaks
/// the key rules (such a call failed, and is reported as such).
fn canon(k: &str) -> String {
    key::normalize_prefix(k).unwrap_or_else(|_| k.to_owned())
}

/// Per-call checks that need no ordering: errors, outcomes that do not fit
/// their operation, malformed lists and revisions.
fn check_shapes(records: &[Record]) -> Option<Violation> {
    for r in records {
        let bad = |reason: String| {
            Some(violation(
                ViolationKind::Malformed,
                Some(&canon(r.op.key())),
                reason,
                &[r],
            ))
        };
        if r.start >= r.end {
            return bad(format!(
                "a call ends ({}) before it starts ({})",
                r.end, r.start
            ));
        }
        if let Outcome::Failed(m) = &r.outcome {
            return Some(violation(
                ViolationKind::Failed,
                Some(&canon(r.op.key())),
                format!(
                    "{} failed with an error the contract does not allow here: {m}",
                    r.op
                ),
                &[r],
            ));
        }
        let fits = matches!(
            (&r.op, &r.outcome),
            (_, Outcome::Unknown)
                | (Op::Get(_), Outcome::Found { .. } | Outcome::Absent)
                | (Op::Exists(_) | Op::Delete(_), Outcome::Bool(_))
                | (Op::List(_), Outcome::List(_))
                | (Op::Put(..), Outcome::Revision(_))
                | (
                    Op::AtomicPut { expected: None, .. },
                    Outcome::Revision(_) | Outcome::KeyExists
                )
                | (
                    Op::AtomicPut {
                        expected: Some(_),
                        ..
                    },
                    Outcome::Revision(_) | Outcome::KeyModified { .. } | Outcome::KeyNotFound
                )
                | (
                    Op::AtomicDelete { .. },
                    Outcome::Done | Outcome::KeyModified { .. } | Outcome::KeyNotFound
                )
        );
        if !fits {
            return bad(format!("{} cannot return {}", r.op, r.outcome));
        }
        match (&r.op, &r.outcome) {
            (_, Outcome::Found { revision: 0, .. } | Outcome::Revision(0))
            | (_, Outcome::KeyModified { actual: 0 }) => {
                return bad(format!("{} reported revision 0", r.op));
            }
            (
                Op::AtomicPut {
                    expected: Some(e), ..
                }
                | Op::AtomicDelete { expected: e, .. },
                Outcome::KeyModified { actual },
            ) if actual == e => {
                return bad(format!(
                    "{} said the key was modified, yet at the expected revision {e}",
                    r.op
                ));
            }
            (Op::List(p), Outcome::List(pairs)) => {
                let p = canon(p);
                for kv in pairs {
                    if kv.revision == 0 {
                        return bad(format!("list({p:?}) shows {:?} at revision 0", kv.key));
                    }
                    if !key::is_in_tree(&p, &kv.key) {
                        return bad(format!("list({p:?}) shows {:?}, not under it", kv.key));
                    }
                }
                for w in pairs.windows(2) {
                    if w[0].key == w[1].key {
                        return bad(format!("list({p:?}) shows {:?} twice", w[0].key));
                    }
                    if w[0].key > w[1].key {
                        return bad(format!(
                            "list({p:?}) is not sorted: {:?} before {:?}",
                            w[0].key, w[1].key
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// The revision of a key, as far as the model knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Rev {
    Known(u64),
    /// Written by a call with an unknown outcome: some revision above this.
    Above(u64),
}

/// One key's state: absent, or a value (by its index in the key's value
/// table) at a revision; and the lowest the key's highest revision ever can
/// be, which every new write must exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct KeyState {
    value: Option<(u32, Rev)>,
    floor: u64,
}

impl KeyState {
    const ABSENT: KeyState = KeyState {
        value: None,
        floor: 0,
    };

    /// The state if the key is present at revision `r`, pinning an unknown
    /// revision to `r`; `None` if it is not.
    fn at(self, r: u64) -> Option<KeyState> {
        match self.value {
            Some((_, Rev::Known(x))) if x == r => Some(self),
            Some((v, Rev::Above(lb))) if r > lb => Some(KeyState {
                value: Some((v, Rev::Known(r))),
                floor: self.floor.max(r),
            }),
            _ => None,
        }
    }

    /// The state if the key holds value `v` at revision `r`.
    fn holds(self, v: u32, r: u64) -> Option<KeyState> {
        match self.value {
            Some((x, _)) if x == v => self.at(r),
            _ => None,
        }
    }

    /// After a write of `v` at revision `r`, if `r` is new for the key.
    fn write(self, v: u32, r: u64) -> Option<KeyState> {
        (r > self.floor).then_some(KeyState {
            value: Some((v, Rev::Known(r))),
            floor: r,
        })
    }

    /// After a write of `v` at a revision nobody saw.
    fn write_unknown(self, v: u32) -> KeyState {
        KeyState {
            value: Some((v, Rev::Above(self.floor))),
            floor: self.floor.saturating_add(1),
        }
    }

    fn cleared(self) -> KeyState {
        KeyState {
            value: None,
            floor: self.floor,
        }
    }

    fn present(self) -> bool {
        self.value.is_some()
    }
}

/// A successful or failed conditional write, as the model needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cond {
    Applied(u64),
    Exists,
    Modified(u64),
    NotFound,
    Unknown,
}

/// One call projected onto one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyOp {
    /// `get` or a `list` projection: absent, or value and revision.
    Read(Option<(u32, u64)>),
    Exists(bool),
    /// `put`: its revision, `None` when unknown.
    Put(u32, Option<u64>),
    /// `delete`: what it returned, `None` when unknown.
    Delete(Option<bool>),
    Create(u32, Cond),
    Swap(u32, u64, Cond),
    SwapDelete(u64, Cond),
}

type Successors = [Option<KeyState>; 2];

/// The states a call can lead to from `s`: none if it cannot take effect
/// there, two for a write with an unknown outcome (applied, or not).
fn step(s: KeyState, op: KeyOp) -> Successors {
    let one = |x: Option<KeyState>| [x, None];
    let either = |applied: Option<KeyState>| [applied, Some(s)];
    match op {
        KeyOp::Read(None) => one((!s.present()).then_some(s)),
        KeyOp::Read(Some((v, r))) => one(s.holds(v, r)),
        KeyOp::Exists(b) => one((s.present() == b).then_some(s)),
        KeyOp::Put(v, Some(r)) => one(s.write(v, r)),
        KeyOp::Put(v, None) => either(Some(s.write_unknown(v))),
        KeyOp::Delete(Some(b)) => one((s.present() == b).then_some(s.cleared())),
        KeyOp::Delete(None) => either(Some(s.cleared())),
        KeyOp::Create(v, c) => match c {
            Cond::Applied(r) if !s.present() => one(s.write(v, r)),
            Cond::Exists if s.present() => one(Some(s)),
            Cond::Unknown if !s.present() => either(Some(s.write_unknown(v))),
            Cond::Unknown => one(Some(s)),
            _ => one(None),
        },
        KeyOp::Swap(v, e, c) => match c {
            Cond::Applied(r) => one(s.at(e).and_then(|p| p.write(v, r))),
            Cond::Modified(a) if a != e => one(s.at(a)),
            Cond::NotFound if !s.present() => one(Some(s)),
            Cond::Unknown => match s.at(e) {
                Some(p) => either(Some(p.write_unknown(v))),
                None => one(Some(s)),
            },
            _ => one(None),
        },
        KeyOp::SwapDelete(e, c) => match c {
            Cond::Applied(_) => one(s.at(e).map(KeyState::cleared)),
            Cond::Modified(a) if a != e => one(s.at(a)),
            Cond::NotFound if !s.present() => one(Some(s)),
            Cond::Unknown => either(s.at(e).map(KeyState::cleared)),
            _ => one(None),
        },
    }
}

/// One call of a key's part of the history.
#[derive(Debug, Clone)]
struct KeyCall {
    record: usize,
    op: KeyOp,
    start: u64,
    /// `u64::MAX` for an unknown outcome: it may take effect at any time.
    end: u64,
}

/// The history of one key.
#[derive(Debug)]
struct Part {
    key: String,
    values: Vec<Bytes>,
    calls: Vec<KeyCall>,
}

fn cond(outcome: &Outcome) -> Cond {
    match outcome {
        Outcome::Revision(r) => Cond::Applied(*r),
        Outcome::Done => Cond::Applied(0),
        Outcome::KeyExists => Cond::Exists,
        Outcome::KeyModified { actual } => Cond::Modified(*actual),
        Outcome::KeyNotFound => Cond::NotFound,
        _ => Cond::Unknown,
    }
}

/// Splits the history per key (projecting `list` onto every key under its
/// prefix) and checks that every value and revision read was written.
fn partition(records: &[Record]) -> Result<Vec<Part>, Violation> {
    // Every key the history names.
    let mut keys: BTreeSet<String> = BTreeSet::new();
    for r in records {
        match (&r.op, &r.outcome) {
            (Op::List(_), Outcome::List(pairs)) => {
                keys.extend(pairs.iter().map(|kv| kv.key.clone()));
            }
            (Op::List(_), _) => {}
            (op, _) => {
                keys.insert(canon(op.key()));
            }
        }
    }
    let mut parts: BTreeMap<String, Part> = keys
        .iter()
        .map(|k| {
            (
                k.clone(),
                Part {
                    key: k.clone(),
                    values: Vec::new(),
                    calls: Vec::new(),
                },
            )
        })
        .collect();
    // What was written, per key: value -> (revisions returned, any write
    // of it with an unknown outcome); and every revision returned.
    #[derive(Default)]
    struct Written {
        values: HashMap<Bytes, (HashSet<u64>, bool)>,
        revisions: HashSet<u64>,
        unknown: bool,
    }
    let mut written: HashMap<String, Written> = HashMap::new();
    for r in records {
        let (k, v) = match &r.op {
            Op::Put(k, v)
            | Op::AtomicPut {
                key: k, value: v, ..
            } => (k, v),
            _ => continue,
        };
        let w = written.entry(canon(k)).or_default();
        let entry = w.values.entry(v.clone()).or_default();
        match r.outcome {
            Outcome::Revision(rev) => {
                entry.0.insert(rev);
                w.revisions.insert(rev);
            }
            Outcome::Unknown => {
                entry.1 = true;
                w.unknown = true;
            }
            _ => {}
        }
    }
    let never = |r: &Record, k: &str, reason: String| {
        violation(ViolationKind::NeverWritten, Some(k), reason, &[r])
    };
    let check_read = |r: &Record, k: &str, v: &Bytes, rev: u64| -> Result<(), Violation> {
        let (revs, unknown) = written
            .get(k)
            .and_then(|w| w.values.get(v))
            .ok_or_else(|| {
                never(
                    r,
                    k,
                    format!(
                        "{} shows {k:?} = {}, a value never written to it",
                        r.op,
                        show(v)
                    ),
                )
            })?;
        if !unknown && !revs.contains(&rev) {
            return Err(never(
                r,
                k,
                format!(
                    "{} shows {k:?} = {}@{rev}, but no write of that value returned revision {rev}",
                    r.op,
                    show(v)
                ),
            ));
        }
        Ok(())
    };
    let intern = |part: &mut Part, v: &Bytes| -> u32 {
        match part.values.iter().position(|x| x == v) {
            Some(i) => i as u32,
            None => {
                part.values.push(v.clone());
                (part.values.len() - 1) as u32
            }
        }
    };
    for (index, r) in records.iter().enumerate() {
        let unknown = r.outcome == Outcome::Unknown;
        if unknown && r.op.is_read() {
            continue; // a read that returned nothing tells nothing
        }
        let end = if unknown { u64::MAX } else { r.end };
        if let Op::List(p) = &r.op {
            let p = canon(p);
            let Outcome::List(pairs) = &r.outcome else {
                continue;
            };
            for (k, part) in parts.iter_mut() {
                if !key::is_in_tree(&p, k) {
                    continue;
                }
                let seen = match pairs.binary_search_by(|kv| kv.key.as_str().cmp(k)) {
                    Ok(i) => {
                        let kv = &pairs[i];
                        check_read(r, k, &kv.value, kv.revision)?;
                        Some((intern(part, &kv.value), kv.revision))
                    }
                    Err(_) => None,
                };
                part.calls.push(KeyCall {
                    record: index,
                    op: KeyOp::Read(seen),
                    start: r.start,
                    end,
                });
            }
            continue;
        }
        let k = canon(r.op.key());
        let Some(part) = parts.get_mut(&k) else {
            continue;
        };
        let op = match (&r.op, &r.outcome) {
            (Op::Get(_), Outcome::Found { value, revision }) => {
                check_read(r, &k, value, *revision)?;
                KeyOp::Read(Some((intern(part, value), *revision)))
            }
            (Op::Get(_), _) => KeyOp::Read(None),
            (Op::Exists(_), Outcome::Bool(b)) => KeyOp::Exists(*b),
            (Op::Put(_, v), o) => KeyOp::Put(
                intern(part, v),
                match o {
                    Outcome::Revision(rev) => Some(*rev),
                    _ => None,
                },
            ),
            (Op::Delete(_), Outcome::Bool(b)) => KeyOp::Delete(Some(*b)),
            (Op::Delete(_), _) => KeyOp::Delete(None),
            (
                Op::AtomicPut {
                    value,
                    expected: None,
                    ..
                },
                o,
            ) => KeyOp::Create(intern(part, value), cond(o)),
            (
                Op::AtomicPut {
                    value,
                    expected: Some(e),
                    ..
                },
                o,
            ) => KeyOp::Swap(intern(part, value), *e, cond(o)),
            (Op::AtomicDelete { expected, .. }, o) => KeyOp::SwapDelete(*expected, cond(o)),
            _ => continue, // excluded by the shape checks
        };
        if let Outcome::KeyModified { actual } = r.outcome {
            let w = written.get(&k);
            let known = w.is_some_and(|w| w.unknown || w.revisions.contains(&actual));
            if !known {
                return Err(never(
                    r,
                    &k,
                    format!(
                        "{} reports revision {actual}, which no write of {k:?} returned",
                        r.op
                    ),
                ));
            }
        }
        part.calls.push(KeyCall {
            record: index,
            op,
            start: r.start,
            end,
        });
    }
    let mut parts: Vec<Part> = parts
        .into_values()
        .filter(|p| !p.calls.is_empty())
        .collect();
    for p in &mut parts {
        p.calls.sort_by_key(|c| (c.start, c.record));
    }
    Ok(parts)
}

enum Searched {
    Linearizable,
    TooLarge(u64),
    /// No order exists; the longest valid order found, and the state after
    /// it.
    Stuck {
        order: Vec<usize>,
        state: KeyState,
    },
}

const NIL: usize = usize::MAX;

/// The Wing–Gong / Lowe search with a cache of explored (calls taken, state)
/// pairs, over one key's calls (sorted by start).
fn search(part: &Part, max_steps: u64) -> Searched {
    let calls = &part.calls;
    let n = calls.len();
    // Events: each call's start and end, by time; at equal times a start
    // comes first (the calls overlap).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, c) in calls.iter().enumerate() {
        events.push((c.start, false, i));
        events.push((c.end, true, i));
    }
    events.sort();
    let m = events.len();
    let head = m;
    let mut next = vec![NIL; m + 1];
    let mut prev = vec![NIL; m + 1];
    let mut partner = vec![NIL; m];
    let mut call_event = vec![NIL; n];
    let mut last = head;
    for (e, &(_, is_end, i)) in events.iter().enumerate() {
        next[last] = e;
        prev[e] = last;
        last = e;
        if is_end {
            partner[call_event[i]] = e;
        } else {
            call_event[i] = e;
        }
    }
    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = nx;
        if nx != NIL {
            prev[nx] = p;
        }
        let r = partner[e];
        let (p, nx) = (prev[r], next[r]);
        next[p] = nx;
        if nx != NIL {
            prev[nx] = p;
        }
    };
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let r = partner[e];
        next[prev[r]] = r;
        if next[r] != NIL {
            prev[next[r]] = r;
        }
        next[prev[e]] = e;
        if next[e] != NIL {
            prev[next[e]] = e;
        }
    };

    let mut taken = vec![0u64; n.div_ceil(64)];
    let mut cache: HashSet<(u32, Vec<u32>, KeyState)> = HashSet::new();
    let mut stack: Vec<(usize, usize, KeyState)> = Vec::new();
    let mut state = KeyState::ABSENT;
    let mut best: (Vec<usize>, KeyState) = (Vec::new(), state);
    let mut steps = 0u64;
    let mut cur = next[head];
    let mut first_alt = 0usize;
    loop {
        if next[head] == NIL {
            return Searched::Linearizable;
        }
        if cur != NIL && !events[cur].1 {
            steps += 1;
            if steps > max_steps {
                return Searched::TooLarge(steps - 1);
            }
            let i = events[cur].2;
            let successors = step(state, calls[i].op);
            let mut moved = false;
            for (alt, s) in successors.iter().enumerate().skip(first_alt) {
                let Some(s) = *s else { continue };
                set_bit(&mut taken, i, true);
                if cache.insert(cache_key(&taken, s)) {
                    stack.push((cur, alt, state));
                    state = s;
                    lift(&mut next, &mut prev, cur);
                    moved = true;
                    break;
                }
                set_bit(&mut taken, i, false);
            }
            first_alt = 0;
            if moved {
                if stack.len() > best.0.len() {
                    best = (stack.iter().map(|&(e, _, _)| events[e].2).collect(), state);
                }
                cur = next[head];
            } else {
                cur = next[cur];
            }
        } else {
            // A call's end with the call not taken: undo the last choice.
            let Some((e, alt, s)) = stack.pop() else {
                return Searched::Stuck {
                    order: best.0,
                    state: best.1,
                };
            };
            state = s;
            set_bit(&mut taken, events[e].2, false);
            unlift(&mut next, &mut prev, e);
            cur = e;
            first_alt = alt + 1;
        }
    }
}

fn set_bit(bits: &mut [u64], i: usize, on: bool) {
    if let Some(w) = bits.get_mut(i / 64) {
        if on {
            *w |= 1 << (i % 64);
        } else {
            *w &= !(1 << (i % 64));
        }
    }
}

/// The set of calls taken, compactly: every call below the first one not
/// taken, plus the list of those taken above it.
fn cache_key(bits: &[u64], s: KeyState) -> (u32, Vec<u32>, KeyState) {
    let mut base = bits.len() * 64;
    for (w, &word) in bits.iter().enumerate() {
        if word != u64::MAX {
            base = w * 64 + (!word).trailing_zeros() as usize;
            break;
        }
    }
    let mut above = Vec::new();
    for (w, &word) in bits.iter().enumerate().skip(base / 64) {
        let mut word = word;
        while word != 0 {
            let b = word.trailing_zeros() as usize;
            word &= word - 1;
            let i = w * 64 + b;
            if i > base {
                above.push(i as u32);
            }
        }
    }
    (base as u32, above, s)
}

fn show_state(part: &Part, s: KeyState) -> String {
    match s.value {
        None if s.floor == 0 => "absent (never written)".to_owned(),
        None => format!("absent (its highest revision so far {})", s.floor),
        Some((v, rev)) => {
            let v = part
                .values
                .get(v as usize)
                .map_or("?".to_owned(), |b| show(b));
            match rev {
                Rev::Known(r) => format!("{v}@{r}"),
                Rev::Above(lb) => format!("{v} at an unseen revision above {lb}"),
            }
        }
    }
}

/// Why `op` cannot take effect in state `s`, in words.
fn why_not(part: &Part, s: KeyState, op: KeyOp) -> String {
    let held = show_state(part, s);
    if step(s, op).iter().any(Option::is_some) {
        return format!("it fits after that (the key held {held}), but then no order of the remaining calls does");
    }
    let stale = |r: u64, pre: Option<KeyState>| match pre {
        Some(p) if r <= p.floor => Some(format!(
            "its revision {r} is not above {}, a revision the key already had",
            p.floor
        )),
        _ => None,
    };
    let too_low = match op {
        KeyOp::Put(_, Some(r)) => stale(r, Some(s)),
        KeyOp::Create(_, Cond::Applied(r)) if !s.present() => stale(r, Some(s)),
        KeyOp::Swap(_, e, Cond::Applied(r)) => stale(r, s.at(e)),
        _ => None,
    };
    too_low.unwrap_or_else(|| format!("the key held {held}"))
}

/// A violation for a key whose calls cannot be ordered: the longest valid
/// order found, and the calls none of which can come after it.
fn explain(part: &Part, records: &[Record], order: &[usize], state: KeyState) -> Violation {
    let calls = &part.calls;
    let mut done = vec![false; calls.len()];
    for &i in order {
        if let Some(d) = done.get_mut(i) {
            *d = true;
        }
    }
    let remaining: Vec<usize> = (0..calls.len()).filter(|&i| !done[i]).collect();
    let min_end = remaining.iter().map(|&i| calls[i].end).min().unwrap_or(0);
    let candidates: Vec<usize> = remaining
        .iter()
        .copied()
        .filter(|&i| calls[i].start <= min_end)
        .collect();
    let earliest = candidates
        .iter()
        .map(|&i| calls[i].start)
        .min()
        .unwrap_or(0);
    let mut window: BTreeSet<usize> = candidates.iter().copied().collect();
    // The taken calls that overlap the candidates, and the last write taken
    // (which set the state the candidates see).
    window.extend(
        order
            .iter()
            .copied()
            .filter(|&i| calls[i].end != u64::MAX && calls[i].end >= earliest),
    );
    if let Some(&w) = order.iter().rev().find(|&&i| {
        let r = &records[calls[i].record];
        !r.op.is_read()
            && matches!(
                r.outcome,
                Outcome::Revision(_) | Outcome::Done | Outcome::Bool(true) | Outcome::Unknown
            )
    }) {
        window.insert(w);
    }
    const MAX_WINDOW: usize = 24;
    let mut shown: Vec<&Record> = window.iter().map(|&i| &records[calls[i].record]).collect();
    shown.sort_by_key(|r| r.start);
    let cut = shown.len().saturating_sub(MAX_WINDOW);
    let mut reason = format!(
        "no order of the {} calls on {:?} respects real time and the model. \
         The longest valid order found takes {} of them, after which the key held {}; \
         none of the calls that could come next fits:",
        calls.len(),
        part.key,
        order.len(),
        show_state(part, state),
    );
    for &i in &candidates {
        let r = &records[calls[i].record];
        reason.push_str(&format!(
            "\n  - client {} [{}..] {} -> {}: {}",
            r.client,
            r.start,
            r.op,
            r.outcome,
            why_not(part, state, calls[i].op)
        ));
    }
    if cut > 0 {
        reason.push_str(&format!("\n({cut} earlier calls of the window not shown)"));
    }
    violation(
        ViolationKind::NotLinearizable,
        Some(&part.key),
        reason,
        &shown[cut..],
    )
}

/// Across keys: a successful write that started after another completed
/// has the larger revision.
fn check_revision_order(records: &[Record]) -> Option<Violation> {
    let mut writes: Vec<(&Record, u64)> = records
        .iter()
        .filter_map(|r| match (&r.op, &r.outcome) {
            (Op::Put(..) | Op::AtomicPut { .. }, Outcome::Revision(rev)) => Some((r, *rev)),
            _ => None,
        })
        .collect();
    // By end, with the highest revision among the writes ended so far.
    writes.sort_by_key(|(r, _)| r.end);
    let mut highest: Vec<(u64, usize)> = Vec::with_capacity(writes.len());
    for (i, (_, rev)) in writes.iter().enumerate() {
        let best = match highest.last() {
            Some(&(h, j)) if h >= *rev => (h, j),
            _ => (*rev, i),
        };
        highest.push(best);
    }
    let mut by_start: Vec<&(&Record, u64)> = writes.iter().collect();
    by_start.sort_by_key(|(r, _)| r.start);
    for &&(w, rev) in &by_start {
        let before = writes.partition_point(|(r, _)| r.end < w.start);
        if before == 0 {
            continue;
        }
        let Some(&(h, j)) = highest.get(before - 1) else {
            continue;
        };
        if h >= rev {
            let (earlier, _) = writes[j];
            return Some(violation(
                ViolationKind::RevisionOrder,
                Some(&canon(w.op.key())),
                format!(
                    "{} got revision {rev}, but {} had completed before it started with \
                     revision {h}: a later write must have a greater revision, across keys",
                    w.op, earlier.op
                ),
                &[earlier, w],
            ));
        }
    }
    None
}
