//! Leadership with a lock and fencing tokens: workers take a lock in turn,
//! and the resource they write refuses a stale leader.
//!
//! ```text
//! cargo run --example leader                             # in-process store
//! cargo run --all-features --example leader -- etcd://127.0.0.1:2379/demo
//! cargo run --all-features --example leader -- redis://127.0.0.1:6379/0/demo
//! cargo run --all-features --example leader -- zk://127.0.0.1:2181/demo
//! ```
//!
//! Three workers, each with a store handle of its own (as separate
//! processes would have), take the lock `leader/lock` in turn. The holder
//! writes the shared report `leader/report` and passes its lock's fencing
//! token along with the write.
//!
//! A lock alone cannot stop a holder that *thinks* it still holds the lock:
//! a process paused longer than its lease (a long GC, a stopped VM) wakes
//! up and writes, although the lock passed to someone else meanwhile.
//! Checking `lost()` before writing narrows that window but cannot close
//! it. Fencing closes it: tokens strictly increase from one holder to the
//! next, and the resource remembers the highest token it accepted and
//! refuses any write carrying an older one. The demo plays that pause:
//! worker-2's session ends while it holds the lock, worker-3 takes over,
//! and worker-2's late write is refused.
//!
//! The report here is a key of the store itself, written by
//! compare-and-swap so the token check and the write are one atomic step;
//! a database would do the same check inside its own transaction. Every key
//! the demo writes is under `leader/`, which it empties first and last. The
//! default URL is the named in-process store `memory://leader/demo`, which
//! every handle of the process shares (a plain `memory://` would give each
//! worker a private store, so the demo uses the named one instead).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anykv::{ErrorKind, LockGuard, LockOptions, PutOptions, Store};
use tokio::task::JoinHandle;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// The lock the workers take turns on.
const LOCK: &str = "leader/lock";
/// The protected resource.
const REPORT: &str = "leader/report";
/// The lease behind a lock: if a holder dies, the next worker gets the lock
/// this long after its last keep-alive (raised to the backend's minimum).
const LOCK_TTL: Duration = Duration::from_secs(5);
/// The longest the demo waits for any one step.
const WAIT: Duration = Duration::from_secs(10);
/// The demo's URL when none is given: a named in-process store.
const DEFAULT_URL: &str = "memory://leader/demo";

#[tokio::main]
async fn main() -> ExitCode {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("ANYKV_URL").ok())
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    let url = shared_url(&url);
    let store = match anykv::open(&url).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("leader: cannot open {}: {e}", anykv::redact_url(&url));
            return ExitCode::from(2);
        }
    };
    println!(
        "Opened {} (backend: {}).",
        anykv::redact_url(&url),
        store.capabilities().backend
    );
    let result = demo(&url, &store, &mut std::io::stdout()).await;
    let _ = store.close().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("leader: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `memory://` opens a private store per handle, so the workers would never
/// see each other's locks: use the demo's named store instead.
fn shared_url(url: &str) -> String {
    match anykv::Url::parse(url) {
        Ok(u) if u.scheme() == "memory" && u.host_str().unwrap_or("").is_empty() => {
            DEFAULT_URL.to_string()
        }
        _ => url.to_string(),
    }
}

// ---------------------------------------------------------------- the resource

/// What the report said about a fenced write.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Accepted,
    /// Refused: the report has already accepted this newer token.
    Refused {
        newer: u64,
    },
}

/// The protected resource: a report that accepts a write only with a
/// fencing token at least as new as every token it accepted before.
struct Report {
    store: Arc<dyn Store>,
}

impl Report {
    /// The report's record: `token=N` on the first line, then the text.
    fn encode(token: u64, text: &str) -> String {
        format!("token={token}\n{text}")
    }

    fn decode(value: &[u8]) -> Result<(u64, String)> {
        let text = std::str::from_utf8(value)?;
        let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
        let token = first
            .strip_prefix("token=")
            .ok_or("the report has no token")?
            .parse()?;
        Ok((token, rest.to_string()))
    }

    /// Writes `text` if `token` is not older than the report's. The check
    /// and the write are one compare-and-swap on the report's revision: if
    /// another writer got in between, read again and decide again.
    async fn write(&self, token: u64, text: &str) -> Result<Outcome> {
        loop {
            let current = self.store.get(REPORT).await?;
            let expected = match &current {
                Some(kv) => {
                    let (newest, _) = Report::decode(&kv.value)?;
                    if token < newest {
                        return Ok(Outcome::Refused { newer: newest });
                    }
                    Some(kv.revision)
                }
                None => None,
            };
            let value = Report::encode(token, text);
            match self
                .store
                .atomic_put(REPORT, value.into(), expected, PutOptions::new())
                .await
            {
                Ok(_) => return Ok(Outcome::Accepted),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::KeyExists | ErrorKind::KeyModified | ErrorKind::KeyNotFound
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The report's current text and the token that wrote it.
    async fn read(&self) -> Result<Option<(u64, String)>> {
        match self.store.get(REPORT).await? {
            Some(kv) => Ok(Some(Report::decode(&kv.value)?)),
            None => Ok(None),
        }
    }
}

// ---------------------------------------------------------------- workers

/// A worker: a name and a store handle of its own, on which it takes the
/// lock (so its session, and the lease behind its lock, are its own).
struct Worker {
    name: String,
    store: Arc<dyn Store>,
}

impl Worker {
    async fn open(url: &str, name: &str) -> Result<Worker> {
        Ok(Worker {
            name: name.to_string(),
            store: anykv::open(url).await?,
        })
    }

    /// Waits for the lock (at most `WAIT`).
    async fn lead(&self) -> Result<LockGuard> {
        let ttl = LOCK_TTL.max(self.store.capabilities().min_ttl);
        let options = LockOptions::new().with_ttl(ttl).with_timeout(WAIT);
        Ok(self.store.lock(LOCK, options).await?)
    }

    /// Waits for the lock in a task of its own.
    fn wait_for_lock(self: Arc<Self>) -> JoinHandle<Result<LockGuard>> {
        tokio::spawn(async move { self.lead().await })
    }

    /// Writes the report with the token of the lock it holds (or held).
    async fn write_report(
        &self,
        report: &Report,
        token: u64,
        out: &mut impl Write,
    ) -> Result<Outcome> {
        let text = format!("written by {}", self.name);
        let result = report.write(token, &text).await?;
        match &result {
            Outcome::Accepted => writeln!(
                out,
                "{} wrote the report with token {token}: accepted.",
                self.name
            )?,
            Outcome::Refused { newer } => writeln!(
                out,
                "{} wrote the report with token {token}: refused, the report has already \
                 accepted token {newer}.",
                self.name
            )?,
        }
        Ok(result)
    }
}

// ---------------------------------------------------------------- the demo

/// The demo: workers take the lock in turn; a stale leader is refused.
/// `url` opens the workers' handles; `store` holds the report.
pub async fn demo(url: &str, store: &Arc<dyn Store>, out: &mut impl Write) -> Result<()> {
    store.delete_tree("leader").await?;
    let result = demo_steps(url, store, out).await;
    store.delete_tree("leader").await?;
    result
}

async fn demo_steps(url: &str, store: &Arc<dyn Store>, out: &mut impl Write) -> Result<()> {
    let report = Report {
        store: store.clone(),
    };
    let w1 = Arc::new(Worker::open(url, "worker-1").await?);
    let w2 = Arc::new(Worker::open(url, "worker-2").await?);
    let w3 = Arc::new(Worker::open(url, "worker-3").await?);

    // worker-1 leads; worker-2 asks for the lock and waits its turn.
    let g1 = w1.lead().await?;
    writeln!(
        out,
        "worker-1 took the lock with token {}.",
        g1.fencing_token()
    )?;
    w1.write_report(&report, g1.fencing_token(), out).await?;
    let waiter = w2.clone().wait_for_lock();
    writeln!(out, "worker-2 is waiting for the lock.")?;
    g1.release().await?;
    writeln!(out, "worker-1 released the lock.")?;
    let g2 = tokio::time::timeout(WAIT, waiter).await???;
    writeln!(
        out,
        "worker-2 took the lock with token {}.",
        g2.fencing_token()
    )?;
    w2.write_report(&report, g2.fencing_token(), out).await?;

    // worker-3 asks for the lock while worker-2 holds it.
    let waiter = w3.clone().wait_for_lock();
    writeln!(out, "worker-3 is waiting for the lock.")?;

    // worker-2 stalls, and its session ends meanwhile: here we close its
    // handle, which is what a pause longer than the lock's lease comes to.
    let stale_token = g2.fencing_token();
    let lost = g2.lost();
    w2.store.close().await?;
    tokio::time::timeout(WAIT, lost).await?;
    writeln!(
        out,
        "worker-2 stalled and its session ended: its lock is lost, though worker-2 has not noticed."
    )?;
    let g3 = tokio::time::timeout(WAIT, waiter).await???;
    writeln!(
        out,
        "worker-3 took the lock with token {}.",
        g3.fencing_token()
    )?;
    if g3.fencing_token() <= stale_token {
        return Err("the new holder's token is not greater than the old one's".into());
    }
    w3.write_report(&report, g3.fencing_token(), out).await?;

    // worker-2 wakes up and finishes the write it started as leader.
    w2.write_report(&report, stale_token, out).await?;
    drop(g2);

    g3.release().await?;
    writeln!(out, "worker-3 released the lock.")?;
    if let Some((token, text)) = report.read().await? {
        writeln!(out, "The report says {text:?} (token {token}).")?;
    }
    w1.store.close().await?;
    w3.store.close().await?;
    Ok(())
}
