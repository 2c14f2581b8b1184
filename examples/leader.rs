//! Leader election with fencing tokens: workers campaign in turn, and the
//! resource they write refuses a stale leader.
//!
//! ```text
//! cargo run --example leader                             # in-process store
//! cargo run --all-features --example leader -- etcd://127.0.0.1:2379/demo
//! cargo run --all-features --example leader -- redis://127.0.0.1:6379/0/demo
//! cargo run --all-features --example leader -- zk://127.0.0.1:2181/demo
//! ```
//!
//! Three workers, each with a store handle of its own (as separate
//! processes would have), campaign in the election `leader/writers` with
//! `anykv::recipes::Election`. The leader writes the shared report
//! `leader/report` and passes its leadership's fencing token along with
//! the write; candidates queue, each waiting on the one before it, and
//! resigning hands leadership to the next.
//!
//! Leadership alone cannot stop a leader that *thinks* it still leads: a
//! process paused longer than its lease (a long GC, a stopped VM) wakes up
//! and writes, although leadership passed to someone else meanwhile.
//! Checking `lost()` before writing narrows that window but cannot close
//! it. Fencing closes it: tokens strictly increase from one term to the
//! next, and the resource remembers the highest token it accepted and
//! refuses any write carrying an older one. The demo plays that pause:
//! worker-2's session ends while it leads, worker-3 takes over, and
//! worker-2's late write is refused. (The lines say "the lock": leadership
//! is a lock that others can observe.)
//!
//! The report here is a key of the store itself, written by
//! compare-and-swap so the token check and the write are one atomic step;
//! a database would do the same check inside its own transaction. Every key
//! the demo writes is under `leader/`, which it empties first and last. The
//! default URL is the named in-process store `memory://leader/demo`, which
//! every handle of the process shares (a plain `memory://` would give each
//! worker a private store, so the demo uses the named one instead).

#[macro_use]
#[path = "support/say.rs"]
mod say;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anykv::recipes::{Election, ElectionOptions, Leadership};
use anykv::{ErrorKind, PutOptions, Store};
use tokio::task::JoinHandle;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the election lives: candidates are `leader/writers/{id}`.
const ELECTIONS: &str = "leader";
/// The election the workers campaign in.
const ELECTION: &str = "writers";
/// The protected resource.
const REPORT: &str = "leader/report";
/// A candidate's lease: if a leader dies, the next worker leads this long
/// after its last keep-alive (raised to the backend's minimum).
const LEASE_TTL: Duration = Duration::from_secs(5);
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
    let result = demo(&url, &store, &mut say::Stdout).await;
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
/// see each other's candidacies: use the demo's named store instead.
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

/// A worker: a name and a store handle of its own, on which it campaigns
/// (so its session, and the lease behind its candidacy, are its own).
struct Worker {
    name: String,
    store: Arc<dyn Store>,
    election: Election,
}

impl Worker {
    async fn open(url: &str, name: &str) -> Result<Worker> {
        let store = anykv::open(url).await?;
        let options = ElectionOptions::new()
            .with_prefix(ELECTIONS)
            .with_ttl(LEASE_TTL);
        Ok(Worker {
            name: name.to_string(),
            election: Election::new(store.clone(), options),
            store,
        })
    }

    /// Campaigns until it leads (at most `WAIT`).
    async fn lead(&self) -> Result<Leadership> {
        let campaign = self.election.campaign(ELECTION, self.name.clone());
        Ok(tokio::time::timeout(WAIT, campaign).await??)
    }

    /// Campaigns in a task of its own.
    fn campaign_in_background(self: Arc<Self>) -> JoinHandle<Result<Leadership>> {
        tokio::spawn(async move { self.lead().await })
    }

    /// Writes the report with the token of the term it holds (or held).
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

/// The demo: workers lead in turn; a stale leader is refused.
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

    // worker-1 leads; worker-2 campaigns and waits its turn.
    let g1 = w1.lead().await?;
    writeln!(out, "worker-1 took the lock with token {}.", g1.token())?;
    w1.write_report(&report, g1.token(), out).await?;
    let waiter = w2.clone().campaign_in_background();
    writeln!(out, "worker-2 is waiting for the lock.")?;
    g1.resign().await?;
    writeln!(out, "worker-1 released the lock.")?;
    let g2 = tokio::time::timeout(WAIT, waiter).await???;
    writeln!(out, "worker-2 took the lock with token {}.", g2.token())?;
    w2.write_report(&report, g2.token(), out).await?;

    // worker-3 campaigns while worker-2 leads.
    let waiter = w3.clone().campaign_in_background();
    writeln!(out, "worker-3 is waiting for the lock.")?;

    // worker-2 stalls, and its session ends meanwhile: here we close its
    // handle, which is what a pause longer than its lease comes to.
    let stale_token = g2.token();
    let lost = g2.lost();
    w2.store.close().await?;
    tokio::time::timeout(WAIT, lost).await?;
    writeln!(
        out,
        "worker-2 stalled and its session ended: its lock is lost, though worker-2 has not noticed."
    )?;
    let g3 = tokio::time::timeout(WAIT, waiter).await???;
    writeln!(out, "worker-3 took the lock with token {}.", g3.token())?;
    if g3.token() <= stale_token {
        return Err("the new leader's token is not greater than the old one's".into());
    }
    w3.write_report(&report, g3.token(), out).await?;

    // worker-2 wakes up and finishes the write it started as leader.
    w2.write_report(&report, stale_token, out).await?;
    drop(g2);

    g3.resign().await?;
    writeln!(out, "worker-3 released the lock.")?;
    if let Some((token, text)) = report.read().await? {
        writeln!(out, "The report says {text:?} (token {token}).")?;
    }
    w1.store.close().await?;
    w3.store.close().await?;
    Ok(())
}
