//! The examples run as programs whose reader goes away early, as in
//! `cargo run --example quickstart | head -2`: each must finish its work,
//! clean up, and exit 0 — no panic, no backtrace. (`swap_in_tests` is
//! built as a test harness, not a program, so it is not among them; it
//! prints through the same helper.)

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The compiled example, next to this test's own binary (`cargo test`
/// builds the examples along with the tests).
fn example(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("the test binary has a path");
    let dir = me
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary sits in <target>/<profile>/deps");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the examples first with `cargo build --examples` \
         (`cargo test` builds them)",
        path.display()
    );
    path
}

fn closed_after_first_line(name: &str) {
    let mut child = Command::new(example(name))
        .arg("memory://")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("the example prints a line");
    assert!(!first.is_empty(), "{name} printed nothing");
    // The reader (stdout, and with it the pipe's read end) is gone now.
    let out = child.wait_with_output().expect("the example ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "{name} panicked on a closed pipe: {stderr}"
    );
    assert!(
        out.status.success(),
        "{name} exited with {} on a closed pipe: {stderr}",
        out.status
    );
}

#[test]
fn quickstart_survives_a_closed_pipe() {
    closed_after_first_line("quickstart");
}

#[test]
fn service_discovery_survives_a_closed_pipe() {
    closed_after_first_line("service_discovery");
}

#[test]
fn config_watch_survives_a_closed_pipe() {
    closed_after_first_line("config_watch");
}

#[test]
fn leader_survives_a_closed_pipe() {
    closed_after_first_line("leader");
}
