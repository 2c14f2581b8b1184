//! A three-member etcd cluster for high-availability tests: Debian's
//! `etcd` (3.4) members on free loopback ports (a client and a peer port
//! each), a fresh data directory per member, a 100 ms heartbeat and a
//! 1 s election timeout, so a killed leader is replaced within a few
//! seconds.
//!
//! [`EtcdCluster::kill`] crashes a member (SIGKILL), [`EtcdCluster::restart`]
//! brings it back with the same data and ports (it rejoins as a follower),
//! and [`EtcdCluster::pause`] / [`EtcdCluster::resume`] freeze and thaw it
//! (SIGSTOP / SIGCONT). Everything stops when the cluster is dropped, or
//! when the test process exits.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::slot::Slot;
use crate::{free_ports, require_binary, temp_dir, wait_for_port, Process, TempDir};

/// How many members the cluster has.
pub const MEMBERS: usize = 3;

/// The heartbeat interval and election timeout every member runs with, in
/// milliseconds (etcd's defaults are 100 and 1000 too, stated here so the
/// failover bounds of the tests do not move with a new etcd).
pub const TIMING_MS: (u64, u64) = (100, 1000);

#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    process: Slot,
}

/// A running three-member etcd cluster owned by a test.
#[derive(Debug)]
pub struct EtcdCluster {
    dir: TempDir,
    binary: PathBuf,
    members: Vec<Member>,
}

/// What one member says of itself through `/v3/maintenance/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Status {
    member_id: String,
    leader_id: String,
}

impl EtcdCluster {
    /// Starts three members and waits (up to 60 s) until the cluster has a
    /// leader that every member knows and each member serves a
    /// linearizable read; panics with the members' logs otherwise.
    pub fn start() -> EtcdCluster {
        let binary = require_binary(
            "etcd",
            &["/usr/bin/etcd", "/usr/local/bin/etcd"],
            "etcd-server",
            "ANYKV_ETCD_URL",
        );
        let dir = temp_dir("anykv-etcd-cluster-");
        let ports = free_ports(2 * MEMBERS);
        let members = (0..MEMBERS)
            .map(|i| Member {
                name: format!("e{}", i + 1),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                process: Slot::new(format!("etcd member {i}")),
            })
            .collect();
        let mut c = EtcdCluster {
            dir,
            binary,
            members,
        };
        for i in 0..MEMBERS {
            c.spawn(i);
        }
        for i in 0..MEMBERS {
            let port = c.members[i].client_port;
            if let Err(e) = wait_for_port(port, Duration::from_secs(30)) {
                panic!("etcd member {i} did not start: {e}\n{}", c.logs());
            }
        }
        if let Err(e) = c.wait_until_serving(Duration::from_secs(60)) {
            panic!("the etcd cluster did not start serving: {e}\n{}", c.logs());
        }
        c
    }

    fn check(&self, i: usize) {
        assert!(
            i < self.members.len(),
            "no etcd member {i}: the cluster has {} (0-based)",
            self.members.len()
        );
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) {
        let initial = self.initial_cluster();
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let mut cmd = crate::etcd::member_command(
            &self.binary,
            &m.name,
            &self.dir.path().join(&m.name),
            (&client, &peer),
            &initial,
        );
        cmd.arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(self.dir.path().display().to_string())
            .arg("--heartbeat-interval")
            .arg(TIMING_MS.0.to_string())
            .arg("--election-timeout")
            .arg(TIMING_MS.1.to_string());
        // Each start writes a log of its own, so a restart keeps the log
        // of the run before it.
        let log = self.dir.path().join(format!("{}.{}.log", m.name, now_ms()));
        let p = Process::spawn(&format!("etcd {}", m.name), cmd, log);
        self.members[i].process.set(p);
    }

    /// `127.0.0.1:port` of each member's client endpoint, by index.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// The client port of member `i`.
    pub fn client_port(&self, i: usize) -> u16 {
        self.check(i);
        self.members[i].client_port
    }

    /// `etcd://127.0.0.1:C1,127.0.0.1:C2,127.0.0.1:C3/root` (`root` without
    /// a leading `/`; empty for none).
    pub fn url(&self, root: &str) -> String {
        format!(
            "etcd://{}/{}",
            self.endpoints().join(","),
            root.trim_start_matches('/')
        )
    }

    /// POSTs `body` (JSON) to member `i`'s gRPC gateway at `path`; the
    /// response body, or an error for a failed connection, a time-out
    /// (`timeout` for each of connect, write and read) or a status other
    /// than 200.
    pub fn gateway(
        &self,
        i: usize,
        path: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        self.check(i);
        crate::etcd::http_post(self.members[i].client_port, path, body, timeout)
    }

    fn status(&self, i: usize) -> Result<Status, String> {
        let body = self.gateway(
            i,
            "/v3/maintenance/status",
            "{}",
            Duration::from_millis(500),
        )?;
        let member_id =
            json_number(&body, "member_id").ok_or_else(|| format!("no member_id in {body}"))?;
        let leader_id =
            json_number(&body, "leader").ok_or_else(|| format!("no leader in {body}"))?;
        Ok(Status {
            member_id,
            leader_id,
        })
    }

    /// The index of the current leader: the member that a majority of the
    /// members that answer (within half a second) name as leader, and that
    /// names itself. `None` while there is none (during an election, or
    /// with too few members up).
    pub fn leader(&self) -> Option<usize> {
        // Asked side by side, so a paused member costs one time-out, not
        // one per member.
        let statuses: Vec<Option<Status>> = std::thread::scope(|s| {
            let asks: Vec<_> = (0..self.members.len())
                .map(|i| {
                    s.spawn(move || {
                        self.members[i].process.process()?;
                        self.status(i).ok()
                    })
                })
                .collect();
            asks.into_iter().map(|a| a.join().ok().flatten()).collect()
        });
        let quorum = self.members.len() / 2 + 1;
        statuses.iter().enumerate().find_map(|(i, s)| {
            let s = s.as_ref()?;
            let votes = statuses
                .iter()
                .flatten()
                .filter(|o| o.leader_id == s.member_id)
                .count();
            (s.leader_id == s.member_id && s.leader_id != "0" && votes >= quorum).then_some(i)
        })
    }

    /// Waits until there is a leader ([`EtcdCluster::leader`]); its index,
    /// or an error saying what each member answered.
    pub fn wait_for_leader(&self, within: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.leader() {
                return Ok(i);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no etcd leader after {within:?}: {}",
                    self.describe()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until there is a leader and every running member serves a
    /// linearizable read.
    fn wait_until_serving(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        self.wait_for_leader(within)?;
        for (i, m) in self.members.iter().enumerate() {
            if !m.process.is_started() {
                continue;
            }
            loop {
                let read = self.gateway(
                    i,
                    "/v3/kv/range",
                    r#"{"key":"AA=="}"#,
                    Duration::from_secs(2),
                );
                match read {
                    Ok(_) => break,
                    Err(e) if Instant::now() >= deadline => {
                        return Err(format!("member {i} does not serve reads: {e}"));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        (0..self.members.len())
            .map(|i| match self.members[i].process.process() {
                None => format!("member {i}: killed"),
                Some(_) => match self.status(i) {
                    Ok(s) => format!("member {i}: id {} sees leader {}", s.member_id, s.leader_id),
                    Err(e) => format!("member {i}: {e}"),
                },
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Kills member `i` at once (SIGKILL), as a crash would; its data
    /// stays for [`EtcdCluster::restart`].
    pub fn kill(&mut self, i: usize) {
        self.check(i);
        self.members[i].process.kill();
    }

    /// Whether member `i` runs (it may be paused).
    pub fn is_running(&mut self, i: usize) -> bool {
        self.check(i);
        self.members[i].process.is_running()
    }

    /// Starts member `i` again (after [`EtcdCluster::kill`]) with its data
    /// directory and ports, and waits (up to 30 s) until it serves reads
    /// again, which it does once it has rejoined and knows the leader;
    /// panics with its log otherwise. Does nothing to a running member.
    pub fn restart(&mut self, i: usize) {
        self.check(i);
        if self.is_running(i) {
            return;
        }
        self.spawn(i);
        let port = self.members[i].client_port;
        let deadline = Instant::now() + Duration::from_secs(30);
        if let Err(e) = wait_for_port(port, Duration::from_secs(30)) {
            panic!(
                "etcd member {i} did not restart: {e}\n{}",
                self.log_tail(i, 3000)
            );
        }
        loop {
            let read = self.gateway(
                i,
                "/v3/kv/range",
                r#"{"key":"AA=="}"#,
                Duration::from_secs(2),
            );
            let rejoined = self.status(i).is_ok_and(|s| s.leader_id != "0");
            if read.is_ok() && rejoined {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "etcd member {i} did not rejoin the cluster: {}\n{}",
                    read.err().unwrap_or_default(),
                    self.log_tail(i, 3000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes member `i` (SIGSTOP) and waits until all its threads have
    /// stopped: its connections stay open but nothing is answered, and it
    /// sends no heartbeats. Undo with [`EtcdCluster::resume`].
    pub fn pause(&self, i: usize) -> Result<(), String> {
        self.check(i);
        self.members[i].process.signal("STOP")
    }

    /// Lets a paused member `i` run again (SIGCONT).
    pub fn resume(&self, i: usize) -> Result<(), String> {
        self.check(i);
        self.members[i].process.signal("CONT")
    }

    /// The process id of member `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.check(i);
        self.members[i].process.pid()
    }

    /// The resident memory of all running members, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.members
            .iter()
            .filter_map(|m| m.process.rss_kib())
            .sum()
    }

    /// The last `bytes` of member `i`'s log since it was last started.
    pub fn log_tail(&self, i: usize, bytes: usize) -> String {
        self.check(i);
        self.members[i].process.log_tail(bytes)
    }

    fn logs(&self) -> String {
        (0..self.members.len())
            .map(|i| format!("--- etcd member {i}:\n{}", self.log_tail(i, 1500)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        // Killed, not stopped: the data goes anyway, and SIGKILL also ends
        // a paused process at once.
        for m in &mut self.members {
            m.process.kill();
        }
    }
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// The value of `"key":"123"` or `"key":123` in a JSON text (the gateway
/// writes 64-bit numbers as strings).
fn json_number(body: &str, key: &str) -> Option<String> {
    let rest = body.split(&format!("\"{key}\":")).nth(1)?;
    let digits: String = rest
        .trim_start_matches([' ', '"'])
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    (!digits.is_empty()).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_numbers_parse() {
        let body = r#"{"header":{"cluster_id":"1","member_id":"42","revision":"1"},"version":"3.4.23","leader":"42","raftTerm":"2"}"#;
        assert_eq!(json_number(body, "member_id").as_deref(), Some("42"));
        assert_eq!(json_number(body, "leader").as_deref(), Some("42"));
        assert_eq!(json_number(body, "nope"), None);
        assert_eq!(
            json_number(r#"{"leader":7}"#, "leader").as_deref(),
            Some("7")
        );
    }
}
