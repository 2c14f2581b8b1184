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

/// An error and its sources as one line, each message once.
fn error_chain_text(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let m = x.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = x.source();
    }
    s
}

/// anykv's error for an etcd error of operation `op`.
pub(crate) fn map_error(e: etcd_client::Error, op: &str) -> Error {
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
                    message: msg,
                };
            }
            // Refusals of a request as a whole, before anything was
            // applied: a transaction over the server's limits.
            if lower.contains("request is too large")
                || lower.contains("too many operations in txn request")
            {
                return Error::InvalidArgument(format!("{op}: {msg}"));
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
                    message: format!("{op}: {msg}"),
                },
                Code::DeadlineExceeded => Error::Timeout {
                    backend: BACKEND,
                    operation: op.to_owned(),
                    after: Duration::ZERO,
                },
                Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Aborted => {
                    Error::Unavailable {
                        backend: BACKEND,
                        message: format!("{op}: {}", error_chain_text(&status)),
                        source: None,
                    }
                }
                _ => Error::Backend {
                    backend: BACKEND,
                    message: format!("{op}: {msg}"),
                    source: None,
                },
            }
        }
        etcd_client::Error::TransportError(t) => Error::Unavailable {
            backend: BACKEND,
            message: format!("{op}: {}", error_chain_text(&t)),
            source: None,
        },
        etcd_client::Error::IoError(t) => Error::Unavailable {
            backend: BACKEND,
            message: format!("{op}: {t}"),
            source: None,
        },
        other => Error::Backend {
            backend: BACKEND,
            message: format!("{op}: {other}"),
            source: None,
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
                .map_err(|x| Error::Config(error_chain_text(&x)))
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
                error_chain_text(&x)
            ),
            source: None,
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
            assert!(matches!(map_error(e, "put"), Error::Unavailable { .. }));
        }
        assert!(matches!(
            map_error(status(tonic::Code::DeadlineExceeded, "x"), "put"),
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
                matches!(map_error(e, "txn"), Error::InvalidArgument(m) if m.contains(msg)),
                "{msg}"
            );
        }
    }
}
