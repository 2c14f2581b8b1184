//! Running the `anykv` binary as a process, for the end-to-end tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_anykv");

/// How long a short command may take.
pub const SHORT: Duration = Duration::from_secs(30);

/// What a finished process left behind.
#[derive(Debug)]
pub struct Finished {
    /// Its exit code (`None` if a signal killed it).
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: String,
}

impl Finished {
    /// Standard output as text.
    pub fn out(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }

    /// Standard output's lines.
    pub fn lines(&self) -> Vec<String> {
        self.out().lines().map(str::to_owned).collect()
    }

    /// Standard output parsed as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.out()))
    }
}

/// A command for the binary, with `ANYKV_URL` cleared.
pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("ANYKV_URL");
    c
}

/// Runs `anykv args...` to the end (at most [`SHORT`]).
pub fn anykv(args: &[&str]) -> Finished {
    run(command(args), None, SHORT)
}

/// Runs `anykv args...` with `input` on standard input.
pub fn anykv_with_stdin(args: &[&str], input: &[u8]) -> Finished {
    run(command(args), Some(input), SHORT)
}

/// Runs a command to the end, killing it after `limit`.
pub fn run(mut cmd: Command, input: Option<&[u8]>, limit: Duration) -> Finished {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the anykv binary starts");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input).expect("writing stdin");
    }
    let stdout = reader(child.stdout.take().expect("piped stdout"));
    let stderr = reader(child.stderr.take().expect("piped stderr"));
    let code = wait_for(&mut child, limit);
    Finished {
        code,
        stdout: stdout.join().expect("stdout reader"),
        stderr: String::from_utf8_lossy(&stderr.join().expect("stderr reader")).into_owned(),
    }
}

fn reader(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Waits for a child, killing it (and failing the test) after `limit`.
pub fn wait_for(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.code(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("anykv did not finish within {limit:?}");
            }
            Err(e) => panic!("waiting for anykv: {e}"),
        }
    }
}

/// A running `anykv` whose standard output and error arrive line by line.
pub struct Running {
    /// The process.
    pub child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Running {
    /// Starts `anykv args...` with output piped.
    pub fn start(args: &[&str]) -> Running {
        Self::start_command(command(args))
    }

    /// Starts a command with output piped.
    pub fn start_command(mut cmd: Command) -> Running {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the anykv binary starts");
        let stdout = lines(child.stdout.take().expect("piped stdout"));
        let stderr = lines(child.stderr.take().expect("piped stderr"));
        Running {
            child,
            stdout,
            stderr,
        }
    }

    /// The next line of standard output, waiting at most `limit`.
    pub fn stdout_line(&self, limit: Duration) -> String {
        self.stdout
            .recv_timeout(limit)
            .unwrap_or_else(|e| panic!("no line on stdout within {limit:?}: {e}"))
    }

    /// The next line of standard error, waiting at most `limit`.
    pub fn stderr_line(&self, limit: Duration) -> String {
        self.stderr
            .recv_timeout(limit)
            .unwrap_or_else(|e| panic!("no line on stderr within {limit:?}: {e}"))
    }

    /// Sends `signal` (`INT`, `TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the exit (at most `limit`); returns the exit code and the
    /// rest of standard output and standard error, line by line.
    pub fn finish(mut self, limit: Duration) -> (Option<i32>, Vec<String>, Vec<String>) {
        let code = wait_for(&mut self.child, limit);
        let rest = |rx: &mpsc::Receiver<String>| {
            let mut v = Vec::new();
            while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
                v.push(line);
            }
            v
        };
        let out = rest(&self.stdout);
        let err = rest(&self.stderr);
        (code, out, err)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn lines(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A conformance case line, split: (`pass`/`FAIL`/`unsupported`, name,
/// reason).
pub fn parse_case_line(line: &str) -> (String, String, Option<String>) {
    let (word, rest) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("not a case line: {line:?}"));
    let rest = rest.trim_start();
    let (name, rest) = rest
        .split_once(" (")
        .unwrap_or_else(|| panic!("no duration in {line:?}"));
    let (seconds, reason) = rest
        .split_once(" s)")
        .unwrap_or_else(|| panic!("no duration in {line:?}"));
    let seconds: f64 = seconds
        .parse()
        .unwrap_or_else(|e| panic!("bad duration in {line:?}: {e}"));
    assert!(seconds >= 0.0, "{line:?}");
    assert_eq!(
        line,
        format!("{word:<11} {name} ({seconds:.2} s){reason}"),
        "the line is laid out as documented"
    );
    let reason = reason.strip_prefix(": ").map(str::to_owned);
    assert_eq!(
        reason.is_some(),
        word != "pass",
        "a reason exactly when the case did not pass: {line:?}"
    );
    (word.to_owned(), name.to_owned(), reason)
}
