//! Crashes and other processes. The child processes are this test binary
//! run again with `ANYKV_REDB_CHILD` naming their part (the `child` test
//! below): they write, print what was acknowledged, and are killed with
//! `SIGKILL` in the middle of it. The parent then opens the file itself.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anykv_core::{Bytes, Error, ErrorKind, KvPair, PutOptions, Store, WatchEvent, WatchOptions};
use anykv_redb::{Durability, RedbConfig, RedbStore};
use futures::StreamExt;

const CHILD: &str = "ANYKV_REDB_CHILD";
const FILE: &str = "ANYKV_REDB_FILE";
/// What starts a line of a child for its parent.
const MARK: &str = "@@ ";

/// The value written under `k/{i}`: 1 KiB that tells `i`, so a torn or
/// mixed-up value shows.
fn value_for(i: u64) -> Bytes {
    let mut v = format!("value {i:08} ").into_bytes();
    let fill = (i % 251) as u8;
    v.resize(1024, fill);
    Bytes::from(v)
}

/// Not a test of its own: the body of the child processes the tests
/// below start. Without `ANYKV_REDB_CHILD` it does nothing.
#[test]
fn child() {
    let (Ok(role), Ok(path)) = (std::env::var(CHILD), std::env::var(FILE)) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        match role.as_str() {
            "writer" => writer(&path, Durability::Immediate).await,
            "eventual-writer" => writer(&path, Durability::Eventual).await,
            "leases" => leases(&path).await,
            "holder" => {
                let _s = RedbStore::open(RedbConfig::new(&path)).await.unwrap();
                say("open");
                std::future::pending::<()>().await;
            }
            other => panic!("no child part {other:?}"),
        }
    });
}

/// Prints a line for the parent, marked: the test harness prints on the
/// same lines.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{MARK}{line}");
    let _ = out.flush();
}

/// Writes `k/0`, `k/1`, … printing `ack i revision` after each write
/// returns, until killed.
async fn writer(path: &str, durability: Durability) {
    let config = RedbConfig::new(path)
        .with_durability(durability)
        .with_flush_interval(Duration::from_millis(20));
    let s = RedbStore::open(config).await.unwrap();
    for i in 0..1_000_000u64 {
        let rev = s
            .put(&format!("k/{i:08}"), value_for(i), PutOptions::new())
            .await
            .unwrap();
        say(&format!("ack {i} {rev}"));
    }
}

/// Leaves keys bound to a lease, a TTL key and a plain key, then waits to
/// be killed.
async fn leases(path: &str) {
    let s = RedbStore::open(RedbConfig::new(path)).await.unwrap();
    let first = s.put("plain", "p".into(), PutOptions::new()).await.unwrap();
    let lease = s.grant_lease(Duration::from_secs(3600)).await.unwrap();
    for k in ["leased/b", "leased/a"] {
        s.put(k, "l".into(), PutOptions::new().with_lease(lease.id()))
            .await
            .unwrap();
    }
    let ttl = PutOptions::new().with_ttl(Duration::from_millis(500));
    let last = s.put("ttl", "t".into(), ttl).await.unwrap();
    say(&format!("ready {first} {last}"));
    std::future::pending::<()>().await;
}

/// A runtime for the parent's async parts (the child's output is read
/// with blocking calls, outside it).
fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Starts the child `role` on `path`.
fn spawn(role: &str, path: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(CHILD, role)
        .env(FILE, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Reads the child's whole marked lines (without the mark), calling
/// `each` on each until it says stop; then kills the child (`SIGKILL`)
/// and reads what it had printed.
fn read_then_kill(child: &mut Child, mut each: impl FnMut(&str) -> bool) -> Vec<String> {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut killed = false;
    loop {
        let mut line = String::new();
        let n = out.read_line(&mut line).unwrap();
        if n == 0 {
            break;
        }
        // A line cut by the kill was never acknowledged.
        let marked = line
            .strip_suffix('\n')
            .and_then(|l| l.find(MARK).map(|at| &l[at + MARK.len()..]));
        if let Some(line) = marked {
            lines.push(line.to_owned());
            if !killed && !each(line) {
                child.kill().unwrap();
                killed = true;
            }
        }
    }
    assert!(killed, "the child ended by itself: {lines:?}");
    child.wait().unwrap();
    lines
}

/// `(i, revision)` of every `ack` line.
fn acks(lines: &[String]) -> Vec<(u64, u64)> {
    lines
        .iter()
        .filter_map(|l| {
            let mut f = l.strip_prefix("ack ")?.split(' ');
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn every_acknowledged_write_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let mut child = spawn("writer", &path);
    let lines = read_then_kill(&mut child, |l| !l.starts_with("ack 300 "));
    let acked = acks(&lines);
    assert!(acked.len() >= 300, "{} acknowledged", acked.len());
    rt().block_on(check_acknowledged(&path, &acked));
}

async fn check_acknowledged(path: &Path, acked: &[(u64, u64)]) {
    let s = RedbStore::open(RedbConfig::new(path)).await.unwrap();
    for (i, rev) in acked {
        let key = format!("k/{i:08}");
        assert_eq!(
            s.get(&key).await.unwrap(),
            Some(KvPair::new(key.clone(), value_for(*i), *rev))
        );
    }
    // Nothing half-written: every pair there is whole, and at most the one
    // write in flight at the kill is there unacknowledged.
    let last = acked.last().map_or(0, |a| a.0);
    let listed = s.list("k").await.unwrap();
    for p in &listed {
        let i: u64 = p.key.trim_start_matches("k/").parse().unwrap();
        assert_eq!(p.value, value_for(i), "k/{i}");
        assert!(i <= last + 1, "k/{i} was never written");
    }
    assert!(listed.len() as u64 > last);
    assert!(listed.len() as u64 <= last + 2);
    // Revisions go on above everything acknowledged.
    let max = acked.iter().map(|a| a.1).max().unwrap();
    let next = s.put("after", "x".into(), PutOptions::new()).await.unwrap();
    assert!(next > max, "{next} after {max}");
}

#[test]
fn eventual_durability_loses_a_suffix_and_never_a_revision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eventual.redb");
    let mut child = spawn("eventual-writer", &path);
    let lines = read_then_kill(&mut child, |l| !l.starts_with("ack 2000 "));
    let acked = acks(&lines);
    rt().block_on(check_prefix(&path, &acked));
}

async fn check_prefix(path: &Path, acked: &[(u64, u64)]) {
    let max = acked.iter().map(|a| a.1).max().unwrap();
    let s = RedbStore::open(RedbConfig::new(path)).await.unwrap();
    // What is there is a prefix of what was written, whole; the flushes
    // kept some of it.
    let listed = s.list("k").await.unwrap();
    assert!(!listed.is_empty(), "nothing of {} writes kept", acked.len());
    for (n, p) in listed.iter().enumerate() {
        assert_eq!(p.key, format!("k/{n:08}"));
        assert_eq!(p.value, value_for(n as u64));
        if let Some((_, rev)) = acked.get(n) {
            assert_eq!(p.revision, *rev);
        }
    }
    // No revision handed out before the crash is handed out again, and a
    // watch resuming from before the crash must re-read.
    let next = s.put("after", "x".into(), PutOptions::new()).await.unwrap();
    assert!(next > max, "{next} after {max}");
    let mut w = s
        .watch_tree("", WatchOptions::from_revision(max))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap();
    assert!(
        matches!(first, Some(Err(Error::Compacted { .. }))),
        "{first:?}"
    );
}

#[test]
fn keys_of_a_crashed_process_lease_go_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.redb");
    let mut child = spawn("leases", &path);
    let lines = read_then_kill(&mut child, |l| !l.starts_with("ready "));
    let ready: Vec<u64> = lines
        .iter()
        .find_map(|l| l.strip_prefix("ready "))
        .unwrap()
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    let (first, last) = (ready[0], ready[1]);
    std::thread::sleep(Duration::from_millis(700));
    rt().block_on(check_leases_gone(&path, first, last));
}

async fn check_leases_gone(path: &Path, first: u64, last: u64) {
    let s = RedbStore::open(RedbConfig::new(path)).await.unwrap();
    let keys: Vec<String> = s
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(keys, ["plain"]);
    let mut w = s
        .watch_tree("", WatchOptions::from_revision(last))
        .await
        .unwrap();
    let mut deletes = Vec::new();
    for _ in 0..3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        deletes.push(ev);
    }
    let del = |key: &str, revision| WatchEvent::Delete {
        key: key.into(),
        revision,
    };
    assert_eq!(
        deletes,
        [
            del("leased/a", last + 1),
            del("leased/b", last + 2),
            del("ttl", last + 3)
        ]
    );
    assert_eq!(
        s.get("plain").await.unwrap().map(|p| p.revision),
        Some(first)
    );
}

#[test]
fn a_second_process_gets_a_clear_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.redb");
    let mut child = spawn("holder", &path);
    let mut refused = None;
    let url = format!("redb://{}", path.display());
    let _ = read_then_kill(&mut child, |l| {
        if l == "open" {
            refused = Some(rt().block_on(RedbStore::open_url(&url)).unwrap_err());
            false
        } else {
            true
        }
    });
    let e = refused.expect("the child opened the file");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    let shown = e.to_string();
    assert!(shown.contains(&path.display().to_string()), "{shown}");
    assert!(shown.contains("DatabaseAlreadyOpen"), "{shown}");
    // Once that process is gone, the file opens.
    rt().block_on(async {
        let s = RedbStore::open_url(&url).await.unwrap();
        assert_eq!(s.list("").await.unwrap(), vec![]);
    });
}
