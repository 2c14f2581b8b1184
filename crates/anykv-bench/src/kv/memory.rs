//! The memory baseline: a `BTreeMap` behind a `tokio::sync::RwLock`, the
//! raw side of the memory backend.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use anykv::Bytes;
use async_trait::async_trait;
use futures::stream::{self, StreamExt};

use super::{err, ChangeStream, Kv, Result};

struct MemState {
    map: BTreeMap<String, (Bytes, u64)>,
    revision: u64,
}

/// The memory backend's baseline: a `BTreeMap` behind a
/// `tokio::sync::RwLock`, a `broadcast` channel for watchers, and a
/// `tokio::sync::Mutex` per lock name.
pub struct MemoryBaseline {
    prefix: String,
    state: tokio::sync::RwLock<MemState>,
    changes: tokio::sync::broadcast::Sender<Arc<str>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl MemoryBaseline {
    /// An empty map; every key is stored under `prefix/`, as the anykv
    /// side stores its keys under a prefix of its own.
    pub fn new(prefix: impl Into<String>) -> Self {
        MemoryBaseline {
            prefix: prefix.into(),
            state: tokio::sync::RwLock::new(MemState {
                map: BTreeMap::new(),
                revision: 0,
            }),
            changes: tokio::sync::broadcast::channel(4096).0,
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn k(&self, key: &str) -> String {
        format!("{}/{key}", self.prefix)
    }

    fn write(&self, st: &mut MemState, key: String, value: &Bytes) -> u64 {
        st.revision += 1;
        let rev = st.revision;
        if self.changes.receiver_count() > 0 {
            let _ = self.changes.send(Arc::from(key.as_str()));
        }
        st.map.insert(key, (value.clone(), rev));
        rev
    }
}

#[async_trait]
impl Kv for MemoryBaseline {
    fn label(&self) -> &'static str {
        "BTreeMap+RwLock"
    }

    async fn put(&self, key: &str, value: &Bytes) -> Result<()> {
        let key = self.k(key);
        let mut st = self.state.write().await;
        self.write(&mut st, key, value);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let key = self.k(key);
        Ok(self
            .state
            .read()
            .await
            .map
            .get(&key)
            .map(|(v, _)| v.clone()))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = self.k(key);
        let mut st = self.state.write().await;
        st.revision += 1;
        st.map.remove(&key);
        Ok(())
    }

    async fn version(&self, key: &str) -> Result<u64> {
        match self.state.read().await.map.get(&self.k(key)) {
            Some((_, r)) => Ok(*r),
            None => Err(err(format!("baseline: {key} is missing"))),
        }
    }

    async fn cas(&self, key: &str, value: &Bytes, expected: u64) -> Result<u64> {
        let full = self.k(key);
        let mut st = self.state.write().await;
        match st.map.get(&full) {
            Some((_, r)) if *r == expected => Ok(self.write(&mut st, full, value)),
            _ => Err(err(format!("baseline: compare-and-swap of {key} failed"))),
        }
    }

    async fn txn2(
        &self,
        a: &str,
        b: &str,
        value: &Bytes,
        expected: (u64, u64),
    ) -> Result<(u64, u64)> {
        let (a, b) = (self.k(a), self.k(b));
        let mut st = self.state.write().await;
        let holds = |k: &String, want: u64| st.map.get(k).is_some_and(|(_, r)| *r == want);
        if !(holds(&a, expected.0) && holds(&b, expected.1)) {
            return Err(err("baseline: a two-key transaction failed its compares"));
        }
        Ok((self.write(&mut st, a, value), self.write(&mut st, b, value)))
    }

    async fn list(&self, prefix: &str) -> Result<usize> {
        let start = format!("{}/", self.k(prefix));
        let end = format!("{}0", self.k(prefix));
        let st = self.state.read().await;
        let pairs: Vec<(String, Bytes, u64)> = st
            .map
            .range(start..end)
            .map(|(k, (v, r))| (k[self.prefix.len() + 1..].to_owned(), v.clone(), *r))
            .collect();
        Ok(pairs.len())
    }

    async fn lock_release(&self, name: &str, _task: usize) -> Result<()> {
        let lock = {
            let mut locks = self.locks.lock().map_err(|_| err("poisoned"))?;
            locks.entry(self.k(name)).or_default().clone()
        };
        let guard = lock.lock().await;
        drop(guard);
        Ok(())
    }

    async fn watchers(&self, key: &str, n: usize) -> Result<Vec<ChangeStream>> {
        let key: Arc<str> = Arc::from(self.k(key).as_str());
        Ok((0..n)
            .map(|_| {
                let rx = self.changes.subscribe();
                let key = key.clone();
                stream::unfold(rx, move |mut rx| {
                    let key = key.clone();
                    async move {
                        loop {
                            match rx.recv().await {
                                Ok(k) if k == key => return Some((Ok(()), rx)),
                                Ok(_) => {}
                                Err(e) => {
                                    return Some((Err(err(format!("baseline watch: {e}"))), rx))
                                }
                            }
                        }
                    }
                })
                .boxed()
            })
            .collect())
    }

    async fn cleanup(&self) -> Result<()> {
        let mut st = self.state.write().await;
        st.map.clear();
        Ok(())
    }
}
