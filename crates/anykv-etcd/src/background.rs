//! What the store's background work reports: a `tracing` event (target
//! `anykv_etcd`) and a counter (through the `metrics` crate, labelled
//! `backend="etcd"`) for each of
//!
//! - `anykv_reconnects_total`: a connection re-established — the watch
//!   stream or a lease's keep-alive stream opened again after it broke,
//!   or a member found answering again after it was found down;
//! - `anykv_keepalive_failures_total`: a lease's keep-alive attempt that
//!   failed (no member, no answer in time, the stream broke);
//! - `anykv_watch_resumes_total`: a server-side watch created again, from
//!   the revision after the last one delivered, after its stream broke.

use crate::config::BACKEND;

/// The counter of re-established connections.
pub const RECONNECTS: &str = "anykv_reconnects_total";
/// The counter of failed keep-alive attempts.
pub const KEEPALIVE_FAILURES: &str = "anykv_keepalive_failures_total";
/// The counter of watches resumed after their stream broke.
pub const WATCH_RESUMES: &str = "anykv_watch_resumes_total";

/// A connection was re-established: `what` says which.
pub(crate) fn reconnected(what: &str, member: &str) {
    tracing::info!(target: "anykv_etcd", member, "{what} re-established");
    metrics::counter!(RECONNECTS, "backend" => BACKEND).increment(1);
}

/// A keep-alive attempt of lease `lease` failed.
pub(crate) fn keepalive_failed(lease: i64, why: &str) {
    tracing::debug!(target: "anykv_etcd", lease, "a lease keep-alive failed: {why}");
    metrics::counter!(KEEPALIVE_FAILURES, "backend" => BACKEND).increment(1);
}

/// `count` server-side watches were created again on `member` after
/// their stream broke.
pub(crate) fn watches_resumed(count: usize, member: &str) {
    if count == 0 {
        return;
    }
    tracing::info!(target: "anykv_etcd", member, count, "watches resumed");
    metrics::counter!(WATCH_RESUMES, "backend" => BACKEND)
        .increment(u64::try_from(count).unwrap_or(u64::MAX));
}
