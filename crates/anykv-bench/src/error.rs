//! The benchmark's error type.

use std::fmt;

/// An error of the benchmark: a bad configuration (the command line, the
/// URL) or a failure while running.
#[derive(Debug)]
pub struct BenchError {
    message: String,
    config: bool,
}

impl BenchError {
    /// A failure while running.
    pub fn new(message: impl Into<String>) -> Self {
        BenchError {
            message: message.into(),
            config: false,
        }
    }

    /// A bad configuration.
    pub fn config(message: impl Into<String>) -> Self {
        BenchError {
            message: message.into(),
            config: true,
        }
    }

    /// Whether the configuration (not the run) is at fault.
    pub fn is_config(&self) -> bool {
        self.config
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BenchError {}

impl From<anykv::Error> for BenchError {
    fn from(e: anykv::Error) -> Self {
        BenchError {
            message: format!("anykv: {e}"),
            config: e.kind() == anykv::ErrorKind::Config,
        }
    }
}

impl From<etcd_client::Error> for BenchError {
    fn from(e: etcd_client::Error) -> Self {
        BenchError::new(format!("etcd-client: {e}"))
    }
}

impl From<redis::RedisError> for BenchError {
    fn from(e: redis::RedisError) -> Self {
        BenchError::new(format!("redis: {e}"))
    }
}

impl From<opendal::Error> for BenchError {
    fn from(e: opendal::Error) -> Self {
        BenchError::new(format!("opendal: {e}"))
    }
}

impl From<zookeeper_client::Error> for BenchError {
    fn from(e: zookeeper_client::Error) -> Self {
        BenchError::new(format!("zookeeper-client: {e}"))
    }
}

/// The result type of the benchmark.
pub type Result<T> = std::result::Result<T, BenchError>;
