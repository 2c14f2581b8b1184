//! etcd's errors as anykv's, and what each says about a request: whether
//! it reached a server, whether it was certainly not applied (so a write
//! may be sent again), and a clear error when the first contact fails.

use std::time::Duration;

use anykv_core::Error;

use crate::config::{EtcdConfig, BACKEND};
use crate::tls::tls_options;

/// Whether a request failed before reaching any server.
pub(crate) fn not_sent(e: &etcd_client::Error) -> bool {
    let text = match e {
        etcd_client::Error::GRpcStatus(s) => format!("{}: {:?}", s.message(), s),
        etcd_client::Error::TransportError(t) => format!("{t:?}"),
        _ => return false,
    };
    text.contains("tcp connect error") || text.contains("ConnectError")
}

pub(crate) fn is_unavailable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.code() == tonic::Code::Unavailable,
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// The innermost cause of an error (the last of its `source()` chain), by
/// its `Display`: for a transport error the useful part ("Connection
/// refused (os error 111)", a TLS alert), without the wrappers' words.
pub(crate) fn innermost_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    // A chain is finite, but a bound costs nothing.
    for _ in 0..32 {
        match last.source() {
            Some(next) => last = next,
            None => break,
        }
    }
    last.to_string()
}

/// The snake_case name of a gRPC status code.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// A status as one clean line: the server's (or tonic's) message, then
/// the innermost cause when the message does not already say it. Never
/// tonic's `Display` of a status, which carries its source's `Debug` text.
fn status_text(status: &tonic::Status) -> String {
    let mut text = status.message().trim().to_owned();
    if let Some(source) = std::error::Error::source(status) {
        let cause = innermost_cause(source);
        if !cause.is_empty() && !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    if text.is_empty() {
        text.push_str("no message");
    }
    text
}

/// An etcd error as one clean line, for logs: like the messages of
/// [`map_error_at`], without any `Debug` text.
pub(crate) fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            format!("{}: {}", code_name(s.code()), status_text(s))
        }
        etcd_client::Error::TransportError(t) => innermost_cause(t),
        etcd_client::Error::IoError(t) => innermost_cause(t),
        other => other.to_string(),
    }
}

/// `op`, and ` (host:port)` when the member is known.
fn at(op: &str, url: Option<&str>) -> String {
    match url {
        Some(u) => format!("{op} ({})", u.split_once("://").map_or(u, |(_, rest)| rest)),
        None => op.to_owned(),
    }
}

/// anykv's error for an etcd error of operation `op` sent to the member
/// at `url` (named in the message when given). Messages are built from
/// the gRPC code name, the server's message and the innermost cause of a
/// transport error, never from a `Debug` text; the error itself is kept
/// as the `source` where the variant has one.
pub(crate) fn map_error_at(e: etcd_client::Error, op: &str, url: Option<&str>) -> Error {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let msg = status.message().to_owned();
            let lower = msg.to_ascii_lowercase();
            if lower.contains("authentication failed")
                || lower.contains("invalid auth token")
                || lower.contains("user name is empty")
                || status.code() == Code::Unauthenticated
            {
                return Error::Unauthenticated {
                    backend: BACKEND,
                    message: status_text(&status),
                };
            }
            // Refusals of a request as a whole, before anything was
            // applied: a transaction over the server's limits.
            if lower.contains("request is too large")
                || lower.contains("too many operations in txn request")
            {
                return Error::InvalidArgument(format!("{op}: {}", status_text(&status)));
            }
            if lower.contains("lease not found") {
                return Error::LeaseLost {
                    backend: BACKEND,
                    lease: 0,
                };
            }
            match status.code() {
                Code::PermissionDenied => Error::PermissionDenied {
                    backend: BACKEND,
                    message: format!("{op}: {}", status_text(&status)),
                },
                Code::DeadlineExceeded => Error::Timeout {
                    backend: BACKEND,
                    operation: op.to_owned(),
                    after: Duration::ZERO,
                },
                // The variant already says "unavailable".
                Code::Unavailable => Error::Unavailable {
                    backend: BACKEND,
                    message: format!("{}: {}", at(op, url), status_text(&status)),
                    source: Some(Box::new(status)),
                },
                Code::Cancelled | Code::Unknown | Code::Aborted => Error::Unavailable {
                    backend: BACKEND,
                    message: format!(
                        "{}: {}: {}",
                        at(op, url),
                        code_name(status.code()),
                        status_text(&status)
                    ),
                    source: Some(Box::new(status)),
                },
                code => Error::Backend {
                    backend: BACKEND,
                    message: format!("{op}: {}: {}", code_name(code), status_text(&status)),
                    source: Some(Box::new(status)),
                },
            }
        }
        etcd_client::Error::TransportError(t) => Error::Unavailable {
            backend: BACKEND,
            message: format!("{}: {}", at(op, url), innermost_cause(&t)),
            source: Some(Box::new(t)),
        },
        etcd_client::Error::IoError(t) => Error::Unavailable {
            backend: BACKEND,
            message: format!("{}: {}", at(op, url), innermost_cause(&t)),
            source: Some(Box::new(t)),
        },
        // The other variants' `Display` is their own text (no status).
        other => Error::Backend {
            backend: BACKEND,
            message: format!("{op}: {other}"),
            source: Some(Box::new(other)),
        },
    }
}

/// Turns a failed first contact into a clear error: when the balanced
/// channel only says "timed out", a direct connection names the cause
/// (refused, TLS handshake failure, ...).
pub(crate) async fn explain_connect_failure(
    config: &EtcdConfig,
    urls: &[String],
    e: Error,
) -> Error {
    if !matches!(e, Error::Timeout { .. } | Error::Unavailable { .. }) {
        return e;
    }
    let Some(url) = urls.first() else { return e };
    let endpoint = match tonic::transport::Endpoint::from_shared(url.clone()) {
        Ok(ep) => ep.connect_timeout(config.connect_timeout),
        Err(_) => return e,
    };
    let endpoint = match &config.tls {
        Some(tls) => match tls_options(tls).and_then(|o| {
            endpoint
                .tls_config(o)
                .map_err(|x| Error::Config(innermost_cause(&x)))
        }) {
            Ok(ep) => ep,
            Err(x) => return x,
        },
        None => endpoint,
    };
    match tokio::time::timeout(config.connect_timeout, endpoint.connect()).await {
        Ok(Err(x)) => Error::Unavailable {
            backend: BACKEND,
            message: format!(
                "cannot reach {}{}: {}",
                urls.join(","),
                if config.tls.is_some() {
                    " over TLS"
                } else {
                    ""
                },
                innermost_cause(&x)
            ),
            source: Some(Box::new(x)),
        },
        _ => match (&config.tls, e) {
            (Some(tls), Error::Unavailable { message, .. }) if tls.cert_file.is_none() => {
                Error::Unavailable {
                    backend: BACKEND,
                    message: format!(
                        "{message} (the TLS connection was closed by the server: does it \
                         require a client certificate? set cert_file and key_file)"
                    ),
                    source: None,
                }
            }
            (_, e) => e,
        },
    }
}

/// Whether the server refused a request before acting on it, so that
/// sending it again (to any member) cannot apply it twice: the member had
/// no leader (refused by etcd's leader check, or the proposal dropped by
/// raft), is not ready, or is too far behind to take requests.
pub(crate) fn not_applied(e: &etcd_client::Error) -> bool {
    let etcd_client::Error::GRpcStatus(s) = e else {
        return false;
    };
    let msg = s.message();
    [
        "etcdserver: no leader",
        "raft proposal dropped",
        "etcdserver: not capable",
        "etcdserver: too many requests",
    ]
    .iter()
    .any(|m| msg.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: tonic::Code, msg: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, msg))
    }

    #[test]
    fn only_refusals_count_as_not_applied() {
        let no_leader = status(tonic::Code::Unavailable, "etcdserver: no leader");
        assert!(not_applied(&no_leader));
        assert!(is_unavailable(&no_leader));
        for unknown in [
            "etcdserver: request timed out",
            "etcdserver: leader changed",
            "etcdserver: request timed out, possibly due to previous leader failure",
        ] {
            let e = status(tonic::Code::Unavailable, unknown);
            assert!(!not_applied(&e), "{unknown}");
            assert!(matches!(
                map_error_at(e, "put", None),
                Error::Unavailable { .. }
            ));
        }
        assert!(matches!(
            map_error_at(status(tonic::Code::DeadlineExceeded, "x"), "put", None),
            Error::Timeout { .. }
        ));
    }

    #[test]
    fn requests_over_the_server_limits_are_invalid_arguments() {
        for msg in [
            "etcdserver: request is too large",
            "etcdserver: too many operations in txn request",
        ] {
            let e = status(tonic::Code::InvalidArgument, msg);
            assert!(!not_applied(&e), "{msg}");
            assert!(
                matches!(map_error_at(e, "txn", None), Error::InvalidArgument(m) if m.contains(msg)),
                "{msg}"
            );
        }
    }
}
