//! Exit codes and the error every command reports.

use std::fmt;

use anykv::{Error, ErrorKind};

/// The command did what it was asked.
pub const OK: u8 = 0;
/// Something failed that no other code covers: a conformance case failed, a
/// watch ended with an error, a lock, lease or leadership was lost, the server refused
/// the credentials or the operation, the backend does not support it.
pub const FAILURE: u8 = 1;
/// The command line is wrong: an unknown option, a bad URL, an invalid key
/// or duration, a value too large for the backend, an unreadable file. Nothing
/// was sent to the server.
pub const USAGE: u8 = 2;
/// The server could not be reached, or did not answer in time. A write that
/// fails this way may have been applied.
pub const UNAVAILABLE: u8 = 3;
/// The key does not exist (`get`, `rm`, and `--if-revision` on an absent
/// key).
pub const NOT_FOUND: u8 = 4;
/// A condition did not hold: `--if-revision` found another revision,
/// `--create-only` found the key present, a compare of `txn` did not hold
/// (its `--else` branch ran).
pub const CONDITION_FAILED: u8 = 5;
/// A lock is held by another client: `lock --timeout` waited that long
/// without getting it ([`ErrorKind::LockTimeout`]). Unlike [`UNAVAILABLE`],
/// the server answered.
pub const LOCK_TIMEOUT: u8 = 6;
/// The command given after `--` to `lock`, `lease` or `elect` could not be
/// executed.
pub const COMMAND_NOT_EXECUTABLE: u8 = 126;
/// The command given after `--` to `lock`, `lease` or `elect` was not
/// found.
pub const COMMAND_NOT_FOUND: u8 = 127;
/// Stopped by Ctrl-C (SIGINT), after cleaning up. SIGTERM stops the same
/// way with 143.
pub const INTERRUPTED: u8 = 130;

/// The exit codes as `--help` shows them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success
  1    failure: a conformance case failed, a watch ended with an error, a
       lock, lease or leadership (elect) was lost, the server refused the
       credentials, the backend does not support the operation
  2    usage error: bad arguments, a bad URL, an invalid key or duration, a
       value too large for the backend, an unreadable file (nothing was sent)
  3    the server is unreachable or did not answer in time (a write that
       fails this way may have been applied)
  4    the key was not found
  5    a condition failed: --if-revision found another revision,
       --create-only found the key, a compare of txn did not hold (the
       --else branch ran; its results are printed)
  6    the lock is held by another client: lock --timeout expired while
       waiting for it (the server answered; compare 3)
  126  the command after -- could not be executed (lock, lease, elect)
  127  the command after -- was not found (lock, lease, elect)
  130  interrupted by Ctrl-C (SIGINT) after cleaning up; 143 for SIGTERM

With a command after --, lock, lease and elect exit with the command's status
(128 + N when it was killed by signal N).";

/// What a command reports when it does not succeed: an exit code, a kind
/// for `--json`, and a message for people. Messages never contain a
/// password: URLs in them went through [`anykv::redact_url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// The process's exit code.
    pub code: u8,
    /// A stable name for scripts: an [`ErrorKind`] name such as
    /// `KeyNotFound`, or `Usage`, `Io`, `Interrupted`, `Failed`.
    pub kind: String,
    /// What went wrong, for people.
    pub message: String,
    /// Exit with `code` without printing anything (standard output was
    /// closed, or the message was already printed).
    pub quiet: bool,
}

impl CliError {
    /// An error with a code, a kind and a message.
    pub fn new(code: u8, kind: impl Into<String>, message: impl Into<String>) -> Self {
        CliError {
            code,
            kind: kind.into(),
            message: message.into(),
            quiet: false,
        }
    }

    /// A usage error (exit code [`USAGE`]).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(USAGE, "Usage", message)
    }

    /// An interruption by the signal `signal` (exit code 128 + signal).
    pub fn interrupted(signal: i32) -> Self {
        let code = u8::try_from(128 + signal).unwrap_or(INTERRUPTED);
        Self::new(code, "Interrupted", "interrupted")
    }

    /// An exit with `code` and no message.
    pub fn quiet(code: u8) -> Self {
        CliError {
            code,
            kind: "Exit".into(),
            message: String::new(),
            quiet: true,
        }
    }

    /// The same error with `context: ` before its message.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// The exit code for an error kind: see [`EXIT_CODES_HELP`].
pub fn code_for(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidKey
        | ErrorKind::InvalidArgument
        | ErrorKind::ValueTooLarge
        | ErrorKind::Config => USAGE,
        ErrorKind::Unavailable | ErrorKind::Timeout => UNAVAILABLE,
        ErrorKind::KeyNotFound => NOT_FOUND,
        ErrorKind::KeyModified | ErrorKind::KeyExists => CONDITION_FAILED,
        ErrorKind::LockTimeout => LOCK_TIMEOUT,
        _ => FAILURE,
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError::new(code_for(e.kind()), e.kind().to_string(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_documented_codes() {
        assert_eq!(code_for(ErrorKind::Config), USAGE);
        assert_eq!(code_for(ErrorKind::InvalidKey), USAGE);
        assert_eq!(code_for(ErrorKind::Unavailable), UNAVAILABLE);
        assert_eq!(code_for(ErrorKind::Timeout), UNAVAILABLE);
        assert_eq!(code_for(ErrorKind::KeyNotFound), NOT_FOUND);
        assert_eq!(code_for(ErrorKind::KeyModified), CONDITION_FAILED);
        assert_eq!(code_for(ErrorKind::KeyExists), CONDITION_FAILED);
        assert_eq!(code_for(ErrorKind::LockTimeout), LOCK_TIMEOUT);
        assert_eq!(code_for(ErrorKind::Unsupported), FAILURE);
        assert_eq!(code_for(ErrorKind::PermissionDenied), FAILURE);
        assert_eq!(CliError::interrupted(2).code, 130);
        assert_eq!(CliError::interrupted(15).code, 143);
    }

    #[test]
    fn errors_keep_kind_and_message() {
        let e: CliError = Error::KeyNotFound {
            backend: "memory",
            key: "a".into(),
        }
        .into();
        assert_eq!(
            e,
            CliError::new(NOT_FOUND, "KeyNotFound", "memory: key \"a\" not found")
        );
        assert_eq!(
            e.context("rm").message,
            "rm: memory: key \"a\" not found".to_string()
        );
    }
}
