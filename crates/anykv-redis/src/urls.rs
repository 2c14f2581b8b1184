//! Reading a [`RedisConfig`] from a URL: the three forms (one server,
//! Sentinel, Cluster), with or without TLS, and their parameters. No
//! message shows a password, neither the URL's nor `sentinel_password`.

use std::path::PathBuf;

use anykv_core::{
    key, parse_duration_param, parse_param, redact_url, url_credentials, url_params, url_root,
    Error, Result, Url,
};

use crate::config::{RedisConfig, Topology, DEFAULT_SENTINEL_PORT};

/// The deployment a URL's scheme names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Single,
    Sentinel,
    Cluster,
}

/// The parameters every form takes.
const COMMON: &[&str] = &[
    "prefix",
    "namespace",
    "request_timeout",
    "connect_timeout",
    "history",
    "max_value_size",
    "ca_file",
    "endpoints",
    "wait_replicas",
    "wait_timeout",
];

/// The URL for messages: the password and any `sentinel_password` value
/// replaced by `***`.
fn shown(url: &Url) -> String {
    let mut s = redact_url(url.as_str());
    let mut from = 0;
    while let Some(at) = s[from..].find("sentinel_password=") {
        let start = from + at + "sentinel_password=".len();
        let end = s[start..]
            .find(['&', '#'])
            .map(|e| start + e)
            .unwrap_or(s.len());
        s.replace_range(start..end, "***");
        from = start + 3;
    }
    s
}

/// Parses `host[:port]` (an IPv6 address in brackets) of the `endpoints`
/// list.
fn endpoint(text: &str, default_port: u16, shown: &str) -> Result<(String, u16)> {
    let bad = || Error::Config(format!("{shown:?}: invalid server address {text:?}"));
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => default_port,
            None => return Err(bad()),
        };
        (h.to_owned(), port)
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad())?),
            None => (text.to_owned(), default_port),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

/// The URL's host (IPv6 without brackets).
fn first_host(url: &Url, shown: &str) -> Result<String> {
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::Config(format!("{shown:?} names no host")))?;
    Ok(host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_owned())
}

/// A database number path segment.
fn database(segment: &str, shown: &str) -> Result<i64> {
    let db: i64 = segment.parse().map_err(|_| {
        Error::Config(format!(
            "the database segment of {shown:?} must be a number, not {segment:?}"
        ))
    })?;
    if db < 0 {
        return Err(Error::Config(format!(
            "negative database number in {shown:?}"
        )));
    }
    Ok(db)
}

/// See [`RedisConfig::from_url`].
fn from_url(url: &Url) -> Result<RedisConfig> {
    let (tls, form) = match url.scheme() {
        "redis" => (false, Form::Single),
        "rediss" => (true, Form::Single),
        "redis+sentinel" => (false, Form::Sentinel),
        "rediss+sentinel" => (true, Form::Sentinel),
        "redis+cluster" => (false, Form::Cluster),
        "rediss+cluster" => (true, Form::Cluster),
        other => {
            return Err(Error::Config(format!(
                "the redis backend takes redis://, rediss://, redis+sentinel://, \
                 rediss+sentinel://, redis+cluster:// or rediss+cluster:// URLs, not {other}://"
            )))
        }
    };
    let shown = shown(url);
    let default_port = match form {
        Form::Sentinel => DEFAULT_SENTINEL_PORT,
        _ => 6379,
    };
    let host = first_host(url, &shown)?;
    let port = url.port().unwrap_or(default_port);
    let (user, password) = match url_credentials(url)? {
        Some((user, password)) => (user, url.password().map(|_| password)),
        None => (String::new(), None),
    };
    let path = url_root(url)?;
    let mut segments = path.splitn(2, '/');
    let first = segments.next().unwrap_or("").to_owned();
    let rest = segments.next().unwrap_or("").to_owned();
    let (mut config, path_root) = match form {
        Form::Single => {
            let mut c = RedisConfig::new(host.clone(), port);
            if !first.is_empty() {
                c.db = database(&first, &shown)?;
            }
            (c, rest)
        }
        Form::Sentinel => {
            if first.is_empty() {
                return Err(Error::Config(format!(
                    "{shown:?} names no master: redis+sentinel://sentinel[,sentinel...]/\
                     <master-name>[/<db>[/<root>]]"
                )));
            }
            let mut c = RedisConfig::sentinel([(host.clone(), port)], first);
            let mut more = rest.splitn(2, '/');
            let db = more.next().unwrap_or("");
            if !db.is_empty() {
                c.db = database(db, &shown)?;
            }
            (c, more.next().unwrap_or("").to_owned())
        }
        Form::Cluster => (RedisConfig::cluster([(host.clone(), port)]), path.clone()),
    };
    config = config.with_tls(tls);
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
    let mut known: Vec<&str> = COMMON.to_vec();
    if form == Form::Sentinel {
        known.extend(["sentinel_user", "sentinel_password"]);
    }
    let mut prefix = String::new();
    let mut wait_timeout = None;
    for (name, value) in url_params(url, &known)? {
        match name.as_str() {
            "prefix" => prefix = key::normalize_root(&value)?,
            "namespace" => config.namespace = value,
            "request_timeout" => config.request_timeout = parse_duration_param(&name, &value)?,
            "connect_timeout" => config.connect_timeout = parse_duration_param(&name, &value)?,
            "history" => config = config.with_history(parse_param(&name, &value)?),
            "max_value_size" => config.max_value_size = parse_param(&name, &value)?,
            "wait_replicas" => config.wait_replicas = parse_param(&name, &value)?,
            "wait_timeout" => wait_timeout = Some(parse_duration_param(&name, &value)?),
            "sentinel_user" => config.sentinel_username = Some(value).filter(|u| !u.is_empty()),
            "sentinel_password" => config.sentinel_password = Some(value),
            "endpoints" => {
                if form == Form::Single {
                    return Err(Error::Config(format!(
                        "{shown:?} names several servers; a redis:// URL talks to one (a \
                         standalone server or a primary): use redis+sentinel:// or \
                         redis+cluster:// for several"
                    )));
                }
                let mut more = Vec::new();
                for text in value.split(',').filter(|t| !t.is_empty()) {
                    more.push(endpoint(text, default_port, &shown)?);
                }
                match &mut config.topology {
                    Topology::Sentinel {
                        sentinels: list, ..
                    }
                    | Topology::Cluster { nodes: list } => list.extend(more),
                    Topology::Single => {}
                }
            }
            _ => {
                if !tls {
                    return Err(Error::Config(
                        "ca_file is a TLS parameter; use rediss://, rediss+sentinel:// or \
                         rediss+cluster://"
                            .into(),
                    ));
                }
                config.ca_file = Some(PathBuf::from(value));
            }
        }
    }
    if let Some(t) = wait_timeout {
        if config.wait_replicas == 0 {
            return Err(Error::Config(
                "wait_timeout needs wait_replicas (how many replicas to wait for)".into(),
            ));
        }
        config.wait_timeout = t;
    }
    if config.sentinel_username.is_some() && config.sentinel_password.is_none() {
        return Err(Error::Config(format!(
            "{shown:?} names a Sentinel user without a sentinel_password"
        )));
    }
    config.root = key::join(&prefix, &path_root);
    config.validate()?;
    Ok(config)
}

impl RedisConfig {
    /// Reads a `redis://`, `rediss://`, `redis+sentinel://`,
    /// `rediss+sentinel://`, `redis+cluster://` or `rediss+cluster://` URL
    /// (see the crate documentation for each form and its parameters).
    ///
    /// For `redis[s]://`: the first path segment is the database number
    /// (default 0); the rest of the path is the root. Parameters: `prefix`
    /// (a root that the path's root goes under), `namespace` (default
    /// `anykv`), `request_timeout` and `connect_timeout` (durations:
    /// `250ms`, `5s`, `2m`), `history`, `max_value_size`, `ca_file` (a PEM
    /// file of CAs to trust, TLS only), `wait_replicas` and `wait_timeout`.
    /// A user without a password is an error; a password without a user
    /// authenticates the default user (`requirepass`). A `redis://` URL
    /// talks to one server: one that names several (`a:6379,b:6379`, which
    /// [`anykv_core::parse_url`] turns into an `endpoints` parameter) is a
    /// `Config` error.
    pub fn from_url(url: &Url) -> Result<Self> {
        from_url(url)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(s: &str) -> Result<RedisConfig> {
        RedisConfig::from_url(&anykv_core::parse_url(s)?)
    }

    #[test]
    fn single_server_urls() {
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
            "redis://h/0?wait_timeout=1s",
            "redis://h/0?wait_replicas=1&wait_timeout=5s&request_timeout=2s",
            "redis://:secret@h/0?sentinel_password=secret",
            "http://h/0",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.kind(), anykv_core::ErrorKind::Config, "{bad}");
            assert!(!e.to_string().contains("secret"), "{e}");
        }
    }

    #[test]
    fn sentinel_urls() {
        let c = parse(
            "rediss+sentinel://app:p%40ss@s1,s2:26380,[::1]:26381/main/2/a/b?sentinel_user=sen&\
             sentinel_password=sp&wait_replicas=1&wait_timeout=250ms&ca_file=/ca.pem",
        )
        .unwrap();
        assert_eq!(
            c.topology,
            Topology::Sentinel {
                sentinels: vec![
                    ("s1".into(), 26379),
                    ("s2".into(), 26380),
                    ("::1".into(), 26381)
                ],
                master_name: "main".into()
            }
        );
        assert!(c.tls);
        assert_eq!((c.db, c.root.as_str()), (2, "a/b"));
        assert_eq!(c.username.as_deref(), Some("app"));
        assert_eq!(c.password.as_deref(), Some("p@ss"));
        assert_eq!(c.sentinel_username.as_deref(), Some("sen"));
        assert_eq!(c.sentinel_password.as_deref(), Some("sp"));
        assert_eq!(
            (c.wait_replicas, c.wait_timeout),
            (1, Duration::from_millis(250))
        );
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("p@ss") && !shown.contains("\"sp\""),
            "{shown}"
        );
        let c = parse("redis+sentinel://s1/main").unwrap();
        assert_eq!(c, RedisConfig::sentinel([("s1", 26379)], "main"));
        for bad in [
            "redis+sentinel://s1",
            "redis+sentinel://s1/main/x",
            "redis+sentinel://s1/main?sentinel_user=u",
            "redis+sentinel://s1,:5/main",
            "redis+sentinel://s1,s2:x/main?sentinel_password=secret",
            "redis+sentinel://s1/main?sentinel_password=secret&what=1",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.kind(), anykv_core::ErrorKind::Config, "{bad}");
            assert!(!e.to_string().contains("secret"), "{e}");
        }
    }

    #[test]
    fn cluster_urls() {
        let c = parse("redis+cluster://a:7000,b:7001,c/app/x?namespace=ns").unwrap();
        assert_eq!(
            c.topology,
            Topology::Cluster {
                nodes: vec![("a".into(), 7000), ("b".into(), 7001), ("c".into(), 6379)]
            }
        );
        assert_eq!(
            (c.db, c.root.as_str(), c.namespace.as_str()),
            (0, "app/x", "ns")
        );
        assert!(parse("rediss+cluster://a/app").unwrap().tls);
        for bad in [
            "redis+cluster://a:7000/app?sentinel_password=secret",
            "redis+cluster://a:7000,b:x/app",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.kind(), anykv_core::ErrorKind::Config, "{bad}");
            assert!(!e.to_string().contains("secret"), "{e}");
        }
        let e = RedisConfig::cluster([("a", 1)])
            .with_db(1)
            .validate()
            .unwrap_err();
        assert_eq!(e.kind(), anykv_core::ErrorKind::Config);
    }
}
