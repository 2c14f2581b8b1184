//! Real servers for anykv's tests: etcd, Redis and ZooKeeper from Debian's
//! packages, started on free loopback ports with temporary data
//! directories, and stopped afterwards.
//!
//! A test whose server binary is missing fails with a message saying which
//! Debian package to install (or which `ANYKV_*_URL` to set to use a server
//! of your own); it never skips quietly.
//!
//! Every process started here has a watchdog that stops it when the test
//! process exits, so a server kept in a `static` for a whole test binary
//! does not outlive it.
//!
//! For high-availability tests there are clusters, each with a leader or
//! primary to find, kill, restart, pause and resume:
//! [`etcd_cluster::EtcdCluster`] (three members),
//! [`zookeeper_ensemble::ZkEnsemble`] (three servers),
//! [`redis_sentinel::RedisSentinel`] (a primary, a replica and three
//! Sentinels) and [`redis_cluster::RedisCluster`] (three shards, with or
//! without replicas). [`resp`] is the raw Redis exchange they use.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use tempfile::TempDir;

pub mod etcd;
pub mod etcd_cluster;
pub mod redis;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod resp;
mod slot;
pub mod zookeeper;
pub mod zookeeper_ensemble;

/// A name no other test of any process has used: `{prefix}-{pid}-{n}`
/// with a per-process counter and the time, for roots of tests that share
/// one server.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A free TCP port on 127.0.0.1 (free when asked; bind it soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// `n` distinct free TCP ports on 127.0.0.1 (free when asked; bind them
/// soon). Unlike `n` calls of [`free_port`], which may hand out a port
/// again once its probe is closed, all `n` are held until all are found.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
        })
        .collect();
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
        })
        .collect()
}

/// The path of a server binary, found on `PATH` or at one of `candidates`;
/// panics with how to install it otherwise.
pub fn require_binary(name: &str, candidates: &[&str], package: &str, url_var: &str) -> PathBuf {
    for c in candidates {
        let p = Path::new(c);
        if p.is_file() {
            return p.to_path_buf();
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "{name} is not installed, and these tests need a real server. Install it with \
         `sudo apt-get install {package}` (Debian/Ubuntu), or point {url_var} at a running \
         server, or run `docker compose up -d` and set {url_var}."
    )
}

/// A new temporary directory for a server's data.
pub fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"))
}

/// Waits until every thread of process `pid` is stopped (after SIGSTOP).
///
/// `kill -STOP` returns as soon as the signal is queued; each thread of
/// the process stops only when it is next scheduled, so a busy server
/// (a JVM has dozens of threads) can go on answering requests for a
/// moment after `kill` returned. A test that freezes a server waits for
/// this before it counts the server as frozen. Where `/proc` cannot be
/// read (not Linux), it returns at once.
pub fn wait_until_stopped(pid: u32, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let tasks = PathBuf::from(format!("/proc/{pid}/task"));
    loop {
        let Ok(entries) = std::fs::read_dir(&tasks) else {
            return Ok(());
        };
        let running = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                // The state follows the command name, which is in
                // parentheses and may itself contain them.
                let state = stat
                    .rfind(')')
                    .and_then(|i| stat[i + 1..].split_whitespace().next());
                // Stopped, traced, or already gone.
                !matches!(state, Some("T" | "t" | "Z" | "X" | "x") | None)
            })
            .count();
        if running == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{running} threads of process {pid} still run {within:?} after SIGSTOP"
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The resident memory (`VmRSS`) of process `pid` in KiB, where `/proc`
/// tells it (Linux); `None` otherwise or when the process is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, within: Duration) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + within;
    loop {
        if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            // A connection to a port in the ephemeral range can be the
            // socket connecting to itself (TCP simultaneous open) when
            // nothing listens; that is not a server.
            if stream.local_addr().ok() != stream.peer_addr().ok() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "nothing listens on 127.0.0.1:{port} after {within:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server process that is stopped when dropped, or when the test process
/// exits.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    watchdog: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with its output going to `log` (in the server's
    /// temporary directory).
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> Process {
        let out =
            File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot reopen {}: {e}", log.display()));
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {test} 2>/dev/null && kill -0 {server} 2>/dev/null; do sleep 0.5; done; \
                 kill -TERM {server} 2>/dev/null; sleep 3; kill -KILL {server} 2>/dev/null",
                test = std::process::id(),
                server = child.id()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        Process {
            name: name.to_owned(),
            child,
            watchdog,
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"STOP"`, `"CONT"`, ...) with `kill`. After `STOP`
    /// it waits until every thread of the process has stopped (`kill`
    /// returns before they all have), so nothing sent afterwards is
    /// answered; if they do not stop, the process is let go on and it is
    /// an error.
    pub fn signal(&self, signal: &str) -> Result<(), String> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if !status.success() {
            return Err(format!("kill -{signal} {} failed: {status}", self.pid()));
        }
        if signal == "STOP" {
            if let Err(e) = wait_until_stopped(self.pid(), Duration::from_secs(10)) {
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(self.pid().to_string())
                    .status();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `bytes` of the process's output, for failure messages.
    pub fn log_tail(&self, bytes: usize) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        let start = s.len().saturating_sub(bytes);
        let start = (start..s.len())
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(s.len());
        s[start..].to_owned()
    }

    /// Stops the process gracefully (SIGTERM), then forcibly after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if !self.is_running() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// Makes, with `openssl`, a test CA (`ca.crt`, `ca.key`) and a server
/// certificate for `127.0.0.1` and `localhost` signed by it (`server.crt`,
/// `server.key`) in `dir`; panics if `openssl` fails.
pub fn make_test_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=anykv test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    let _ = std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
}

/// Runs `openssl` in `dir`, panicking with its error output if it fails.
pub(crate) fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (install it): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_stops_on_drop() {
        let dir = temp_dir("anykv-testserver-");
        let mut p = Process::spawn(
            "sleep",
            {
                let mut c = Command::new("sleep");
                c.arg("30");
                c
            },
            dir.path().join("log"),
        );
        assert!(p.is_running());
        let pid = p.pid();
        drop(p);
        let alive = Command::new("kill")
            .arg("-0")
            .arg(pid.to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(!alive, "the process outlived its handle");
    }

    #[test]
    fn ports_and_binaries() {
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(wait_for_port(port, Duration::from_secs(1)).is_ok());
        drop(l);
        assert!(require_binary("sh", &[], "dash", "X").is_file());
        let ports = free_ports(20);
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), 20, "{ports:?}");
        let r = std::panic::catch_unwind(|| {
            require_binary("no-such-server-binary", &[], "pkg", "ANYKV_X_URL")
        });
        let msg = r.unwrap_err();
        let msg = msg.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("apt-get install pkg") && msg.contains("ANYKV_X_URL"),
            "{msg}"
        );
    }
}
