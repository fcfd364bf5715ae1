//! A minimal MQTT 3.1.1 client for load: connect, subscribe, and raw packet I/O with
//! batched writes. Encoding and decoding use `mqttbytes`, as a stock client would.

use anyhow::{bail, Context};
use bytes::BytesMut;
use mqttbytes::v4::{self, Connect, Packet, Subscribe};
use mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Largest packet the load client accepts.
pub const MAX_PACKET: usize = 1 << 24;

/// The reading side of a connection: the socket's read half and what was read but
/// not yet decoded.
#[derive(Debug)]
pub struct Reader {
    rd: OwnedReadHalf,
    buf: BytesMut,
}

/// A connected client, split for concurrent reading and writing.
#[derive(Debug)]
pub struct Conn {
    /// Read side.
    pub reader: Reader,
    /// Write half.
    pub wr: OwnedWriteHalf,
}

/// QoS from a number.
pub fn qos(n: u8) -> anyhow::Result<QoS> {
    mqttbytes::qos(n).map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// Connect and wait for a successful CONNACK.
pub async fn connect(addr: &str, id: &str, clean: bool) -> anyhow::Result<Conn> {
    let s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    let (rd, wr) = s.into_split();
    let mut c = Conn {
        reader: Reader {
            rd,
            buf: BytesMut::with_capacity(64 * 1024),
        },
        wr,
    };
    let mut connect = Connect::new(id);
    connect.keep_alive = 120;
    connect.clean_session = clean;
    let mut out = BytesMut::new();
    connect
        .write(&mut out)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    c.wr.write_all(&out).await?;
    match c.reader.next().await? {
        Packet::ConnAck(a) if a.code == v4::ConnectReturnCode::Success => Ok(c),
        other => bail!("expected a successful CONNACK, got {other:?}"),
    }
}

impl Reader {
    /// The next packet from the broker.
    pub async fn next(&mut self) -> anyhow::Result<Packet> {
        loop {
            match v4::read(&mut self.buf, MAX_PACKET) {
                Ok(p) => return Ok(p),
                Err(mqttbytes::Error::InsufficientBytes(_)) => {
                    if self.rd.read_buf(&mut self.buf).await? == 0 {
                        bail!("connection closed by the broker");
                    }
                }
                Err(e) => bail!("bad packet from the broker: {e:?}"),
            }
        }
    }

    /// A packet already buffered, without reading.
    pub fn try_next(&mut self) -> anyhow::Result<Option<Packet>> {
        match v4::read(&mut self.buf, MAX_PACKET) {
            Ok(p) => Ok(Some(p)),
            Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => bail!("bad packet from the broker: {e:?}"),
        }
    }

    /// Read more bytes; false when the broker closed the connection.
    pub async fn fill(&mut self) -> anyhow::Result<bool> {
        Ok(self.rd.read_buf(&mut self.buf).await? > 0)
    }
}

impl Conn {
    /// Subscribe and wait for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        let mut s = Subscribe::new(filter, qos);
        s.pkid = 1;
        let mut out = BytesMut::new();
        s.write(&mut out).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        self.wr.write_all(&out).await?;
        match self.reader.next().await? {
            Packet::SubAck(_) => Ok(()),
            other => bail!("expected SUBACK, got {other:?}"),
        }
    }
}
