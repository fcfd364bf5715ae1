//! What the MQTT listeners (`[[listeners]]`) put between a socket and MQTT: TLS
//! (`tls`, `wss`), a WebSocket upgrade (`ws`, `wss`), or nothing. For TLS, each
//! listener's certificate chain and key, and for mutual TLS the CA its clients'
//! certificates must chain to, read once at start. A file that is missing,
//! unreadable or not PEM, a chain with no certificate, or a key that does not match
//! the certificate stops the start with exit 2, naming the file.
//!
//! rustls with one crypto provider, ring, chosen here rather than by whichever
//! feature another crate turns on; TLS 1.3 and 1.2; ALPN `mqtt` offered (a client
//! that names no protocol is served too).
//!
//! Owns: turning a listener's settings and files into its [`Edge`].

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::listeners::{ExtraListener, Transport};

/// What a listener puts between a client's socket and MQTT.
#[derive(Clone)]
pub enum Edge {
    /// Nothing: plain TCP.
    Tcp,
    /// TLS.
    Tls(TlsEdge),
    /// A WebSocket upgrade at `path` (over TLS with `tls`).
    Ws {
        /// `wss`: TLS first.
        tls: Option<TlsEdge>,
        /// The HTTP path of the upgrade.
        path: Arc<str>,
    },
}

/// A listener's TLS.
#[derive(Clone)]
pub struct TlsEdge {
    /// Its acceptor.
    pub acceptor: TlsAcceptor,
    /// The client certificate's CN is the client's user name.
    pub cn_as_username: bool,
}

impl Edge {
    /// As `transport` names it.
    pub fn name(&self) -> &'static str {
        match self {
            Edge::Tcp => "tcp",
            Edge::Tls(_) => "tls",
            Edge::Ws { tls: None, .. } => "ws",
            Edge::Ws { tls: Some(_), .. } => "wss",
        }
    }
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The edge of listener `l`; the error names the file.
pub fn edge(l: &ExtraListener) -> Result<Edge, String> {
    let acceptor = match (l.transport, &l.cert, &l.key) {
        (Transport::Tls | Transport::Wss, Some(cert), Some(key)) => {
            let config = server_config(cert, key, l.client_ca.as_deref())?;
            Some(TlsEdge {
                acceptor: TlsAcceptor::from(Arc::new(config)),
                cn_as_username: l.use_cn_as_username,
            })
        }
        _ => None,
    };
    Ok(match (l.transport, acceptor) {
        (Transport::Ws | Transport::Wss, tls) => Edge::Ws {
            tls,
            path: l.ws_path().into(),
        },
        (_, Some(tls)) => Edge::Tls(tls),
        (_, None) => Edge::Tcp,
    })
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

/// The common name (CN) of the client certificate `tls` was given (its first), if
/// there is one and it is UTF-8.
pub fn client_cn(conn: &rustls::ServerConnection) -> Option<String> {
    let cert = conn.peer_certificates()?.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
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
