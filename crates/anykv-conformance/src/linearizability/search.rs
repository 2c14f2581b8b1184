//! The check itself: per-call shape checks, the split per key, the
//! Wing–Gong search of each key's part, and the cross-key revision order.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use anykv_core::{key, Bytes};

use super::history::show;
use super::model::{cond, step, Cond, KeyOp, KeyState, Rev};
use super::{
    Checker, History, Op, Outcome, Record, Verdict, Violation, ViolationKind, DEFAULT_MAX_STEPS,
};

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

    /// Checks a history; see [the module documentation](super).
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
