//! The report a run prints: one line per case, then the failures alone,
//! with long messages shortened and the rule each checks, then the totals.

use std::time::Duration;

use anykv_conformance::{shorten, CaseReport, Outcome, Report};

#[test]
fn failures_are_summed_up_last_and_long_messages_shortened() {
    let long = format!("value was {:?}", "x".repeat(5000));
    let report = Report {
        cases: vec![
            CaseReport {
                name: "basic_put_get_roundtrip",
                group: "basic",
                rule: "put then get returns the value.",
                outcome: Outcome::Passed,
                duration: Duration::from_millis(10),
            },
            CaseReport {
                name: "basic_large_value_roundtrip",
                group: "basic",
                rule: "A large value reads back byte for byte.",
                outcome: Outcome::Failed(long.clone()),
                duration: Duration::from_millis(20),
            },
            CaseReport {
                name: "watch_resume_compacted",
                group: "watch",
                rule: "A resume from a compacted revision ends with Compacted.",
                outcome: Outcome::Unsupported("watch_resume = false".into()),
                duration: Duration::from_millis(1),
            },
        ],
    };
    let text = report.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "{text}");
    assert!(lines[0].starts_with("pass        basic::basic_put_get_roundtrip"));
    assert!(lines[1].starts_with("FAIL        basic::basic_large_value_roundtrip"));
    assert!(lines[1].ends_with("(4612 more characters)"), "{}", lines[1]);
    assert!(lines[2].starts_with("unsupported watch::watch_resume_compacted"));
    assert_eq!(lines[3], "failures:");
    assert!(lines[4].starts_with("  basic::basic_large_value_roundtrip: value was"));
    assert_eq!(
        lines[5],
        "    the rule: A large value reads back byte for byte."
    );
    assert_eq!(lines[6], "1 passed, 1 failed, 1 unsupported");
    assert!(
        text.len() < 2000,
        "the report is not shortened: {} bytes",
        text.len()
    );
}

#[test]
fn shorten_keeps_short_text_and_counts_characters() {
    assert_eq!(shorten("abc", 3), "abc");
    assert_eq!(shorten("äöüß", 2), "äö… (2 more characters)");
}
