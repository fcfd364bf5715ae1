//! Raw MQTT over a socket: packets built byte by byte, read back whole.

use super::*;

/// Append MQTT's variable-length "remaining length" (the broker's own varint
/// writer).
pub fn put_remaining_length(out: &mut Vec<u8>, len: usize) {
    let mut varint = BytesMut::new();
    put_varint(&mut varint, len);
    out.extend_from_slice(&varint);
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u16::try_from(s.len()).unwrap().to_be_bytes());
    out.extend_from_slice(s);
}

/// A whole packet from a first byte and a body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    put_remaining_length(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// What goes into a raw CONNECT.
#[derive(Debug, Clone)]
pub struct ConnectOpts {
    /// "MQTT" (3.1.1) or "MQIsdp" (3.1).
    pub protocol: &'static str,
    /// Protocol level: 4 for 3.1.1, 3 for 3.1.
    pub level: u8,
    /// Client id.
    pub client_id: String,
    /// Clean session flag.
    pub clean: bool,
    /// Keep alive in seconds.
    pub keep_alive: u16,
    /// Will: topic, payload, QoS, retain.
    pub will: Option<(String, Vec<u8>, u8, bool)>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Vec<u8>>,
}

impl ConnectOpts {
    /// MQTT 3.1.1, clean session, keepalive off.
    pub fn new(client_id: &str) -> ConnectOpts {
        ConnectOpts {
            protocol: "MQTT",
            level: 4,
            client_id: client_id.into(),
            clean: true,
            keep_alive: 0,
            will: None,
            username: None,
            password: None,
        }
    }

    /// Set the clean session flag.
    pub fn clean(mut self, clean: bool) -> Self {
        self.clean = clean;
        self
    }

    /// Set the keep alive (seconds).
    pub fn keep_alive(mut self, secs: u16) -> Self {
        self.keep_alive = secs;
        self
    }

    /// Set a will.
    pub fn will(mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> Self {
        self.will = Some((topic.into(), payload.to_vec(), qos, retain));
        self
    }

    /// The CONNECT packet.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        put_str(&mut body, self.protocol.as_bytes());
        body.push(self.level);
        let mut flags = 0u8;
        if self.clean {
            flags |= 0x02;
        }
        if let Some((_, _, qos, retain)) = &self.will {
            flags |= 0x04 | (qos << 3);
            if *retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        body.push(flags);
        body.extend_from_slice(&self.keep_alive.to_be_bytes());
        put_str(&mut body, self.client_id.as_bytes());
        if let Some((topic, payload, _, _)) = &self.will {
            put_str(&mut body, topic.as_bytes());
            put_str(&mut body, payload);
        }
        if let Some(u) = &self.username {
            put_str(&mut body, u.as_bytes());
        }
        if let Some(p) = &self.password {
            put_str(&mut body, p);
        }
        packet(0x10, &body)
    }
}

/// The line a [`Broker::parking`] logs when `client_id`'s connection parks.
pub fn parked_line(client_id: &str) -> String {
    format!("client_id=\"{client_id}\"}}: rumq_broker::connection: parked")
}

/// A PUBLISH packet.
pub fn publish_packet(
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    dup: bool,
    pkid: u16,
) -> Vec<u8> {
    let first = 0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(retain);
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(first, &body)
}

/// A SUBSCRIBE packet.
pub fn subscribe_packet(pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    for (f, q) in filters {
        put_str(&mut body, f.as_bytes());
        body.push(*q);
    }
    packet(0x82, &body)
}

/// An UNSUBSCRIBE packet.
pub fn unsubscribe_packet(pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    for f in filters {
        put_str(&mut body, f.as_bytes());
    }
    packet(0xa2, &body)
}

/// PUBACK, PUBREC, PUBREL (first byte 0x62), PUBCOMP: a packet id.
/// An MQTT 5 CONNECT with no properties.
pub fn connect5_bare(id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&4u16.to_be_bytes());
    body.extend_from_slice(b"MQTT");
    body.extend_from_slice(&[5, 0x02, 0, 60, 0]);
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    packet(0x10, &body)
}

/// An MQTT 5 QoS 1 PUBLISH with no properties.
pub fn publish5_qos1(topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&pkid.to_be_bytes());
    body.push(0);
    body.extend_from_slice(payload);
    packet(0x32, &body)
}

/// Message `seq` of a numbered stream: its number (big-endian u32), then filler
/// to 8,000 bytes.
pub fn numbered_payload(seq: u32) -> Vec<u8> {
    let mut p = seq.to_be_bytes().to_vec();
    p.resize(8000, 7);
    p
}

/// The number a [`numbered_payload`] carries.
pub fn number_of(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload[..4].try_into().expect("a numbered payload"))
}

/// The reason code of an MQTT 5 PUBACK (0 when it carries none).
pub fn puback_reason(ack: &[u8]) -> u8 {
    assert_eq!(ack[0], 0x40, "PUBACK expected: {ack:x?}");
    ack.get(4).copied().unwrap_or(0)
}

pub fn ack_packet(first: u8, pkid: u16) -> Vec<u8> {
    packet(first, &pkid.to_be_bytes())
}

/// PINGREQ.
pub const PINGREQ: [u8; 2] = [0xc0, 0x00];
/// PINGRESP.
pub const PINGRESP: [u8; 2] = [0xd0, 0x00];
/// DISCONNECT.
pub const DISCONNECT: [u8; 2] = [0xe0, 0x00];
/// CONNACK accepted, no session present.
pub const CONNACK_OK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
/// CONNACK accepted, session present.
pub const CONNACK_SESSION: [u8; 4] = [0x20, 0x02, 0x01, 0x00];

/// One packet read from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPacket {
    /// The first byte (type and flags).
    pub first: u8,
    /// Everything after the remaining length.
    pub body: Vec<u8>,
}

/// A decoded PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPublish {
    /// DUP flag.
    pub dup: bool,
    /// QoS.
    pub qos: u8,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic.
    pub topic: String,
    /// Packet id (0 for QoS 0).
    pub pkid: u16,
    /// Payload.
    pub payload: Vec<u8>,
}

impl RawPacket {
    /// The packet type (upper 4 bits).
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }

    /// The packet as on the wire.
    pub fn bytes(&self) -> Vec<u8> {
        packet(self.first, &self.body)
    }

    /// Decode as PUBLISH; panics if it is not one.
    pub fn publish(&self) -> RawPublish {
        assert_eq!(self.kind(), 3, "expected PUBLISH, got {self:?}");
        let qos = (self.first >> 1) & 0x03;
        let tlen = usize::from(u16::from_be_bytes([self.body[0], self.body[1]]));
        let topic = String::from_utf8(self.body[2..2 + tlen].to_vec()).unwrap();
        let mut at = 2 + tlen;
        let mut pkid = 0;
        if qos > 0 {
            pkid = u16::from_be_bytes([self.body[at], self.body[at + 1]]);
            at += 2;
        }
        RawPublish {
            dup: self.first & 0x08 != 0,
            qos,
            retain: self.first & 0x01 != 0,
            topic,
            pkid,
            payload: self.body[at..].to_vec(),
        }
    }
}

/// Take one whole packet off the front of `buf`, if it holds one.
pub fn take_packet(buf: &mut Vec<u8>) -> Option<RawPacket> {
    let (len, i) = match decode_varint(buf.get(1..)?) {
        Varint::Value { value, len } => (usize::try_from(value).unwrap(), 1 + len),
        Varint::Incomplete => return None,
        Varint::TooLong => panic!("broker sent a bad remaining length"),
    };
    if buf.len() < i + len {
        return None;
    }
    let first = buf[0];
    let body = buf[i..i + len].to_vec();
    buf.drain(..i + len);
    Some(RawPacket { first, body })
}

/// A client that speaks raw bytes.
#[derive(Debug)]
pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Open a TCP connection.
    pub async fn open(port: u16) -> Raw {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(("127.0.0.1", port)))
            .await
            .expect("connect timed out")
            .expect("connect");
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Open a connection, send CONNECT and return the CONNACK's 4 bytes.
    pub async fn connect(port: u16, opts: &ConnectOpts) -> (Raw, Vec<u8>) {
        let mut raw = Raw::open(port).await;
        raw.send(&opts.encode()).await;
        let connack = raw.recv().await;
        assert_eq!(connack.kind(), 2, "expected CONNACK, got {connack:?}");
        (raw, connack.bytes())
    }

    /// Like [`Raw::connect`] but asserts the CONNACK is "accepted, no session".
    pub async fn connected(port: u16, opts: &ConnectOpts) -> Raw {
        let (raw, connack) = Raw::connect(port, opts).await;
        assert_eq!(connack, CONNACK_OK, "CONNACK for {opts:?}");
        raw
    }

    /// Write bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(STEP, self.stream.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write");
    }

    fn take_packet(&mut self) -> Option<RawPacket> {
        take_packet(&mut self.buf)
    }

    /// The next packet within `within`; `None` on timeout. Panics if the connection
    /// closes.
    pub async fn recv_within(&mut self, within: Duration) -> Option<RawPacket> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(p) = self.take_packet() {
                return Some(p);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) => panic!("connection closed while waiting for a packet"),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => panic!("read error while waiting for a packet: {e}"),
            }
        }
    }

    /// The next packet; panics after [`STEP`].
    pub async fn recv(&mut self) -> RawPacket {
        self.recv_within(STEP)
            .await
            .expect("no packet from the broker in time")
    }

    /// The next packet, which must be a PUBLISH.
    pub async fn recv_publish(&mut self) -> RawPublish {
        self.recv().await.publish()
    }

    /// Assert nothing arrives for `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Some(p) = self.recv_within(d).await {
            panic!("expected nothing, got {p:?}");
        }
    }

    /// Write bytes; the error if the write fails (the connection was reset).
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        tokio::time::timeout(STEP, self.stream.write_all(bytes))
            .await
            .expect("write timed out")
    }

    /// Wait until the broker closes the connection (EOF or reset) and return how long
    /// that took. Panics if it stays open for `within` or if a packet arrives.
    pub async fn expect_closed(&mut self, within: Duration) -> Duration {
        let start = tokio::time::Instant::now();
        let deadline = start + within;
        loop {
            assert!(
                self.buf.is_empty(),
                "expected the connection to close, got bytes {:02x?}",
                self.buf
            );
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => panic!("connection still open after {within:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}
