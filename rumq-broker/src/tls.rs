//! TLS for the MQTT listeners (`[[listeners]]` with `transport = "tls"`): each
//! listener's certificate chain and key, and for mutual TLS the CA its clients'
//! certificates must chain to, read once at start. A file that is missing,
//! unreadable or not PEM, a chain with no certificate, or a key that does not match
//! the certificate stops the start with exit 2, naming the file.
//!
//! rustls with one crypto provider, ring, chosen here rather than by whichever
//! feature another crate turns on; TLS 1.3 and 1.2; ALPN `mqtt` offered (a client
//! that names no protocol is served too).
//!
//! Owns: turning a listener's files into its acceptor.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::listeners::{ExtraListener, Transport};

/// The acceptor of listener `l`, `None` for a plain one; the error names the file.
pub fn acceptor(l: &ExtraListener) -> Result<Option<TlsAcceptor>, String> {
    let (Transport::Tls, Some(cert), Some(key)) = (l.transport, &l.cert, &l.key) else {
        return Ok(None);
    };
    let config = server_config(cert, key, l.client_ca.as_deref())?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// A server configuration from PEM files: the certificate chain at `cert` (leaf
/// first), its key at `key`, and with `client_ca` client certificates required.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: no private key read: {e}", key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certificates(ca)? {
                roots
                    .add(c)
                    .map_err(|e| format!("{}: not a CA certificate: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key_der)
        .map_err(|e| format!("{} does not go with {}: {e}", key.display(), cert.display()))?;
    config.alpn_protocols = vec![b"mqtt".to_vec()];
    Ok(config)
}

/// Every certificate in the PEM file at `path`: at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: no certificate read: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}
