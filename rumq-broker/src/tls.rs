//! What the MQTT listeners (`[[listeners]]`) put between a socket and MQTT: TLS
//! (`tls`, `wss`), a WebSocket upgrade (`ws`, `wss`), or nothing. For TLS, each
//! listener's certificate chain and key, and for mutual TLS the CA its clients'
//! certificates must chain to, read once at start (`rumq_broker::tls_config`: a bad
//! file stops the start with exit 2, naming it). ALPN `mqtt` offered (a client that
//! names no protocol is served too).
//!
//! Also the cluster's peer links' mutual TLS (`[cluster] tls_*`, [`peer_tls`]).
//!
//! Owns: turning a listener's settings and files into its [`Edge`], and the cluster's
//! TLS files into its links' [`PeerTls`].

use std::sync::Arc;

use rumq_broker::peer_stream::PeerTls;
use rumq_broker::tls_config::server_config;
use tokio_rustls::TlsAcceptor;

use crate::config::cluster::PeerTlsFiles;
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
            let mut config = server_config(cert, key, l.client_ca.as_deref())?;
            config.alpn_protocols = vec![b"mqtt".to_vec()];
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

/// Mutual TLS for the cluster's peer links from `files` (the error names the file).
pub fn peer_tls(files: &PeerTlsFiles) -> Result<PeerTls, String> {
    PeerTls::from_files(&files.cert, &files.key, &files.ca)
}

/// The common name (CN) of the client certificate `tls` was given (its first), if
/// there is one and it is UTF-8.
pub fn client_cn(conn: &rustls::ServerConnection) -> Option<String> {
    let cert = conn.peer_certificates()?.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}
