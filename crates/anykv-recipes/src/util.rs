//! What the recipes share: retry backoff, task ownership and the JSON
//! codec of their records.

use std::time::Duration;

use anykv_core::{Error, ErrorKind, Result};
use tokio::task::JoinHandle;

/// Exponential backoff with jitter, for the retries every recipe makes
/// while its backend is unreachable.
///
/// Attempt `n` (from 0) waits `initial × 2ⁿ`, capped at `max`, then
/// scaled by a random factor between 0.5 and 1 so that many clients
/// retrying after one outage do not come back in step.
///
/// ```
/// use std::time::Duration;
/// use anykv_recipes::Backoff;
/// let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
/// assert!(b.delay(0) <= Duration::from_millis(100));
/// assert!(b.delay(0) >= Duration::from_millis(50));
/// assert!(b.delay(30) <= Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backoff {
    /// The first delay, before jitter.
    pub initial: Duration,
    /// The longest delay, before jitter.
    pub max: Duration,
}

impl Default for Backoff {
    /// 100 ms, doubling up to 5 s.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max` (raised to `initial`
    /// if smaller).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
        }
    }

    /// The delay before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(30));
        let base = self.initial.saturating_mul(factor).min(self.max);
        base.mul_f64(0.5 + fastrand::f64() / 2.0)
    }
}

/// A deliberately broken variant of a recipe, for proving that the cases
/// catch it (the crate's own tests only). It lives here, beside what every
/// recipe imports, so that no recipe imports the cases.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flaw {
    CacheSkipsDeletes,
    CacheRelistEmitsAll,
    ElectionDoesNotWait,
    ElectionNeverLost,
    ElectionHerd,
    RegistryNoRepair,
    DiscoveryUnprotected,
    QueueClaimWithoutCompare,
    SemaphoreWithoutTxn,
    BarrierPassesEarly,
    CounterGetThenPut,
}

/// Aborts a background task when the last owner lets go of it.
#[derive(Debug)]
pub(crate) struct TaskGuard(pub(crate) JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether an error means the call cannot succeed however often it is
/// retried: a bad argument, a capability the backend lacks, a refusal,
/// or a closed store.
pub(crate) fn is_permanent(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::InvalidKey
            | ErrorKind::InvalidArgument
            | ErrorKind::ValueTooLarge
            | ErrorKind::Unsupported
            | ErrorKind::Unauthenticated
            | ErrorKind::PermissionDenied
            | ErrorKind::Closed
            | ErrorKind::Config
    )
}

/// A key segment (a service name, an instance id, an election name's
/// last part) checked against the key rules: one segment, no `/`.
pub(crate) fn check_segment(what: &str, segment: &str) -> Result<()> {
    if segment.contains('/') {
        return Err(Error::InvalidArgument(format!(
            "the {what} {segment:?} contains '/': it must be one key segment"
        )));
    }
    anykv_core::key::canonical_key(segment).map(|_| ())
}

/// `Unsupported` unless the store runs transactions, watches and (when
/// `leases`) leases: what the transaction recipes need.
pub(crate) fn require(
    store: &dyn anykv_core::Store,
    operation: &'static str,
    leases: bool,
) -> Result<()> {
    let caps = store.capabilities();
    if !caps.transactions || !caps.watch || (leases && !caps.leases) {
        let needs = if leases {
            "transactions, watches and leases"
        } else {
            "transactions and watches"
        };
        return Err(Error::unsupported(
            caps.backend,
            operation,
            format!("this recipe needs {needs}"),
        ));
    }
    Ok(())
}

/// A random id for a key segment: 16 hex digits.
pub(crate) fn random_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// The backoff between attempts that lost a race (a failed compare): short,
/// since each lost race means another client made progress.
pub(crate) fn race_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(1), Duration::from_millis(50))
}

/// Joins a canonical prefix (possibly empty) and a relative key.
pub(crate) fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_owned()
    } else {
        format!("{prefix}/{rest}")
    }
}

/// A JSON encoding error as an anykv error.
pub(crate) fn json_error(e: serde_json::Error) -> Error {
    Error::InvalidArgument(format!("cannot encode the record as JSON: {e}"))
}

/// Waits for `d`, or not at all when it is zero.
pub(crate) async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        for (attempt, base) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (9, 800),
            (u32::MAX, 800),
        ] {
            let d = b.delay(attempt);
            assert!(d <= Duration::from_millis(base), "{attempt}: {d:?}");
            assert!(d >= Duration::from_millis(base / 2), "{attempt}: {d:?}");
        }
        assert_eq!(
            Backoff::new(Duration::from_secs(2), Duration::ZERO).max,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn segments_are_single() {
        assert!(check_segment("service", "web").is_ok());
        assert_eq!(
            check_segment("service", "a/b").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            check_segment("service", "").unwrap_err().kind(),
            ErrorKind::InvalidKey
        );
        assert_eq!(
            check_segment("id", "..").unwrap_err().kind(),
            ErrorKind::InvalidKey
        );
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("p", "a"), "p/a");
    }
}
