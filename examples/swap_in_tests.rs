//! Swap in the in-process store for tests: a small job queue written
//! against `Arc<dyn Store>`, unit-tested on `memory://`, run on etcd.
//!
//! ```text
//! cargo run --example swap_in_tests                      # in-process store
//! cargo run --all-features --example swap_in_tests -- etcd://127.0.0.1:2379/demo
//! cargo run --all-features --example swap_in_tests -- redis://127.0.0.1:6379/0/demo
//! cargo run --all-features --example swap_in_tests -- zk://127.0.0.1:2181/demo
//!
//! cargo test --example swap_in_tests                     # its unit tests, on memory://
//! ANYKV_TEST_URL=etcd://127.0.0.1:2379/tests cargo test --all-features --example swap_in_tests
//! ```
//!
//! The pattern: the service takes an `Arc<dyn Store>` and never names a
//! backend. Production opens it with `anykv::open` on the URL from its
//! configuration (`etcd://…`); the unit tests open `memory://`, which needs
//! no server, starts in microseconds and gives every test a private store.
//! That swap is honest because every backend passes the same conformance
//! suite: the compare-and-swap that keeps two workers off one job, the
//! revisions and the error kinds the tests rely on behave the same on
//! memory as on etcd, Redis and ZooKeeper. Set `ANYKV_TEST_URL` to run the
//! same tests against a server (each test gets a root of its own under it).
//!
//! The service: jobs are keys under `swap_in_tests/jobs/`, one per job,
//! whose value records its state. Submitting creates the key only if it is
//! absent; claiming and completing replace it only at the revision the
//! worker read, so of two workers racing for one job exactly one wins. The
//! demo empties `swap_in_tests/` first and last.

#[macro_use]
#[path = "support/say.rs"]
mod say;

use std::fmt;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anykv::{ErrorKind, PutOptions, Store};

#[tokio::main]
async fn main() -> ExitCode {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("ANYKV_URL").ok())
        .unwrap_or_else(|| "memory://".to_string());
    let store = match anykv::open(&url).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!(
                "swap_in_tests: cannot open {}: {e}",
                anykv::redact_url(&url)
            );
            return ExitCode::from(2);
        }
    };
    println!(
        "Opened {} (backend: {}).",
        anykv::redact_url(&url),
        store.capabilities().backend
    );
    let result = demo(store.clone(), &mut say::Stdout).await;
    let _ = store.close().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swap_in_tests: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------- the service

/// Where the jobs live, one key per job.
const JOBS: &str = "swap_in_tests/jobs";

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Queued,
    Claimed { by: String },
    Done { by: String },
}

/// A job as the queue stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Job {
    id: String,
    task: String,
    state: State,
    /// The revision this job was read at: the next write of it is a
    /// compare-and-swap from here.
    revision: u64,
}

impl Job {
    /// The record: `state=…`, `by=…` once claimed, then `task=…`.
    fn encode(&self) -> String {
        match &self.state {
            State::Queued => format!("state=queued\ntask={}\n", self.task),
            State::Claimed { by } => format!("state=claimed\nby={by}\ntask={}\n", self.task),
            State::Done { by } => format!("state=done\nby={by}\ntask={}\n", self.task),
        }
    }

    fn decode(id: &str, value: &[u8], revision: u64) -> Result<Job, QueueError> {
        let corrupt = |reason: &str| QueueError::Corrupt {
            id: id.to_string(),
            reason: reason.to_string(),
        };
        let text = std::str::from_utf8(value).map_err(|_| corrupt("not UTF-8"))?;
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        let task = field("task").ok_or_else(|| corrupt("no task"))?;
        let by = || field("by").ok_or_else(|| corrupt("no worker"));
        let state = match field("state").as_deref() {
            Some("queued") => State::Queued,
            Some("claimed") => State::Claimed { by: by()? },
            Some("done") => State::Done { by: by()? },
            _ => return Err(corrupt("no valid state")),
        };
        Ok(Job {
            id: id.to_string(),
            task,
            state,
            revision,
        })
    }
}

/// Why the queue refused a call.
#[derive(Debug)]
enum QueueError {
    /// A job with this id exists already.
    Duplicate(String),
    /// No job with this id.
    NotFound(String),
    /// The job is not claimed by the worker that tried to complete it.
    NotYours { id: String, state: State },
    /// An id must be one non-empty key segment.
    BadId(String),
    /// A record that does not parse.
    Corrupt { id: String, reason: String },
    /// The store failed.
    Store(anykv::Error),
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::Duplicate(id) => write!(f, "job {id} already exists"),
            QueueError::NotFound(id) => write!(f, "there is no job {id}"),
            QueueError::NotYours { id, state } => match state {
                State::Queued => write!(f, "job {id} is not claimed"),
                State::Claimed { by } => write!(f, "job {id} is claimed by {by}"),
                State::Done { by } => write!(f, "job {id} was done by {by}"),
            },
            QueueError::BadId(id) => write!(f, "{id:?} is not a job id"),
            QueueError::Corrupt { id, reason } => write!(f, "job {id} is corrupt: {reason}"),
            QueueError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for QueueError {}

impl From<anykv::Error> for QueueError {
    fn from(e: anykv::Error) -> Self {
        QueueError::Store(e)
    }
}

/// A job queue shared by any number of workers and processes. It knows
/// nothing of backends: it is handed a store.
struct JobQueue {
    store: Arc<dyn Store>,
}

impl JobQueue {
    fn new(store: Arc<dyn Store>) -> Self {
        JobQueue { store }
    }

    fn key(id: &str) -> String {
        format!("{JOBS}/{id}")
    }

    /// Queues a job; an id that exists already is refused.
    async fn submit(&self, id: &str, task: &str) -> Result<(), QueueError> {
        if id.is_empty() || id.contains('/') {
            return Err(QueueError::BadId(id.to_string()));
        }
        let job = Job {
            id: id.to_string(),
            task: task.to_string(),
            state: State::Queued,
            revision: 0,
        };
        // Create only: `None` means "the key must not exist".
        match self
            .store
            .atomic_put(&Self::key(id), job.encode().into(), None, PutOptions::new())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::KeyExists => Err(QueueError::Duplicate(id.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Every job, in id order.
    async fn jobs(&self) -> Result<Vec<Job>, QueueError> {
        let pairs = self.store.list(JOBS).await?;
        pairs
            .iter()
            .map(|kv| {
                let id = kv.key.rsplit('/').next().unwrap_or_default();
                Job::decode(id, &kv.value, kv.revision)
            })
            .collect()
    }

    /// Claims the queued job with the lowest id for `worker`, or returns
    /// `None` when nothing is queued. A job another worker claimed since
    /// the list was read fails its compare-and-swap and is skipped.
    async fn claim(&self, worker: &str) -> Result<Option<Job>, QueueError> {
        for job in self.jobs().await? {
            if job.state != State::Queued {
                continue;
            }
            let mut claimed = Job {
                state: State::Claimed { by: worker.into() },
                ..job
            };
            match self
                .store
                .atomic_put(
                    &Self::key(&claimed.id),
                    claimed.encode().into(),
                    Some(claimed.revision),
                    PutOptions::new(),
                )
                .await
            {
                Ok(revision) => {
                    claimed.revision = revision;
                    return Ok(Some(claimed));
                }
                Err(e) if matches!(e.kind(), ErrorKind::KeyModified | ErrorKind::KeyNotFound) => {
                    continue
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Marks a job done; only the worker that claimed it may.
    async fn complete(&self, id: &str, worker: &str) -> Result<(), QueueError> {
        loop {
            let kv = self
                .store
                .get(&Self::key(id))
                .await?
                .ok_or_else(|| QueueError::NotFound(id.into()))?;
            let job = Job::decode(id, &kv.value, kv.revision)?;
            if job.state != (State::Claimed { by: worker.into() }) {
                return Err(QueueError::NotYours {
                    id: id.into(),
                    state: job.state,
                });
            }
            let done = Job {
                state: State::Done { by: worker.into() },
                ..job
            };
            match self
                .store
                .atomic_put(
                    &Self::key(id),
                    done.encode().into(),
                    Some(done.revision),
                    PutOptions::new(),
                )
                .await
            {
                Ok(_) => return Ok(()),
                // Changed since we read it: read again and decide again.
                Err(e) if e.kind() == ErrorKind::KeyModified => continue,
                Err(e) if e.kind() == ErrorKind::KeyNotFound => {
                    return Err(QueueError::NotFound(id.into()))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

// ---------------------------------------------------------------- the demo

/// A short run of the queue on whatever store it is given.
pub async fn demo(
    store: Arc<dyn Store>,
    out: &mut impl Write,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    store.delete_tree("swap_in_tests").await?;
    let result = demo_steps(JobQueue::new(store.clone()), out).await;
    store.delete_tree("swap_in_tests").await?;
    result
}

async fn demo_steps(
    queue: JobQueue,
    out: &mut impl Write,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    for (id, task) in [
        ("0001", "resize photo-17.png"),
        ("0002", "send the welcome mail"),
        ("0003", "build the monthly report"),
    ] {
        queue.submit(id, task).await?;
        writeln!(out, "Submitted job {id}: {task}.")?;
    }
    match queue.submit("0002", "send the welcome mail").await {
        Err(e @ QueueError::Duplicate(_)) => {
            writeln!(out, "Submitting job 0002 again was refused: {e}.")?
        }
        other => return Err(format!("a duplicate should be refused, got {other:?}").into()),
    }

    for worker in ["worker-a", "worker-b"] {
        match queue.claim(worker).await? {
            Some(job) => writeln!(out, "{worker} claimed job {}: {}.", job.id, job.task)?,
            None => writeln!(out, "{worker} found nothing to do.")?,
        }
    }
    match queue.complete("0001", "worker-b").await {
        Err(e @ QueueError::NotYours { .. }) => writeln!(
            out,
            "worker-b tried to complete job 0001 and was refused: {e}."
        )?,
        other => return Err(format!("completing another's job should fail, got {other:?}").into()),
    }
    queue.complete("0001", "worker-a").await?;
    writeln!(out, "worker-a completed job 0001.")?;

    // Two workers race for the last job: the compare-and-swap lets exactly
    // one of them have it, whichever gets there first.
    let (a, b) = tokio::join!(queue.claim("worker-a"), queue.claim("worker-b"));
    let winners: Vec<Job> = [a?, b?].into_iter().flatten().collect();
    match winners.as_slice() {
        [job] => {
            writeln!(
                out,
                "worker-a and worker-b raced for the next job: one claimed job {}, the other found nothing.",
                job.id
            )?;
            let State::Claimed { by } = &job.state else {
                return Err("a claimed job is not in the claimed state".into());
            };
            queue.complete(&job.id, by).await?;
            writeln!(out, "The winner completed job {}.", job.id)?;
        }
        _ => return Err(format!("{} workers claimed the last job", winners.len()).into()),
    }
    queue.complete("0002", "worker-b").await?;
    writeln!(out, "worker-b completed job 0002.")?;

    let done = queue
        .jobs()
        .await?
        .iter()
        .filter(|job| matches!(job.state, State::Done { .. }))
        .count();
    let left = match queue.claim("worker-a").await? {
        None => "nothing is left to claim",
        Some(_) => "yet a job was left to claim (wrong!)",
    };
    writeln!(out, "{done} of 3 jobs are done; {left}.")?;
    Ok(())
}

// ---------------------------------------------------------------- the tests

/// Unit tests of the queue. They run on `memory://` unless `ANYKV_TEST_URL`
/// names a server: the code under test cannot tell the difference.
#[cfg(test)]
mod tests {
    use super::*;

    /// A store of the test's own: a private `memory://` store, or a fresh
    /// root under `ANYKV_TEST_URL`.
    async fn test_store() -> Arc<dyn Store> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let url = match std::env::var("ANYKV_TEST_URL") {
            Ok(base) if !base.is_empty() => {
                let (base, query) = base.split_once('?').unwrap_or((&base, ""));
                let query = if query.is_empty() {
                    String::new()
                } else {
                    format!("?{query}")
                };
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                format!(
                    "{}/queue-test-{}-{}-{nanos}{query}",
                    base.trim_end_matches('/'),
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed),
                )
            }
            _ => "memory://".to_string(),
        };
        anykv::open(&url).await.expect("the test store opens")
    }

    #[tokio::test]
    async fn a_duplicate_id_is_refused() {
        let queue = JobQueue::new(test_store().await);
        queue.submit("7", "first").await.unwrap();
        let err = queue.submit("7", "second").await.unwrap_err();
        assert!(
            matches!(err, QueueError::Duplicate(ref id) if id == "7"),
            "{err}"
        );
        assert_eq!(queue.jobs().await.unwrap()[0].task, "first");
    }

    #[tokio::test]
    async fn an_id_must_be_one_segment() {
        let queue = JobQueue::new(test_store().await);
        for id in ["", "a/b"] {
            let err = queue.submit(id, "x").await.unwrap_err();
            assert!(matches!(err, QueueError::BadId(_)), "{err}");
        }
    }

    #[tokio::test]
    async fn claims_go_in_id_order_until_the_queue_is_empty() {
        let queue = JobQueue::new(test_store().await);
        queue.submit("2", "second").await.unwrap();
        queue.submit("1", "first").await.unwrap();
        let first = queue.claim("w").await.unwrap().unwrap();
        let second = queue.claim("w").await.unwrap().unwrap();
        assert_eq!((first.id.as_str(), second.id.as_str()), ("1", "2"));
        assert_eq!(first.state, State::Claimed { by: "w".into() });
        assert!(queue.claim("w").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn only_the_claimer_completes_a_job() {
        let queue = JobQueue::new(test_store().await);
        queue.submit("1", "task").await.unwrap();
        let err = queue.complete("1", "a").await.unwrap_err();
        assert!(
            matches!(
                err,
                QueueError::NotYours {
                    state: State::Queued,
                    ..
                }
            ),
            "{err}"
        );
        queue.claim("a").await.unwrap().unwrap();
        let err = queue.complete("1", "b").await.unwrap_err();
        assert_eq!(err.to_string(), "job 1 is claimed by a");
        queue.complete("1", "a").await.unwrap();
        let err = queue.complete("1", "a").await.unwrap_err();
        assert_eq!(err.to_string(), "job 1 was done by a");
        let err = queue.complete("9", "a").await.unwrap_err();
        assert!(matches!(err, QueueError::NotFound(_)), "{err}");
    }

    #[tokio::test]
    async fn a_corrupt_record_is_an_error_not_a_panic() {
        let store = test_store().await;
        store
            .put(&JobQueue::key("1"), "garbage".into(), PutOptions::new())
            .await
            .unwrap();
        let err = JobQueue::new(store).claim("w").await.unwrap_err();
        assert_eq!(err.to_string(), "job 1 is corrupt: no task");
    }

    /// Eight workers drain forty jobs at once: every job is claimed exactly
    /// once. This is the race the compare-and-swap exists for, and it runs
    /// in milliseconds on memory://.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_workers_never_share_a_job() {
        let queue = Arc::new(JobQueue::new(test_store().await));
        for i in 0..40 {
            queue.submit(&format!("{i:02}"), "work").await.unwrap();
        }
        let workers = (0..8).map(|w| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(job) = queue.claim(&format!("w{w}")).await.unwrap() {
                    mine.push(job.id);
                }
                mine
            })
        });
        let mut claimed: Vec<String> = Vec::new();
        for worker in workers.collect::<Vec<_>>() {
            claimed.extend(worker.await.unwrap());
        }
        claimed.sort();
        let expected: Vec<String> = (0..40).map(|i| format!("{i:02}")).collect();
        assert_eq!(claimed, expected);
    }
}
