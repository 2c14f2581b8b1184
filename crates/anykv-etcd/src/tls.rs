//! TLS settings turned into what the etcd client takes.

use anykv_core::{Error, Result};
use etcd_client::{Certificate, Identity, TlsOptions};

use crate::config::TlsConfig;

/// The etcd client's TLS options: the CA, the client identity and the
/// domain, read from their PEM files (`Config` errors if unreadable).
pub(crate) fn tls_options(tls: &TlsConfig) -> Result<TlsOptions> {
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p)
            .map_err(|e| Error::Config(format!("cannot read the TLS {what} {}: {e}", p.display())))
    };
    let mut o = TlsOptions::new();
    if let Some(ca) = &tls.ca_file {
        o = o.ca_certificate(Certificate::from_pem(read(ca, "CA file")?));
    }
    if let (Some(c), Some(k)) = (&tls.cert_file, &tls.key_file) {
        o = o.identity(Identity::from_pem(
            read(c, "certificate file")?,
            read(k, "key file")?,
        ));
    }
    if let Some(d) = &tls.domain {
        o = o.domain_name(d.clone());
    }
    Ok(o)
}

/// Installs rustls' ring provider for the process, unless one is already
/// installed.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
