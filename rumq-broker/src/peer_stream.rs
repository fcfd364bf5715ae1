//! A peer link's byte stream: plain TCP, or TLS with both ends' certificates checked
//! against the cluster's CA (`[cluster] tls_cert`, `tls_key`, `tls_ca`). Either way
//! the link then runs the secret's challenge and response inside it (`peer_link`):
//! the certificate says a node is the cluster's, the secret that it is this
//! cluster's, and TLS keeps the logs' records private on the wire.
//!
//! Plain TCP splits into tokio's owned halves (no lock between reader and writer);
//! TLS into `tokio::io::split`'s, which share the session behind a lock.
//!
//! Owns: the stream and its halves, and what a node's TLS for its links is.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use crate::tls_config;

/// The protocol the peer links name in ALPN.
const PEER_ALPN: &[u8] = b"rumq-peer";

/// A node's TLS for its peer links: the same certificate serves when it accepts a
/// link and when it dials one, and the other end's must chain to the cluster's CA.
#[derive(Clone)]
pub struct PeerTls {
    /// For links this node accepts (a client certificate required).
    pub acceptor: TlsAcceptor,
    /// For links this node dials (the server's certificate must name the address
    /// dialed: its IP address as a subject alternative name).
    pub connector: TlsConnector,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls")
    }
}

impl PeerTls {
    /// From PEM files: this node's certificate chain `cert` and its `key`, and the
    /// cluster's CA `ca`. ALPN `rumq-peer`. The error names the file.
    pub fn from_files(cert: &Path, key: &Path, ca: &Path) -> Result<PeerTls, String> {
        let mut server = tls_config::server_config(cert, key, Some(ca))?;
        server.alpn_protocols = vec![PEER_ALPN.to_vec()];
        let mut client = tls_config::client_config(cert, key, ca)?;
        client.alpn_protocols = vec![PEER_ALPN.to_vec()];
        Ok(PeerTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }
}

/// A peer link's stream.
#[derive(Debug)]
pub enum PeerStream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP, either side.
    Tls(Box<TlsStream<TcpStream>>),
}

impl PeerStream {
    /// `stream`, dialed to `addr`, as the link's: through a TLS handshake when `tls`.
    pub async fn dialed(
        stream: TcpStream,
        addr: SocketAddr,
        tls: Option<&PeerTls>,
    ) -> std::io::Result<PeerStream> {
        let Some(tls) = tls else {
            return Ok(PeerStream::Tcp(stream));
        };
        let name = ServerName::IpAddress(addr.ip().into());
        let s = tls.connector.connect(name, stream).await?;
        agreed(s.get_ref().1.alpn_protocol())?;
        Ok(PeerStream::Tls(Box::new(TlsStream::Client(s))))
    }

    /// `stream`, accepted, as the link's: through a TLS handshake when `tls`.
    pub async fn accepted(stream: TcpStream, tls: Option<&PeerTls>) -> std::io::Result<PeerStream> {
        let Some(tls) = tls else {
            return Ok(PeerStream::Tcp(stream));
        };
        let s = tls.acceptor.accept(stream).await?;
        agreed(s.get_ref().1.alpn_protocol())?;
        Ok(PeerStream::Tls(Box::new(TlsStream::Server(s))))
    }

    /// A half that reads and a half that writes.
    pub fn into_split(self) -> (PeerRead, PeerWrite) {
        match self {
            PeerStream::Tcp(s) => {
                let (r, w) = s.into_split();
                (PeerRead::Tcp(r), PeerWrite::Tcp(w))
            }
            PeerStream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (PeerRead::Tls(r), PeerWrite::Tls(w))
            }
        }
    }
}

/// A TLS session is a peer link only if both ends named `rumq-peer` in ALPN (a
/// client that names no protocol would otherwise be served).
fn agreed(alpn: Option<&[u8]>) -> std::io::Result<()> {
    if alpn == Some(PEER_ALPN) {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the TLS session did not agree on ALPN rumq-peer",
        ))
    }
}

/// The reading half of a [`PeerStream`].
#[derive(Debug)]
pub enum PeerRead {
    /// Plain TCP.
    Tcp(OwnedReadHalf),
    /// TLS.
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

/// The writing half of a [`PeerStream`].
#[derive(Debug)]
pub enum PeerWrite {
    /// Plain TCP.
    Tcp(OwnedWriteHalf),
    /// TLS.
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

/// `AsyncRead` by the variant's own.
macro_rules! read_by_variant {
    ($t:ty) => {
        impl AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
}

/// `AsyncWrite` by the variant's own.
macro_rules! write_by_variant {
    ($t:ty) => {
        impl AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<std::io::Result<usize>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_flush(cx),
                    Self::Tls(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

read_by_variant!(PeerStream);
write_by_variant!(PeerStream);
read_by_variant!(PeerRead);
write_by_variant!(PeerWrite);
