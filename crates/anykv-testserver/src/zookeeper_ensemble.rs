//! A three-server ZooKeeper ensemble for high-availability tests:
//! Debian's ZooKeeper 3.8, each server a JVM of its own (`QuorumPeerMain`
//! with a 192 MiB heap) on free loopback ports (client, quorum and
//! election), with a `myid` and a data directory each, and the single test
//! server's settings ([`crate::zookeeper::SETTINGS`], TTL nodes and the
//! container reaper flags).
//!
//! [`ZkEnsemble::kill`] crashes a server (SIGKILL), [`ZkEnsemble::restart`]
//! brings it back with its data and ports (it rejoins as a follower), and
//! [`ZkEnsemble::pause`] / [`ZkEnsemble::resume`] freeze and thaw it
//! (SIGSTOP / SIGCONT). The leader is found with the `srvr` command's
//! `Mode:` line. Everything stops when the ensemble is dropped, or when the
//! test process exits.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::slot::Slot;
use crate::zookeeper::{CONTAINER_CHECK_FLAG, CONTAINER_RATE_FLAG, SETTINGS, URL_VAR};
use crate::{free_ports, temp_dir, wait_for_port, Process, TempDir};

/// How many servers the ensemble has.
pub const SERVERS: usize = 3;

/// The quorum limits, in ticks of [`SETTINGS`]' `tickTime` (200 ms): a
/// follower has 10 s to sync with a new leader (`initLimit`), and a server
/// that has not heard from its peer for 2 s (`syncLimit`) drops it, which
/// is how a frozen leader is found out. Looser than the single server's,
/// since three JVMs share two cores with whatever else runs.
pub const LIMITS: &[(&str, &str)] = &[("initLimit", "50"), ("syncLimit", "10")];

/// The heap of each server's JVM.
pub const HEAP: &str = "-Xmx192m";

#[derive(Debug)]
struct Server {
    client_port: u16,
    quorum_port: u16,
    election_port: u16,
    process: Slot,
}

/// What a server's `srvr` says of its part in the ensemble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// It leads.
    Leader,
    /// It follows a leader.
    Follower,
    /// It answers but serves no requests (electing, or cut off from a
    /// quorum), or has another mode.
    NotServing,
}

/// A running three-server ZooKeeper ensemble owned by a test.
#[derive(Debug)]
pub struct ZkEnsemble {
    dir: TempDir,
    java: PathBuf,
    servers: Vec<Server>,
}

impl ZkEnsemble {
    /// Starts three servers and waits (up to 90 s) until a quorum serves:
    /// one server leads and the others follow; panics with what each
    /// server said otherwise, or with how to install ZooKeeper when it is
    /// missing.
    pub fn start() -> ZkEnsemble {
        if !Path::new("/usr/share/java/zookeeper.jar").is_file() {
            panic!(
                "ZooKeeper is not installed, and these tests need a real ensemble. Install it \
                 with `sudo apt-get install zookeeper`."
            );
        }
        let java = crate::require_binary(
            "java",
            &["/usr/lib/jvm/default-java/bin/java"],
            "zookeeper default-jre-headless",
            URL_VAR,
        );
        let dir = temp_dir("anykv-zookeeper-ensemble-");
        let ports = free_ports(3 * SERVERS);
        let servers = ports
            .chunks(3)
            .enumerate()
            .map(|(i, p)| Server {
                client_port: p[0],
                quorum_port: p[1],
                election_port: p[2],
                process: Slot::new(format!("ZooKeeper server {i}")),
            })
            .collect();
        let mut z = ZkEnsemble { dir, java, servers };
        for i in 0..SERVERS {
            z.write_config(i);
        }
        for i in 0..SERVERS {
            z.spawn(i);
        }
        if let Err(e) = z.wait_until_serving(Duration::from_secs(90)) {
            panic!("the ZooKeeper ensemble did not start: {e}\n{}", z.logs());
        }
        z
    }

    fn check(&self, i: usize) {
        assert!(
            i < self.servers.len(),
            "no ZooKeeper server {i}: the ensemble has {} (0-based)",
            self.servers.len()
        );
    }

    fn server_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("s{}", i + 1))
    }

    fn write_config(&self, i: usize) {
        let dir = self.server_dir(i);
        let data = dir.join("data");
        std::fs::create_dir_all(&data)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", data.display()));
        let myid = data.join("myid");
        std::fs::write(&myid, format!("{}\n", i + 1))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", myid.display()));
        let mut body = format!(
            "dataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
             extendedTypesEnabled=true\nadmin.enableServer=false\n4lw.commands.whitelist=*\n",
            data.display(),
            self.servers[i].client_port,
        );
        for (key, value) in SETTINGS.iter().chain(LIMITS) {
            body.push_str(&format!("{key}={value}\n"));
        }
        for (n, s) in self.servers.iter().enumerate() {
            body.push_str(&format!(
                "server.{}=127.0.0.1:{}:{}\n",
                n + 1,
                s.quorum_port,
                s.election_port
            ));
        }
        let cfg = dir.join("zoo.cfg");
        std::fs::write(&cfg, body)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", cfg.display()));
    }

    fn spawn(&mut self, i: usize) {
        let dir = self.server_dir(i);
        let mut cmd = Command::new(&self.java);
        cmd.arg("-cp")
            .arg("/usr/share/java/*:/etc/zookeeper/conf")
            .arg(HEAP)
            .arg("-Dzookeeper.admin.enableServer=false")
            .arg(CONTAINER_CHECK_FLAG)
            .arg(CONTAINER_RATE_FLAG)
            .arg("-Dzookeeper.extendedTypesEnabled=true")
            .arg(format!("-Dzookeeper.log.dir={}", dir.display()))
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(dir.join("zoo.cfg"));
        let log = dir.join(format!("zookeeper.{}.log", crate::unique_name("run")));
        let p = Process::spawn(&format!("zookeeper {}", i + 1), cmd, log);
        self.servers[i].process.set(p);
    }

    /// `127.0.0.1:port` of each server's client port, by index.
    pub fn addresses(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.client_port))
            .collect()
    }

    /// The client port of server `i`.
    pub fn client_port(&self, i: usize) -> u16 {
        self.check(i);
        self.servers[i].client_port
    }

    /// `zk://127.0.0.1:C1,127.0.0.1:C2,127.0.0.1:C3/root` (`root` without a
    /// leading `/`; empty for none).
    pub fn url(&self, root: &str) -> String {
        format!(
            "zk://{}/{}",
            self.addresses().join(","),
            root.trim_start_matches('/')
        )
    }

    /// Sends a four-letter command (`srvr`, `mntr`, `stat`, ...) to server
    /// `i` and returns its answer; an error for a failed connection or no
    /// answer within `timeout`.
    pub fn four_letter(&self, i: usize, word: &str, timeout: Duration) -> Result<String, String> {
        self.check(i);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.servers[i].client_port));
        let mut s = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let _ = s.set_read_timeout(Some(timeout));
        let _ = s.set_write_timeout(Some(timeout));
        s.write_all(word.as_bytes())
            .map_err(|e| format!("{word} to {addr}: {e}"))?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)
            .map_err(|e| format!("{word} to {addr}: {e}"))?;
        Ok(reply)
    }

    /// Server `i`'s mode by `srvr` (asked with a 500 ms time-out); an error
    /// when it does not answer (killed, paused, not yet listening).
    pub fn mode(&self, i: usize) -> Result<Mode, String> {
        self.check(i);
        if !self.servers[i].process.is_started() {
            return Err(format!("ZooKeeper server {i} is killed"));
        }
        let reply = self.four_letter(i, "srvr", Duration::from_millis(500))?;
        let mode = reply
            .lines()
            .find_map(|l| l.strip_prefix("Mode:"))
            .map(str::trim);
        Ok(match mode {
            Some("leader") => Mode::Leader,
            Some("follower") => Mode::Follower,
            _ => Mode::NotServing,
        })
    }

    /// Every server's mode, asked side by side.
    fn modes(&self) -> Vec<Result<Mode, String>> {
        std::thread::scope(|s| {
            let asks: Vec<_> = (0..self.servers.len())
                .map(|i| s.spawn(move || self.mode(i)))
                .collect();
            asks.into_iter()
                .map(|a| {
                    a.join()
                        .unwrap_or_else(|_| Err("the question panicked".into()))
                })
                .collect()
        })
    }

    /// The index of the server whose `srvr` says it leads, when it is the
    /// only one and at least one other server follows (so a quorum
    /// serves); `None` otherwise.
    pub fn leader(&self) -> Option<usize> {
        Self::leader_of(&self.modes())
    }

    fn leader_of(modes: &[Result<Mode, String>]) -> Option<usize> {
        let leaders: Vec<usize> = (0..modes.len())
            .filter(|&i| modes[i] == Ok(Mode::Leader))
            .collect();
        let followers = modes.iter().filter(|m| **m == Ok(Mode::Follower)).count();
        (leaders.len() == 1 && leaders.len() + followers > modes.len() / 2).then(|| leaders[0])
    }

    /// Waits until there is a leader ([`ZkEnsemble::leader`]); its index,
    /// or an error saying what each server answered.
    pub fn wait_for_leader(&self, within: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + within;
        loop {
            let modes = self.modes();
            if let Some(i) = Self::leader_of(&modes) {
                return Ok(i);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no ZooKeeper leader after {within:?}: {}",
                    describe(&modes)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every running server leads or follows, with one leader.
    fn wait_until_serving(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let modes = self.modes();
            let running: Vec<&Result<Mode, String>> = modes
                .iter()
                .zip(&self.servers)
                .filter(|(_, s)| s.process.is_started())
                .map(|(m, _)| m)
                .collect();
            let all_serve = running
                .iter()
                .all(|m| matches!(m, Ok(Mode::Leader | Mode::Follower)));
            if all_serve && Self::leader_of(&modes).is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("after {within:?}: {}", describe(&modes)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills server `i` at once (SIGKILL), as a crash would; its data
    /// stays for [`ZkEnsemble::restart`].
    pub fn kill(&mut self, i: usize) {
        self.check(i);
        self.servers[i].process.kill();
    }

    /// Whether server `i` runs (it may be paused).
    pub fn is_running(&mut self, i: usize) -> bool {
        self.check(i);
        self.servers[i].process.is_running()
    }

    /// Starts server `i` again (after [`ZkEnsemble::kill`]) with its data
    /// and ports, and waits (up to 60 s) until it leads or follows again;
    /// panics with its log otherwise. Does nothing to a running server.
    pub fn restart(&mut self, i: usize) {
        self.check(i);
        if self.is_running(i) {
            return;
        }
        self.spawn(i);
        let port = self.servers[i].client_port;
        let deadline = Instant::now() + Duration::from_secs(60);
        if let Err(e) = wait_for_port(port, Duration::from_secs(60)) {
            panic!(
                "ZooKeeper server {i} did not restart: {e}\n{}",
                self.log_tail(i, 3000)
            );
        }
        loop {
            let mode = self.mode(i);
            if matches!(mode, Ok(Mode::Leader | Mode::Follower)) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "ZooKeeper server {i} did not rejoin the ensemble: {mode:?}\n{}",
                    self.log_tail(i, 3000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes server `i` (SIGSTOP) and waits until every thread of its JVM
    /// has stopped: connections stay open but nothing is answered, and its
    /// peers stop hearing from it. Undo with [`ZkEnsemble::resume`].
    pub fn pause(&self, i: usize) -> Result<(), String> {
        self.check(i);
        self.servers[i].process.signal("STOP")
    }

    /// Lets a paused server `i` run again (SIGCONT).
    pub fn resume(&self, i: usize) -> Result<(), String> {
        self.check(i);
        self.servers[i].process.signal("CONT")
    }

    /// The process id of server `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.check(i);
        self.servers[i].process.pid()
    }

    /// The resident memory of all running servers, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.servers
            .iter()
            .filter_map(|s| s.process.rss_kib())
            .sum()
    }

    /// The last `bytes` of server `i`'s output since it was last started
    /// (the JVM's own messages; ZooKeeper's logging goes nowhere).
    pub fn log_tail(&self, i: usize, bytes: usize) -> String {
        self.check(i);
        self.servers[i].process.log_tail(bytes)
    }

    fn logs(&self) -> String {
        (0..self.servers.len())
            .map(|i| format!("--- ZooKeeper server {i}:\n{}", self.log_tail(i, 1500)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ZkEnsemble {
    fn drop(&mut self) {
        // Killed, not stopped: the data goes anyway, and SIGKILL also ends
        // a paused process at once.
        for m in &mut self.servers {
            m.process.kill();
        }
    }
}

fn describe(modes: &[Result<Mode, String>]) -> String {
    modes
        .iter()
        .enumerate()
        .map(|(i, m)| match m {
            Ok(m) => format!("server {i}: {m:?}"),
            Err(e) => format!("server {i}: {e}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_needs_a_quorum() {
        let l = Ok(Mode::Leader);
        let f = Ok(Mode::Follower);
        let down = Err(String::from("down"));
        let n = Ok(Mode::NotServing);
        assert_eq!(
            ZkEnsemble::leader_of(&[f.clone(), l.clone(), f.clone()]),
            Some(1)
        );
        assert_eq!(
            ZkEnsemble::leader_of(&[down.clone(), l.clone(), f.clone()]),
            Some(1)
        );
        assert_eq!(
            ZkEnsemble::leader_of(&[down.clone(), l.clone(), n.clone()]),
            None
        );
        assert_eq!(
            ZkEnsemble::leader_of(&[l.clone(), l.clone(), f.clone()]),
            None
        );
        assert_eq!(ZkEnsemble::leader_of(&[down.clone(), down, n]), None);
    }
}
