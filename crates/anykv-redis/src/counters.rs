//! The counters of the store's background work, through the `metrics`
//! crate (names and labels as every anykv backend uses them):
//!
//! - `anykv_reconnects_total{backend="redis"}`: a connection
//!   re-established: the watch reader's after it failed, or the calls'
//!   (their first success after calls failed for a lost connection, a
//!   time-out or a demoted server);
//! - `anykv_keepalive_failures_total{backend="redis"}`: a refresh of a
//!   lease or a lock failed or did not answer in time;
//! - `anykv_watch_resumes_total{backend="redis"}`: the watch reader went on
//!   from where it was, for open watches, after its connection failed.

use crate::config::BACKEND;

/// A connection re-established.
pub(crate) fn reconnect(which: &'static str) {
    tracing::info!(target: "anykv_redis", connection = which, "reconnected");
    metrics::counter!("anykv_reconnects_total", "backend" => BACKEND).increment(1);
}

/// A keep-alive refresh failed.
pub(crate) fn keepalive_failure(error: &dyn std::fmt::Display) {
    tracing::debug!(target: "anykv_redis", %error, "keep-alive refresh failed");
    metrics::counter!("anykv_keepalive_failures_total", "backend" => BACKEND).increment(1);
}

/// The watch reader resumed its open watches after its connection failed.
pub(crate) fn watch_resume(watches: usize) {
    tracing::info!(target: "anykv_redis", watches, "watch reader resumed");
    metrics::counter!("anykv_watch_resumes_total", "backend" => BACKEND).increment(1);
}
