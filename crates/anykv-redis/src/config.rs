//! [`RedisConfig`]: the typed builder, the defaults, and the limits the
//! backend applies; [`Topology`]: which deployment (one server, Sentinel,
//! Cluster) the store talks to. Its fields are public, each documented;
//! `#[non_exhaustive]` keeps the builder the way to make one. The URL forms
//! are read in `urls.rs` ([`RedisConfig::from_url`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anykv_core::{key, Error, Result};

/// The namespace used when none is given.
pub const DEFAULT_NAMESPACE: &str = "anykv";

/// Changes kept in the change stream for resuming watches, by default.
pub const DEFAULT_HISTORY: usize = 10_000;

/// The largest value, by default: 16 MiB.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 16 * 1024 * 1024;

/// How long one call may take, by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting may take, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a write waits for its replicas (`WAIT`) when a URL sets
/// `wait_replicas` without `wait_timeout`.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_millis(500);

/// The port of a Sentinel when a `redis+sentinel://` URL names none.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// The smallest TTL (of keys, leases and locks); smaller ones are raised.
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// The largest TTL (of keys, leases and locks): about a hundred years;
/// larger ones are lowered to it.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The backend's name in errors and capabilities.
pub(crate) const BACKEND: &str = "redis";

/// Which Redis deployment a store talks to. See the crate documentation's
/// table for what each one promises.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Topology {
    /// One server (a standalone server or a fixed primary) at the
    /// configuration's `host` and `port`.
    Single,
    /// The primary that these Sentinels (`(host, port)`, asked in this
    /// order) name `master_name`; the store finds it again after every
    /// failover.
    Sentinel {
        /// The Sentinels' addresses.
        sentinels: Vec<(String, u16)>,
        /// The name the Sentinels know the primary by.
        master_name: String,
    },
    /// A Redis Cluster, found through these seed nodes (`(host, port)`).
    /// A namespace lives in one hash slot, so on one shard.
    Cluster {
        /// The seed nodes' addresses.
        nodes: Vec<(String, u16)>,
    },
}

/// How to reach a Redis server and where the store lives on it. Build one
/// with [`RedisConfig::new`], [`RedisConfig::sentinel`] or
/// [`RedisConfig::cluster`] and the builder methods, or from a URL with
/// [`RedisConfig::from_url`]. Its `Debug` never shows a password.
///
/// ```
/// use std::time::Duration;
/// use anykv_redis::RedisConfig;
///
/// let config = RedisConfig::new("127.0.0.1", 6379)
///     .with_db(2)
///     .with_root("app")
///     .with_user("svc", "s3cret")
///     .request_timeout(Duration::from_secs(2));
/// let url = anykv_core::parse_url("redis://svc:s3cret@127.0.0.1/2/app?request_timeout=2s").unwrap();
/// assert_eq!(RedisConfig::from_url(&url).unwrap(), config);
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The deployment: one server, Sentinel or Cluster.
    pub topology: Topology,
    /// The server's host name or address (for Sentinel and Cluster: the
    /// first Sentinel's or seed node's, for messages only).
    pub host: String,
    /// The server's port (see `host`).
    pub port: u16,
    /// TLS (`rediss://`).
    pub tls: bool,
    /// A PEM file of the CA certificates to trust for TLS, instead of the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// The Redis database number (`SELECT`).
    pub db: i64,
    /// The namespace: every key of the backend starts with `{namespace}:`.
    /// Stores with one namespace share revisions, the index and the change
    /// stream; roots nest inside it.
    pub namespace: String,
    /// The root every key lives under, in canonical form.
    pub root: String,
    /// The ACL user name (`None`: the default user).
    pub username: Option<String>,
    /// The password (ACL or `requirepass`).
    pub password: Option<String>,
    /// The ACL user name for the Sentinels (`None`: the default user).
    pub sentinel_username: Option<String>,
    /// The Sentinels' password (`None`: they need none).
    pub sentinel_password: Option<String>,
    /// How many replicas must acknowledge each write, lock and lease
    /// operation (`WAIT`) before it succeeds; 0 (the default) waits for
    /// none.
    pub wait_replicas: usize,
    /// How long a write waits for those replicas.
    pub wait_timeout: Duration,
    /// How long one call may take before it fails with `Timeout`.
    pub request_timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// Changes kept in the change stream (watches resume within them).
    pub history: usize,
    /// The largest value, in bytes.
    pub max_value_size: usize,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("topology", &self.topology)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("db", &self.db)
            .field("namespace", &self.namespace)
            .field("root", &self.root)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("sentinel_username", &self.sentinel_username)
            .field(
                "sentinel_password",
                &self.sentinel_password.as_ref().map(|_| "***"),
            )
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("history", &self.history)
            .field("max_value_size", &self.max_value_size)
            .finish()
    }
}

impl RedisConfig {
    /// A plain connection to `host:port`, database 0, the default
    /// namespace, the empty root.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        RedisConfig {
            topology: Topology::Single,
            host: host.into(),
            port,
            tls: false,
            ca_file: None,
            db: 0,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            root: String::new(),
            username: None,
            password: None,
            sentinel_username: None,
            sentinel_password: None,
            wait_replicas: 0,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            history: DEFAULT_HISTORY,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
        }
    }

    /// The primary the `sentinels` (`(host, port)`, asked in this order)
    /// name `master_name`, database 0, the default namespace, the empty
    /// root.
    ///
    /// ```
    /// use anykv_redis::{RedisConfig, Topology};
    ///
    /// let config = RedisConfig::sentinel([("s1", 26379), ("s2", 26379)], "main")
    ///     .with_db(1)
    ///     .with_root("app");
    /// let url = anykv_core::parse_url("redis+sentinel://s1,s2:26379/main/1/app").unwrap();
    /// assert_eq!(RedisConfig::from_url(&url).unwrap(), config);
    /// assert!(matches!(config.topology, Topology::Sentinel { .. }));
    /// ```
    pub fn sentinel<H: Into<String>>(
        sentinels: impl IntoIterator<Item = (H, u16)>,
        master_name: impl Into<String>,
    ) -> Self {
        let sentinels: Vec<(String, u16)> =
            sentinels.into_iter().map(|(h, p)| (h.into(), p)).collect();
        let (host, port) = sentinels
            .first()
            .cloned()
            .unwrap_or((String::new(), DEFAULT_SENTINEL_PORT));
        let mut config = RedisConfig::new(host, port);
        config.topology = Topology::Sentinel {
            sentinels,
            master_name: master_name.into(),
        };
        config
    }

    /// A Redis Cluster found through the seed `nodes` (`(host, port)`), the
    /// default namespace, the empty root.
    ///
    /// ```
    /// use anykv_redis::RedisConfig;
    ///
    /// let config = RedisConfig::cluster([("a", 7000), ("b", 7001)]).with_root("app");
    /// let url = anykv_core::parse_url("redis+cluster://a:7000,b:7001/app").unwrap();
    /// assert_eq!(RedisConfig::from_url(&url).unwrap(), config);
    /// ```
    pub fn cluster<H: Into<String>>(nodes: impl IntoIterator<Item = (H, u16)>) -> Self {
        let nodes: Vec<(String, u16)> = nodes.into_iter().map(|(h, p)| (h.into(), p)).collect();
        let (host, port) = nodes.first().cloned().unwrap_or((String::new(), 6379));
        let mut config = RedisConfig::new(host, port);
        config.topology = Topology::Cluster { nodes };
        config
    }

    /// Authenticates to the Sentinels as an ACL user (an empty `username`:
    /// the default user with this password).
    pub fn with_sentinel_auth(
        mut self,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        let username = username.into();
        self.sentinel_username = (!username.is_empty()).then_some(username);
        self.sentinel_password = Some(password.into());
        self
    }

    /// Makes every write, lock and lease operation wait (`WAIT`) until
    /// `replicas` replicas have it, for at most `timeout`; one that gets
    /// fewer fails with `Unavailable` saying it was applied on the primary
    /// but may be lost in a failover. 0 turns it off.
    pub fn wait_for_replicas(mut self, replicas: usize, timeout: Duration) -> Self {
        self.wait_replicas = replicas;
        self.wait_timeout = timeout;
        self
    }

    /// Uses TLS.
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Trusts the CA certificates in this PEM file (implies TLS).
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self.tls = true;
        self
    }

    /// Selects the database.
    pub fn with_db(mut self, db: i64) -> Self {
        self.db = db;
        self
    }

    /// Sets the namespace.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the root (checked with the key rules when the store opens).
    pub fn with_root(mut self, root: impl Into<String>) -> Self {
        self.root = root.into();
        self
    }

    /// Authenticates as an ACL user; an empty `username` authenticates the
    /// default user (`requirepass`), as `redis://:password@host` does.
    pub fn with_user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        let username = username.into();
        self.username = (!username.is_empty()).then_some(username);
        self.password = Some(password.into());
        self
    }

    /// Sets how long one call may take before it fails with `Timeout`.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets how long connecting may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets how many changes the change stream keeps (at least 100).
    pub fn with_history(mut self, history: usize) -> Self {
        self.history = history.max(100);
        self
    }

    /// Sets the largest value.
    pub fn with_max_value_size(mut self, max: usize) -> Self {
        self.max_value_size = max;
        self
    }

    /// Checks the namespace and the root; returns the root in canonical form.
    pub(crate) fn validate(&self) -> Result<String> {
        if self.namespace.is_empty()
            || self
                .namespace
                .chars()
                .any(|c| c.is_control() || c == '{' || c == '}')
        {
            return Err(Error::Config(format!(
                "invalid namespace {:?}: it must be non-empty, without braces or control characters",
                self.namespace
            )));
        }
        match &self.topology {
            Topology::Single if self.host.is_empty() => {
                return Err(Error::Config("the Redis URL names no host".into()));
            }
            Topology::Single => {}
            Topology::Sentinel {
                sentinels,
                master_name,
            } => {
                if sentinels.is_empty() || sentinels.iter().any(|(h, _)| h.is_empty()) {
                    return Err(Error::Config(
                        "a Sentinel configuration needs at least one Sentinel, each with a host"
                            .into(),
                    ));
                }
                if master_name.is_empty() || master_name.chars().any(char::is_control) {
                    return Err(Error::Config(format!(
                        "invalid Sentinel master name {master_name:?}"
                    )));
                }
            }
            Topology::Cluster { nodes } => {
                if nodes.is_empty() || nodes.iter().any(|(h, _)| h.is_empty()) {
                    return Err(Error::Config(
                        "a Cluster configuration needs at least one seed node, each with a host"
                            .into(),
                    ));
                }
                if self.db != 0 {
                    return Err(Error::Config(format!(
                        "a Redis Cluster has only database 0, not {}",
                        self.db
                    )));
                }
            }
        }
        let day = Duration::from_secs(24 * 3600);
        if self.request_timeout.is_zero()
            || self.connect_timeout.is_zero()
            || self.request_timeout > day
            || self.connect_timeout > day
        {
            return Err(Error::Config(
                "timeouts must be greater than zero and at most a day".into(),
            ));
        }
        if self.wait_replicas > 0
            && (self.wait_timeout.is_zero() || self.wait_timeout >= self.request_timeout)
        {
            return Err(Error::Config(format!(
                "wait_timeout ({:?}) must be greater than zero and less than request_timeout \
                 ({:?})",
                self.wait_timeout, self.request_timeout
            )));
        }
        if self.history < 100 {
            return Err(Error::Config(format!(
                "history must be at least 100 changes, not {}",
                self.history
            )));
        }
        key::normalize_root(&self.root)
    }
}
