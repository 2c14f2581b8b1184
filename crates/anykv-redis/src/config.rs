//! [`RedisConfig`]: the URL and the typed builder, the defaults, and the
//! limits the backend applies. Its fields are public, each documented;
//! `#[non_exhaustive]` keeps the builder the way to make one.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anykv_core::{
    key, parse_duration_param, parse_param, redact_url, url_credentials, url_params, url_root,
    Error, Result, Url,
};

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

/// The smallest TTL (of keys, leases and locks); smaller ones are raised.
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// The largest TTL (of keys, leases and locks): about a hundred years;
/// larger ones are lowered to it.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The backend's name in errors and capabilities.
pub(crate) const BACKEND: &str = "redis";

/// How to reach a Redis server and where the store lives on it. Build one
/// with [`RedisConfig::new`] and the builder methods, or from a URL with
/// [`RedisConfig::from_url`]. Its `Debug` never shows the password.
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
    /// The server's host name or address.
    pub host: String,
    /// The server's port.
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
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("db", &self.db)
            .field("namespace", &self.namespace)
            .field("root", &self.root)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
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
            host: host.into(),
            port,
            tls: false,
            ca_file: None,
            db: 0,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            root: String::new(),
            username: None,
            password: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            history: DEFAULT_HISTORY,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
        }
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
        if self.host.is_empty() {
            return Err(Error::Config("the Redis URL names no host".into()));
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
        if self.history < 100 {
            return Err(Error::Config(format!(
                "history must be at least 100 changes, not {}",
                self.history
            )));
        }
        key::normalize_root(&self.root)
    }

    /// Reads
    /// `redis[s]://[user[:password]@]host[:port][/db[/root...]][?params]`.
    ///
    /// The first path segment is the database number (default 0); the rest
    /// of the path is the root. Parameters: `prefix` (a root that the
    /// path's root goes under), `namespace` (default `anykv`),
    /// `request_timeout` and `connect_timeout` (durations: `250ms`, `5s`,
    /// `2m`), `history`, `max_value_size`, `ca_file` (a PEM
    /// file of CAs to trust, `rediss://` only). A user without a password
    /// is an error; a password without a user authenticates the default
    /// user (`requirepass`). The backend talks to one server: a URL that
    /// names several (`a:6379,b:6379`, which [`anykv_core::parse_url`]
    /// turns into an `endpoints` parameter) is a `Config` error.
    pub fn from_url(url: &Url) -> Result<Self> {
        let tls = match url.scheme() {
            "redis" => false,
            "rediss" => true,
            other => {
                return Err(Error::Config(format!(
                    "the redis backend takes redis:// or rediss:// URLs, not {other}://"
                )))
            }
        };
        let shown = redact_url(url.as_str());
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::Config(format!("{shown:?} names no host")))?;
        let mut config = RedisConfig::new(host, url.port().unwrap_or(6379)).with_tls(tls);
        let (user, password) = match url_credentials(url)? {
            Some((user, password)) => (user, url.password().map(|_| password)),
            None => (String::new(), None),
        };
        match (user.is_empty(), password) {
            (true, None) => {}
            (true, Some(p)) => config.password = Some(p),
            (false, Some(p)) => {
                config.username = Some(user);
                config.password = Some(p);
            }
            (false, None) => {
                return Err(Error::Config(format!(
                    "{shown:?} names a user without a password"
                )))
            }
        }
        let path = url_root(url)?;
        let (db, path_root) = match path.split_once('/') {
            Some((db, rest)) => (db.to_owned(), rest.to_owned()),
            None => (path.clone(), String::new()),
        };
        if !db.is_empty() {
            config.db = db.parse().map_err(|_| {
                Error::Config(format!(
                    "the first path segment of {shown:?} must be the database number, not {db:?}"
                ))
            })?;
            if config.db < 0 {
                return Err(Error::Config(format!(
                    "negative database number in {shown:?}"
                )));
            }
        }
        let mut prefix = String::new();
        for (name, value) in url_params(
            url,
            &[
                "prefix",
                "namespace",
                "request_timeout",
                "connect_timeout",
                "history",
                "max_value_size",
                "ca_file",
                "endpoints",
            ],
        )? {
            match name.as_str() {
                "prefix" => prefix = key::normalize_root(&value)?,
                "namespace" => config.namespace = value,
                "request_timeout" => config.request_timeout = parse_duration_param(&name, &value)?,
                "connect_timeout" => config.connect_timeout = parse_duration_param(&name, &value)?,
                "history" => config = config.with_history(parse_param(&name, &value)?),
                "max_value_size" => config.max_value_size = parse_param(&name, &value)?,
                "endpoints" => {
                    return Err(Error::Config(format!(
                        "{shown:?} names several servers; the redis backend talks to one \
                         (a standalone server or a primary)"
                    )))
                }
                _ => {
                    if !tls {
                        return Err(Error::Config(
                            "ca_file is a TLS parameter; use rediss://".into(),
                        ));
                    }
                    config.ca_file = Some(PathBuf::from(value));
                }
            }
        }
        config.root = key::join(&prefix, &path_root);
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RedisConfig> {
        RedisConfig::from_url(&anykv_core::parse_url(s)?)
    }

    #[test]
    fn urls() {
        let c = parse("redis://u:p%40ss@h:7000/3/app/x?prefix=top&request_timeout=250ms").unwrap();
        assert_eq!(c.host, "h");
        assert_eq!(c.port, 7000);
        assert_eq!(c.db, 3);
        assert_eq!(c.root, "top/app/x");
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password.as_deref(), Some("p@ss"));
        assert_eq!(c.request_timeout, Duration::from_millis(250));
        assert!(!format!("{c:?}").contains("p@ss"));
        let c = parse("rediss://:secret@h").unwrap();
        assert!(c.tls);
        assert_eq!((c.port, c.db, c.root.as_str()), (6379, 0, ""));
        assert_eq!(c.password.as_deref(), Some("secret"));
        assert_eq!(
            c,
            RedisConfig::new("h", 6379)
                .with_tls(true)
                .with_user("", "secret")
        );
        for bad in [
            "redis://h/x",
            "redis://h/0/a//b",
            "redis://h/0?what=1",
            "redis://u@h/0",
            "redis://h/0?ca_file=/x",
            "redis://h/0?namespace=a%7Bb",
            "redis://h:1,b:2/0",
            "http://h/0",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.kind(), anykv_core::ErrorKind::Config, "{bad}");
            assert!(!e.to_string().contains("secret"));
        }
    }
}
