//! A Redis primary, one replica and three Sentinels for high-availability
//! tests: Debian's `redis-server` (7.0) on free loopback ports, the data
//! servers with the single test server's persistence
//! ([`crate::redis::SETTINGS`]), the Sentinels (`redis-server
//! sentinel.conf --sentinel`, each with a config file of its own, which it
//! rewrites) watching master [`MASTER_NAME`] with a quorum of 2, a 1 s
//! down-after and a short failover time-out.
//!
//! Data servers are numbered 0 (the first primary) and 1 (its replica);
//! after a failover [`RedisSentinel::primary`] says which one leads.
//! [`RedisSentinel::kill`] crashes one (SIGKILL), [`RedisSentinel::restart`]
//! brings it back on its port with its data and config file (which the
//! Sentinels rewrite on a failover, so a returning old primary is turned
//! into a replica), and [`RedisSentinel::pause`] / [`RedisSentinel::resume`]
//! freeze and thaw it (SIGSTOP / SIGCONT).
//!
//! Losing acknowledged writes: [`RedisSentinel::lag_replica`] (the
//! replica freezes and its link to the primary is cut), write to the
//! primary (acknowledged, never replicated), [`RedisSentinel::kill`] the
//! primary, [`RedisSentinel::resume`] the replica within the down-after
//! time (so the Sentinels never count it down), then
//! [`RedisSentinel::wait_for_failover`]: the replica is promoted without
//! those writes. [`RedisSentinel::replication_offset`] shows the lag.
//! Everything stops when the fixture is dropped, or when the test process
//! exits.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::resp::{self, Reply};
use crate::slot::Slot;
use crate::{free_ports, require_binary, temp_dir, wait_for_port, Process, TempDir};

/// The name the Sentinels know the master by.
pub const MASTER_NAME: &str = "anykv";

/// How many Sentinels watch the master.
pub const SENTINELS: usize = 3;

/// The Sentinels' settings for [`MASTER_NAME`] besides `monitor` (quorum
/// 2): a server that does not answer for a second is down, and a failover
/// that has not finished in 3 s is given up (and tried again after 6 s).
pub const SENTINEL_SETTINGS: &[(&str, &str)] = &[
    ("down-after-milliseconds", "1000"),
    ("failover-timeout", "3000"),
    ("parallel-syncs", "1"),
];

/// How long one question to a server may take.
const ASK: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Node {
    port: u16,
    dir: PathBuf,
    process: Slot,
}

/// A running primary, replica and three Sentinels, owned by a test.
#[derive(Debug)]
pub struct RedisSentinel {
    // Dropped last: the processes stop before their files go.
    _dir: TempDir,
    binary: PathBuf,
    data: Vec<Node>,
    sentinels: Vec<Node>,
}

impl RedisSentinel {
    /// Starts the primary and its replica, waits until the replica has
    /// synced, starts three Sentinels and waits (up to 60 s) until each of
    /// them knows the primary, the replica and the two other Sentinels;
    /// panics with the servers' logs otherwise, or with how to install
    /// Redis when it is missing.
    pub fn start() -> RedisSentinel {
        let binary = require_binary(
            "redis-server",
            &["/usr/bin/redis-server", "/usr/local/bin/redis-server"],
            "redis-server",
            "ANYKV_REDIS_URL",
        );
        let dir = temp_dir("anykv-redis-sentinel-");
        let mut ports = free_ports(2 + SENTINELS).into_iter();
        let mut node = |name: String| {
            let d = dir.path().join(&name);
            std::fs::create_dir_all(&d)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
            Node {
                port: ports.next().unwrap_or_else(crate::free_port),
                dir: d,
                process: Slot::new(format!("Redis {name}")),
            }
        };
        let data: Vec<Node> = (0..2).map(|i| node(format!("data{i}"))).collect();
        let sentinels: Vec<Node> = (0..SENTINELS)
            .map(|i| node(format!("sentinel{i}")))
            .collect();
        let mut s = RedisSentinel {
            _dir: dir,
            binary,
            data,
            sentinels,
        };
        s.write_configs();
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..s.data.len() {
            s.spawn_data(i);
        }
        if let Err(e) = s.wait_for_sync(1, deadline) {
            panic!("the Redis replica did not sync: {e}\n{}", s.logs());
        }
        for i in 0..SENTINELS {
            s.spawn_sentinel(i);
        }
        if let Err(e) = s.wait_until_watched(0, deadline) {
            panic!("the Sentinels did not come up: {e}\n{}", s.logs());
        }
        s
    }

    fn write_configs(&self) {
        let primary = self.data[0].port;
        for (i, n) in self.data.iter().enumerate() {
            let mut text = format!(
                "bind 127.0.0.1\nprotected-mode no\nport {}\ndir {}\n",
                n.port,
                n.dir.display()
            );
            for (directive, value) in crate::redis::SETTINGS {
                text.push_str(&format!("{directive} \"{value}\"\n"));
            }
            // A new replica syncs at once instead of waiting 5 s for
            // others to share a diskless transfer.
            text.push_str("repl-diskless-sync-delay 0\n");
            if i > 0 {
                text.push_str(&format!("replicaof 127.0.0.1 {primary}\n"));
            }
            write(&n.dir.join("redis.conf"), &text);
        }
        for n in &self.sentinels {
            let mut text = format!(
                "bind 127.0.0.1\nprotected-mode no\nport {}\ndir {}\n\
                 sentinel resolve-hostnames no\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n",
                n.port,
                n.dir.display()
            );
            for (key, value) in SENTINEL_SETTINGS {
                text.push_str(&format!("sentinel {key} {MASTER_NAME} {value}\n"));
            }
            write(&n.dir.join("sentinel.conf"), &text);
        }
    }

    fn spawn_data(&mut self, i: usize) {
        let n = &self.data[i];
        let mut cmd = Command::new(&self.binary);
        cmd.arg(n.dir.join("redis.conf"));
        let log = n.dir.join(format!("{}.log", crate::unique_name("redis")));
        let p = Process::spawn(&format!("redis-server {i}"), cmd, log);
        self.data[i].process.set(p);
    }

    fn spawn_sentinel(&mut self, i: usize) {
        let n = &self.sentinels[i];
        let mut cmd = Command::new(&self.binary);
        cmd.arg(n.dir.join("sentinel.conf")).arg("--sentinel");
        let log = n
            .dir
            .join(format!("{}.log", crate::unique_name("sentinel")));
        let p = Process::spawn(&format!("redis-sentinel {i}"), cmd, log);
        self.sentinels[i].process.set(p);
    }

    fn check(&self, i: usize) {
        assert!(
            i < self.data.len(),
            "no Redis data server {i}: there are {} (0-based)",
            self.data.len()
        );
    }

    /// Waits until data server `replica` is a replica whose link to its
    /// primary is up.
    fn wait_for_sync(&self, replica: usize, deadline: Instant) -> Result<(), String> {
        let port = self.data[replica].port;
        loop {
            let link = resp::info_field(port, "replication", "master_link_status", ASK);
            if link.as_deref() == Some("up") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "data server {replica}: master_link_status is {link:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every Sentinel names data server `primary` as master,
    /// knows the other data server as a replica that is not down, and
    /// knows the other Sentinels.
    fn wait_until_watched(&self, primary: usize, deadline: Instant) -> Result<(), String> {
        let want = self.data[primary].port.to_string();
        let replica_port = self.data[1 - primary].port.to_string();
        for (i, n) in self.sentinels.iter().enumerate() {
            wait_for_port(n.port, deadline.saturating_duration_since(Instant::now()))?;
            loop {
                let master = resp::command_ok(
                    n.port,
                    &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
                    ASK,
                );
                let replicas =
                    resp::command_ok(n.port, &["SENTINEL", "replicas", MASTER_NAME], ASK);
                let peers = resp::command_ok(n.port, &["SENTINEL", "sentinels", MASTER_NAME], ASK);
                let master_ok = master
                    .as_ref()
                    .is_ok_and(|m| m.items().get(1).and_then(Reply::as_str) == Some(&want));
                let replica_ok = replicas.as_ref().is_ok_and(|r| {
                    r.items().iter().any(|r| {
                        r.field("port") == Some(&replica_port) && r.field("flags") == Some("slave")
                    })
                });
                let peers_ok = peers
                    .as_ref()
                    .is_ok_and(|p| p.items().len() == SENTINELS - 1);
                if master_ok && replica_ok && peers_ok {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "sentinel {i}: master {master:?}, replicas {replicas:?}, \
                         sentinels {peers:?}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// The name the Sentinels know the master by ([`MASTER_NAME`]).
    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// `127.0.0.1:port` of each Sentinel.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// `127.0.0.1:port` of each data server, by index (0 started as the
    /// primary, 1 as its replica).
    pub fn addrs(&self) -> Vec<String> {
        self.data
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// The port of data server `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.check(i);
        self.data[i].port
    }

    /// Sends one command to data server `i` (see [`resp::command`]), such
    /// as `INFO replication` or `WAIT 1 100`.
    pub fn command(&self, i: usize, args: &[&str]) -> Result<Reply, String> {
        self.check(i);
        resp::command(self.data[i].port, args, Duration::from_secs(5))
    }

    /// Sends one command to Sentinel `i` (see [`resp::command`]).
    pub fn sentinel_command(&self, i: usize, args: &[&str]) -> Result<Reply, String> {
        assert!(
            i < self.sentinels.len(),
            "no Sentinel {i}: there are {} (0-based)",
            self.sentinels.len()
        );
        resp::command(self.sentinels[i].port, args, Duration::from_secs(5))
    }

    /// The index of the current primary: the data server that a majority
    /// of the Sentinels that answer (within half a second) name as master.
    /// `None` when they do not agree (during a failover) or too few
    /// answer.
    pub fn primary(&self) -> Option<usize> {
        let answers: Vec<Option<u16>> = std::thread::scope(|s| {
            let asks: Vec<_> = self
                .sentinels
                .iter()
                .map(|n| {
                    s.spawn(move || {
                        let r = resp::command_ok(
                            n.port,
                            &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
                            ASK,
                        )
                        .ok()?;
                        r.items().get(1)?.as_str()?.parse::<u16>().ok()
                    })
                })
                .collect();
            asks.into_iter().map(|a| a.join().ok().flatten()).collect()
        });
        let quorum = SENTINELS / 2 + 1;
        self.data
            .iter()
            .position(|n| answers.iter().filter(|a| **a == Some(n.port)).count() >= quorum)
    }

    /// What data server `i` says it is (`ROLE`'s first item: `master` or
    /// `slave`).
    pub fn role(&self, i: usize) -> Result<String, String> {
        self.check(i);
        let r = resp::command_ok(self.data[i].port, &["ROLE"], ASK)?;
        r.items()
            .first()
            .and_then(Reply::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("ROLE gave {r:?}"))
    }

    /// Waits until the Sentinels name a primary other than `old_primary`
    /// and that server says it is a master; its index, or an error saying
    /// what the Sentinels and servers said.
    pub fn wait_for_failover(&self, old_primary: usize, within: Duration) -> Result<usize, String> {
        self.check(old_primary);
        let deadline = Instant::now() + within;
        loop {
            let primary = self.primary();
            if let Some(p) = primary.filter(|p| *p != old_primary) {
                if self.role(p).is_ok_and(|r| r == "master") {
                    return Ok(p);
                }
            }
            if Instant::now() >= deadline {
                let roles: Vec<_> = (0..self.data.len()).map(|i| self.role(i)).collect();
                return Err(format!(
                    "no failover from data server {old_primary} after {within:?}: the \
                     Sentinels name {primary:?}; roles {roles:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until data server `i` is a replica whose link to its primary
    /// is up (a restarted old primary becomes one once a Sentinel has
    /// seen it, which takes up to its 10 s `INFO` period).
    pub fn wait_for_replica(&self, i: usize, within: Duration) -> Result<(), String> {
        self.check(i);
        let deadline = Instant::now() + within;
        loop {
            if self.role(i).is_ok_and(|r| r == "slave") {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "data server {i} is no replica after {within:?}: ROLE {:?}",
                    self.role(i)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_for_sync(i, deadline)
    }

    /// How far data server `i` has got in the replication stream: a
    /// primary's `master_repl_offset`, a replica's `slave_repl_offset`.
    pub fn replication_offset(&self, i: usize) -> Result<i64, String> {
        self.check(i);
        let port = self.data[i].port;
        let field = match self.role(i)?.as_str() {
            "master" => "master_repl_offset",
            _ => "slave_repl_offset",
        };
        resp::info_field(port, "replication", field, ASK)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {field} in INFO replication of data server {i}"))
    }

    /// Kills data server `i` at once (SIGKILL), as a crash would: writes
    /// not yet in its append-only file are lost.
    pub fn kill(&mut self, i: usize) {
        self.check(i);
        self.data[i].process.kill();
    }

    /// Whether data server `i` runs (it may be paused).
    pub fn is_running(&mut self, i: usize) -> bool {
        self.check(i);
        self.data[i].process.is_running()
    }

    /// Starts data server `i` again (after [`RedisSentinel::kill`]) on its
    /// port with its data and config file, and waits (up to 20 s) until it
    /// accepts connections; panics with its log otherwise. A returning old
    /// primary comes back as a master; the Sentinels turn it into a replica
    /// of the new one within seconds. Does nothing to a running server.
    pub fn restart(&mut self, i: usize) {
        self.check(i);
        if self.is_running(i) {
            return;
        }
        self.spawn_data(i);
        if let Err(e) = wait_for_port(self.data[i].port, Duration::from_secs(20)) {
            panic!(
                "Redis data server {i} did not restart: {e}\n{}",
                self.log_tail(i, 3000)
            );
        }
    }

    /// Freezes data server `i` (SIGSTOP) until every thread has stopped:
    /// connections stay open, nothing is answered, and a paused replica
    /// receives no writes. Undo with [`RedisSentinel::resume`].
    pub fn pause(&self, i: usize) -> Result<(), String> {
        self.check(i);
        self.data[i].process.signal("STOP")
    }

    /// Makes replica `i` fall behind: freezes it ([`RedisSentinel::pause`])
    /// and has the primary drop its replication link (`CLIENT KILL TYPE
    /// replica`), so writes the primary acknowledges from now on reach no
    /// replica. Freezing alone is not enough: the kernel still takes the
    /// replication stream into the frozen replica's socket, and it applies
    /// it on waking. [`RedisSentinel::resume`] undoes it; the replica
    /// reconnects and catches up if the primary still runs.
    pub fn lag_replica(&self, i: usize) -> Result<(), String> {
        self.check(i);
        let primary = (0..self.data.len())
            .find(|&p| p != i && self.role(p).is_ok_and(|r| r == "master"))
            .ok_or_else(|| format!("no primary besides data server {i} answers"))?;
        self.pause(i)?;
        let killed = resp::command_ok(
            self.data[primary].port,
            &["CLIENT", "KILL", "TYPE", "replica"],
            ASK,
        );
        match killed {
            Ok(Reply::Integer(n)) if n > 0 => Ok(()),
            other => {
                let _ = self.resume(i);
                Err(format!(
                    "data server {primary} dropped no replica link: {other:?}"
                ))
            }
        }
    }

    /// Lets a paused data server `i` run again (SIGCONT).
    pub fn resume(&self, i: usize) -> Result<(), String> {
        self.check(i);
        self.data[i].process.signal("CONT")
    }

    /// The resident memory of all running data servers and Sentinels, in
    /// KiB.
    pub fn rss_kib(&self) -> u64 {
        self.data
            .iter()
            .chain(&self.sentinels)
            .filter_map(|n| n.process.rss_kib())
            .sum()
    }

    /// The last `bytes` of data server `i`'s log since it was last started.
    pub fn log_tail(&self, i: usize, bytes: usize) -> String {
        self.check(i);
        self.data[i].process.log_tail(bytes)
    }

    /// The last `bytes` of Sentinel `i`'s log.
    pub fn sentinel_log_tail(&self, i: usize, bytes: usize) -> String {
        self.sentinels
            .get(i)
            .map(|n| n.process.log_tail(bytes))
            .unwrap_or_default()
    }

    fn logs(&self) -> String {
        let data = (0..self.data.len())
            .map(|i| format!("--- data server {i}:\n{}", self.log_tail(i, 1200)));
        let sentinels = (0..self.sentinels.len())
            .map(|i| format!("--- sentinel {i}:\n{}", self.sentinel_log_tail(i, 1200)));
        data.chain(sentinels).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        // Killed, not stopped: the data goes anyway, and a replica that
        // has just synced refuses SIGTERM while it writes its first
        // append-only file ("Writing initial AOF, can't exit"). The
        // Sentinels first, so they start no failover meanwhile.
        for n in self.sentinels.iter_mut().chain(&mut self.data) {
            n.process.kill();
        }
    }
}

fn write(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
