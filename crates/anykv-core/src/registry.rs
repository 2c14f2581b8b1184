//! Choosing a backend at run time: URL schemes mapped to factories.
//!
//! Backends register their schemes with [`register`]; [`open`] parses a URL
//! and hands it to the factory of its scheme. The `anykv` facade crate
//! registers the built-in backends it was compiled with; a third-party
//! backend registers its own scheme the same way.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, LazyLock};

use futures::future::BoxFuture;
use parking_lot::RwLock;
use url::Url;

use crate::error::{Error, Result};
use crate::store::Store;

/// What a factory's future returns.
pub type OpenFuture = BoxFuture<'static, Result<Arc<dyn Store>>>;

/// A factory: opens a store from a parsed URL.
pub type Factory = Arc<dyn Fn(Url) -> OpenFuture + Send + Sync>;

static REGISTRY: LazyLock<RwLock<BTreeMap<String, Factory>>> =
    LazyLock::new(|| RwLock::new(BTreeMap::new()));

/// Registers `factory` for URLs of `scheme` (without `://`), replacing any
/// earlier registration of that scheme.
///
/// ```
/// use std::sync::Arc;
/// use anykv_core::{registry, Error, Store};
/// registry::register("nothing", |url| async move {
///     Err::<Arc<dyn Store>, _>(Error::Config(format!("{} is not a real backend", url.scheme())))
/// });
/// assert!(registry::schemes().contains(&"nothing".to_string()));
/// ```
pub fn register<F, Fut>(scheme: &str, factory: F)
where
    F: Fn(Url) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Arc<dyn Store>>> + Send + 'static,
{
    let factory: Factory = Arc::new(move |url| Box::pin(factory(url)));
    REGISTRY
        .write()
        .insert(scheme.to_ascii_lowercase(), factory);
}

/// Whether a factory is registered for `scheme`.
pub fn is_registered(scheme: &str) -> bool {
    REGISTRY.read().contains_key(&scheme.to_ascii_lowercase())
}

/// The registered schemes, sorted.
pub fn schemes() -> Vec<String> {
    REGISTRY.read().keys().cloned().collect()
}

/// Opens the store a URL names, with the factory registered for its scheme.
///
/// A URL that does not parse, or names no registered scheme, fails with
/// [`Error::Config`]; the message never contains the URL's password.
///
/// The store comes wrapped by [`crate::observe::observe`]: a `tracing`
/// span and metrics on every call.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let parsed = parse_url(url)?;
    let factory = REGISTRY.read().get(parsed.scheme()).cloned();
    match factory {
        Some(factory) => factory(parsed).await.map(crate::observe::observe),
        None => {
            let known = schemes();
            Err(Error::Config(format!(
                "no backend is registered for the scheme {:?}; registered: {}{}",
                parsed.scheme(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                },
                ". Built-in backends are enabled by the anykv crate's features \
                 (memory, etcd, redis, zookeeper)"
            )))
        }
    }
}

/// Parses a store URL. A URL that does not parse fails with
/// [`Error::Config`] naming only its scheme and the parser's reason: the
/// text around a parse error may be a password.
///
/// A URL may name several servers, as etcd and ZooKeeper clusters have:
/// `etcd://a:2379,b:2379,c:2379/root`. The first stays the URL's host and
/// the others are given to the backend as the `endpoints` parameter
/// (`etcd://a:2379/root?endpoints=b:2379,c:2379`), since a parsed URL holds
/// one host.
///
/// ```
/// let u = anykv_core::parse_url("zk://a:2181,b:2181,c:2181/app").unwrap();
/// assert_eq!((u.host_str(), u.port(), u.path()), (Some("a"), Some(2181), "/app"));
/// assert_eq!(u.query(), Some("endpoints=b%3A2181%2Cc%3A2181"));
/// ```
pub fn parse_url(url: &str) -> Result<Url> {
    let parse_error = |e: url::ParseError| {
        let scheme = url
            .split_once(':')
            .map(|(s, _)| s)
            .filter(|s| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            })
            .unwrap_or("?");
        Error::Config(format!("invalid {scheme}:// URL: {e}"))
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Url::parse(url).map_err(parse_error);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    refuse_dot_segments(scheme, &rest[authority_end..])?;
    let authority = &rest[..authority_end];
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    if !hosts.contains(',') {
        return Url::parse(url).map_err(parse_error);
    }
    let mut all = hosts.split(',');
    let first = all.next().unwrap_or("");
    let others: Vec<&str> = all.collect();
    if first.is_empty() || others.iter().any(|h| h.is_empty()) {
        return Err(Error::Config(format!(
            "invalid {scheme}:// URL: an empty host in its list of servers"
        )));
    }
    let mut parsed = Url::parse(&format!(
        "{scheme}://{userinfo}{first}{}",
        &rest[authority_end..]
    ))
    .map_err(parse_error)?;
    parsed
        .query_pairs_mut()
        .append_pair("endpoints", &others.join(","));
    Ok(parsed)
}

/// Refuses a URL path with a `.` or `..` segment, literal or
/// percent-encoded (`%2e`, `%2E%2E`). The URL parser would remove such
/// segments before the root is checked, so `tenant/..` would open the
/// parent root: a tenant name placed in a URL must never reach another
/// tenant's keys.
fn refuse_dot_segments(scheme: &str, after_authority: &str) -> Result<()> {
    let path_end = after_authority
        .find(['?', '#'])
        .unwrap_or(after_authority.len());
    for segment in after_authority[..path_end].split('/') {
        let decoded = percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>();
        if decoded == b"." || decoded == b".." {
            return Err(Error::Config(format!(
                "invalid {scheme}:// URL: its path has a {:?} segment ({segment:?}); \
                 a root may not name a relative path",
                String::from_utf8_lossy(&decoded)
            )));
        }
    }
    Ok(())
}

/// The URL with any password replaced by `***`, for messages and logs.
/// Works on URLs that do not parse, too, and errs towards hiding more: a
/// password may itself contain `/`, `?`, `#` or `@`, so everything from the
/// first `:` after the user name up to the last `@` is hidden.
///
/// ```
/// use anykv_core::redact_url;
/// assert_eq!(redact_url("redis://user:secret@host:6379/0"), "redis://user:***@host:6379/0");
/// assert_eq!(redact_url("etcd://:secret@h:2379"), "etcd://:***@h:2379");
/// assert_eq!(redact_url("redis://user:s3cr/t@host:6379/0"), "redis://user:***@host:6379/0");
/// assert_eq!(redact_url("zk://host:2181/app"), "zk://host:2181/app");
/// ```
pub fn redact_url(url: &str) -> String {
    let rest_start = match url.find("://") {
        Some(i) => i + 3,
        None => match url.find(':') {
            Some(i) => i + 1,
            None => return url.to_owned(),
        },
    };
    let rest = &url[rest_start..];
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..rest_start],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

/// The root a URL's path names (an etcd prefix, a ZooKeeper chroot, a
/// memory store's root): percent-decoded, checked with the key rules, in
/// canonical form. `scheme://host/` and `scheme://host` give the empty root.
pub fn url_root(url: &Url) -> Result<String> {
    let decoded = percent_encoding::percent_decode_str(url.path())
        .decode_utf8()
        .map_err(|_| {
            Error::Config(format!(
                "the path of {:?} is not UTF-8",
                redact_url(url.as_str())
            ))
        })?;
    crate::key::normalize_root(&decoded)
}

/// The query parameters of a URL as `(name, value)` pairs, failing with
/// [`Error::Config`] on a name not in `known` or given twice.
pub fn url_params(url: &Url, known: &[&str]) -> Result<Vec<(String, String)>> {
    let mut seen: Vec<(String, String)> = Vec::new();
    for (name, value) in url.query_pairs() {
        if !known.contains(&name.as_ref()) {
            return Err(Error::Config(format!(
                "unknown parameter {name:?} in a {}:// URL; known: {}",
                url.scheme(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        if seen.iter().any(|(n, _)| n == name.as_ref()) {
            return Err(Error::Config(format!("parameter {name:?} is given twice")));
        }
        seen.push((name.into_owned(), value.into_owned()));
    }
    Ok(seen)
}

/// Parses a URL parameter's value, failing with [`Error::Config`] that
/// names the parameter.
pub fn parse_param<T: std::str::FromStr>(name: &str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| Error::Config(format!("parameter {name}: {e}")))
}

/// The user name and password of a URL, percent-decoded; `None` when the
/// URL names no user. The password is never put into an error message.
pub fn url_credentials(url: &Url) -> Result<Option<(String, String)>> {
    if url.username().is_empty() && url.password().is_none() {
        return Ok(None);
    }
    let decode = |part: &str, what: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| {
                Error::Config(format!(
                    "the {what} in the {}:// URL is not UTF-8",
                    url.scheme()
                ))
            })
    };
    let user = decode(url.username(), "user name")?;
    let password = decode(url.password().unwrap_or(""), "password")?;
    Ok(Some((user, password)))
}

/// Parses a duration the same way everywhere — URL parameters, the CLI's
/// flags, configs — with the `humantime` crate: a number and a unit, several
/// in a row if you like: `250ms`, `5s`, `1m30s`, `2h 30m`, `500us`, `1d`.
/// Units: `ns`, `us`, `ms`, `s`, `m`, `h`, `d`, `w` (and their long names,
/// `sec`, `min`, `hours`, …). A bare number is refused rather than guessed
/// at (`10` could mean seconds or milliseconds), and so are zero, negative
/// values and anything over ten years (a fraction with a unit, `1.5h`, is
/// fine): all with
/// [`Error::Config`] naming the parameter.
///
/// ```
/// use std::time::Duration;
/// use anykv_core::parse_duration_param;
/// assert_eq!(parse_duration_param("ttl", "1m30s").unwrap(), Duration::from_secs(90));
/// assert_eq!(parse_duration_param("ttl", "500us").unwrap(), Duration::from_micros(500));
/// assert!(parse_duration_param("ttl", "10").unwrap_err().to_string().contains("10s"));
/// ```
pub fn parse_duration_param(name: &str, value: &str) -> Result<std::time::Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Config(format!(
            "parameter {name}: {value:?} has no unit; write {v}s, {v}ms or another unit \
             (ns, us, ms, s, m, h, d)"
        )));
    }
    let parsed = humantime::parse_duration(v).map_err(|e| {
        Error::Config(format!(
            "parameter {name}: {value:?} is not a duration such as 250ms, 5s, 1m30s or 2h ({e})"
        ))
    })?;
    if parsed.is_zero() {
        return Err(Error::Config(format!(
            "parameter {name}: the duration must be greater than zero"
        )));
    }
    if parsed > crate::MAX_TTL {
        return Err(Error::Config(format!(
            "parameter {name}: {value:?} is longer than ten years"
        )));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn roots_and_params() {
        let u = Url::parse("memory://n/a%20b/c/?history=5").unwrap();
        assert_eq!(url_root(&u).unwrap(), "a b/c");
        let p = url_params(&u, &["history"]).unwrap();
        assert_eq!(p, vec![("history".to_string(), "5".to_string())]);
        assert_eq!(parse_param::<usize>("history", "5").unwrap(), 5);
        assert_eq!(
            parse_param::<usize>("history", "x").unwrap_err().kind(),
            ErrorKind::Config
        );
        assert_eq!(url_params(&u, &[]).unwrap_err().kind(), ErrorKind::Config);
        let u = Url::parse("memory://n/a//b").unwrap();
        assert_eq!(url_root(&u).unwrap_err().kind(), ErrorKind::Config);
        assert_eq!(url_root(&Url::parse("memory://n").unwrap()).unwrap(), "");
    }

    #[test]
    fn dot_segments_in_the_root_are_refused() {
        for bad in [
            "etcd://127.0.0.1:2379/tenant/..",
            "etcd://127.0.0.1:2379/tenant/../other",
            "memory://n/a/%2e%2e",
            "memory://n/a/%2E%2e/b",
            "memory://n/./a",
            "memory://n/a/%2e",
            "redis://h:6379/0/tenant/..?prefix=x",
            "zk://a:2181,b:2181/app/..",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{bad}");
            assert!(e.to_string().contains("segment"), "{bad}: {e}");
        }
        for good in [
            "memory://n/a..b/.c",
            "memory://n/a/...",
            "etcd://h:1/x?q=..",
            "memory://n/a#..",
        ] {
            parse_url(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn several_hosts() {
        let u = parse_url("etcd://u:p@a:1,b:2,c/root/x?tls=true").unwrap();
        assert_eq!(u.host_str(), Some("a"));
        assert_eq!(u.port(), Some(1));
        assert_eq!(u.path(), "/root/x");
        assert_eq!(
            url_params(&u, &["tls", "endpoints"]).unwrap(),
            vec![
                ("tls".to_string(), "true".to_string()),
                ("endpoints".to_string(), "b:2,c".to_string())
            ]
        );
        assert_eq!(url_credentials(&u).unwrap(), Some(("u".into(), "p".into())));
        for bad in ["etcd://a:1,,b:2/", "etcd://,a:1/", "etcd://a:1,/"] {
            assert_eq!(
                parse_url(bad).unwrap_err().kind(),
                ErrorKind::Config,
                "{bad}"
            );
        }
        assert_eq!(parse_url("memory://n/r").unwrap().host_str(), Some("n"));
    }

    #[test]
    fn credentials_and_durations() {
        let u = Url::parse("redis://us%40er:p%2Fss@h:1/0").unwrap();
        assert_eq!(
            url_credentials(&u).unwrap(),
            Some(("us@er".to_string(), "p/ss".to_string()))
        );
        assert_eq!(
            url_credentials(&Url::parse("redis://h:1/0").unwrap()).unwrap(),
            None
        );
        assert_eq!(
            url_credentials(&Url::parse("redis://:pw@h:1/0").unwrap()).unwrap(),
            Some((String::new(), "pw".to_string()))
        );
        use std::time::Duration;
        assert_eq!(
            parse_duration_param("t", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            parse_duration_param("t", "5s").unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(
            parse_duration_param("t", "2m").unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(
            parse_duration_param("t", "1m30s").unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            parse_duration_param("t", "1h 30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_duration_param("t", "500us").unwrap(),
            Duration::from_micros(500)
        );
        assert_eq!(
            parse_duration_param("t", "1.5h").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_duration_param("t", "7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        for bad in [
            "", "0", "10", "0s", "0.5", "-1s", "x", "h", "NaN", "inf", "1e300", "4000d",
        ] {
            assert_eq!(
                parse_duration_param("t", bad).unwrap_err().kind(),
                ErrorKind::Config,
                "{bad}"
            );
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact_url("rediss://u:p%40ss@h:1/2?prefix=x"),
            "rediss://u:***@h:1/2?prefix=x"
        );
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url("x://a@b@c/d"), "x://a@b@c/d");
        assert_eq!(redact_url("x://a:b@c:d@e/f"), "x://a:***@e/f");
        assert_eq!(redact_url("x://u:ab#cd@h/"), "x://u:***@h/");
        assert_eq!(redact_url("x://u:pa?ss@h/"), "x://u:***@h/");
        assert_eq!(
            redact_url("redis:/user:hunter2@host/0"),
            "redis:/user:***@host/0"
        );
    }

    #[tokio::test]
    async fn bad_urls_are_config_errors_without_passwords() {
        let e = open("nosuch://user:hunter2@host/").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = open("::not a url hunter2@").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        for url in [
            "x://u:hunter2@[bad/",
            "redis://user:hun/ter2@host:6379/0",
            "etcd://user:hun#ter2@host/",
            "memory://user:hun?ter2@n/",
            "redis:/user:hunter2@host/0",
            "memory://n/r?password=hunter2",
        ] {
            let e = open(url).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config);
            assert!(!e.to_string().contains("ter2"), "{e}");
        }
    }
}
