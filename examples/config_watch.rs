//! Live configuration: an application reads its settings from the store
//! and reloads them when they change, refusing bad values.
//!
//! ```text
//! cargo run --example config_watch                       # in-process store
//! cargo run --all-features --example config_watch -- etcd://127.0.0.1:2379/demo
//! cargo run --all-features --example config_watch -- redis://127.0.0.1:6379/0/demo
//! cargo run --all-features --example config_watch -- zk://127.0.0.1:2181/demo
//! ```
//!
//! The settings are one key each under `config_watch/settings/`
//! (`log_level`, `max_connections`, `greeting`). The application watches
//! that tree: the watch's initial state is the configuration it starts
//! with, `Synced` says it has all of it, and every later `Put` or `Delete`
//! is a change to apply. Each value is parsed into a typed field; a value
//! that does not parse is refused and the application keeps the last good
//! one, and a deleted key falls back to its default.
//!
//! In the demo an operator (the same process, for brevity) changes the
//! settings one at a time and the application reports each reload. Every
//! key it writes is under `config_watch/`, which it empties first and last.

#[macro_use]
#[path = "support/say.rs"]
mod say;

use std::fmt;
use std::io::Write;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anykv::{PutOptions, Store, WatchEvent, WatchOptions, WatchStream};
use futures::StreamExt;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the settings live, one key per setting.
const SETTINGS: &str = "config_watch/settings";
/// The longest the demo waits for a change to arrive.
const WAIT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("ANYKV_URL").ok())
        .unwrap_or_else(|| "memory://".to_string());
    let store = match anykv::open(&url).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("config_watch: cannot open {}: {e}", anykv::redact_url(&url));
            return ExitCode::from(2);
        }
    };
    println!(
        "Opened {} (backend: {}).",
        anykv::redact_url(&url),
        store.capabilities().backend
    );
    let result = demo(store.as_ref(), &mut say::Stdout).await;
    let _ = store.close().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("config_watch: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------- settings

/// The application's settings, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    log_level: LogLevel,
    max_connections: u32,
    greeting: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            log_level: LogLevel::Info,
            max_connections: 100,
            greeting: "hello".to_string(),
        }
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "log_level={}, max_connections={}, greeting={:?}",
            self.log_level, self.max_connections, self.greeting
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "error" => Ok(LogLevel::Error),
            "warn" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            _ => Err("expected error, warn, info or debug".to_string()),
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        })
    }
}

impl Settings {
    /// The settings with `name` set to `value` (or back to its default when
    /// `value` is `None`), or why that value is refused.
    fn with(&self, name: &str, value: Option<&[u8]>) -> Result<Settings, String> {
        let defaults = Settings::default();
        let text = value
            .map(|v| std::str::from_utf8(v).map(str::trim))
            .transpose()
            .map_err(|_| "not UTF-8".to_string())?;
        let mut next = self.clone();
        match name {
            "log_level" => {
                next.log_level = text.map_or(Ok(defaults.log_level), str::parse)?;
            }
            "max_connections" => {
                next.max_connections = match text {
                    None => defaults.max_connections,
                    Some(t) => match t.parse() {
                        Ok(n) if (1..=10_000).contains(&n) => n,
                        _ => return Err("expected a number from 1 to 10000".into()),
                    },
                };
            }
            "greeting" => {
                next.greeting = match text {
                    None => defaults.greeting,
                    Some("") => return Err("the greeting cannot be empty".into()),
                    Some(t) => t.to_string(),
                };
            }
            _ => return Err("no such setting".into()),
        }
        Ok(next)
    }
}

// ---------------------------------------------------------------- live config

/// What one change in the store did to the settings.
#[derive(Debug)]
enum Reload {
    /// The setting changed; the application now runs with these settings.
    Applied { name: String, settings: Settings },
    /// The value was refused; the application keeps its settings.
    Refused {
        name: String,
        value: String,
        reason: String,
    },
}

/// The application's view of its settings, kept up to date by a watch.
struct LiveConfig {
    prefix: String,
    watch: WatchStream,
    current: Settings,
}

impl LiveConfig {
    /// Reads the settings under `prefix`. The watch delivers the current
    /// value of every setting, then `Synced`: from there on the settings
    /// are complete and every later event is a change. Values refused here
    /// leave their defaults and are returned as well.
    async fn load(store: &dyn Store, prefix: &str) -> Result<(LiveConfig, Vec<Reload>)> {
        let watch = store.watch_tree(prefix, WatchOptions::new()).await?;
        let mut config = LiveConfig {
            prefix: prefix.to_string(),
            watch,
            current: Settings::default(),
        };
        let mut refused = Vec::new();
        loop {
            match next_event(&mut config.watch).await? {
                WatchEvent::Synced { .. } => return Ok((config, refused)),
                event => {
                    if let Some(reload @ Reload::Refused { .. }) = config.apply(event) {
                        refused.push(reload);
                    }
                }
            }
        }
    }

    /// The settings the application runs with.
    fn settings(&self) -> &Settings {
        &self.current
    }

    /// Waits for the next change and applies it. An application runs this in
    /// a loop of its own and hands each new `Settings` to its components
    /// (for example through a `tokio::sync::watch` channel).
    async fn next_reload(&mut self) -> Result<Reload> {
        loop {
            let event = next_event(&mut self.watch).await?;
            if let Some(reload) = self.apply(event) {
                return Ok(reload);
            }
        }
    }

    fn apply(&mut self, event: WatchEvent) -> Option<Reload> {
        let (key, value) = match event {
            WatchEvent::Put(kv) => (kv.key, Some(kv.value)),
            WatchEvent::Delete { key, .. } => (key, None),
            WatchEvent::Synced { .. } => return None,
        };
        let name = key
            .strip_prefix(&self.prefix)?
            .strip_prefix('/')?
            .to_string();
        match self.current.with(&name, value.as_deref()) {
            Ok(settings) => {
                self.current = settings.clone();
                Some(Reload::Applied { name, settings })
            }
            Err(reason) => Some(Reload::Refused {
                name,
                value: String::from_utf8_lossy(value.as_deref().unwrap_or_default()).into(),
                reason,
            }),
        }
    }
}

// ---------------------------------------------------------------- the demo

/// The demo: seed the settings, load them, then change them one at a time
/// and report what the application does with each change.
pub async fn demo(store: &dyn Store, out: &mut impl Write) -> Result<()> {
    store.delete_tree("config_watch").await?;
    let result = demo_steps(store, out).await;
    store.delete_tree("config_watch").await?;
    result
}

async fn demo_steps(store: &dyn Store, out: &mut impl Write) -> Result<()> {
    let set = |name: &str, value: &str| {
        let key = format!("{SETTINGS}/{name}");
        let value = value.to_string();
        async move { store.put(&key, value.into(), PutOptions::new()).await }
    };
    set("log_level", "info").await?;
    set("max_connections", "100").await?;
    set("greeting", "hello").await?;
    writeln!(
        out,
        "Operator: wrote log_level=info, max_connections=100, greeting=hello."
    )?;

    let (mut config, refused) = LiveConfig::load(store, SETTINGS).await?;
    for reload in &refused {
        report(out, reload)?;
    }
    writeln!(out, "App: loaded {}.", config.settings())?;

    let changes: [(&str, Option<&str>); 5] = [
        ("max_connections", Some("250")),
        ("max_connections", Some("lots")),
        ("log_level", Some("debug")),
        ("greeting", Some("good morning")),
        ("greeting", None),
    ];
    for (name, value) in changes {
        match value {
            Some(value) => {
                set(name, value).await?;
                writeln!(out, "Operator: set {name}={value}.")?;
            }
            None => {
                store.delete(&format!("{SETTINGS}/{name}")).await?;
                writeln!(out, "Operator: deleted {name}.")?;
            }
        }
        let reload = config.next_reload().await?;
        report(out, &reload)?;
    }
    writeln!(out, "App: running with {}.", config.settings())?;
    Ok(())
}

fn report(out: &mut impl Write, reload: &Reload) -> std::io::Result<()> {
    match reload {
        Reload::Applied { name, settings } => {
            writeln!(out, "App: reloaded after a change to {name}: {settings}.")
        }
        Reload::Refused {
            name,
            value,
            reason,
        } => writeln!(
            out,
            "App: refused {name}={value:?} ({reason}); keeping the previous value."
        ),
    }
}

async fn next_event(watch: &mut WatchStream) -> Result<WatchEvent> {
    match tokio::time::timeout(WAIT, watch.next()).await {
        Ok(Some(event)) => Ok(event?),
        Ok(None) => Err("the watch ended".into()),
        Err(_) => Err(format!("no change within {WAIT:?}").into()),
    }
}
