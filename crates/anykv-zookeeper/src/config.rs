//! The `zk://` URL and the store's configuration: a typed builder, or
//! [`ZkConfig::from_url`]. Every field is public and documented;
//! `#[non_exhaustive]` keeps [`ZkConfig::new`] and the builder methods the
//! way to make one.

use std::fmt;
use std::time::Duration;

use anykv_core::{
    key, parse_duration_param, parse_param, redact_url, url_credentials, url_params, url_root,
    Error, Result, Url,
};

/// The backend's name, as in error messages.
pub const BACKEND: &str = "zookeeper";

/// The smallest TTL: the server's TTL check runs once a second.
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// The port of a server given without one.
const DEFAULT_PORT: u16 = 2181;

/// The default session timeout of the store's own session.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// The default time allowed to establish a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default time allowed for one call.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest value: ZooKeeper's default `jute.maxbuffer` is 1 MiB for a
/// whole request, so values are held to 1,000,000 bytes, leaving room for
/// the path.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 1_000_000;

/// When a lock's `lost()` fires while its session's connection is down:
/// the choice between a *suspension* (the connection to the server is
/// lost, but the session, and with it the lock node, lives on) and a
/// *loss* (the session expired or was closed: the server deleted the lock
/// node, and another client may hold the lock). As Apache Curator's
/// connection-state error policies, `Connection` being its standard policy
/// and `Session` its session policy.
///
/// Leases follow `Session` whatever this says: a lease's keys survive a
/// suspension, and its `lost()` means the keys are, or are about to be,
/// gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LossPolicy {
    /// The default. `lost()` fires when the session expires or is closed,
    /// and, while the connection is down, as soon as the client can no
    /// longer be sure the session lives: [`anykv_core::backend::loss_deadline`]
    /// of the session timeout after it last heard from a server. The server
    /// cannot expire the session before that, so `lost()` still fires
    /// before another client could get the lock; the session is closed
    /// then, which deletes the lock node if it was not yet gone. A leader
    /// election or a server going away, where the client reconnects to
    /// another server in time, keeps the lock and fires nothing.
    #[default]
    Session,
    /// `lost()` also fires as soon as the session's connection is lost
    /// (Curator's SUSPENDED), and the lock is then really given up: its
    /// node is deleted once the connection is back (or goes with the
    /// session), so a holder told "lost" never keeps others waiting. For a
    /// holder that must stop at once whenever it cannot confirm the lock;
    /// every leader election or server restart then costs every holder
    /// its lock.
    Connection,
}

impl LossPolicy {
    /// The name used in the `loss_policy` URL parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            LossPolicy::Session => "session",
            LossPolicy::Connection => "connection",
        }
    }
}

impl fmt::Display for LossPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LossPolicy {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "session" => Ok(LossPolicy::Session),
            "connection" => Ok(LossPolicy::Connection),
            other => Err(format!(
                "{other:?} is not a loss policy (session or connection)"
            )),
        }
    }
}

/// How to open a [`crate::ZkStore`]: servers, root, timeouts, digest
/// credentials, the lock loss policy and the value limit. Its `Debug` output never shows the
/// password.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZkConfig {
    /// `host:port` of every server of the ensemble.
    pub servers: Vec<String>,
    /// The root (canonical) every key lives under.
    pub root: String,
    /// The store's session timeout (negotiated with the server).
    pub session_timeout: Duration,
    /// The time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// The time allowed for one call before it fails with `Timeout`.
    pub request_timeout: Duration,
    /// Digest credentials (`user`, `password`); with them, every node the
    /// store creates carries an ACL giving all rights to these credentials
    /// only.
    pub digest: Option<(String, String)>,
    /// The largest value, in bytes.
    pub max_value_size: usize,
    /// When a lock's `lost()` fires while its connection is down (see
    /// [`LossPolicy`]).
    pub loss_policy: LossPolicy,
}

impl fmt::Debug for ZkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkConfig")
            .field("servers", &self.servers)
            .field("root", &self.root)
            .field("session_timeout", &self.session_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("digest_user", &self.digest.as_ref().map(|(u, _)| u))
            .field("max_value_size", &self.max_value_size)
            .field("loss_policy", &self.loss_policy)
            .finish()
    }
}

impl ZkConfig {
    /// A configuration for `servers` (`host:port`) with the defaults.
    pub fn new(servers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ZkConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            root: String::new(),
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            digest: None,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            loss_policy: LossPolicy::default(),
        }
    }

    /// Sets the root (checked with the key rules when the store opens).
    pub fn with_root(mut self, root: impl Into<String>) -> Self {
        self.root = root.into();
        self
    }

    /// Authenticates with ZooKeeper digest credentials: every node the
    /// store creates at or under its root is then readable and writable
    /// with these credentials only.
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.digest = Some((user.into(), password.into()));
        self
    }

    /// Sets the timeout of the store's own session (negotiated with the
    /// server).
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Sets the time to establish a connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the time one call may take before it fails with `Timeout`.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the largest value, in bytes (raise the server's
    /// `jute.maxbuffer` with it).
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// Sets when a lock's `lost()` fires while its connection is down.
    pub fn loss_policy(mut self, policy: LossPolicy) -> Self {
        self.loss_policy = policy;
        self
    }

    /// The parameters a URL may carry.
    pub const URL_PARAMS: &'static [&'static str] = &[
        "endpoints",
        "connect_timeout",
        "request_timeout",
        "session_timeout",
        "max_value_size",
        "loss_policy",
    ];

    /// Checks the configuration before anything connects: at least one
    /// server, and a root that follows the key rules. Returns the root in
    /// canonical form.
    pub(crate) fn validate(&self) -> Result<String> {
        if self.servers.is_empty() {
            return Err(Error::Config("no ZooKeeper server given".into()));
        }
        key::normalize_root(&self.root)
    }

    /// Reads `zk://[user:password@]host:port[,host:port...]/root?params`
    /// as [`anykv_core::parse_url`] hands it over: the first server is the
    /// URL's host, the others are in the `endpoints` parameter.
    ///
    /// Parameters: `endpoints` (more `host:port` servers, comma-separated),
    /// `connect_timeout`, `request_timeout` (per call) and
    /// `session_timeout` (durations such as `250ms`, `5s`, `2m`),
    /// `max_value_size` (bytes) and `loss_policy` (`session` or
    /// `connection`, see [`LossPolicy`]).
    pub fn from_url(url: &Url) -> Result<Self> {
        if url.scheme() != "zk" {
            return Err(Error::Config(format!(
                "the ZooKeeper backend takes zk:// URLs, not {}://",
                url.scheme()
            )));
        }
        let shown = redact_url(url.as_str());
        let host = url.host_str().unwrap_or("");
        if host.is_empty() {
            return Err(Error::Config(format!("{shown:?} names no server")));
        }
        let mut servers = vec![format!("{host}:{}", url.port().unwrap_or(DEFAULT_PORT))];
        let mut config = ZkConfig::new(Vec::<String>::new());
        config.root = key::normalize_root(&url_root(url)?)?;
        config.digest = url_credentials(url)?;
        for (name, value) in url_params(url, Self::URL_PARAMS)? {
            match name.as_str() {
                "endpoints" => {
                    for s in value.split(',') {
                        let s = s.trim();
                        if s.is_empty() {
                            return Err(Error::Config(format!(
                                "{shown:?} has an empty server in its endpoints"
                            )));
                        }
                        servers.push(if s.contains(':') {
                            s.to_owned()
                        } else {
                            format!("{s}:{DEFAULT_PORT}")
                        });
                    }
                }
                "connect_timeout" => config.connect_timeout = parse_duration_param(&name, &value)?,
                "request_timeout" => config.request_timeout = parse_duration_param(&name, &value)?,
                "session_timeout" => config.session_timeout = parse_duration_param(&name, &value)?,
                "loss_policy" => config.loss_policy = parse_param(&name, &value)?,
                _ => config.max_value_size = parse_param(&name, &value)?,
            }
        }
        config.servers = servers;
        Ok(config)
    }

    /// The connect string of the ensemble.
    pub fn connect_string(&self) -> String {
        self.servers.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = anykv_core::parse_url(
            "zk://u:p%40ss@h1:2182,h2:1,h3/app/x?request_timeout=100ms&session_timeout=20s",
        )
        .unwrap();
        let c = ZkConfig::from_url(&u).unwrap();
        assert_eq!(c.servers, vec!["h1:2182", "h2:1", "h3:2181"]);
        assert_eq!(c.connect_string(), "h1:2182,h2:1,h3:2181");
        assert_eq!(c.root, "app/x");
        assert_eq!(c.digest, Some(("u".into(), "p@ss".into())));
        assert_eq!(c.request_timeout, Duration::from_millis(100));
        assert_eq!(c.session_timeout, Duration::from_secs(20));
        assert!(!format!("{c:?}").contains("p@ss"));
        assert_eq!(c.loss_policy, LossPolicy::Session);
        let c =
            ZkConfig::from_url(&anykv_core::parse_url("zk://h/?loss_policy=connection").unwrap())
                .unwrap();
        assert_eq!(c.loss_policy, LossPolicy::Connection);
        let bad = |u: &str| ZkConfig::from_url(&anykv_core::parse_url(u).unwrap()).is_err();
        assert!(bad("zk://h/?bogus=1"));
        assert!(bad("zk://h/?request_timeout=0s"));
        assert!(bad("etcd://h/"));
        assert!(bad("zk://h/?loss_policy=suspended"));
        assert!(anykv_core::parse_url("zk://h1,,h2/").is_err());
    }
}
