//! The raw ZooKeeper side: `zookeeper-client`, used the way a careful user
//! would.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use anykv::Bytes;
use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use zookeeper_client as zk;

use super::{err, ChangeStream, Kv, Result};

/// The raw ZooKeeper side: one session shared by every task; a key is the
/// znode `{root}/{namespace}/{key}` holding the value. get is `get_data`;
/// put is `set_data` (creating the node if it is absent); CAS is
/// `set_data` with the expected data version; list is `get_children` then
/// `get_data` of every child, sent together; a lock is the
/// ephemeral-sequential recipe (the lowest sequence holds it, a waiter
/// watches its predecessor); watchers are persistent watches of the node.
pub struct ZkRaw {
    client: zk::Client,
    base: String,
    dirs: Mutex<HashSet<String>>,
}

impl ZkRaw {
    /// Connects to `host:port` (with digest credentials, if given); every
    /// node lives under the absolute path `base`.
    pub async fn connect(
        cluster: &str,
        credentials: Option<(String, String)>,
        base: String,
    ) -> Result<Self> {
        let mut connector = zk::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .with_connection_timeout(Duration::from_secs(5));
        if let Some((user, password)) = credentials {
            connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
        }
        let client = tokio::time::timeout(Duration::from_secs(15), connector.connect(cluster))
            .await
            .map_err(|_| err(format!("zookeeper: cannot connect to {cluster}")))??;
        Ok(ZkRaw {
            client,
            base,
            dirs: Mutex::new(HashSet::new()),
        })
    }

    fn p(&self, key: &str) -> String {
        format!("{}/{key}", self.base)
    }

    fn opts() -> zk::CreateOptions<'static> {
        zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
    }

    async fn ensure_dir(&self, dir: &str) -> Result<()> {
        if self.dirs.lock().map_err(|_| err("poisoned"))?.contains(dir) {
            return Ok(());
        }
        match self.client.mkdir(dir, &Self::opts()).await {
            Ok(()) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(e.into()),
        }
        self.dirs
            .lock()
            .map_err(|_| err("poisoned"))?
            .insert(dir.to_owned());
        Ok(())
    }

    async fn delete_recursive(&self, path: &str) -> Result<()> {
        let children = match self.client.list_children(path).await {
            Ok(c) => c,
            Err(zk::Error::NoNode) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let results: Vec<Result<()>> = stream::iter(children)
            .map(|c| {
                let child = format!("{path}/{c}");
                async move { Box::pin(self.delete_recursive(&child)).await }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        for r in results {
            r?;
        }
        match self.client.delete(path, None).await {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("/")
}

#[async_trait]
impl Kv for ZkRaw {
    fn label(&self) -> &'static str {
        "zookeeper-client"
    }

    async fn put(&self, key: &str, value: &Bytes) -> Result<()> {
        let path = self.p(key);
        match self.client.set_data(&path, value, None).await {
            Ok(_) => Ok(()),
            Err(zk::Error::NoNode) => {
                self.ensure_dir(parent(&path)).await?;
                match self.client.create(&path, value, &Self::opts()).await {
                    Ok(_) => Ok(()),
                    Err(zk::Error::NodeExists) => {
                        self.client.set_data(&path, value, None).await?;
                        Ok(())
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self.client.get_data(&self.p(key)).await {
            Ok((data, _)) => Ok(Some(Bytes::from(data))),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.client.delete(&self.p(key), None).await {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn version(&self, key: &str) -> Result<u64> {
        let (_, stat) = self.client.get_data(&self.p(key)).await?;
        Ok(stat.version as u64)
    }

    async fn cas(&self, key: &str, value: &Bytes, expected: u64) -> Result<u64> {
        let stat = self
            .client
            .set_data(&self.p(key), value, Some(expected as i32))
            .await?;
        Ok(stat.version as u64)
    }

    async fn txn2(
        &self,
        a: &str,
        b: &str,
        value: &Bytes,
        expected: (u64, u64),
    ) -> Result<(u64, u64)> {
        // One multi: each set_data carries its expected version, which is
        // the compare.
        let mut multi = self.client.new_multi_writer();
        multi.add_set_data(&self.p(a), value, Some(expected.0 as i32))?;
        multi.add_set_data(&self.p(b), value, Some(expected.1 as i32))?;
        let results = multi
            .commit()
            .await
            .map_err(|e| err(format!("zookeeper-client: a two-key multi failed: {e}")))?;
        match results.as_slice() {
            [zk::MultiWriteResult::SetData { stat: sa }, zk::MultiWriteResult::SetData { stat: sb }] => {
                Ok((sa.version as u64, sb.version as u64))
            }
            other => Err(err(format!(
                "zookeeper-client: unexpected multi results {other:?}"
            ))),
        }
    }

    async fn list(&self, prefix: &str) -> Result<usize> {
        let dir = self.p(prefix);
        let children = match self.client.list_children(&dir).await {
            Ok(c) => c,
            Err(zk::Error::NoNode) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let reads = futures::future::join_all(children.iter().map(|c| {
            let path = format!("{dir}/{c}");
            let client = self.client.clone();
            async move { client.get_data(&path).await }
        }))
        .await;
        let mut pairs = Vec::with_capacity(children.len());
        for (name, r) in children.into_iter().zip(reads) {
            match r {
                Ok((data, _)) => pairs.push((name, data)),
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(e.into()),
            }
        }
        pairs.sort();
        Ok(pairs.len())
    }

    async fn lock_release(&self, name: &str, _task: usize) -> Result<()> {
        let dir = self.p(&format!("@locks/{name}"));
        self.ensure_dir(&dir).await?;
        let mode = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        let (_, seq) = self
            .client
            .create(&format!("{dir}/lock-"), b"", &mode)
            .await?;
        let mine = format!("lock-{seq}");
        loop {
            let mut children = self.client.list_children(&dir).await?;
            children.sort();
            let Some(pos) = children.iter().position(|c| *c == mine) else {
                return Err(err("zookeeper: the lock node vanished"));
            };
            if pos == 0 {
                break;
            }
            let pred = format!("{dir}/{}", children[pos - 1]);
            let (stat, watcher) = self.client.check_and_watch_stat(&pred).await?;
            if stat.is_some() {
                watcher.changed().await;
            }
        }
        self.client.delete(&format!("{dir}/{mine}"), None).await?;
        Ok(())
    }

    async fn watchers(&self, key: &str, n: usize) -> Result<Vec<ChangeStream>> {
        let path = self.p(key);
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let w = self
                .client
                .watch(&path, zk::AddWatchMode::Persistent)
                .await?;
            out.push(
                stream::unfold(w, |mut w| async move {
                    loop {
                        let e = w.changed().await;
                        match e.event_type {
                            zk::EventType::NodeDataChanged => return Some((Ok(()), w)),
                            zk::EventType::Session if e.session_state.is_terminated() => {
                                return Some((Err(err("zookeeper: the session ended")), w))
                            }
                            _ => {}
                        }
                    }
                })
                .boxed(),
            );
        }
        Ok(out)
    }

    async fn cleanup(&self) -> Result<()> {
        self.delete_recursive(&self.base).await
    }
}
