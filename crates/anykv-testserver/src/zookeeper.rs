//! A ZooKeeper server for the tests: Debian's ZooKeeper 3.8 started on a
//! free loopback port with a temporary data directory, TTL nodes enabled
//! (`extendedTypesEnabled=true`, `-Dznode.container.checkIntervalMs=1000`,
//! and no throttle on reaping: [`CONTAINER_RATE_FLAG`]),
//! a short tick for fast session expiry, and ZooKeeper's stock limit of 60
//! connections per client address (`maxClientCnxns`), so a backend that
//! opened a connection per lease or lock would fail here as it would in
//! production. [`ZkServer::start_stock`] runs a server with the stock
//! `tickTime` (2000 ms) instead; [`ZkServer::pause`] and [`pause_shared`]
//! freeze a server (SIGSTOP) for fault tests.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::{free_port, temp_dir, wait_for_port, Process, TempDir};

/// The variable naming a ZooKeeper of your own (`zk://host:port`).
pub const URL_VAR: &str = "ANYKV_ZOOKEEPER_URL";

/// The `zoo.cfg` settings every test server runs with besides its port and
/// data directory (and `extendedTypesEnabled`): a 200 ms tick so sessions
/// expire promptly, and session timeouts from 400 ms to 60 s.
/// `docker-compose.yml` uses the same values; a test keeps them in step.
pub const SETTINGS: &[(&str, &str)] = &[
    ("tickTime", "200"),
    ("minSessionTimeout", "400"),
    ("maxSessionTimeout", "60000"),
];

/// The JVM flag that makes the server remove expired TTL nodes and empty
/// containers within about a second (the default is a minute).
pub const CONTAINER_CHECK_FLAG: &str = "-Dznode.container.checkIntervalMs=1000";

/// The JVM flag that lifts the server's throttle on reaping. By default it
/// removes at most 10,000 empty containers and expired TTL nodes a minute,
/// sleeping 6 ms after each, and an expired TTL node waits behind every
/// empty container found in the same pass: after a test deleted a
/// thousand keys (whose key nodes are containers), TTL keys of every test
/// on the server outlived their TTL by seconds.
pub const CONTAINER_RATE_FLAG: &str = "-Dznode.container.maxPerMinute=600000";

/// A ZooKeeper server process.
#[derive(Debug)]
pub struct ZkServer {
    port: u16,
    dir: TempDir,
    extended: bool,
    /// `zoo.cfg` settings; [`SETTINGS`] unless started otherwise.
    settings: Vec<(String, String)>,
    process: Option<Process>,
}

fn java() -> PathBuf {
    crate::require_binary(
        "java",
        &["/usr/lib/jvm/default-java/bin/java"],
        "zookeeper default-jre-headless",
        URL_VAR,
    )
}

impl ZkServer {
    /// Starts a server with TTL nodes enabled.
    pub fn start() -> ZkServer {
        Self::start_with(true, SETTINGS)
    }

    /// Starts a server with ZooKeeper's stock timing: `tickTime` 2000 ms and
    /// no session-timeout bounds of its own (so sessions are negotiated to
    /// between 2 and 20 ticks, 4 s to 40 s), TTL nodes enabled.
    pub fn start_stock() -> ZkServer {
        Self::start_with(true, &[("tickTime", "2000")])
    }

    /// Starts a server with TTL nodes enabled and these `zoo.cfg` settings
    /// instead of [`SETTINGS`] (besides port, data directory and
    /// `extendedTypesEnabled`).
    pub fn start_with_settings(settings: &[(&str, &str)]) -> ZkServer {
        Self::start_with(true, settings)
    }

    /// Starts a server without extended types (no TTL nodes), for the
    /// test that TTL writes are refused with `Unsupported`.
    pub fn start_without_ttl() -> ZkServer {
        Self::start_with(false, SETTINGS)
    }

    fn start_with(extended: bool, settings: &[(&str, &str)]) -> ZkServer {
        if !std::path::Path::new("/usr/share/java/zookeeper.jar").is_file() {
            panic!(
                "ZooKeeper is not installed, and these tests need a real server. Install it with \
                 `sudo apt-get install zookeeper`, or point {URL_VAR} at a running server."
            );
        }
        let dir = temp_dir("anykv-zookeeper-");
        let port = free_port();
        let mut s = ZkServer {
            port,
            dir,
            extended,
            settings: settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            process: None,
        };
        s.start_again();
        s
    }

    /// Starts the server again after [`ZkServer::stop`], on the same port
    /// and data.
    pub fn start_again(&mut self) {
        if self.process.is_some() {
            return;
        }
        let data = self.dir.path().join("data");
        let _ = std::fs::create_dir_all(&data);
        let cfg = self.dir.path().join("zoo.cfg");
        let mut body = format!(
            "initLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\n\
             clientPortAddress=127.0.0.1\nextendedTypesEnabled={}\n\
             admin.enableServer=false\n4lw.commands.whitelist=*\n",
            data.display(),
            self.port,
            self.extended
        );
        for (key, value) in &self.settings {
            body.push_str(&format!("{key}={value}\n"));
        }
        std::fs::write(&cfg, body).unwrap_or_else(|e| panic!("cannot write zoo.cfg: {e}"));
        let mut cmd = Command::new(java());
        cmd.arg("-cp")
            .arg("/usr/share/java/*:/etc/zookeeper/conf")
            .arg("-Xmx256m")
            .arg("-Dzookeeper.admin.enableServer=false")
            .arg(CONTAINER_CHECK_FLAG)
            .arg(CONTAINER_RATE_FLAG)
            .arg(format!(
                "-Dzookeeper.extendedTypesEnabled={}",
                self.extended
            ))
            .arg("-Dzookeeper.log.dir=".to_owned() + &self.dir.path().display().to_string())
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(&cfg);
        let mut p = Process::spawn("zookeeper", cmd, self.dir.path().join("zookeeper.log"));
        if let Err(e) = wait_for_port(self.port, Duration::from_secs(30)) {
            let tail = p.log_tail(4000);
            p.kill();
            panic!("ZooKeeper did not start: {e}\n{tail}");
        }
        if !self.serving(Duration::from_secs(30)) {
            let tail = p.log_tail(4000);
            p.kill();
            panic!("ZooKeeper did not start serving\n{tail}");
        }
        self.process = Some(p);
    }

    /// Waits until the server answers the `srvr` command with its mode
    /// (it listens before it serves sessions).
    fn serving(&self, within: Duration) -> bool {
        use std::io::{Read, Write};
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reply = String::new();
                if s.write_all(b"srvr").is_ok()
                    && s.read_to_string(&mut reply).is_ok()
                    && reply.contains("Mode:")
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Stops the server (keeping its data).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(5));
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is
    /// answered, so requests hang instead of failing, and no session
    /// expires while it is frozen. Returns once every thread of the server
    /// has stopped ([`crate::wait_until_stopped`]), so nothing sent after
    /// it is answered. Undo with [`ZkServer::resume`].
    pub fn pause(&self) {
        if let Err(e) = self.freeze() {
            panic!("ZooKeeper did not freeze: {e}");
        }
    }

    /// SIGSTOP, then waits until the server's threads have all stopped;
    /// if they do not, the server is let go on (SIGCONT) and it is an
    /// error.
    fn freeze(&self) -> Result<(), String> {
        self.signal("-STOP");
        let Some(p) = &self.process else {
            return Ok(());
        };
        crate::wait_until_stopped(p.pid(), Duration::from_secs(10)).inspect_err(|_| {
            self.signal("-CONT");
        })
    }

    /// Resumes a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(p) = &self.process {
            let status = Command::new("kill")
                .arg(sig)
                .arg(p.pid().to_string())
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "kill {sig} zookeeper failed"
            );
        }
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `zk://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("zk://{}", self.address())
    }
}

/// The URL of the ZooKeeper the tests share: `ANYKV_ZOOKEEPER_URL` if set,
/// else a server started once for this test process (and stopped when it
/// exits).
pub fn shared_url() -> String {
    if let Ok(url) = std::env::var(URL_VAR) {
        if !url.is_empty() {
            return url;
        }
    }
    lock(shared_server()).url()
}

fn shared_server() -> &'static Mutex<ZkServer> {
    SHARED.get_or_init(|| Mutex::new(ZkServer::start()))
}

fn lock(m: &Mutex<ZkServer>) -> std::sync::MutexGuard<'_, ZkServer> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

static SHARED: OnceLock<Mutex<ZkServer>> = OnceLock::new();

/// Serializes pausing the shared server, so that a pause and a resume from
/// different tests do not interleave.
static PAUSE: Mutex<u32> = Mutex::new(0);

/// Freezes the shared server of [`shared_url`] (SIGSTOP) until
/// [`resume_shared`]; pauses nest (the server runs again after as many
/// resumes). An error when the URL came from `ANYKV_ZOOKEEPER_URL` (a
/// server the tests do not own).
pub fn pause_shared() -> Result<(), String> {
    let server = owned_shared()?;
    let mut depth = PAUSE.lock().unwrap_or_else(|p| p.into_inner());
    if *depth == 0 {
        lock(server).freeze()?;
    }
    *depth += 1;
    Ok(())
}

/// Resumes the shared server after [`pause_shared`] (SIGCONT).
pub fn resume_shared() -> Result<(), String> {
    let server = owned_shared()?;
    let mut depth = PAUSE.lock().unwrap_or_else(|p| p.into_inner());
    if *depth == 1 {
        lock(server).resume();
    }
    *depth = depth.saturating_sub(1);
    Ok(())
}

/// Stops the shared server and starts it again on the same port with the
/// same data. An error when it is `ANYKV_ZOOKEEPER_URL`'s. Blocks while
/// the server stops and starts.
pub fn restart_shared() -> Result<(), String> {
    let server = owned_shared()?;
    let mut s = lock(server);
    s.stop();
    s.start_again();
    Ok(())
}

fn owned_shared() -> Result<&'static Mutex<ZkServer>, String> {
    if std::env::var(URL_VAR).is_ok_and(|u| !u.is_empty()) {
        return Err(format!(
            "the shared server is {URL_VAR}'s, which the tests do not own"
        ));
    }
    Ok(shared_server())
}
