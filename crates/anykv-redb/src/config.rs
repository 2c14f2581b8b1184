//! The redb backend's configuration: [`RedbConfig`], from a builder or a
//! `redb://` URL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anykv_core::{key, parse_duration_param, parse_param, url_params, Error, Result, Url};

/// The backend's name, as its errors and capabilities give it.
pub const BACKEND: &str = "redb";

/// How many changes a file keeps for resuming watches, by default.
pub const DEFAULT_HISTORY: usize = 10_000;

/// How many bytes of keys and values the history holds at most, by
/// default: 64 MiB. The history keeps the last [`DEFAULT_HISTORY`] changes
/// or this many bytes, whichever is less (always the newest change).
pub const DEFAULT_HISTORY_BYTES: usize = 64 * 1024 * 1024;

/// The largest value a store takes, by default: 16 MiB.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 16 * 1024 * 1024;

/// How long a call waits out a frozen store by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How often [`Durability::Eventual`] makes the writes since the last
/// flush durable, by default.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// The most compares, and the most operations of each branch, one
/// transaction takes ([`anykv_core::Capabilities::max_txn_ops`]).
pub const MAX_TXN_OPS: usize = 128;

/// The smallest TTL; smaller ones are raised to it.
pub const MIN_TTL: Duration = Duration::from_millis(1);

/// The extension a file named by a `redb://` URL must have: it marks where
/// the file's path ends and the root begins.
pub const FILE_EXTENSION: &str = ".redb";

/// When an acknowledged write is on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Durability {
    /// Every write is a redb transaction committed with
    /// `redb::Durability::Immediate`: the file is synced before the write
    /// returns, so an acknowledged write survives a crash of the process
    /// (`kill -9`) or of the machine. One sync per write: a write costs
    /// what the disk takes to sync (about a millisecond on an SSD, more on
    /// a disk without a write cache).
    #[default]
    Immediate,
    /// Writes are committed with `redb::Durability::None` (not synced), and
    /// a background flush makes them durable every
    /// [`RedbConfig::flush_interval`], as does a clean close. A crash
    /// loses the writes acknowledged since the last flush, up to that
    /// interval's worth; the file is never corrupt and never half-written.
    /// Revisions still never go back: after such a crash the store starts
    /// above every revision it may have handed out, and a watch resuming
    /// from before the crash gets `Compacted` (it may have seen writes
    /// that were lost) and re-reads. Much cheaper per write.
    Eventual,
}

/// How to open a [`crate::RedbStore`]: the file, the root, and the limits.
///
/// ```
/// use std::time::Duration;
/// use anykv_redb::{Durability, RedbConfig};
///
/// let config = RedbConfig::new("/var/lib/app/state.redb")
///     .with_root("app/x")
///     .with_durability(Durability::Eventual)
///     .with_flush_interval(Duration::from_millis(50));
/// let url = anykv_core::parse_url("redb:///var/lib/app/state.redb/app/x?durability=eventual&flush_interval=50ms")?;
/// assert_eq!(RedbConfig::from_url(&url)?, config);
/// # Ok::<(), anykv_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedbConfig {
    /// The database file; created if missing. Every store of the process
    /// opened on one file shares one open database.
    pub path: PathBuf,
    /// The root every key lives under.
    pub root: String,
    /// When an acknowledged write is on disk.
    pub durability: Durability,
    /// How often [`Durability::Eventual`] flushes (unused with
    /// [`Durability::Immediate`]).
    pub flush_interval: Duration,
    /// Changes kept for resuming watches (at least 1).
    pub history: usize,
    /// Bytes of keys and values kept for resuming watches.
    pub history_bytes: usize,
    /// The largest value, in bytes.
    pub max_value_size: usize,
    /// How long a call waits out a frozen store (see
    /// [`crate::RedbStore::pause`]) before it fails with `Timeout`.
    pub request_timeout: Duration,
}

impl RedbConfig {
    /// The file `path` at its top root, with the defaults.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RedbConfig {
            path: path.into(),
            root: String::new(),
            durability: Durability::Immediate,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            history: DEFAULT_HISTORY,
            history_bytes: DEFAULT_HISTORY_BYTES,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Sets the root (checked when the store opens: a bad root is a
    /// `Config` error).
    pub fn with_root(mut self, root: impl Into<String>) -> Self {
        self.root = root.into();
        self
    }

    /// Sets when an acknowledged write is on disk.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets how often [`Durability::Eventual`] flushes (at least 1 ms).
    pub fn with_flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Sets how many changes are kept for resuming watches (at least 1).
    pub fn with_history(mut self, history: usize) -> Self {
        self.history = history.max(1);
        self
    }

    /// Sets how many bytes of keys and values the history keeps.
    pub fn with_history_bytes(mut self, bytes: usize) -> Self {
        self.history_bytes = bytes;
        self
    }

    /// Sets the largest value.
    pub fn with_max_value_size(mut self, max: usize) -> Self {
        self.max_value_size = max;
        self
    }

    /// Sets how long a call waits out a frozen store.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Reads a `redb://` URL (see the [crate documentation](crate) for the
    /// form): `redb:///abs/dir/file.redb[/root][?params]` or
    /// `redb://./rel/dir/file.redb[/root][?params]`. The path ends at the
    /// one segment ending in `.redb`; what follows is the root, or the
    /// `root` parameter gives it. Anything else — a host other than `.`,
    /// no `.redb` segment or several, a root both ways, a user, password
    /// or port, an unknown or repeated parameter — is a `Config` error.
    pub fn from_url(url: &Url) -> Result<Self> {
        if url.scheme() != "redb" {
            return Err(Error::Config(format!(
                "the redb backend takes redb:// URLs, not {}://",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() || url.port().is_some() {
            return Err(Error::Config(
                "a redb:// URL names a file: it takes no user, password or port".into(),
            ));
        }
        let relative = match url.host_str() {
            None | Some("") => false,
            Some(".") => true,
            Some(host) => {
                return Err(Error::Config(format!(
                    "a redb:// URL names a file: redb:///abs/dir/file.redb or \
                     redb://./rel/dir/file.redb; {host:?} would be read as a host \
                     (write redb://./{host}/... for a path relative to the current directory)"
                )))
            }
        };
        let (file, path_root) = split_path(url.path())?;
        let mut path = PathBuf::from(if relative { "." } else { "/" });
        for segment in &file {
            path.push(segment);
        }
        let mut config = RedbConfig::new(path);
        let known = [
            "root",
            "durability",
            "flush_interval",
            "history",
            "history_bytes",
            "max_value_size",
            "request_timeout",
            "connect_timeout",
        ];
        let mut param_root = None;
        for (name, value) in url_params(url, &known)? {
            match name.as_str() {
                "root" => param_root = Some(value),
                "durability" => {
                    config.durability = match value.as_str() {
                        "immediate" => Durability::Immediate,
                        "eventual" => Durability::Eventual,
                        other => {
                            return Err(Error::Config(format!(
                                "parameter durability: {other:?} is neither \"immediate\" nor \
                                 \"eventual\""
                            )))
                        }
                    }
                }
                "flush_interval" => {
                    config.flush_interval = parse_duration_param(&name, &value)?;
                }
                "history" => config = config.with_history(parse_param(&name, &value)?),
                "history_bytes" => config.history_bytes = parse_param(&name, &value)?,
                "max_value_size" => config.max_value_size = parse_param(&name, &value)?,
                "request_timeout" => {
                    config.request_timeout = parse_duration_param(&name, &value)?;
                }
                // Nothing to connect to; taken so every backend's URL takes
                // the same timeouts.
                _ => {
                    parse_duration_param(&name, &value)?;
                }
            }
        }
        config.root = match (path_root.is_empty(), param_root) {
            (_, None) => key::normalize_root(&path_root)?,
            (true, Some(root)) => key::normalize_root(&root)?,
            (false, Some(_)) => {
                return Err(Error::Config(format!(
                    "a redb:// URL gives its root after the file's path ({path_root:?}) or as \
                     the root parameter, not both"
                )))
            }
        };
        Ok(config)
    }

    /// The file's path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The file's segments (percent-decoded) and the root after them.
fn split_path(path: &str) -> Result<(Vec<String>, String)> {
    let decoded: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_decode(s).ok_or_else(|| {
                Error::Config(format!(
                    "the path segment {s:?} of a redb:// URL is not UTF-8"
                ))
            })
        })
        .collect::<Result<_>>()?;
    let ends: Vec<usize> = decoded
        .iter()
        .enumerate()
        .filter(|(_, s)| s.ends_with(FILE_EXTENSION) && s.len() > FILE_EXTENSION.len())
        .map(|(i, _)| i)
        .collect();
    let end = match ends.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::Config(format!(
            "a redb:// URL names a file ending in {FILE_EXTENSION} (redb:///abs/dir/file.redb); \
                 {path:?} has none"
        )))
        }
        _ => {
            return Err(Error::Config(format!(
                "the path {path:?} has several segments ending in {FILE_EXTENSION}, so where \
                 the file ends is ambiguous; open such a file with RedbConfig instead"
            )))
        }
    };
    if decoded.iter().any(|s| s.contains('\0')) {
        return Err(Error::Config(
            "a redb:// URL's path may not contain a NUL character".into(),
        ));
    }
    let root = decoded[end + 1..].join("/");
    let mut file = decoded;
    file.truncate(end + 1);
    Ok((file, root))
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anykv_core::ErrorKind;

    fn parse(url: &str) -> Result<RedbConfig> {
        RedbConfig::from_url(&anykv_core::parse_url(url)?)
    }

    fn refused(url: &str, says: &str) {
        let e = parse(url).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{url}: {e}");
        assert!(e.to_string().contains(says), "{url}: {e}");
    }

    #[test]
    fn file_then_root() {
        let c = parse("redb:///var/lib/x/state.redb/app/x").unwrap();
        assert_eq!(
            c,
            RedbConfig::new("/var/lib/x/state.redb").with_root("app/x")
        );
        let c = parse("redb://./data/state.redb").unwrap();
        assert_eq!(c, RedbConfig::new("./data/state.redb"));
        let c = parse("redb:///s.redb?root=/app/x/").unwrap();
        assert_eq!(c, RedbConfig::new("/s.redb").with_root("app/x"));
        let c = parse("redb:///my%20dir/s%C3%A9.redb/a%20b").unwrap();
        assert_eq!(c, RedbConfig::new("/my dir/sé.redb").with_root("a b"));
        // A URL factory appends the root to the path: the file still ends
        // at its .redb segment.
        let c = parse("redb:///s.redb/base/case-1?history=5").unwrap();
        assert_eq!((c.root.as_str(), c.history), ("base/case-1", 5));
    }

    #[test]
    fn parameters() {
        let c = parse(
            "redb:///s.redb?durability=eventual&flush_interval=20ms&history=0&history_bytes=9\
             &max_value_size=100&request_timeout=1s&connect_timeout=2s",
        )
        .unwrap();
        let want = RedbConfig::new("/s.redb")
            .with_durability(Durability::Eventual)
            .with_flush_interval(Duration::from_millis(20))
            .with_history(1)
            .with_history_bytes(9)
            .with_max_value_size(100)
            .with_request_timeout(Duration::from_secs(1));
        assert_eq!(c, want);
        assert_eq!(
            parse("redb:///s.redb?durability=immediate")
                .unwrap()
                .durability,
            Durability::Immediate
        );
        let shown = format!("{c:?}");
        assert!(
            shown.contains("Eventual") && shown.contains("/s.redb"),
            "{shown}"
        );
    }

    #[test]
    fn ambiguous_and_bad_forms_are_refused() {
        refused("redb://data/s.redb", "\"data\" would be read as a host");
        refused("redb:///data/state", "has none");
        refused("redb:///a.redb/b.redb/root", "ambiguous");
        refused("redb:///s.redb/app?root=other", "not both");
        refused("redb://u:p@./s.redb", "no user, password or port");
        refused("redb://.:1/s.redb", "no user, password or port");
        refused("redb:///s.redb?nope=1", "unknown parameter");
        refused("redb:///s.redb?history=1&history=2", "given twice");
        refused("redb:///s.redb?durability=sometimes", "durability");
        refused("redb:///s.redb?flush_interval=0", "flush_interval");
        refused("redb:///s.redb?root=a/../b", "..");
        refused("redb:///s.redb/a%2F%2Fb", "");
        refused("redb:///dir/../s.redb", "..");
        refused("redb:///s.redb/%2e%2e", "..");
        refused("redb:///%FF.redb", "not UTF-8");
        refused("redb:///.redb", "has none");
        refused("memory:///s.redb", "redb:// URLs");
    }
}
