//! A ZooKeeper server for the tests: Debian's ZooKeeper 3.8 started on a
//! free loopback port with a temporary data directory, TTL nodes enabled
//! (`extendedTypesEnabled=true`, `-Dznode.container.checkIntervalMs=1000`),
//! a short tick for fast session expiry, and no limit on connections.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
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

/// A ZooKeeper server process.
#[derive(Debug)]
pub struct ZkServer {
    port: u16,
    dir: TempDir,
    extended: bool,
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
        Self::start_with(true)
    }

    /// Starts a server without extended types (no TTL nodes), for the
    /// test that TTL writes are refused with `Unsupported`.
    pub fn start_without_ttl() -> ZkServer {
        Self::start_with(false)
    }

    fn start_with(extended: bool) -> ZkServer {
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
             clientPortAddress=127.0.0.1\nmaxClientCnxns=0\nextendedTypesEnabled={}\n\
             admin.enableServer=false\n4lw.commands.whitelist=*\n",
            data.display(),
            self.port,
            self.extended
        );
        for (key, value) in SETTINGS {
            body.push_str(&format!("{key}={value}\n"));
        }
        std::fs::write(&cfg, body).unwrap_or_else(|e| panic!("cannot write zoo.cfg: {e}"));
        let mut cmd = Command::new(java());
        cmd.arg("-cp")
            .arg("/usr/share/java/*:/etc/zookeeper/conf")
            .arg("-Xmx256m")
            .arg("-Dzookeeper.admin.enableServer=false")
            .arg(CONTAINER_CHECK_FLAG)
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
        self.process = Some(p);
    }

    /// Stops the server (keeping its data).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(5));
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
    static SHARED: OnceLock<ZkServer> = OnceLock::new();
    SHARED.get_or_init(ZkServer::start).url()
}
