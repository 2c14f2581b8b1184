//! The OpenDAL side: Apache OpenDAL's etcd and Redis services through a
//! plain `opendal::Operator`, the second reference of the get, put and
//! list workloads.

use anykv::Bytes;
use async_trait::async_trait;
use opendal::{ErrorKind, Operator};

use super::{err, ChangeStream, EtcdRaw, Kv, RedisRaw, Result};
use crate::Workload;

/// How the OpenDAL side removes its keys at the end: with the raw client
/// of the same server (OpenDAL's Redis service cannot list, so it cannot
/// find them), by prefix.
enum Cleaner {
    /// A range delete of `{prefix}/` (the raw side's own cleanup).
    Etcd(Box<EtcdRaw>),
    /// `SCAN MATCH` of the pattern, then `DEL`.
    Redis(Box<RedisRaw>, String),
    /// Nothing to remove outside the operator (a test's in-memory one).
    None,
}

/// The OpenDAL side: one `opendal::Operator` shared by every task, with
/// none of OpenDAL's optional layers, its root at `{root}/{namespace}/`.
///
/// get is `Operator::read` (NotFound is "absent"), put is
/// `Operator::write`. list, where the service can list (etcd, not
/// Redis), is `Operator::list` of `prefix/` — on etcd a keys-only prefix
/// range get — and then `Operator::read` of every entry that is not a
/// directory, all sent together, so the side reads the 10 values as the
/// others do. OpenDAL has no compare-and-swap, watch or lock on these
/// services, so [`Kv::supports`] is false for those workloads.
///
/// Both services check a connection out of a pool of their own for each
/// call, and check an idle one before handing it out (etcd: a `Status`
/// call; Redis: `PING`). The etcd pool holds up to 64 clients, each its
/// own connection; the Redis pool is sized by the caller.
pub struct OpenDal {
    op: Operator,
    list: bool,
    cleaner: Cleaner,
}

impl OpenDal {
    /// An operator on OpenDAL's etcd service at `endpoint` (`host:port`),
    /// its root at `prefix` (no leading or trailing `/`).
    pub async fn etcd(
        endpoint: &str,
        credentials: Option<(String, String)>,
        prefix: String,
    ) -> Result<Self> {
        let mut builder = opendal::services::Etcd::default()
            .endpoints(&format!("http://{endpoint}"))
            .root(&format!("/{prefix}/"));
        if let Some((user, password)) = &credentials {
            builder = builder.username(user).password(password);
        }
        let op = Operator::new(builder)?;
        let cleaner = Cleaner::Etcd(Box::new(
            EtcdRaw::connect(endpoint, credentials, prefix).await?,
        ));
        Ok(Self::with(op, cleaner))
    }

    /// An operator on OpenDAL's Redis service at `host:port`, database
    /// `db`, its root at `prefix` (no leading or trailing `/`), with a
    /// connection pool of `pool` connections.
    pub async fn redis(
        host: &str,
        port: u16,
        db: i64,
        credentials: Option<(String, String)>,
        prefix: String,
        pool: usize,
    ) -> Result<Self> {
        let mut builder = opendal::services::Redis::default()
            .endpoint(&format!("redis://{host}:{port}"))
            .db(db)
            .root(&format!("/{prefix}/"))
            .connection_pool_max_size(pool.max(1));
        if let Some((user, password)) = &credentials {
            builder = builder.username(user).password(password);
        }
        let op = Operator::new(builder)?;
        let pattern = format!("{}/*", glob_escape(&prefix));
        let raw = RedisRaw::connect(host, port, db, credentials, prefix).await?;
        Ok(Self::with(op, Cleaner::Redis(Box::new(raw), pattern)))
    }

    /// The side on an operator the caller built (its keys are not removed
    /// at the end, beyond what the workloads delete themselves).
    pub fn new(op: Operator) -> Self {
        Self::with(op, Cleaner::None)
    }

    fn with(op: Operator, cleaner: Cleaner) -> Self {
        let list = op.info().capability().list;
        OpenDal { op, list, cleaner }
    }
}

/// `s` with Redis's glob characters escaped, for `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn unsupported(what: &str) -> super::BenchError {
    err(format!("opendal: no {what} on this service"))
}

#[async_trait]
impl Kv for OpenDal {
    fn label(&self) -> &'static str {
        "opendal"
    }

    fn supports(&self, workload: Workload) -> bool {
        match workload {
            Workload::Get | Workload::Put => true,
            Workload::List => self.list,
            _ => false,
        }
    }

    async fn put(&self, key: &str, value: &Bytes) -> Result<()> {
        self.op.write(key, value.clone()).await?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self.op.read(key).await {
            Ok(buf) => Ok(Some(buf.to_bytes())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.op.delete(key).await?;
        Ok(())
    }

    async fn version(&self, _key: &str) -> Result<u64> {
        Err(unsupported("version"))
    }

    async fn cas(&self, _key: &str, _value: &Bytes, _expected: u64) -> Result<u64> {
        Err(unsupported("compare-and-swap"))
    }

    async fn txn2(
        &self,
        _a: &str,
        _b: &str,
        _value: &Bytes,
        _expected: (u64, u64),
    ) -> Result<(u64, u64)> {
        Err(unsupported("transactions"))
    }

    async fn list(&self, prefix: &str) -> Result<usize> {
        let entries = self.op.list(&format!("{prefix}/")).await?;
        let reads = entries
            .iter()
            .filter(|e| !e.path().ends_with('/'))
            .map(|e| async move {
                let value = self.op.read(e.path()).await?;
                Ok::<_, opendal::Error>((e.path().to_owned(), value.to_bytes()))
            });
        let pairs: Vec<(String, Bytes)> = futures::future::try_join_all(reads).await?;
        Ok(pairs.len())
    }

    async fn lock_release(&self, _name: &str, _task: usize) -> Result<()> {
        Err(unsupported("lock"))
    }

    async fn watchers(&self, _key: &str, _n: usize) -> Result<Vec<ChangeStream>> {
        Err(unsupported("watch"))
    }

    async fn cleanup(&self) -> Result<()> {
        match &self.cleaner {
            Cleaner::Etcd(raw) => raw.cleanup().await,
            Cleaner::Redis(raw, pattern) => raw.delete_matching(pattern).await,
            Cleaner::None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("bench/a-1"), "bench/a-1");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    /// The side's own logic on OpenDAL's in-memory service: NotFound is
    /// "absent", and list reads the keys under `prefix/` only, not the
    /// directory entries.
    #[tokio::test]
    async fn get_put_list_on_opendal_memory() {
        let op = Operator::new(opendal::services::Memory::default()).expect("memory operator");
        let side = OpenDal::new(op);
        assert!(side.supports(Workload::Get) && side.supports(Workload::List));
        assert!(!side.supports(Workload::Cas) && !side.supports(Workload::Lock));
        let v = Bytes::from_static(b"value");
        for k in ["l/t/1", "l/t/2", "l/t/3", "l/tx", "o/1", "l/t/sub/4"] {
            side.put(k, &v).await.expect("put");
        }
        assert_eq!(side.get("l/t/1").await.expect("get"), Some(v.clone()));
        assert_eq!(side.get("missing").await.expect("get"), None);
        assert_eq!(side.list("l/t").await.expect("list"), 3);
        side.delete("l/t/1").await.expect("delete");
        side.delete("l/t/1").await.expect("delete of an absent key");
        assert_eq!(side.list("l/t").await.expect("list"), 2);
        assert!(side.cas("l/t/2", &v, 1).await.is_err());
    }
}
