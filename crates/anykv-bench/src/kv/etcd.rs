//! The raw etcd side: `etcd-client`, used the way a careful user would.

use std::collections::HashMap;
use std::time::Duration;

use anykv::Bytes;
use async_trait::async_trait;
use futures::stream::{self, StreamExt};

use super::{err, ChangeStream, Kv, Result};

/// The raw etcd side: one `etcd_client::Client` shared by every task; keys
/// under `{root}/{namespace}/`. CAS is a transaction comparing the mod
/// revision; list is a range get; a lock is etcd's Lock API with one lease
/// per contender, granted once (as a long-lived session would); a watcher
/// is one etcd watch stream each.
pub struct EtcdRaw {
    client: etcd_client::Client,
    prefix: String,
    leases: tokio::sync::Mutex<HashMap<usize, i64>>,
}

impl EtcdRaw {
    /// Connects to `endpoint` (`host:port`) with optional credentials.
    pub async fn connect(
        endpoint: &str,
        credentials: Option<(String, String)>,
        prefix: String,
    ) -> Result<Self> {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(5));
        if let Some((user, password)) = credentials {
            options = options.with_user(user, password);
        }
        let client = etcd_client::Client::connect([format!("http://{endpoint}")], Some(options))
            .await
            .map_err(|e| err(format!("etcd-client: cannot connect to {endpoint}: {e}")))?;
        Ok(EtcdRaw {
            client,
            prefix,
            leases: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    fn k(&self, key: &str) -> String {
        format!("{}/{key}", self.prefix)
    }

    async fn lease_of(&self, task: usize) -> Result<i64> {
        let mut leases = self.leases.lock().await;
        if let Some(id) = leases.get(&task) {
            return Ok(*id);
        }
        let id = self.client.lease_client().grant(3600, None).await?.id();
        leases.insert(task, id);
        Ok(id)
    }
}

#[async_trait]
impl Kv for EtcdRaw {
    fn label(&self) -> &'static str {
        "etcd-client"
    }

    async fn put(&self, key: &str, value: &Bytes) -> Result<()> {
        self.client
            .kv_client()
            .put(self.k(key), value.to_vec(), None)
            .await?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let mut resp = self.client.kv_client().get(self.k(key), None).await?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .next()
            .map(|kv| Bytes::from(kv.into_key_value().1)))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client.kv_client().delete(self.k(key), None).await?;
        Ok(())
    }

    async fn version(&self, key: &str) -> Result<u64> {
        let resp = self.client.kv_client().get(self.k(key), None).await?;
        match resp.kvs().first() {
            Some(kv) => Ok(kv.mod_revision() as u64),
            None => Err(err(format!("etcd-client: {key} is missing"))),
        }
    }

    async fn cas(&self, key: &str, value: &Bytes, expected: u64) -> Result<u64> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let full = self.k(key);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                full.clone(),
                CompareOp::Equal,
                expected as i64,
            )])
            .and_then([TxnOp::put(full, value.to_vec(), None)]);
        let resp = self.client.kv_client().txn(txn).await?;
        if !resp.succeeded() {
            return Err(err(format!(
                "etcd-client: compare-and-swap of {key} failed"
            )));
        }
        Ok(resp.header().map(|h| h.revision() as u64).unwrap_or(0))
    }

    async fn txn2(
        &self,
        a: &str,
        b: &str,
        value: &Bytes,
        expected: (u64, u64),
    ) -> Result<(u64, u64)> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let (a, b) = (self.k(a), self.k(b));
        let txn = Txn::new()
            .when([
                Compare::mod_revision(a.clone(), CompareOp::Equal, expected.0 as i64),
                Compare::mod_revision(b.clone(), CompareOp::Equal, expected.1 as i64),
            ])
            .and_then([
                TxnOp::put(a, value.to_vec(), None),
                TxnOp::put(b, value.to_vec(), None),
            ]);
        let resp = self.client.kv_client().txn(txn).await?;
        if !resp.succeeded() {
            return Err(err(
                "etcd-client: a two-key transaction failed its compares",
            ));
        }
        let rev = resp.header().map(|h| h.revision() as u64).unwrap_or(0);
        Ok((rev, rev))
    }

    async fn list(&self, prefix: &str) -> Result<usize> {
        let start = format!("{}/", self.k(prefix));
        let end = format!("{}0", self.k(prefix));
        let mut resp = self
            .client
            .kv_client()
            .get(start, Some(etcd_client::GetOptions::new().with_range(end)))
            .await?;
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = resp
            .take_kvs()
            .into_iter()
            .map(|kv| kv.into_key_value())
            .collect();
        Ok(pairs.len())
    }

    async fn lock_release(&self, name: &str, task: usize) -> Result<()> {
        let lease = self.lease_of(task).await?;
        let resp = self
            .client
            .lock_client()
            .lock(
                self.k(&format!("@locks/{name}")),
                Some(etcd_client::LockOptions::new().with_lease(lease)),
            )
            .await?;
        self.client
            .lock_client()
            .unlock(resp.key().to_vec())
            .await?;
        Ok(())
    }

    async fn watchers(&self, key: &str, n: usize) -> Result<Vec<ChangeStream>> {
        let full = self.k(key);
        let client = self.client.clone();
        let opened: Vec<Result<ChangeStream>> = stream::iter(0..n)
            .map(|_| {
                let client = client.clone();
                let full = full.clone();
                async move {
                    let mut s = client.watch_client().watch(full, None).await?;
                    // The first response confirms the watch.
                    match s.message().await? {
                        Some(r) if r.created() => {}
                        _ => return Err(err("etcd-client: the watch was not created")),
                    }
                    let st: ChangeStream =
                        stream::unfold((s, 0usize), |(mut s, mut pending)| async move {
                            loop {
                                if pending > 0 {
                                    pending -= 1;
                                    return Some((Ok(()), (s, pending)));
                                }
                                match s.message().await {
                                    Ok(Some(r)) => pending = r.events().len(),
                                    Ok(None) => return None,
                                    Err(e) => return Some((Err(e.into()), (s, 0))),
                                }
                            }
                        })
                        .boxed();
                    Ok(st)
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        opened.into_iter().collect()
    }

    async fn cleanup(&self) -> Result<()> {
        let start = format!("{}/", self.prefix);
        let end = format!("{}0", self.prefix);
        self.client
            .kv_client()
            .delete(
                start,
                Some(etcd_client::DeleteOptions::new().with_range(end)),
            )
            .await?;
        let leases: Vec<i64> = self.leases.lock().await.drain().map(|(_, v)| v).collect();
        for id in leases {
            let _ = self.client.lease_client().revoke(id).await;
        }
        Ok(())
    }
}
