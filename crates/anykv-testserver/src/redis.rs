//! A Redis server for the tests: Debian's `redis-server` on a free loopback
//! port with a temporary data directory and append-only persistence, so
//! [`RedisServer::stop`] and [`RedisServer::start`] make a restart that
//! keeps the data.
//!
//! Variants: [`RedisServer::start_without_persistence`],
//! [`RedisServer::with_requirepass`], [`RedisServer::with_acl_users`]
//! and [`RedisServer::start_tls`] (a CA and a server certificate made with
//! `openssl` in the server's directory). [`shared_url`] is one server for a
//! whole test binary, or `ANYKV_REDIS_URL` when set.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::{free_port, require_binary, temp_dir, wait_for_port, Process, TempDir};

/// The persistence settings every test server runs with (append-only file,
/// fsync every second, no RDB snapshots), as `(directive, value)`; an empty
/// value is written `""`. `docker-compose.yml` passes the same; a test keeps
/// them in step.
pub const SETTINGS: &[(&str, &str)] = &[
    ("appendonly", "yes"),
    ("appendfsync", "everysec"),
    ("save", ""),
];

/// An ACL user for [`RedisServer::with_acl_users`].
#[derive(Debug, Clone)]
pub struct AclUser {
    /// The user name.
    pub name: String,
    /// The password.
    pub password: String,
    /// The ACL rules after `on >password`, such as `~anykv* +@all`.
    pub rules: String,
}

/// A running (or stopped) `redis-server` owned by a test.
#[derive(Debug)]
pub struct RedisServer {
    dir: TempDir,
    port: u16,
    binary: PathBuf,
    config: String,
    tls: Option<PathBuf>,
    process: Option<Process>,
}

impl RedisServer {
    /// Starts a plain server with append-only persistence.
    pub fn start_new() -> RedisServer {
        Self::start_with(String::new())
    }

    /// Starts a server without any persistence: a restart loses all data.
    pub fn start_without_persistence() -> RedisServer {
        Self::start_with("appendonly no\n".into())
    }

    /// Starts a server whose default user needs `password` (`requirepass`).
    pub fn with_requirepass(password: &str) -> RedisServer {
        Self::start_with(format!("requirepass \"{password}\"\n"))
    }

    /// Starts a server with extra ACL users; the default user keeps no
    /// password.
    pub fn with_acl_users(users: &[AclUser]) -> RedisServer {
        let mut config = String::new();
        for u in users {
            config.push_str(&format!("user {} on >{} {}\n", u.name, u.password, u.rules));
        }
        Self::start_with(config)
    }

    /// Starts a TLS-only server (`tls-port`, no plain port) with a CA and a
    /// server certificate for `127.0.0.1` and `localhost` made by `openssl`.
    /// `None` when the `redis-server` binary was built without TLS.
    pub fn start_tls() -> Option<RedisServer> {
        let binary = binary();
        let dir = temp_dir("anykv-redis-tls-");
        crate::make_test_certificates(dir.path());
        let port = free_port();
        let config = format!(
            "port 0\ntls-port {port}\ntls-cert-file {d}/server.crt\ntls-key-file {d}/server.key\n\
             tls-ca-cert-file {d}/ca.crt\ntls-auth-clients no\n",
            d = dir.path().display()
        );
        let mut s = RedisServer {
            tls: Some(dir.path().join("ca.crt")),
            dir,
            port,
            binary,
            config,
            process: None,
        };
        if s.try_start().is_err() {
            return None;
        }
        Some(s)
    }

    fn start_with(extra: String) -> RedisServer {
        let binary = binary();
        let dir = temp_dir("anykv-redis-");
        let port = free_port();
        let config = format!("port {port}\n{extra}");
        let mut s = RedisServer {
            dir,
            port,
            binary,
            config,
            tls: None,
            process: None,
        };
        if let Err(e) = s.try_start() {
            panic!("{e}");
        }
        s
    }

    fn try_start(&mut self) -> Result<(), String> {
        let conf = self.dir.path().join("redis.conf");
        let mut text = format!(
            "bind 127.0.0.1\nprotected-mode no\ndir {}\n",
            self.dir.path().display()
        );
        for (directive, value) in SETTINGS {
            text.push_str(&format!("{directive} \"{value}\"\n"));
        }
        // Variants' own lines come last, so they override the defaults.
        text.push_str(&self.config);
        std::fs::write(&conf, text).map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg(&conf);
        let mut p = Process::spawn("redis-server", cmd, self.dir.path().join("redis.log"));
        let started = std::time::Instant::now();
        loop {
            match wait_for_port(self.port, Duration::from_millis(250)) {
                Ok(()) => break,
                Err(e) if !p.is_running() || started.elapsed() > Duration::from_secs(20) => {
                    let tail = p.log_tail(2000);
                    p.kill();
                    return Err(format!("redis-server did not start: {e}\n{tail}"));
                }
                Err(_) => {}
            }
        }
        self.process = Some(p);
        Ok(())
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:port` (`rediss://` for a TLS server), without a
    /// database or root.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA certificate (PEM file) of a TLS server.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_deref()
    }

    /// Stops the server (SIGTERM, so the append-only file is complete).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(10));
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn start(&mut self) {
        if self.process.is_some() {
            return;
        }
        if let Err(e) = self.try_start() {
            panic!("{e}");
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is
    /// answered. Undo with [`RedisServer::resume`].
    pub fn pause(&self) -> Result<(), String> {
        match &self.process {
            Some(p) => p.signal("STOP"),
            None => Err("the server is not running".into()),
        }
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) -> Result<(), String> {
        match &self.process {
            Some(p) => p.signal("CONT"),
            None => Err("the server is not running".into()),
        }
    }

    /// Stops and starts the server, keeping its data.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }
}

fn binary() -> PathBuf {
    require_binary(
        "redis-server",
        &["/usr/bin/redis-server", "/usr/local/bin/redis-server"],
        "redis-server",
        "ANYKV_REDIS_URL",
    )
}

static SERVER: OnceLock<std::sync::Mutex<RedisServer>> = OnceLock::new();

/// Restarts the shared server of [`shared_url`], keeping its data. An
/// error when the URL came from `ANYKV_REDIS_URL` (a server the tests do
/// not own). Blocks while the server stops and starts.
pub fn restart_shared() -> Result<(), String> {
    let _ = shared_url();
    let server = SERVER
        .get()
        .ok_or("the shared server is ANYKV_REDIS_URL's, which the tests do not own")?;
    let mut s = match server.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    s.stop();
    s.try_start()
}

/// Freezes (`pause = true`, SIGSTOP) or resumes (SIGCONT) the shared
/// server of [`shared_url`]; an error when that is `ANYKV_REDIS_URL`'s.
pub fn pause_shared(pause: bool) -> Result<(), String> {
    let _ = shared_url();
    let server = SERVER
        .get()
        .ok_or("the shared server is ANYKV_REDIS_URL's, which the tests do not own")?;
    let s = match server.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    if pause {
        s.pause()
    } else {
        s.resume()
    }
}

/// The URL of one server shared by a whole test binary: `ANYKV_REDIS_URL`
/// when set, otherwise a server started on first use (and stopped by its
/// watchdog when the test process exits).
pub fn shared_url() -> String {
    static SHARED: OnceLock<String> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if let Ok(url) = std::env::var("ANYKV_REDIS_URL") {
                if !url.is_empty() {
                    return url;
                }
            }
            let server = SERVER.get_or_init(|| std::sync::Mutex::new(RedisServer::start_new()));
            match server.lock() {
                Ok(s) => s.url(),
                Err(p) => p.into_inner().url(),
            }
        })
        .clone()
}
