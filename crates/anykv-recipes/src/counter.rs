//! An atomic counter on one key: [`Counter`].
//!
//! # How it works
//!
//! The counter is a signed 64-bit integer stored as decimal text in one key
//! (an absent key counts as 0). [`Counter::add`] reads the key, then runs a
//! transaction that writes the new value only if the key is still at the
//! revision it read (or still absent); when another client wrote in
//! between, the compare fails, nothing is written, and it reads again and
//! retries after a short random pause. Every lost race means another add
//! landed, so the counter always makes progress; each add is applied
//! exactly once and returns the value it produced, so no two adds of one
//! counter return the same value.
//!
//! An add that fails with `Timeout` or `Unavailable` may or may not have
//! been applied (the transaction's reply was lost); read the counter to
//! find out.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anykv_core::Result<()> {
//! use anykv_recipes::Counter;
//! let store = anykv_memory::MemoryStore::new().into_dyn();
//! let visits = Counter::new(store.clone(), "stats/visits")?;
//! assert_eq!(visits.get().await?, 0);
//! assert_eq!(visits.add(5).await?, 5);
//! assert_eq!(visits.add(-2).await?, 3);
//! assert_eq!(store.get("stats/visits").await?.unwrap().value, "3");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use anykv_core::{Bytes, Compare, Error, KvPair, Result, Store, Txn, TxnOp};

use crate::util::{pause, race_backoff, require};

/// A signed 64-bit counter on one key; see the [module](self).
#[derive(Clone)]
pub struct Counter {
    store: Arc<dyn Store>,
    key: String,
    #[cfg(test)]
    pub(crate) flaw: Option<crate::util::Flaw>,
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counter")
            .field("store", &self.store)
            .field("key", &self.key)
            .finish()
    }
}

/// The value a counter's pair holds, or an error naming the key.
fn parse(key: &str, pair: Option<&KvPair>) -> Result<i64> {
    let Some(pair) = pair else {
        return Ok(0);
    };
    std::str::from_utf8(&pair.value)
        .ok()
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "the counter key {key:?} does not hold a decimal 64-bit integer"
            ))
        })
}

impl Counter {
    /// The counter at `key` of `store` (the key is checked here; nothing is
    /// read or written yet).
    pub fn new(store: Arc<dyn Store>, key: &str) -> Result<Counter> {
        let key = anykv_core::key::normalize_key(key)?;
        Ok(Counter {
            store,
            key,
            #[cfg(test)]
            flaw: None,
        })
    }

    /// The counter's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The current value (0 when the key is absent). `InvalidArgument` if
    /// the key holds something other than a decimal integer.
    pub async fn get(&self) -> Result<i64> {
        let pair = self.store.get(&self.key).await?;
        parse(&self.key, pair.as_ref())
    }

    /// Adds `delta` (negative to subtract) atomically and returns the new
    /// value. `InvalidArgument` if the result would overflow an `i64` or the
    /// key holds something other than a decimal integer; `Unsupported` on
    /// a store without transactions.
    pub async fn add(&self, delta: i64) -> Result<i64> {
        require(self.store.as_ref(), "counter add", false)?;
        let mut attempt = 0u32;
        loop {
            let pair = self.store.get(&self.key).await?;
            let current = parse(&self.key, pair.as_ref())?;
            let next = current.checked_add(delta).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "adding {delta} to the counter {:?} ({current}) overflows",
                    self.key
                ))
            })?;
            let body = Bytes::from(next.to_string());
            #[cfg(test)]
            if self.flaw == Some(crate::util::Flaw::CounterGetThenPut) {
                // The broken variant: a plain put, whatever happened since
                // the read (the yield stands for a network round trip).
                tokio::task::yield_now().await;
                self.store
                    .put(&self.key, body, anykv_core::PutOptions::new())
                    .await?;
                return Ok(next);
            }
            let compare = match &pair {
                Some(pair) => Compare::revision(self.key.clone(), pair.revision),
                None => Compare::absent(self.key.clone()),
            };
            let txn = Txn::new()
                .when(compare)
                .then(TxnOp::put(self.key.clone(), body));
            if self.store.txn(txn).await?.succeeded {
                return Ok(next);
            }
            pause(race_backoff().delay(attempt)).await;
            attempt = attempt.saturating_add(1).min(6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anykv_core::{ErrorKind, PutOptions};

    #[tokio::test]
    async fn malformed_values_and_overflow_are_refused() {
        let store = anykv_memory::MemoryStore::new().into_dyn();
        let counter = Counter::new(store.clone(), "c").expect("a counter");
        store
            .put("c", "many".into(), PutOptions::new())
            .await
            .expect("a put");
        assert_eq!(
            counter.get().await.unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        store
            .put("c", i64::MAX.to_string().into(), PutOptions::new())
            .await
            .expect("a put");
        assert_eq!(
            counter.add(1).await.unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(counter.add(-1).await.expect("an add"), i64::MAX - 1);
        assert_eq!(
            Counter::new(store, "a//b").unwrap_err().kind(),
            ErrorKind::InvalidKey
        );
    }
}
