//! The one error type every backend returns.

use std::fmt;

/// A boxed error from a backend's client library, kept as the `source` of an
/// [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result type of every anykv call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in an anykv call.
///
/// Messages name the backend and, where there is one, the key. They never
/// contain a password: URLs are redacted with [`crate::redact_url`] before
/// they reach an error.
///
/// Use [`Error::kind`] to compare errors in code and [`Error::is_retryable`]
/// to decide whether to try again.
///
/// A write that fails with [`Error::Timeout`] or [`Error::Unavailable`] has an
/// unknown outcome: it **may have been applied**. anykv never retries such a
/// write itself in a way that could apply it twice.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key breaks the key rules (see [`crate::key`]). Nothing was sent.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Which rule it breaks.
        reason: String,
    },

    /// An argument other than the key is out of range (a zero TTL, a TTL
    /// together with a lease, ...). Nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The value is larger than the backend can store. Nothing was written.
    #[error("{backend}: value of {size} bytes for key {key:?} exceeds the maximum of {max} bytes")]
    ValueTooLarge {
        /// The backend's name.
        backend: &'static str,
        /// The key.
        key: String,
        /// The value's size in bytes.
        size: usize,
        /// The backend's maximum, as in [`crate::Capabilities::max_value_size`].
        max: usize,
    },

    /// A create-only write found the key present.
    #[error("{backend}: key {key:?} already exists")]
    KeyExists {
        /// The backend's name.
        backend: &'static str,
        /// The key.
        key: String,
    },

    /// A compare-and-swap found the key at another revision.
    #[error("{backend}: key {key:?} was modified: expected revision {expected}, found {actual}")]
    KeyModified {
        /// The backend's name.
        backend: &'static str,
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: u64,
        /// The key's current revision.
        actual: u64,
    },

    /// A compare-and-swap or compare-and-delete found the key absent.
    #[error("{backend}: key {key:?} not found")]
    KeyNotFound {
        /// The backend's name.
        backend: &'static str,
        /// The key.
        key: String,
    },

    /// The backend cannot do this; its [`crate::Capabilities`] say so too.
    #[error("{backend}: {operation} is not supported: {reason}")]
    Unsupported {
        /// The operation refused.
        operation: &'static str,
        /// The backend's name.
        backend: &'static str,
        /// Why, naming the capability or server setting involved.
        reason: String,
    },

    /// The server cannot be reached right now. Transient: retry later. A
    /// write that fails this way may have been applied.
    #[error("{backend}: unavailable: {message}")]
    Unavailable {
        /// The backend's name.
        backend: &'static str,
        /// What happened.
        message: String,
        /// The client library's error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The call did not complete in time. A write that fails this way may
    /// have been applied.
    #[error("{backend}: {operation} timed out after {after:?}")]
    Timeout {
        /// The backend's name.
        backend: &'static str,
        /// The operation that timed out.
        operation: String,
        /// How long it waited.
        after: std::time::Duration,
    },

    /// A lock waited its [`crate::LockOptions::timeout`] while another
    /// client held it: the lock is busy, the server is fine. Not
    /// retryable in the sense of [`Error::is_retryable`]: trying again
    /// waits for the same holder. (A server too slow to answer is
    /// [`Error::Timeout`] or [`Error::Unavailable`], as for any call.)
    #[error("{backend}: the lock {key:?} is still held by another client after waiting {after:?}")]
    LockTimeout {
        /// The backend's name.
        backend: &'static str,
        /// The lock's name.
        key: String,
        /// How long it waited.
        after: std::time::Duration,
    },

    /// The server refused the credentials.
    #[error("{backend}: authentication failed: {message}")]
    Unauthenticated {
        /// The backend's name.
        backend: &'static str,
        /// What the server said (never the password).
        message: String,
    },

    /// The credentials are valid but do not allow this.
    #[error("{backend}: permission denied: {message}")]
    PermissionDenied {
        /// The backend's name.
        backend: &'static str,
        /// What the server said.
        message: String,
    },

    /// A watch asked to resume from a revision whose history is gone.
    #[error("{backend}: revision {requested} is compacted; the oldest available is {oldest}")]
    Compacted {
        /// The backend's name.
        backend: &'static str,
        /// The revision asked for.
        requested: u64,
        /// The oldest revision from which a watch can still resume.
        oldest: u64,
    },

    /// The watch's consumer fell too far behind; the stream ends after this
    /// error. Resume from the last revision seen to carry on.
    #[error("{backend}: watch consumer fell behind by more than {buffer} events")]
    WatchLagged {
        /// The backend's name.
        backend: &'static str,
        /// The stream's buffer size.
        buffer: usize,
    },

    /// The lease is gone (revoked, expired or never existed).
    #[error("{backend}: lease {lease} is lost")]
    LeaseLost {
        /// The backend's name.
        backend: &'static str,
        /// The lease's id.
        lease: u64,
    },

    /// The store was closed.
    #[error("{backend}: the store is closed")]
    Closed {
        /// The backend's name.
        backend: &'static str,
    },

    /// A URL or configuration value is wrong.
    #[error("configuration error: {0}")]
    Config(String),

    /// Any other failure of the backend, with its source.
    #[error("{backend}: {message}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// What happened.
        message: String,
        /// The client library's error.
        #[source]
        source: Option<BoxError>,
    },
}

/// The kind of an [`Error`], for comparisons in code and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::InvalidKey`]
    InvalidKey,
    /// [`Error::InvalidArgument`]
    InvalidArgument,
    /// [`Error::ValueTooLarge`]
    ValueTooLarge,
    /// [`Error::KeyExists`]
    KeyExists,
    /// [`Error::KeyModified`]
    KeyModified,
    /// [`Error::KeyNotFound`]
    KeyNotFound,
    /// [`Error::Unsupported`]
    Unsupported,
    /// [`Error::Unavailable`]
    Unavailable,
    /// [`Error::Timeout`]
    Timeout,
    /// [`Error::LockTimeout`]
    LockTimeout,
    /// [`Error::Unauthenticated`]
    Unauthenticated,
    /// [`Error::PermissionDenied`]
    PermissionDenied,
    /// [`Error::Compacted`]
    Compacted,
    /// [`Error::WatchLagged`]
    WatchLagged,
    /// [`Error::LeaseLost`]
    LeaseLost,
    /// [`Error::Closed`]
    Closed,
    /// [`Error::Config`]
    Config,
    /// [`Error::Backend`]
    Backend,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidKey { .. } => ErrorKind::InvalidKey,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::ValueTooLarge { .. } => ErrorKind::ValueTooLarge,
            Error::KeyExists { .. } => ErrorKind::KeyExists,
            Error::KeyModified { .. } => ErrorKind::KeyModified,
            Error::KeyNotFound { .. } => ErrorKind::KeyNotFound,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::LockTimeout { .. } => ErrorKind::LockTimeout,
            Error::Unauthenticated { .. } => ErrorKind::Unauthenticated,
            Error::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Error::Compacted { .. } => ErrorKind::Compacted,
            Error::WatchLagged { .. } => ErrorKind::WatchLagged,
            Error::LeaseLost { .. } => ErrorKind::LeaseLost,
            Error::Closed { .. } => ErrorKind::Closed,
            Error::Config(_) => ErrorKind::Config,
            Error::Backend { .. } => ErrorKind::Backend,
        }
    }

    /// Whether trying the same call again later can succeed: true for
    /// [`Error::Unavailable`] and [`Error::Timeout`] (whose writes may already
    /// have been applied, so re-check before repeating a non-idempotent write)
    /// and for [`Error::WatchLagged`] (resume the watch).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::WatchLagged
        )
    }

    /// An [`Error::InvalidKey`].
    pub fn invalid_key(key: &str, reason: impl Into<String>) -> Self {
        Error::InvalidKey {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Unsupported`].
    pub fn unsupported(
        backend: &'static str,
        operation: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        Error::Unsupported {
            operation,
            backend,
            reason: reason.into(),
        }
    }

    /// An [`Error::Closed`].
    pub fn closed(backend: &'static str) -> Self {
        Error::Closed { backend }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_retryability() {
        let e = Error::Timeout {
            backend: "memory",
            operation: "put".into(),
            after: std::time::Duration::from_secs(1),
        };
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(e.is_retryable());
        let e = Error::invalid_key("a//b", "empty segment");
        assert_eq!(e.kind(), ErrorKind::InvalidKey);
        assert!(!e.is_retryable());
        assert_eq!(e.to_string(), "invalid key \"a//b\": empty segment");
    }
}
