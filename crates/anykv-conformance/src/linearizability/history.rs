//! What a history is made of: the calls, their outcomes, and the recorder
//! that collects them from concurrent tasks.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_core::{Bytes, Error, KvPair};
use parking_lot::Mutex;

use super::{Checker, Verdict};

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

    pub(super) fn is_read(&self) -> bool {
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
pub(super) fn show(v: &[u8]) -> String {
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
