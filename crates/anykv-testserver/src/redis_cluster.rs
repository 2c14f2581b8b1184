//! A Redis Cluster for high-availability tests: Debian's `redis-server`
//! (7.0) nodes on free loopback ports (a client and a cluster-bus port
//! each), with the single test server's persistence
//! ([`crate::redis::SETTINGS`]), `cluster-node-timeout 1000`, and a
//! `nodes.conf` in each node's data directory. It is put together by hand
//! (`CLUSTER ADDSLOTSRANGE`, `MEET`, `REPLICATE`), so it needs no
//! `redis-cli`.
//!
//! Nodes are numbered: 0, 1 and 2 start as the primaries of the three
//! shards (slots 0-5460, 5461-10922, 10923-16383, as `redis-cli --cluster
//! create` splits them), and with replicas ([`RedisCluster::start`]) node
//! `3 + s` starts as the replica of shard `s`'s primary. A node stays in its
//! shard ([`RedisCluster::shard`]) across failovers and restarts: a
//! returning old primary comes back as a replica of the node that took over
//! its slots. [`RedisCluster::start_primaries_only`] has no replicas, so a
//! lost primary leaves its slots unserved (`cluster_state:fail`) until it
//! comes back. Everything stops when the cluster is dropped, or when the
//! test process exits.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::resp::{self, Reply};
use crate::slot::Slot;
use crate::{free_ports, require_binary, temp_dir, wait_for_port, Process, TempDir};

/// How many shards (primaries) the cluster has.
pub const SHARDS: usize = 3;

/// The slots of each shard, as `redis-cli --cluster create` splits them.
pub const SLOTS: [(u16, u16); SHARDS] = [(0, 5460), (5461, 10922), (10923, 16383)];

/// How long one question to a node may take.
const ASK: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Node {
    port: u16,
    bus_port: u16,
    dir: PathBuf,
    id: String,
    process: Slot,
}

/// A running Redis Cluster owned by a test.
#[derive(Debug)]
pub struct RedisCluster {
    // Dropped last: the processes stop before their files go.
    _dir: TempDir,
    binary: PathBuf,
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts three primaries with one replica each (six nodes) and waits
    /// (up to 60 s) until every node says `cluster_state:ok`, every replica
    /// has synced, and every node knows who replicates whom; panics with
    /// the nodes' logs otherwise, or with how to install Redis when it is
    /// missing.
    pub fn start() -> RedisCluster {
        Self::start_with(1)
    }

    /// Starts three primaries without replicas and waits (up to 60 s) until
    /// every node says `cluster_state:ok`.
    pub fn start_primaries_only() -> RedisCluster {
        Self::start_with(0)
    }

    fn start_with(replicas: usize) -> RedisCluster {
        let binary = require_binary(
            "redis-server",
            &["/usr/bin/redis-server", "/usr/local/bin/redis-server"],
            "redis-server",
            "ANYKV_REDIS_URL",
        );
        let dir = temp_dir("anykv-redis-cluster-");
        let count = SHARDS * (1 + replicas);
        let ports = free_ports(2 * count);
        let nodes = (0..count)
            .map(|i| {
                let d = dir.path().join(format!("node{i}"));
                std::fs::create_dir_all(&d)
                    .unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
                Node {
                    port: ports[2 * i],
                    bus_port: ports[2 * i + 1],
                    dir: d,
                    id: String::new(),
                    process: Slot::new(format!("Redis Cluster node {i}")),
                }
            })
            .collect();
        let mut c = RedisCluster {
            _dir: dir,
            binary,
            nodes,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..c.nodes.len() {
            c.write_config(i);
            c.spawn(i);
        }
        if let Err(e) = c.form(deadline) {
            panic!("the Redis Cluster did not form: {e}\n{}", c.logs());
        }
        c
    }

    fn write_config(&self, i: usize) {
        let n = &self.nodes[i];
        let mut text = format!(
            "bind 127.0.0.1\nprotected-mode no\nport {}\ncluster-port {}\ndir {}\n",
            n.port,
            n.bus_port,
            n.dir.display()
        );
        for (directive, value) in crate::redis::SETTINGS {
            text.push_str(&format!("{directive} \"{value}\"\n"));
        }
        text.push_str(
            "cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 1000\n\
             repl-diskless-sync-delay 0\n",
        );
        let path = n.dir.join("redis.conf");
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    fn spawn(&mut self, i: usize) {
        let n = &self.nodes[i];
        let mut cmd = Command::new(&self.binary);
        cmd.arg(n.dir.join("redis.conf"));
        let log = n.dir.join(format!("{}.log", crate::unique_name("redis")));
        let p = Process::spawn(&format!("redis cluster node {i}"), cmd, log);
        self.nodes[i].process.set(p);
    }

    fn ask(&self, i: usize, args: &[&str]) -> Result<Reply, String> {
        resp::command_ok(self.nodes[i].port, args, Duration::from_secs(5))
    }

    /// Assigns slots, introduces the nodes to each other, attaches the
    /// replicas, and waits until all agree.
    fn form(&mut self, deadline: Instant) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            wait_for_port(self.nodes[i].port, left).map_err(|e| format!("node {i}: {e}"))?;
            let id = self.ask(i, &["CLUSTER", "MYID"])?;
            self.nodes[i].id = id
                .as_str()
                .ok_or_else(|| format!("node {i}: CLUSTER MYID gave {id:?}"))?
                .to_owned();
            // Distinct epochs, as redis-cli gives them, so no two primaries
            // start with the same one.
            self.ask(i, &["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()])?;
        }
        for (s, (first, last)) in SLOTS.iter().enumerate() {
            self.ask(
                s,
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ],
            )?;
        }
        for i in 1..self.nodes.len() {
            let (port, bus) = (self.nodes[i].port, self.nodes[i].bus_port);
            self.ask(
                0,
                &[
                    "CLUSTER",
                    "MEET",
                    "127.0.0.1",
                    &port.to_string(),
                    &bus.to_string(),
                ],
            )?;
        }
        self.wait(deadline, "every node knows every other", |c| {
            (0..c.nodes.len()).all(|i| {
                c.view(i).is_some_and(|v| {
                    v.len() == c.nodes.len()
                        && v.iter()
                            .all(|e| !e.flags.iter().any(|f| f == "handshake" || f == "noaddr"))
                })
            })
        })?;
        for i in SHARDS..self.nodes.len() {
            let primary = self.nodes[i % SHARDS].id.clone();
            self.ask(i, &["CLUSTER", "REPLICATE", &primary])?;
        }
        self.wait(deadline, "the cluster serves every slot", |c| {
            (0..c.nodes.len()).all(|i| c.state_ok(i))
        })?;
        self.wait(deadline, "every replica is synced and known", |c| {
            let synced = (SHARDS..c.nodes.len()).all(|i| {
                resp::info_field(c.nodes[i].port, "replication", "master_link_status", ASK)
                    .as_deref()
                    == Some("up")
            });
            let known = (0..c.nodes.len()).all(|i| {
                c.view(i).is_some_and(|v| {
                    (SHARDS..c.nodes.len()).all(|r| {
                        v.iter()
                            .any(|e| e.id == c.nodes[r].id && e.master == c.nodes[r % SHARDS].id)
                    })
                })
            });
            synced && known
        })
    }

    fn wait(
        &self,
        deadline: Instant,
        what: &str,
        done: impl Fn(&Self) -> bool,
    ) -> Result<(), String> {
        loop {
            if done(self) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not yet: {what}; {}", self.describe()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Node `i`'s `CLUSTER NODES`, when it answers.
    fn view(&self, i: usize) -> Option<Vec<Entry>> {
        self.nodes[i].process.process()?;
        let r = resp::command_ok(self.nodes[i].port, &["CLUSTER", "NODES"], ASK).ok()?;
        Some(r.as_str()?.lines().filter_map(Entry::parse).collect())
    }

    /// Whether node `i` answers and says `cluster_state:ok`.
    fn state_ok(&self, i: usize) -> bool {
        self.nodes[i].process.is_started()
            && resp::text_field(
                self.nodes[i].port,
                &["CLUSTER", "INFO"],
                "cluster_state",
                ASK,
            )
            .as_deref()
                == Some("ok")
    }

    fn describe(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                let state = resp::text_field(
                    self.nodes[i].port,
                    &["CLUSTER", "INFO"],
                    "cluster_state",
                    ASK,
                );
                format!("node {i}: role {:?}, cluster_state {state:?}", self.role(i))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn check(&self, i: usize) {
        assert!(
            i < self.nodes.len(),
            "no Redis Cluster node {i}: there are {} (0-based)",
            self.nodes.len()
        );
    }

    /// `127.0.0.1:port` of each node, by index.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// The client port of node `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.check(i);
        self.nodes[i].port
    }

    /// The shard node `i` belongs to (`i % 3`).
    pub fn shard(&self, i: usize) -> usize {
        self.check(i);
        i % SHARDS
    }

    /// Sends one command to node `i` (see [`resp::command`]); a key in
    /// another node's slot gets a `MOVED` error reply.
    pub fn command(&self, i: usize, args: &[&str]) -> Result<Reply, String> {
        self.check(i);
        resp::command(self.nodes[i].port, args, Duration::from_secs(5))
    }

    /// What node `i` says it is (`ROLE`'s first item: `master` or
    /// `slave`).
    pub fn role(&self, i: usize) -> Result<String, String> {
        self.check(i);
        let r = resp::command_ok(self.nodes[i].port, &["ROLE"], ASK)?;
        r.items()
            .first()
            .and_then(Reply::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("ROLE gave {r:?}"))
    }

    /// The node that serves shard `s`: one that says it is a master and,
    /// by its own `CLUSTER NODES`, holds slots. `None` when no node of the
    /// shard does.
    pub fn primary_of(&self, s: usize) -> Option<usize> {
        (s..self.nodes.len()).step_by(SHARDS).find(|&i| {
            self.view(i).is_some_and(|v| {
                v.iter().any(|e| {
                    e.flags.iter().any(|f| f == "myself")
                        && e.flags.iter().any(|f| f == "master")
                        && e.has_slots
                })
            })
        })
    }

    /// The current primary of each shard, by shard.
    pub fn primaries(&self) -> Vec<Option<usize>> {
        (0..SHARDS).map(|s| self.primary_of(s)).collect()
    }

    /// Waits until another node of `old_primary`'s shard serves its slots
    /// and every node that answers says `cluster_state:ok`; that node's
    /// index, or an error saying what the nodes said. Without replicas it
    /// can only time out.
    pub fn wait_for_failover(&self, old_primary: usize, within: Duration) -> Result<usize, String> {
        self.check(old_primary);
        let s = self.shard(old_primary);
        let deadline = Instant::now() + within;
        loop {
            let new = self.primary_of(s).filter(|&p| p != old_primary);
            let answering: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| i != old_primary && self.role(i).is_ok())
                .collect();
            if let Some(p) = new {
                if answering.iter().all(|&i| self.state_ok(i)) {
                    return Ok(p);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no failover from node {old_primary} after {within:?}: {}",
                    self.describe()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until node `i` is a replica whose link to its primary is up
    /// (a restarted old primary becomes one once it has heard that its
    /// slots moved).
    pub fn wait_for_replica(&self, i: usize, within: Duration) -> Result<(), String> {
        self.check(i);
        self.wait(Instant::now() + within, "the node replicates", |c| {
            c.role(i).is_ok_and(|r| r == "slave")
                && resp::info_field(c.nodes[i].port, "replication", "master_link_status", ASK)
                    .as_deref()
                    == Some("up")
        })
    }

    /// Waits until every running node says `cluster_state:ok`.
    pub fn wait_until_ok(&self, within: Duration) -> Result<(), String> {
        self.wait(
            Instant::now() + within,
            "cluster_state:ok everywhere",
            |c| (0..c.nodes.len()).all(|i| !c.nodes[i].process.is_started() || c.state_ok(i)),
        )
    }

    /// Kills node `i` at once (SIGKILL), as a crash would: writes not yet in
    /// its append-only file are lost.
    pub fn kill(&mut self, i: usize) {
        self.check(i);
        self.nodes[i].process.kill();
    }

    /// Whether node `i` runs (it may be paused).
    pub fn is_running(&mut self, i: usize) -> bool {
        self.check(i);
        self.nodes[i].process.is_running()
    }

    /// Starts node `i` again (after [`RedisCluster::kill`]) on its ports
    /// with its data and `nodes.conf`, and waits (up to 20 s) until it
    /// accepts connections; panics with its log otherwise. It finds the
    /// cluster again by itself; an old primary whose slots were taken over
    /// becomes a replica. Does nothing to a running node.
    pub fn restart(&mut self, i: usize) {
        self.check(i);
        if self.is_running(i) {
            return;
        }
        self.spawn(i);
        if let Err(e) = wait_for_port(self.nodes[i].port, Duration::from_secs(20)) {
            panic!(
                "Redis Cluster node {i} did not restart: {e}\n{}",
                self.log_tail(i, 3000)
            );
        }
    }

    /// Freezes node `i` (SIGSTOP) until every thread has stopped. Undo with
    /// [`RedisCluster::resume`].
    pub fn pause(&self, i: usize) -> Result<(), String> {
        self.check(i);
        self.nodes[i].process.signal("STOP")
    }

    /// Lets a paused node `i` run again (SIGCONT).
    pub fn resume(&self, i: usize) -> Result<(), String> {
        self.check(i);
        self.nodes[i].process.signal("CONT")
    }

    /// The resident memory of all running nodes, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.nodes.iter().filter_map(|n| n.process.rss_kib()).sum()
    }

    /// The last `bytes` of node `i`'s log since it was last started.
    pub fn log_tail(&self, i: usize, bytes: usize) -> String {
        self.check(i);
        self.nodes[i].process.log_tail(bytes)
    }

    fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| format!("--- node {i}:\n{}", self.log_tail(i, 1000)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        // Killed, not stopped: the data goes anyway, and a replica that
        // has just synced refuses SIGTERM while it writes its first
        // append-only file ("Writing initial AOF, can't exit").
        for n in &mut self.nodes {
            n.process.kill();
        }
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    id: String,
    flags: Vec<String>,
    /// The primary's id for a replica, `-` for a primary.
    master: String,
    has_slots: bool,
}

impl Entry {
    fn parse(line: &str) -> Option<Entry> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            return None;
        }
        Some(Entry {
            id: fields[0].to_owned(),
            flags: fields[2].split(',').map(str::to_owned).collect(),
            master: fields[3].to_owned(),
            has_slots: fields.len() > 8,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_parse() {
        let p = Entry::parse(
            "503b 127.0.0.1:27001@37001 myself,master - 0 1796036720000 1 connected 0-5460",
        )
        .unwrap();
        assert_eq!(p.id, "503b");
        assert_eq!(p.flags, ["myself", "master"]);
        assert!(p.has_slots);
        let r = Entry::parse("cb3f 127.0.0.1:27005@37005 slave 503b 0 1796036720165 1 connected")
            .unwrap();
        assert_eq!(r.master, "503b");
        assert!(!r.has_slots);
        assert_eq!(Entry::parse("junk"), None);
    }
}
