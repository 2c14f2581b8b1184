//! The memory backend's configuration: [`MemoryConfig`], from a builder
//! or a `memory://` URL.

use std::time::Duration;

use anykv_core::{parse_param, url_params, url_root, Error, Result, Url};

/// How many changes a store keeps for resuming watches, by default.
pub const DEFAULT_HISTORY: usize = 10_000;

/// How many bytes of keys and values the history holds at most, by
/// default: 64 MiB. The history keeps the last [`DEFAULT_HISTORY`] changes or
/// this many bytes, whichever is less.
pub const DEFAULT_HISTORY_BYTES: usize = 64 * 1024 * 1024;

/// The largest value a store takes, by default: 16 MiB.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 16 * 1024 * 1024;

/// How long a call waits out a frozen store by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The smallest TTL; smaller ones are raised to it.
pub const MIN_TTL: Duration = Duration::from_millis(1);

/// How to open a [`crate::MemoryStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// The process-wide store to share; `None` for a new private store.
    pub name: Option<String>,
    /// The root every key lives under.
    pub root: String,
    /// Changes kept for resuming watches.
    pub history: usize,
    /// Bytes of keys and values kept for resuming watches.
    pub history_bytes: usize,
    /// The largest value, in bytes.
    pub max_value_size: usize,
    /// How long a call waits out a frozen store (see [`crate::pause_named`])
    /// before it fails with `Timeout`; the `request_timeout` URL parameter.
    pub request_timeout: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            name: None,
            root: String::new(),
            history: DEFAULT_HISTORY,
            history_bytes: DEFAULT_HISTORY_BYTES,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl MemoryConfig {
    /// A new private store with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Shares the process-wide store `name`.
    pub fn named(name: impl Into<String>) -> Self {
        MemoryConfig {
            name: Some(name.into()),
            ..Self::default()
        }
    }

    /// Sets the root.
    pub fn with_root(mut self, root: impl Into<String>) -> Self {
        self.root = root.into();
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

    /// How long a call waits out a frozen store (see
    /// [`crate::pause_named`]) before it fails with `Timeout`.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Reads `memory://[name][/root][?history=N&history_bytes=N&max_value_size=N]`.
    pub fn from_url(url: &Url) -> Result<Self> {
        if url.scheme() != "memory" {
            return Err(Error::Config(format!(
                "the memory backend takes memory:// URLs, not {}://",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() || url.port().is_some() {
            return Err(Error::Config(
                "a memory:// URL takes no user, password or port".into(),
            ));
        }
        let mut config = MemoryConfig::new();
        let name = url.host_str().unwrap_or("");
        if !name.is_empty() {
            config.name = Some(name.to_owned());
        }
        config.root = url_root(url)?;
        let known = [
            "history",
            "history_bytes",
            "max_value_size",
            "request_timeout",
            "connect_timeout",
        ];
        for (name, value) in url_params(url, &known)? {
            match name.as_str() {
                "history" => config = config.with_history(parse_param(&name, &value)?),
                "history_bytes" => config.history_bytes = parse_param(&name, &value)?,
                "request_timeout" => {
                    config.request_timeout = anykv_core::parse_duration_param(&name, &value)?
                }
                // Nothing to connect to; taken so every backend's URL
                // takes the same timeouts.
                "connect_timeout" => {
                    anykv_core::parse_duration_param(&name, &value)?;
                }
                _ => config.max_value_size = parse_param(&name, &value)?,
            }
        }
        Ok(config)
    }
}
