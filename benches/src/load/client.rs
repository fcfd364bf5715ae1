//! A minimal MQTT 3.1.1 client for load: connect, subscribe, and raw packet I/O with
//! batched writes. Encoding and decoding use `mqttbytes`, as a stock client would.
//! With `use_tls`, every connection is TLS.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context};
use bytes::BytesMut;
use mqttbytes::v4::{self, Connect, Packet, Subscribe};
use mqttbytes::QoS;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// What reads a connection's bytes: TCP or TLS.
pub trait ReadIo: AsyncRead + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + Unpin + Send + std::fmt::Debug> ReadIo for T {}
/// What writes a connection's bytes: TCP or TLS.
pub trait WriteIo: AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncWrite + Unpin + Send + std::fmt::Debug> WriteIo for T {}
/// The reading half of a connection.
pub type ReadSide = Box<dyn ReadIo>;
/// The writing half of a connection.
pub type WriteSide = Box<dyn WriteIo>;

/// Set by `use_tls`: connections are TLS.
static TLS: OnceLock<TlsConnector> = OnceLock::new();

/// Connect over TLS from now on, trusting the CA certificates in the PEM file `ca`
/// (the broker's certificate names the address connected to).
pub fn use_tls(ca: &Path) -> anyhow::Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("{}", ca.display()))? {
        roots.add(cert.with_context(|| format!("{}", ca.display()))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    TLS.set(TlsConnector::from(Arc::new(config)))
        .map_err(|_| anyhow::anyhow!("TLS set twice"))
}

/// Largest packet the load client accepts.
pub const MAX_PACKET: usize = 1 << 24;

/// The reading side of a connection: the socket's read half and what was read but
/// not yet decoded.
#[derive(Debug)]
pub struct Reader {
    rd: ReadSide,
    buf: BytesMut,
}

/// A connected client, split for concurrent reading and writing.
#[derive(Debug)]
pub struct Conn {
    /// Read side.
    pub reader: Reader,
    /// Write half.
    pub wr: WriteSide,
}

/// QoS from a number.
pub fn qos(n: u8) -> anyhow::Result<QoS> {
    mqttbytes::qos(n).map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// An `mqttbytes` encoding result as ours.
pub fn enc<E: std::fmt::Debug>(r: Result<usize, E>) -> anyhow::Result<()> {
    r.map(|_| ()).map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// Append the CONNECT a load client sends (keep alive 120 s).
pub fn encode_connect(id: &str, clean: bool, out: &mut BytesMut) -> anyhow::Result<()> {
    let mut connect = Connect::new(id);
    connect.keep_alive = 120;
    connect.clean_session = clean;
    enc(connect.write(out))
}

/// Append a SUBSCRIBE to `filter` (packet id 1).
pub fn encode_subscribe(filter: &str, qos: QoS, out: &mut BytesMut) -> anyhow::Result<()> {
    let mut s = Subscribe::new(filter, qos);
    s.pkid = 1;
    enc(s.write(out))
}

/// The first whole packet in `buf` (taken out of it), if there is one.
pub fn decode(buf: &mut BytesMut) -> anyhow::Result<Option<Packet>> {
    match v4::read(buf, MAX_PACKET) {
        Ok(p) => Ok(Some(p)),
        Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => bail!("bad packet from the broker: {e:?}"),
    }
}

/// The broker's answer to a CONNECT, accepted.
pub fn expect_connack(p: Packet) -> anyhow::Result<()> {
    match p {
        Packet::ConnAck(a) if a.code == v4::ConnectReturnCode::Success => Ok(()),
        other => bail!("expected a successful CONNACK, got {other:?}"),
    }
}

/// The broker's answer to a SUBSCRIBE.
pub fn expect_suback(p: Packet) -> anyhow::Result<()> {
    match p {
        Packet::SubAck(_) => Ok(()),
        other => bail!("expected SUBACK, got {other:?}"),
    }
}

/// Connect and wait for a successful CONNACK.
pub async fn connect(addr: &str, id: &str, clean: bool) -> anyhow::Result<Conn> {
    let s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    let (rd, wr): (ReadSide, WriteSide) = match TLS.get() {
        None => {
            let (rd, wr) = s.into_split();
            (Box::new(rd), Box::new(wr))
        }
        Some(tls) => {
            let name = match addr.parse::<std::net::SocketAddr>() {
                Ok(a) => ServerName::IpAddress(a.ip().into()),
                Err(_) => ServerName::try_from(addr.split(':').next().unwrap_or(addr).to_string())?,
            };
            let s = tls.connect(name, s).await.context("TLS handshake")?;
            let (rd, wr) = tokio::io::split(s);
            (Box::new(rd), Box::new(wr))
        }
    };
    let mut c = Conn {
        reader: Reader {
            rd,
            buf: BytesMut::with_capacity(64 * 1024),
        },
        wr,
    };
    let mut out = BytesMut::new();
    encode_connect(id, clean, &mut out)?;
    c.wr.write_all(&out).await?;
    expect_connack(c.reader.next().await?)?;
    Ok(c)
}

impl Reader {
    /// The next packet from the broker.
    pub async fn next(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(p) = decode(&mut self.buf)? {
                return Ok(p);
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed by the broker");
            }
        }
    }

    /// A packet already buffered, without reading.
    pub fn try_next(&mut self) -> anyhow::Result<Option<Packet>> {
        decode(&mut self.buf)
    }

    /// Read more bytes; false when the broker closed the connection.
    pub async fn fill(&mut self) -> anyhow::Result<bool> {
        Ok(self.rd.read_buf(&mut self.buf).await? > 0)
    }
}

impl Conn {
    /// Subscribe and wait for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        encode_subscribe(filter, qos, &mut out)?;
        self.wr.write_all(&out).await?;
        expect_suback(self.reader.next().await?)
    }
}
