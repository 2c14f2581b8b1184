//! The configuration of an etcd store: from a URL or a typed builder.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anykv_core::{
    key, parse_duration_param, parse_param, redact_url, url_credentials, url_params, url_root,
    Error, Result, Url,
};

/// The backend's name, as in errors.
pub(crate) const BACKEND: &str = "etcd";

/// The default time to establish a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default time one request may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The default [`EtcdConfig::max_txn_ops`]: half of etcd's default
/// `--max-txn-ops` of 128.
pub const DEFAULT_MAX_TXN_OPS: usize = 64;

/// TLS settings: the CA that signs the server's certificate and, for mutual
/// TLS, the client's certificate and key (PEM files).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// A PEM file with the CA certificate(s) to trust. Without it no CA is
    /// trusted (the platform's roots are not loaded), so give one.
    pub ca_file: Option<PathBuf>,
    /// The client certificate (PEM), for servers that require one.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// The name to verify the server's certificate against, if it is not
    /// the endpoint's host.
    pub domain: Option<String>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("domain", &self.domain)
            .finish()
    }
}

/// How to reach etcd: endpoints, root, timeouts, credentials and TLS.
///
/// Build one with [`EtcdConfig::new`] and the builder methods, or read a
/// URL with [`EtcdConfig::from_url`]. Like [`TlsConfig`], every field is
/// public; [`crate::EtcdStore::open`] checks them. Its `Debug` output never
/// shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// The servers, `host:port` each.
    pub endpoints: Vec<String>,
    /// The root prefix as given: keys live at `{root}/{key}` (checked with
    /// the key rules when the store opens).
    pub root: String,
    /// The time to establish a connection.
    pub connect_timeout: Duration,
    /// The time one request may take before it fails with `Timeout`.
    pub request_timeout: Duration,
    /// The user to authenticate as.
    pub user: Option<String>,
    /// The user's password.
    pub password: Option<String>,
    /// TLS settings; `None` for a plain connection.
    pub tls: Option<TlsConfig>,
    /// The most compares, and operations per branch, of one transaction
    /// (`Capabilities::max_txn_ops`), at least 1. The server's
    /// `--max-txn-ops` must be at least twice this: the failure branch
    /// also reads each compared key. Default [`DEFAULT_MAX_TXN_OPS`].
    pub max_txn_ops: usize,
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("root", &self.root)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("max_txn_ops", &self.max_txn_ops)
            .finish()
    }
}

impl EtcdConfig {
    /// A configuration for one or more endpoints (`host:port`), root `""`,
    /// default timeouts, no credentials, no TLS.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            root: String::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            user: None,
            password: None,
            tls: None,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
        }
    }

    /// Sets the root prefix: keys live at `{root}/{key}`. Checked by
    /// [`crate::EtcdStore::open`] with the key rules.
    pub fn with_root(mut self, root: impl Into<String>) -> Self {
        self.root = root.into();
        self
    }

    /// Sets the time to establish a connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the time one request may take before it fails with `Timeout`.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Authenticates as `user` with `password`.
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }

    /// Connects over TLS.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the most compares, and operations per branch, of one
    /// transaction, for a server whose `--max-txn-ops` is at least twice
    /// `n` (see [`EtcdConfig::max_txn_ops`]).
    pub fn with_max_txn_ops(mut self, n: usize) -> Self {
        self.max_txn_ops = n;
        self
    }

    /// The parameters a URL may carry.
    pub const URL_PARAMS: &'static [&'static str] = &[
        "endpoints",
        "connect_timeout",
        "request_timeout",
        "tls",
        "ca_file",
        "cert_file",
        "key_file",
        "domain",
        "max_txn_ops",
    ];

    /// Reads a parsed URL: `etcd://[user:password@]host:port/root?params`
    /// or `etcds://...` for TLS. See the crate documentation for the
    /// parameters. A URL string with several hosts (`etcd://a:1,b:2/r`)
    /// goes through [`anykv_core::parse_url`] first, as
    /// [`crate::EtcdStore::open_url`] does.
    pub fn from_url(url: &Url) -> Result<Self> {
        let redacted = redact_url(url.as_str());
        let tls_scheme = match url.scheme() {
            "etcd" => false,
            "etcds" => true,
            other => {
                return Err(Error::Config(format!(
                    "the etcd backend does not handle the scheme {other:?} of {redacted:?}"
                )))
            }
        };
        // The URL's host, and any further servers: `etcd://a:2379,b:2379/r`
        // arrives as `etcd://a:2379/r?endpoints=b:2379` (see
        // `anykv_core::parse_url`). A server without a port gets 2379.
        let mut endpoints = Vec::new();
        if let Some(host) = url.host_str() {
            endpoints.push(format!("{host}:{}", url.port().unwrap_or(DEFAULT_PORT)));
        }
        let root = url_root(url)?;
        let mut config = EtcdConfig::new(Vec::<String>::new()).with_root(root);
        if let Some((user, password)) = url_credentials(url)? {
            config = config.with_user(user, password);
        }
        let mut tls = tls_scheme.then(TlsConfig::default);
        for (name, value) in url_params(url, Self::URL_PARAMS)? {
            match name.as_str() {
                "endpoints" => endpoints.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(with_default_port),
                ),
                "connect_timeout" => config.connect_timeout = parse_duration_param(&name, &value)?,
                "request_timeout" => config.request_timeout = parse_duration_param(&name, &value)?,
                "tls" => {
                    let on: bool = parse_param(&name, &value)?;
                    if on {
                        tls.get_or_insert_with(TlsConfig::default);
                    } else if tls_scheme {
                        return Err(Error::Config(
                            "tls=false contradicts the etcds:// scheme".into(),
                        ));
                    } else {
                        tls = None;
                    }
                }
                "ca_file" => {
                    tls.get_or_insert_with(TlsConfig::default).ca_file = Some(value.into())
                }
                "cert_file" => {
                    tls.get_or_insert_with(TlsConfig::default).cert_file = Some(value.into())
                }
                "key_file" => {
                    tls.get_or_insert_with(TlsConfig::default).key_file = Some(value.into())
                }
                "domain" => tls.get_or_insert_with(TlsConfig::default).domain = Some(value),
                "max_txn_ops" => config.max_txn_ops = parse_param(&name, &value)?,
                _ => {}
            }
        }
        if endpoints.is_empty() {
            return Err(Error::Config(format!(
                "{redacted:?} names no etcd endpoint: use etcd://host:port/root"
            )));
        }
        config.endpoints = endpoints;
        config.tls = tls;
        config.validate()?;
        Ok(config)
    }

    /// Checks the configuration: at least one `host:port` endpoint,
    /// non-zero timeouts, a client certificate with its key, a valid root,
    /// a transaction limit of at least 1.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            return Err(Error::Config("no etcd endpoint is configured".into()));
        }
        for e in &self.endpoints {
            if e.contains("://") || e.contains('/') || e.contains('@') {
                return Err(Error::Config(format!(
                    "the etcd endpoint {:?} must be host:port",
                    redact_url(e)
                )));
            }
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(Error::Config("timeouts must be greater than zero".into()));
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(Error::Config(
                    "a client certificate needs both cert_file and key_file".into(),
                ));
            }
        }
        if self.max_txn_ops == 0 {
            return Err(Error::Config(
                "max_txn_ops must be at least 1 (etcd's own default --max-txn-ops of 128 \
                 allows 64)"
                    .into(),
            ));
        }
        key::normalize_root(&self.root)?;
        Ok(())
    }
}

/// The port of an etcd server named without one.
const DEFAULT_PORT: u16 = 2379;

/// `host` or `host:port`, with etcd's port added when none is given.
fn with_default_port(server: &str) -> String {
    let has_port = match server.rsplit_once(':') {
        // `[::1]:2379` has one; `[::1]` and `::1` do not.
        Some((host, port)) => {
            !port.is_empty()
                && port.chars().all(|c| c.is_ascii_digit())
                && !host.ends_with(':')
                && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        server.to_owned()
    } else {
        format!("{server}:{DEFAULT_PORT}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("etcd://bob:s%40cret@h1:2380/app/x?endpoints=h2:1,h3:2&request_timeout=250ms&connect_timeout=2s").unwrap();
        let c = EtcdConfig::from_url(&u).unwrap();
        assert_eq!(c.endpoints, vec!["h1:2380", "h2:1", "h3:2"]);
        assert_eq!(c.root, "app/x");
        assert_eq!(c.password.as_deref(), Some("s@cret"));
        assert_eq!(c.request_timeout, Duration::from_millis(250));
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert!(c.tls.is_none());
        assert_eq!(c.max_txn_ops, DEFAULT_MAX_TXN_OPS);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s@cret") && dbg.contains("***"), "{dbg}");
        let c = EtcdConfig::from_url(&Url::parse("etcd://h/r?max_txn_ops=500").unwrap()).unwrap();
        assert_eq!(c.max_txn_ops, 500);
        // The contract's cluster form, through anykv_core::parse_url.
        let u = anykv_core::parse_url("etcd://a:7,b:8,c,[::1]:9,[::2]/r").unwrap();
        let c = EtcdConfig::from_url(&u).unwrap();
        assert_eq!(
            c.endpoints,
            vec!["a:7", "b:8", "c:2379", "[::1]:9", "[::2]:2379"]
        );
        assert_eq!(c.root, "r");
        let c = EtcdConfig::from_url(&Url::parse("etcds://h/r?ca_file=/ca.pem").unwrap()).unwrap();
        assert_eq!(c.endpoints, vec!["h:2379"]);
        assert_eq!(c.tls.unwrap().ca_file, Some(PathBuf::from("/ca.pem")));
        for bad in [
            "etcd://h/r?nope=1",
            "etcd:///r",
            "etcd://h/a//b",
            "etcd://h/r?request_timeout=x",
            "etcd://h/r?cert_file=/c",
            "etcd://h/r?max_txn_ops=0",
            "etcd://h/r?max_txn_ops=-1",
            "etcd://h/r?max_txn_ops=lots",
        ] {
            let e = EtcdConfig::from_url(&Url::parse(bad).unwrap()).unwrap_err();
            assert_eq!(e.kind(), anykv_core::ErrorKind::Config, "{bad}");
        }
    }
}
