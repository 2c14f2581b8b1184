//! Assertions and helpers for writing cases. Every assertion compares exact,
//! typed values and returns a [`crate::Failure`] naming the file and line.

use std::future::Future;
use std::time::Duration;

use std::sync::Arc;

use anykv_core::{Bytes, KvPair, PutOptions, Store, WatchEvent, WatchStream};
use futures::StreamExt;

use crate::harness::Failure;

/// The slack allowed on every timing rule (TTL expiry, convergence).
pub const SLACK: Duration = Duration::from_secs(2);

/// How long a case waits for an event it expects.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Fails the case unless the condition holds.
///
/// ```
/// # use anykv_conformance::{check, CaseResult};
/// fn case() -> CaseResult {
///     check!(1 + 1 == 2, "arithmetic works");
///     Ok(())
/// }
/// assert!(case().is_ok());
/// ```
#[macro_export]
macro_rules! check {
    ($cond:expr $(,)?) => {
        if !$cond {
            return Err($crate::Failure::failed(format!(
                "{}:{}: check failed: {}",
                file!(),
                line!(),
                stringify!($cond)
            )));
        }
    };
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Failure::failed(format!(
                "{}:{}: {}",
                file!(),
                line!(),
                format!($($fmt)+)
            )));
        }
    };
}

/// Fails the case unless the two values are equal; the message shows both.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr $(,)?) => {
        match (&$left, &$right) {
            (left, right) => {
                if left != right {
                    return Err($crate::Failure::failed(format!(
                        "{}:{}: {} != {}: {:?} != {:?}",
                        file!(),
                        line!(),
                        stringify!($left),
                        stringify!($right),
                        left,
                        right
                    )));
                }
            }
        }
    };
    ($left:expr, $right:expr, $($fmt:tt)+) => {
        match (&$left, &$right) {
            (left, right) => {
                if left != right {
                    return Err($crate::Failure::failed(format!(
                        "{}:{}: {}: {:?} != {:?}",
                        file!(),
                        line!(),
                        format!($($fmt)+),
                        left,
                        right
                    )));
                }
            }
        }
    };
}

/// Fails the case unless the result is an error of the given
/// [`anykv_core::ErrorKind`]; evaluates to the error.
///
/// ```
/// # use anykv_conformance::{check_err, CaseResult};
/// # use anykv_core::Error;
/// fn case() -> CaseResult {
///     let r: Result<(), Error> = Err(Error::invalid_key("", "the key is empty"));
///     let e = check_err!(r, InvalidKey);
///     assert!(e.to_string().contains("empty"));
///     Ok(())
/// }
/// assert!(case().is_ok());
/// ```
#[macro_export]
macro_rules! check_err {
    ($result:expr, $kind:ident $(,)?) => {
        match $result {
            Ok(_) => {
                return Err($crate::Failure::failed(format!(
                    "{}:{}: {}: expected a {} error, got Ok",
                    file!(),
                    line!(),
                    stringify!($result),
                    stringify!($kind)
                )))
            }
            Err(e) if e.kind() == $crate::__private::ErrorKind::$kind => e,
            Err(e) => {
                return Err($crate::Failure::failed(format!(
                    "{}:{}: {}: expected a {} error, got {:?}: {}",
                    file!(),
                    line!(),
                    stringify!($result),
                    stringify!($kind),
                    e.kind(),
                    e
                )))
            }
        }
    };
}

/// Bytes from anything that converts.
pub fn bytes(v: impl Into<Bytes>) -> Bytes {
    v.into()
}

/// The next item of a stream, or `None` if it ended; fails if nothing comes
/// within `within`.
pub async fn next_item(
    stream: &mut WatchStream,
    within: Duration,
) -> Result<Option<anykv_core::Result<WatchEvent>>, Failure> {
    tokio::time::timeout(within, stream.next())
        .await
        .map_err(|_| Failure::failed(format!("no watch event within {within:?}")))
}

/// The next event; fails on a timeout, an error, or the stream's end.
pub async fn next_event(stream: &mut WatchStream, within: Duration) -> Result<WatchEvent, Failure> {
    match next_item(stream, within).await? {
        Some(Ok(ev)) => Ok(ev),
        Some(Err(e)) => Err(Failure::failed(format!(
            "the watch yielded an error ({}): {e}",
            e.kind()
        ))),
        None => Err(Failure::failed("the watch stream ended")),
    }
}

/// Reads the initial state of a watch up to its `Synced`: the `Put` pairs
/// in order and the `Synced` revision. Fails on any other event.
pub async fn read_initial(
    stream: &mut WatchStream,
    within: Duration,
) -> Result<(Vec<KvPair>, u64), Failure> {
    let mut pairs = Vec::new();
    loop {
        match next_event(stream, within).await? {
            WatchEvent::Put(kv) => pairs.push(kv),
            WatchEvent::Synced { revision } => return Ok((pairs, revision)),
            other => {
                return Err(Failure::failed(format!(
                    "unexpected event before Synced: {other:?}"
                )))
            }
        }
    }
}

/// Fails if the stream yields anything (an event, an error or its end)
/// within `quiet`.
pub async fn expect_silence(stream: &mut WatchStream, quiet: Duration) -> Result<(), Failure> {
    match tokio::time::timeout(quiet, stream.next()).await {
        Err(_) => Ok(()),
        Ok(item) => Err(Failure::failed(format!(
            "expected no watch event for {quiet:?}, got {item:?}"
        ))),
    }
}

/// Polls `condition` every 50 ms until it is true; fails with `what` if it
/// is still false after `within`.
pub async fn wait_until<F, Fut>(
    within: Duration,
    what: &str,
    mut condition: F,
) -> Result<(), Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, Failure>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::failed(format!(
                "{what}: not true within {within:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A put with the given options, returning the pair it wrote (checking
/// the revision is not 0).
pub async fn put_with(
    s: &Arc<dyn Store>,
    key: &str,
    value: &str,
    options: PutOptions,
) -> Result<KvPair, Failure> {
    let rev = s.put(key, bytes(value.to_owned()), options).await?;
    crate::check!(rev > 0, "put of {key:?} returned revision 0");
    Ok(KvPair::new(key, value.to_owned(), rev))
}

/// Whether `key` is gone by every read: `get`, `exists` and `list("")`.
pub async fn is_gone(s: &Arc<dyn Store>, key: &str) -> Result<bool, Failure> {
    Ok(s.get(key).await?.is_none()
        && !s.exists(key).await?
        && !s.list("").await?.iter().any(|p| p.key == key))
}

/// Waits until every key of `keys` is gone by every read, failing after
/// `within`.
pub async fn wait_gone(s: &Arc<dyn Store>, keys: &[&str], within: Duration) -> Result<(), Failure> {
    let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    wait_until(within, &format!("the keys {keys:?} are gone"), || {
        let s = s.clone();
        let keys = keys.clone();
        async move {
            for k in &keys {
                if !is_gone(&s, k).await? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    })
    .await
}

/// The next event must be `Delete` of `key` with a revision greater than
/// `after`; returns its revision.
pub async fn expect_delete(
    w: &mut WatchStream,
    key: &str,
    after: u64,
    within: Duration,
) -> Result<u64, Failure> {
    match next_event(w, within).await? {
        WatchEvent::Delete { key: k, revision } if k == key => {
            crate::check!(
                revision > after,
                "Delete of {key:?} has revision {revision}, not greater than {after}"
            );
            Ok(revision)
        }
        other => Err(Failure::failed(format!(
            "expected Delete of {key:?} after revision {after}, got {other:?}"
        ))),
    }
}
