//! Redis errors as anykv's: `Unauthenticated`, `PermissionDenied`,
//! `Unavailable` (retryable: a lost connection, a server that is loading,
//! demoted, or between owners of a slot) or `Backend`. Messages carry the
//! server's text (as the server writes it: `WRONGPASS invalid
//! username-password pair...`) or the system's (`Connection refused (os
//! error 111)`), never the client library's `Debug` names and never a
//! password.

use anykv_core::Error;
use redis::RedisError;

use crate::config::BACKEND;

/// Whether [`map_error`] would call `e` retryable.
pub(crate) fn map_error_kind_retryable(e: &RedisError) -> bool {
    e.is_timeout() || e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// What a Redis error says, for a message: the server's code and text
/// (`NOPERM ...`; for a pipeline, each failure), or the library's text
/// without the `Debug` name of its error kind that its `Display` appends.
pub(crate) fn describe(e: &RedisError) -> String {
    if let Some(errors) = e.clone().into_server_errors() {
        let parts: Vec<String> = errors
            .iter()
            .map(|(_, s)| match s.details() {
                Some(d) => format!("{} {d}", s.code()),
                None => s.code().to_owned(),
            })
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let text = e.to_string();
    let kind = format!(" - {:?}", e.kind());
    match text.split_once(&kind) {
        Some((before, after)) => format!("{before}{after}"),
        None => text,
    }
}

/// An anykv error for a Redis error of the call `what`: `Unauthenticated`,
/// `PermissionDenied`, `Unavailable` (retryable) or `Backend`.
pub(crate) fn map_error(e: RedisError, what: &str) -> Error {
    let code = e.code().unwrap_or("");
    let text = describe(&e);
    let what = if what.is_empty() {
        String::new()
    } else {
        format!("{what}: ")
    };
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || code == "WRONGPASS"
        || code == "NOAUTH"
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
    {
        return Error::Unauthenticated {
            backend: BACKEND,
            message: format!("{what}{text}"),
        };
    }
    if code == "NOPERM"
        || text.contains("NOPERM")
        || text.contains("can't access at least one of the keys")
        || text.contains("has no permissions")
        || text.contains("can't run this command")
    {
        return Error::PermissionDenied {
            backend: BACKEND,
            message: format!("{what}{text}"),
        };
    }
    if e.is_timeout() {
        return Error::Unavailable {
            backend: BACKEND,
            message: format!("{what}the server did not answer in time (may have been applied)"),
            source: Some(Box::new(e)),
        };
    }
    if code == "READONLY" {
        return Error::Unavailable {
            backend: BACKEND,
            message: format!(
                "{what}the server is a replica now (a failover demoted it); not applied: {text}"
            ),
            source: Some(Box::new(e)),
        };
    }
    if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.kind() == redis::ErrorKind::ClusterConnectionNotFound
        || matches!(
            code,
            "LOADING"
                | "TRYAGAIN"
                | "MASTERDOWN"
                | "BUSY"
                | "CLUSTERDOWN"
                | "MOVED"
                | "ASK"
                | "NOREPLICAS"
        )
    {
        return Error::Unavailable {
            backend: BACKEND,
            message: format!("{what}{text}"),
            source: Some(Box::new(e)),
        };
    }
    Error::Backend {
        backend: BACKEND,
        message: format!("{what}{text}"),
        source: Some(Box::new(e)),
    }
}
