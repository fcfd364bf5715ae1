//! TLS configurations from PEM files, for the MQTT listeners (`tls.rs` in the
//! binary) and the cluster's peer links (`peer_stream`): rustls with one crypto
//! provider, ring, chosen here rather than by whichever feature another crate turns
//! on; TLS 1.3 and 1.2. A file that is missing, unreadable or not PEM, a chain with
//! no certificate, or a key that does not match the certificate is an error naming
//! the file.
//!
//! Owns: reading certificates and keys, and the rustls configurations built on them.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A server configuration from PEM files: the certificate chain at `cert` (leaf
/// first), its key at `key`, and with `client_ca` client certificates required.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(cert)?;
    let key_der = private_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider)
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(chain, key_der)
        .map_err(|e| format!("{} does not go with {}: {e}", key.display(), cert.display()))
}

/// A client configuration that trusts the CA at `ca` and presents the certificate
/// chain at `cert` with its key at `key` (mutual TLS).
pub fn client_config(cert: &Path, key: &Path, ca: &Path) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certificates(cert)?, private_key(key)?)
        .map_err(|e| format!("{} does not go with {}: {e}", key.display(), cert.display()))
}

/// The CA certificates in the PEM file at `ca`, as trust roots.
fn roots(ca: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in certificates(ca)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: not a CA certificate: {e}", ca.display()))?;
    }
    Ok(roots)
}

/// The private key in the PEM file at `path`.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("{}: no private key read: {e}", path.display()))
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
