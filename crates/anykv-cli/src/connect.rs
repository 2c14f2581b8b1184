//! Opening and closing the store a command names, and reading a value
//! from a file or standard input: what every command shares.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anykv::{Bytes, Store};

use crate::exit::{CliError, FAILURE, USAGE};

/// How long closing a store at the end of a command may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the store `url` names, with every backend of this build
/// registered. Errors name the URL without its password.
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, CliError> {
    crate::register_backends();
    anykv::open(url)
        .await
        .map_err(|e| CliError::from(e).context(format!("cannot open {}", anykv::redact_url(url))))
}

/// Closes a store, giving up after a few seconds (its leases and locks
/// then expire on the server by themselves).
pub async fn close_store(store: &Arc<dyn Store>) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, store.close()).await;
}

/// Reads a value from a file, or from standard input for `-`.
pub async fn read_value(path: &Path) -> Result<Bytes, CliError> {
    let path: PathBuf = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || {
        let result = if path.as_os_str() == "-" {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map(|_| buf)
        } else {
            std::fs::read(&path)
        };
        result.map_err(|e| {
            let what = if path.as_os_str() == "-" {
                "standard input".to_string()
            } else {
                format!("{:?}", path.display().to_string())
            };
            CliError::new(USAGE, "Io", format!("cannot read {what}: {e}"))
        })
    })
    .await
    .map_err(|e| CliError::new(FAILURE, "Io", format!("reading the value failed: {e}")))?;
    read.map(Bytes::from)
}
