//! A service instance and its record: the key layout and JSON format that
//! the registry writes and discovery reads.

use std::collections::BTreeMap;
use std::fmt;

use anykv_core::{Bytes, KvPair, Result};
use serde::{Deserialize, Serialize};

use crate::util::{check_segment, join, json_error};

/// Where services live unless an option says otherwise.
pub const DEFAULT_SERVICES_PREFIX: &str = "services";

/// One instance of a service, as registered and discovered.
///
/// Its key is `{prefix}/{service}/{id}` (prefix `services` by default) and
/// its value this JSON object, readable from any language:
///
/// ```json
/// {"service":"web","id":"web-1","address":"10.0.0.1","port":8080,
///  "metadata":{"zone":"a"},"weight":1,"enabled":true}
/// ```
///
/// `metadata` (default `{}`), `weight` (default 1) and `enabled` (default
/// true) may be left out by other writers; unknown fields are ignored.
/// `service` and `id` must match the key (a record whose fields disagree
/// with its key is skipped by discovery).
///
/// ```
/// use anykv_recipes::Instance;
/// let web = Instance::new("web", "web-1", "10.0.0.1", 8080).with_metadata("zone", "a");
/// let json = web.to_json().unwrap();
/// assert_eq!(Instance::from_json(&json).unwrap(), web);
/// assert_eq!(web.key("services").unwrap(), "services/web/web-1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Instance {
    /// The service's name: one key segment.
    pub service: String,
    /// The instance's id, unique within the service: one key segment.
    pub id: String,
    /// Host name or IP address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Anything else consumers may use to choose (version, zone, ...).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Relative share of traffic for weighted random selection; 0 takes
    /// none while others have weight.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Whether consumers should use it (an instance draining or in
    /// maintenance stays registered but disabled).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
}

fn default_weight() -> u32 {
    1
}

fn default_enabled() -> bool {
    true
}

impl Instance {
    /// An enabled instance of weight 1 without metadata.
    pub fn new(
        service: impl Into<String>,
        id: impl Into<String>,
        address: impl Into<String>,
        port: u16,
    ) -> Self {
        Instance {
            service: service.into(),
            id: id.into(),
            address: address.into(),
            port,
            metadata: BTreeMap::new(),
            weight: 1,
            enabled: true,
        }
    }

    /// Adds a metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets whether it is enabled.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// `address:port` (IPv6 addresses in brackets).
    pub fn endpoint(&self) -> String {
        if self.address.contains(':') && !self.address.starts_with('[') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }

    /// Its key under `prefix`: `{prefix}/{service}/{id}`. Fails with
    /// `InvalidArgument` or `InvalidKey` unless service and id are each one
    /// valid key segment.
    pub fn key(&self, prefix: &str) -> Result<String> {
        check_segment("service name", &self.service)?;
        check_segment("instance id", &self.id)?;
        let prefix = anykv_core::key::normalize_prefix(prefix)?;
        Ok(join(&prefix, &format!("{}/{}", self.service, self.id)))
    }

    /// Its JSON record.
    pub fn to_json(&self) -> Result<Bytes> {
        serde_json::to_vec(self)
            .map(Bytes::from)
            .map_err(json_error)
    }

    /// Reads a JSON record; an `InvalidArgument` error saying what is
    /// wrong, never a panic.
    pub fn from_json(bytes: &[u8]) -> Result<Instance> {
        serde_json::from_slice(bytes)
            .map_err(|e| anykv_core::Error::InvalidArgument(format!("not an instance record: {e}")))
    }

    /// Reads the record of `pair` found under `{prefix}/{service}`: its
    /// fields must agree with its key.
    pub(crate) fn from_pair(pair: &KvPair, service_dir: &str) -> Result<Instance> {
        let instance = Instance::from_json(&pair.value)?;
        let expected = join(service_dir, &instance.id);
        let service_ok = service_dir.rsplit('/').next() == Some(instance.service.as_str());
        if pair.key != expected || !service_ok {
            return Err(anykv_core::Error::InvalidArgument(format!(
                "the record at {:?} names {}/{}",
                pair.key, instance.service, instance.id
            )));
        }
        Ok(instance)
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} at {}", self.service, self.id, self.endpoint())?;
        if !self.enabled {
            write!(f, " (disabled)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_defaults_and_round_trip() {
        let minimal = br#"{"service":"web","id":"a","address":"h","port":1}"#;
        let i = Instance::from_json(minimal).unwrap();
        assert_eq!(i, Instance::new("web", "a", "h", 1));
        let full = Instance::new("web", "a", "::1", 80)
            .with_weight(5)
            .with_enabled(false)
            .with_metadata("v", "2");
        assert_eq!(Instance::from_json(&full.to_json().unwrap()).unwrap(), full);
        assert_eq!(full.endpoint(), "[::1]:80");
        assert_eq!(full.to_string(), "web/a at [::1]:80 (disabled)");
        for bad in [
            &b"{}"[..],
            b"nope",
            b"",
            br#"{"service":"w","id":"a","address":"h","port":70000}"#,
        ] {
            let e = Instance::from_json(bad).unwrap_err();
            assert_eq!(e.kind(), anykv_core::ErrorKind::InvalidArgument);
        }
    }

    #[test]
    fn keys_and_pairs_must_agree() {
        let i = Instance::new("web", "a", "h", 1);
        assert_eq!(i.key("/services/").unwrap(), "services/web/a");
        assert_eq!(i.key("").unwrap(), "web/a");
        assert!(Instance::new("w/x", "a", "h", 1).key("s").is_err());
        assert!(Instance::new("w", "", "h", 1).key("s").is_err());
        let pair = KvPair::new("services/web/a", i.to_json().unwrap(), 1);
        assert_eq!(Instance::from_pair(&pair, "services/web").unwrap(), i);
        let moved = KvPair::new("services/web/b", i.to_json().unwrap(), 1);
        assert!(Instance::from_pair(&moved, "services/web").is_err());
        assert!(Instance::from_pair(&pair, "services/api").is_err());
    }
}
