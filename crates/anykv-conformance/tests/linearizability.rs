//! The history checker on hand-made histories: linearizable ones are
//! accepted, and each broken one is rejected for its own reason.

use anykv_conformance::linearizability::{
    Checker, History, Op, Outcome, Recorder, Verdict, Violation, ViolationKind,
};
use anykv_core::{Bytes, Error, KvPair};

fn put(k: &str, v: &str) -> Op {
    Op::Put(k.into(), Bytes::from(v.to_owned()))
}

fn get(k: &str) -> Op {
    Op::Get(k.into())
}

fn cas(k: &str, v: &str, expected: Option<u64>) -> Op {
    Op::AtomicPut {
        key: k.into(),
        value: Bytes::from(v.to_owned()),
        expected,
    }
}

fn found(v: &str, revision: u64) -> Outcome {
    Outcome::Found {
        value: Bytes::from(v.to_owned()),
        revision,
    }
}

fn list(pairs: &[(&str, &str, u64)]) -> Outcome {
    Outcome::List(
        pairs
            .iter()
            .map(|(k, v, r)| KvPair::new(*k, v.to_string(), *r))
            .collect(),
    )
}

/// A history from (client, start, end, op, outcome) rows.
fn history(rows: Vec<(usize, u64, u64, Op, Outcome)>) -> History {
    let mut h = History::new();
    for (c, s, e, op, o) in rows {
        h.push(c, op, s, e, o);
    }
    h
}

fn accepted(rows: Vec<(usize, u64, u64, Op, Outcome)>) {
    let verdict = history(rows).check();
    assert!(verdict.is_ok(), "{verdict}");
}

/// Checks the history is rejected with `kind` on `key`; returns the
/// violation (its text is printed, to be read).
fn rejected(
    rows: Vec<(usize, u64, u64, Op, Outcome)>,
    kind: ViolationKind,
    key: &str,
) -> Violation {
    let verdict = history(rows).check();
    println!("{verdict}");
    let v = verdict
        .violation()
        .unwrap_or_else(|| panic!("expected a {kind:?} violation, got: {verdict}"))
        .clone();
    assert_eq!(v.kind, kind, "{v}");
    assert_eq!(v.key.as_deref(), Some(key), "{v}");
    assert!(!v.calls.is_empty(), "{v}");
    v
}

// ---- accepted ----

#[test]
fn empty_history_is_linearizable() {
    assert!(History::new().check().is_ok());
}

#[test]
fn overlapping_writes_in_either_order() {
    // The later revision wins, whichever of the two started first.
    accepted(vec![
        (0, 1, 4, put("k", "a"), Outcome::Revision(5)),
        (1, 2, 3, put("k", "b"), Outcome::Revision(6)),
        (2, 5, 6, get("k"), found("b", 6)),
    ]);
    accepted(vec![
        (0, 1, 4, put("k", "a"), Outcome::Revision(6)),
        (1, 2, 3, put("k", "b"), Outcome::Revision(5)),
        (2, 5, 6, get("k"), found("a", 6)),
    ]);
    // A read overlapping both may see either, or neither.
    accepted(vec![
        (0, 1, 4, put("k", "a"), Outcome::Revision(5)),
        (1, 2, 5, put("k", "b"), Outcome::Revision(6)),
        (2, 1, 9, get("k"), Outcome::Absent),
        (3, 3, 9, get("k"), found("a", 5)),
        (4, 6, 9, get("k"), found("b", 6)),
    ]);
}

#[test]
fn cas_race_with_one_winner() {
    accepted(vec![
        (0, 1, 2, put("k", "v0"), Outcome::Revision(1)),
        (
            1,
            3,
            8,
            cas("k", "a", Some(1)),
            Outcome::KeyModified { actual: 4 },
        ),
        (2, 3, 7, cas("k", "b", Some(1)), Outcome::Revision(4)),
        (
            3,
            4,
            6,
            cas("k", "c", Some(1)),
            Outcome::KeyModified { actual: 4 },
        ),
        (4, 9, 10, get("k"), found("b", 4)),
    ]);
    accepted(vec![
        (0, 1, 5, cas("k", "a", None), Outcome::KeyExists),
        (1, 2, 4, cas("k", "b", None), Outcome::Revision(3)),
        (2, 3, 6, cas("k", "c", None), Outcome::KeyExists),
        (
            3,
            7,
            8,
            Op::AtomicDelete {
                key: "k".into(),
                expected: 3,
            },
            Outcome::Done,
        ),
        (
            4,
            9,
            10,
            Op::AtomicDelete {
                key: "k".into(),
                expected: 3,
            },
            Outcome::KeyNotFound,
        ),
    ]);
}

#[test]
fn unknown_write_that_applied() {
    // Seen only after its client gave up on it: it took effect late.
    accepted(vec![
        (0, 1, 2, put("k", "a"), Outcome::Revision(1)),
        (1, 3, 4, put("k", "b"), Outcome::Unknown),
        (2, 5, 6, get("k"), found("a", 1)),
        (2, 7, 8, get("k"), found("b", 3)),
        (0, 9, 10, put("k", "c"), Outcome::Revision(9)),
        (2, 11, 12, get("k"), found("c", 9)),
    ]);
    // A swap with an unknown outcome, its revision learnt from KeyModified.
    accepted(vec![
        (0, 1, 2, put("k", "a"), Outcome::Revision(1)),
        (1, 3, 4, cas("k", "b", Some(1)), Outcome::Unknown),
        (
            2,
            5,
            6,
            cas("k", "c", Some(1)),
            Outcome::KeyModified { actual: 4 },
        ),
        (2, 7, 8, get("k"), found("b", 4)),
    ]);
}

#[test]
fn unknown_write_that_did_not_apply() {
    accepted(vec![
        (0, 1, 2, put("k", "a"), Outcome::Revision(1)),
        (1, 3, 4, put("k", "b"), Outcome::Unknown),
        (1, 3, 4, Op::Delete("k".into()), Outcome::Unknown),
        (2, 9, 10, get("k"), found("a", 1)),
        (2, 11, 12, Op::Exists("k".into()), Outcome::Bool(true)),
    ]);
}

#[test]
fn list_exists_and_delete() {
    accepted(vec![
        (0, 1, 2, put("d/x", "1"), Outcome::Revision(1)),
        (0, 3, 4, put("d/y", "2"), Outcome::Revision(2)),
        (
            1,
            5,
            6,
            Op::List("d".into()),
            list(&[("d/x", "1", 1), ("d/y", "2", 2)]),
        ),
        (0, 7, 8, Op::Delete("d/x".into()), Outcome::Bool(true)),
        (1, 9, 10, Op::List("d".into()), list(&[("d/y", "2", 2)])),
        (1, 11, 12, Op::Exists("d/x".into()), Outcome::Bool(false)),
        (1, 13, 14, Op::Delete("d/x".into()), Outcome::Bool(false)),
        // A list overlapping the delete may still see the key.
        (0, 15, 18, Op::Delete("d/y".into()), Outcome::Bool(true)),
        (1, 16, 17, Op::List("".into()), list(&[("d/y", "2", 2)])),
        (1, 19, 20, Op::List("d".into()), list(&[])),
    ]);
}

#[test]
fn recorder_records_calls_on_one_clock() {
    let rec = Recorder::new();
    let a = rec.begin(0, put("k", "a"));
    let b = rec.begin(1, get("k"));
    a.end(Outcome::Revision(1));
    b.end_with(&Ok::<_, Error>(Some(KvPair::new("k", "a", 1))));
    // A call dropped without an end counts as unknown.
    drop(rec.begin(2, put("k", "never")));
    let timed_out = rec.begin(3, put("k", "slow"));
    timed_out.end_with(&Err::<u64, _>(Error::Timeout {
        backend: "test",
        operation: "put".into(),
        after: std::time::Duration::from_secs(1),
    }));
    let h = rec.history();
    assert_eq!(rec.len(), 4);
    let r = h.records();
    assert!(r[0].start < r[1].start && r[1].start < r[0].end && r[0].end < r[1].end);
    assert_eq!(r[2].outcome, Outcome::Unknown);
    assert_eq!(r[3].outcome, Outcome::Unknown);
    assert!(h.check().is_ok(), "{}", h.check());
}

#[test]
fn outcomes_of_results() {
    let modified: anykv_core::Result<u64> = Err(Error::KeyModified {
        backend: "test",
        key: "k".into(),
        expected: 1,
        actual: 2,
    });
    assert_eq!(Outcome::of(&modified), Outcome::KeyModified { actual: 2 });
    let closed: anykv_core::Result<()> = Err(Error::closed("test"));
    assert!(matches!(Outcome::of(&closed), Outcome::Failed(_)));
    assert_eq!(Outcome::of(&Ok::<_, Error>(())), Outcome::Done);
    assert_eq!(Outcome::of(&Ok::<_, Error>(true)), Outcome::Bool(true));
}

// ---- rejected ----

#[test]
fn stale_read_after_a_completed_write() {
    let v = rejected(
        vec![
            (0, 1, 2, put("k", "v1"), Outcome::Revision(1)),
            (0, 3, 4, put("k", "v2"), Outcome::Revision(2)),
            (1, 5, 6, get("k"), found("v1", 1)),
        ],
        ViolationKind::NotLinearizable,
        "k",
    );
    assert!(v.reason.contains("\"v2\"@2"), "{v}");
    assert_eq!(v.calls.last().map(|r| r.start), Some(5), "{v}");
}

#[test]
fn two_cas_winners_on_one_expected_revision() {
    rejected(
        vec![
            (0, 1, 2, put("k", "v0"), Outcome::Revision(1)),
            (1, 3, 6, cas("k", "a", Some(1)), Outcome::Revision(2)),
            (2, 4, 5, cas("k", "b", Some(1)), Outcome::Revision(3)),
        ],
        ViolationKind::NotLinearizable,
        "k",
    );
    // Two creators of one key.
    rejected(
        vec![
            (1, 3, 6, cas("k", "a", None), Outcome::Revision(2)),
            (2, 4, 5, cas("k", "b", None), Outcome::Revision(3)),
        ],
        ViolationKind::NotLinearizable,
        "k",
    );
}

#[test]
fn cas_on_an_equal_value_at_another_revision() {
    let v = rejected(
        vec![
            (0, 1, 2, put("k", "a"), Outcome::Revision(1)),
            (0, 3, 4, put("k", "a"), Outcome::Revision(2)),
            (1, 5, 6, cas("k", "b", Some(1)), Outcome::Revision(3)),
        ],
        ViolationKind::NotLinearizable,
        "k",
    );
    assert!(v.reason.contains("\"a\"@2"), "{v}");
}

#[test]
fn revision_reused_after_delete_and_recreate() {
    let v = rejected(
        vec![
            (0, 1, 2, put("k", "a"), Outcome::Revision(3)),
            (0, 3, 4, Op::Delete("k".into()), Outcome::Bool(true)),
            (0, 5, 6, put("k", "a"), Outcome::Revision(3)),
        ],
        ViolationKind::NotLinearizable,
        "k",
    );
    assert!(v.reason.contains("not above 3"), "{v}");
    rejected(
        vec![
            (0, 1, 2, cas("k", "a", None), Outcome::Revision(3)),
            (
                0,
                3,
                4,
                Op::AtomicDelete {
                    key: "k".into(),
                    expected: 3,
                },
                Outcome::Done,
            ),
            (0, 5, 6, cas("k", "b", None), Outcome::Revision(2)),
        ],
        ViolationKind::NotLinearizable,
        "k",
    );
}

#[test]
fn key_modified_with_a_wrong_actual_revision() {
    // An old revision of the key, not its current one.
    rejected(
        vec![
            (0, 1, 2, put("k", "a"), Outcome::Revision(1)),
            (0, 3, 4, put("k", "b"), Outcome::Revision(2)),
            (0, 5, 6, put("k", "c"), Outcome::Revision(3)),
            (
                1,
                7,
                8,
                cas("k", "x", Some(1)),
                Outcome::KeyModified { actual: 2 },
            ),
        ],
        ViolationKind::NotLinearizable,
        "k",
    );
    // A revision the key never had.
    rejected(
        vec![
            (0, 1, 2, put("k", "a"), Outcome::Revision(1)),
            (0, 3, 4, put("k", "b"), Outcome::Revision(2)),
            (
                1,
                5,
                6,
                cas("k", "x", Some(1)),
                Outcome::KeyModified { actual: 7 },
            ),
        ],
        ViolationKind::NeverWritten,
        "k",
    );
    // The revision it expected.
    rejected(
        vec![
            (0, 1, 2, put("k", "a"), Outcome::Revision(1)),
            (
                1,
                5,
                6,
                cas("k", "x", Some(1)),
                Outcome::KeyModified { actual: 1 },
            ),
        ],
        ViolationKind::Malformed,
        "k",
    );
}

#[test]
fn write_revision_below_one_completed_on_another_key() {
    let v = rejected(
        vec![
            (0, 1, 2, put("x", "a"), Outcome::Revision(5)),
            (1, 3, 4, put("y", "b"), Outcome::Revision(3)),
        ],
        ViolationKind::RevisionOrder,
        "y",
    );
    assert_eq!(v.calls.len(), 2, "{v}");
    // Overlapping writes may come in either order.
    accepted(vec![
        (0, 1, 3, put("x", "a"), Outcome::Revision(5)),
        (1, 2, 4, put("y", "b"), Outcome::Revision(3)),
    ]);
}

#[test]
fn read_of_a_value_never_written() {
    rejected(
        vec![
            (0, 1, 2, put("k", "a"), Outcome::Revision(1)),
            (1, 3, 4, get("k"), found("zzz", 1)),
        ],
        ViolationKind::NeverWritten,
        "k",
    );
    rejected(
        vec![
            (0, 1, 2, put("k", "a"), Outcome::Revision(1)),
            (1, 3, 4, get("k"), found("a", 2)),
        ],
        ViolationKind::NeverWritten,
        "k",
    );
    rejected(
        vec![(1, 3, 4, Op::List("".into()), list(&[("ghost", "boo", 1)]))],
        ViolationKind::NeverWritten,
        "ghost",
    );
}

#[test]
fn list_missing_a_key_that_existed_throughout() {
    rejected(
        vec![
            (0, 1, 2, put("d/x", "1"), Outcome::Revision(1)),
            (0, 3, 4, put("d/y", "2"), Outcome::Revision(2)),
            (1, 5, 6, Op::List("d".into()), list(&[("d/y", "2", 2)])),
        ],
        ViolationKind::NotLinearizable,
        "d/x",
    );
}

#[test]
fn list_showing_a_key_twice_or_a_deleted_key() {
    rejected(
        vec![
            (0, 1, 2, put("d/x", "1"), Outcome::Revision(1)),
            (
                1,
                3,
                4,
                Op::List("d".into()),
                list(&[("d/x", "1", 1), ("d/x", "1", 1)]),
            ),
        ],
        ViolationKind::Malformed,
        "d",
    );
    rejected(
        vec![
            (0, 1, 2, put("d/x", "1"), Outcome::Revision(1)),
            (0, 3, 4, Op::Delete("d/x".into()), Outcome::Bool(true)),
            (1, 5, 6, Op::List("d".into()), list(&[("d/x", "1", 1)])),
        ],
        ViolationKind::NotLinearizable,
        "d/x",
    );
    rejected(
        vec![
            (0, 1, 2, put("d/x", "1"), Outcome::Revision(1)),
            (1, 3, 4, Op::List("d".into()), list(&[("e/x", "1", 1)])),
        ],
        ViolationKind::Malformed,
        "d",
    );
}

#[test]
fn wrong_delete_and_exists_answers() {
    rejected(
        vec![(0, 1, 2, Op::Delete("k".into()), Outcome::Bool(true))],
        ViolationKind::NotLinearizable,
        "k",
    );
    rejected(
        vec![
            (0, 1, 2, put("k", "a"), Outcome::Revision(1)),
            (1, 3, 4, Op::Exists("k".into()), Outcome::Bool(false)),
        ],
        ViolationKind::NotLinearizable,
        "k",
    );
}

#[test]
fn errors_and_misfit_outcomes() {
    rejected(
        vec![(
            0,
            1,
            2,
            put("k", "a"),
            Outcome::of(&Err::<u64, _>(Error::closed("test"))),
        )],
        ViolationKind::Failed,
        "k",
    );
    rejected(
        vec![(0, 1, 2, put("k", "a"), Outcome::KeyExists)],
        ViolationKind::Malformed,
        "k",
    );
    rejected(
        vec![(0, 1, 2, put("k", "a"), Outcome::Revision(0))],
        ViolationKind::Malformed,
        "k",
    );
    rejected(
        vec![(0, 2, 1, get("k"), Outcome::Absent)],
        ViolationKind::Malformed,
        "k",
    );
}

#[test]
fn a_bounded_search_gives_up_instead_of_running_on() {
    let h = history(vec![
        (0, 1, 10, put("k", "a"), Outcome::Revision(1)),
        (1, 2, 10, put("k", "b"), Outcome::Revision(2)),
        (2, 3, 10, get("k"), found("b", 2)),
    ]);
    match Checker::new().with_max_steps(1).check(&h) {
        Verdict::TooLarge { key, calls, steps } => {
            assert_eq!((key.as_str(), calls, steps), ("k", 3, 1));
        }
        other => panic!("expected TooLarge, got {other}"),
    }
    assert!(Checker::new().check(&h).is_ok());
}

/// A small deterministic generator for the synthetic histories.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A linearizable history made by running a model store: call `i` takes
/// effect at time `100 * i` and its interval stretches up to `spread`
/// either side, so about `spread / 50` calls overlap at any time.
fn synthetic(seed: u64, calls: usize, spread: u64) -> History {
    use std::collections::BTreeMap;
    let keys = ["s/a", "s/b", "s/c", "s/d"];
    let mut rng = SplitMix(seed);
    let mut store: BTreeMap<&str, (String, u64)> = BTreeMap::new();
    let mut revision = 0u64;
    let mut h = History::new();
    for i in 0..calls {
        let at = 1_000_000 + 100 * i as u64;
        let start = at - 1 - rng.below(spread);
        let end = at + 1 + rng.below(spread);
        let k = keys[rng.below(4) as usize];
        let value = format!("v{i}");
        let (op, outcome) = match rng.below(7) {
            0 => (
                get(k),
                store.get(k).map_or(Outcome::Absent, |(v, r)| found(v, *r)),
            ),
            1 => {
                revision += 1;
                store.insert(k, (value.clone(), revision));
                (put(k, &value), Outcome::Revision(revision))
            }
            2 => {
                let existed = store.remove(k).is_some();
                if existed {
                    revision += 1;
                }
                (Op::Delete(k.into()), Outcome::Bool(existed))
            }
            3 => match store.get(k) {
                Some(_) => (cas(k, &value, None), Outcome::KeyExists),
                None => {
                    revision += 1;
                    store.insert(k, (value.clone(), revision));
                    (cas(k, &value, None), Outcome::Revision(revision))
                }
            },
            4 => {
                let expected = revision.saturating_sub(rng.below(3)).max(1);
                match store.get(k).map(|(_, r)| *r) {
                    None => (cas(k, &value, Some(expected)), Outcome::KeyNotFound),
                    Some(r) if r == expected => {
                        revision += 1;
                        store.insert(k, (value.clone(), revision));
                        (cas(k, &value, Some(expected)), Outcome::Revision(revision))
                    }
                    Some(r) => (
                        cas(k, &value, Some(expected)),
                        Outcome::KeyModified { actual: r },
                    ),
                }
            }
            5 => (
                Op::List("s".into()),
                Outcome::List(
                    store
                        .iter()
                        .map(|(k, (v, r))| KvPair::new(*k, v.clone(), *r))
                        .collect(),
                ),
            ),
            _ => (Op::Exists(k.into()), Outcome::Bool(store.contains_key(k))),
        };
        h.push(i % 16, op, start, end, outcome);
    }
    h
}

#[test]
fn synthetic_concurrent_histories_are_accepted() {
    for seed in 0..4 {
        let h = synthetic(seed, 4000, 800);
        let verdict = h.check();
        assert!(verdict.is_ok(), "seed {seed}: {verdict}");
    }
}

#[test]
fn a_synthetic_history_with_one_stale_read_is_rejected() {
    let h = synthetic(7, 2000, 300);
    // Make one read late in the history return what the key held long
    // before: the pair of an early write of that key.
    let records = h.records();
    let (i, key) = records
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, r)| match (&r.op, &r.outcome) {
            (Op::Get(k), Outcome::Found { .. }) => Some((i, k.clone())),
            _ => None,
        })
        .expect("a read that found a value");
    let early = records
        .iter()
        .find_map(|r| match (&r.op, &r.outcome) {
            (Op::Put(k, v), Outcome::Revision(rev)) if *k == key => Some((v.clone(), *rev)),
            _ => None,
        })
        .expect("an early write");
    let mut broken = History::new();
    for (j, r) in records.iter().enumerate() {
        let mut r = r.clone();
        if j == i {
            r.outcome = Outcome::Found {
                value: early.0.clone(),
                revision: early.1,
            };
        }
        broken.push_record(r);
    }
    let verdict = broken.check();
    let v = verdict.violation().unwrap_or_else(|| panic!("{verdict}"));
    assert_eq!(v.kind, ViolationKind::NotLinearizable, "{v}");
    assert_eq!(v.key.as_deref(), Some(key.as_str()), "{v}");
}
