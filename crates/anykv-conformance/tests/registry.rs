//! Every case function of every case module is in the suite: a case
//! cannot be left out by forgetting to list it in its group's macro, and
//! no listed name is missing its function. Names are unique.

use std::collections::BTreeSet;

use anykv_conformance::all_cases;

/// The case modules' sources, by group.
const SOURCES: &[(&str, &str)] = &[
    ("atomic", include_str!("../src/cases/atomic.rs")),
    ("basic", include_str!("../src/cases/basic.rs")),
    ("capabilities", include_str!("../src/cases/capabilities.rs")),
    ("close", include_str!("../src/cases/close.rs")),
    ("contend", include_str!("../src/cases/contend.rs")),
    ("fault", include_str!("../src/cases/fault.rs")),
    ("history", include_str!("../src/cases/history.rs")),
    ("isolation", include_str!("../src/cases/isolation.rs")),
    ("keys", include_str!("../src/cases/keys.rs")),
    ("lease", include_str!("../src/cases/lease.rs")),
    ("list", include_str!("../src/cases/list.rs")),
    ("load", include_str!("../src/cases/load.rs")),
    ("lock", include_str!("../src/cases/lock.rs")),
    ("race", include_str!("../src/cases/race.rs")),
    ("revision", include_str!("../src/cases/revision.rs")),
    ("rules", include_str!("../src/cases/rules.rs")),
    ("ttl", include_str!("../src/cases/ttl.rs")),
    ("txn", include_str!("../src/cases/txn.rs")),
    ("txn_load", include_str!("../src/cases/txn_load.rs")),
    ("watch", include_str!("../src/cases/watch.rs")),
    (
        "watch_concurrent",
        include_str!("../src/cases/watch_concurrent.rs"),
    ),
    ("watch_resume", include_str!("../src/cases/watch_resume.rs")),
];

/// The names of the `pub async fn NAME(ctx: &Ctx) -> CaseResult` in a
/// source file.
fn case_functions(source: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("pub async fn ")?;
            let (name, args) = rest.split_once('(')?;
            args.starts_with("ctx: &Ctx)").then(|| name.to_owned())
        })
        .collect()
}

#[test]
fn every_case_function_is_in_the_suite() {
    let cases = all_cases();
    let listed: BTreeSet<(String, String)> = cases
        .iter()
        .map(|c| (c.group.to_owned(), c.name.to_owned()))
        .collect();
    let mut defined = BTreeSet::new();
    for (group, source) in SOURCES {
        for name in case_functions(source) {
            defined.insert(((*group).to_owned(), name));
        }
    }
    let unlisted: Vec<_> = defined.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "case functions not listed in their group's macro: {unlisted:?}"
    );
    let undefined: Vec<_> = listed.difference(&defined).collect();
    assert!(
        undefined.is_empty(),
        "listed without a function here: {undefined:?}"
    );
    let groups: BTreeSet<&str> = cases.iter().map(|c| c.group).collect();
    let files: BTreeSet<&str> = SOURCES.iter().map(|(g, _)| *g).collect();
    assert_eq!(groups, files, "every group's module is read by this test");
}

#[test]
fn case_names_are_unique_and_snake_case() {
    let cases = all_cases();
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), cases.len(), "a case name is used twice");
    for case in &cases {
        let n = case.name;
        // The area is the group's first word: `watch_resume` cases are
        // `watch_…` cases.
        let area = case.group.split('_').next().unwrap_or(case.group);
        assert!(
            n.strip_prefix(area)
                .and_then(|rest| rest.strip_prefix('_'))
                .is_some_and(|behaviour| !behaviour.is_empty())
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{n} (group {}): case names are <area>_<behaviour> in snake case, \
             the area being the group's first word ({area})",
            case.group
        );
    }
}

#[test]
fn every_case_states_its_rule() {
    for case in all_cases() {
        assert!(
            case.rule.len() >= 20 && case.rule.ends_with(['.', ':', ')']),
            "{}: a case's doc comment states the rule it checks in its first \
             paragraph, which failure reports quote; found {:?}",
            case.name,
            case.rule
        );
    }
}

#[test]
fn the_check_finds_functions() {
    let src = "pub async fn a_b(ctx: &Ctx) -> CaseResult {\n}\npub async fn helper(x: u8) {}\nasync fn private(ctx: &Ctx) {}\n";
    assert_eq!(case_functions(src), vec!["a_b".to_owned()]);
}
