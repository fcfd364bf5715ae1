//! MQTT 3.1 / 3.1.1 packets other than CONNECT: framing, fixed-header checks, decoding
//! through `mqttbytes`, and encoding of everything the broker sends.

use bytes::{BufMut, Bytes, BytesMut};
use mqttbytes::v4 as mq;
use router::{ConnectCode, Delivery, Message, PacketId, QoS, Reply, SubscribeCode};

use super::{Inbound, ProtocolError};

/// The length of the packet at the front of `buf` (fixed header included), once its
/// fixed header is complete.
pub fn frame_len(buf: &[u8], max_packet_size: usize) -> Result<Option<usize>, ProtocolError> {
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7f) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Err(ProtocolError::Malformed(
                "remaining length longer than 4 bytes".into(),
            ));
        }
    }
    let total = i + len;
    if total > max_packet_size {
        return Err(ProtocolError::TooLarge {
            size: total,
            max: max_packet_size,
        });
    }
    Ok(Some(total))
}

/// Cut the next whole packet off the front of `buf`; `None` until it is all there.
/// A packet larger than `max_packet_size` fails as soon as its header is read, before
/// its bytes are buffered.
pub fn frame(
    buf: &mut BytesMut,
    max_packet_size: usize,
) -> Result<Option<BytesMut>, ProtocolError> {
    let Some(total) = frame_len(buf, max_packet_size)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(buf.split_to(total)))
}

fn pkid(id: u16) -> Result<PacketId, ProtocolError> {
    if id == 0 {
        return Err(ProtocolError::Malformed("packet identifier 0".into()));
    }
    Ok(PacketId(id))
}

fn qos(q: mqttbytes::QoS) -> QoS {
    match q {
        mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// Decode a framed packet (not CONNECT).
pub fn decode(mut frame: BytesMut) -> Result<Inbound, ProtocolError> {
    let first = frame.first().copied().unwrap_or(0);
    let flags = first & 0x0f;
    let expected_flags = match first >> 4 {
        3 => {
            if (flags >> 1) & 0b11 == 0b11 {
                return Err(ProtocolError::Malformed("PUBLISH with QoS 3".into()));
            }
            if flags & 0b0110 == 0 && flags & 0b1000 != 0 {
                return Err(ProtocolError::Violation("DUP set on a QoS 0 PUBLISH"));
            }
            flags
        }
        6 | 8 | 10 => 0b0010,
        4 | 5 | 7 | 12 | 14 => 0,
        _ => {
            return Err(ProtocolError::Violation(
                "packet type a client may not send",
            ))
        }
    };
    if flags != expected_flags {
        return Err(ProtocolError::Malformed(
            "reserved fixed-header flags".into(),
        ));
    }
    if first >> 4 == 8 {
        check_subscribe_options(&frame)?;
    }
    let packet =
        mq::read(&mut frame, usize::MAX).map_err(|e| ProtocolError::Malformed(format!("{e:?}")))?;
    Ok(match packet {
        mq::Packet::Publish(p) => {
            router::topic::validate_name(&p.topic).map_err(|e| match e {
                router::topic::TopicError::Wildcard => {
                    ProtocolError::Violation("wildcard in a PUBLISH topic")
                }
                other => ProtocolError::Malformed(format!("PUBLISH topic {other}")),
            })?;
            let q = qos(p.qos);
            Inbound::Publish {
                topic: p.topic,
                qos: q,
                retain: p.retain,
                dup: p.dup,
                pkid: if q == QoS::AtMostOnce {
                    None
                } else {
                    Some(pkid(p.pkid)?)
                },
                payload: p.payload,
            }
        }
        mq::Packet::PubAck(a) => Inbound::PubAck(pkid(a.pkid)?),
        mq::Packet::PubRec(a) => Inbound::PubRec(pkid(a.pkid)?),
        mq::Packet::PubRel(a) => Inbound::PubRel(pkid(a.pkid)?),
        mq::Packet::PubComp(a) => Inbound::PubComp(pkid(a.pkid)?),
        mq::Packet::Subscribe(s) => {
            if s.filters.is_empty() {
                return Err(ProtocolError::Violation("SUBSCRIBE with no filters"));
            }
            Inbound::Subscribe {
                pkid: pkid(s.pkid)?,
                filters: s
                    .filters
                    .into_iter()
                    .map(|f| (f.path, qos(f.qos)))
                    .collect(),
            }
        }
        mq::Packet::Unsubscribe(u) => {
            if u.topics.is_empty() {
                return Err(ProtocolError::Violation("UNSUBSCRIBE with no filters"));
            }
            Inbound::Unsubscribe {
                pkid: pkid(u.pkid)?,
                filters: u.topics,
            }
        }
        mq::Packet::PingReq => Inbound::PingReq,
        mq::Packet::Disconnect => Inbound::Disconnect,
        _ => {
            return Err(ProtocolError::Violation(
                "packet type a client may not send",
            ))
        }
    })
}

/// 3.1.1 §3.8.3.1 [MQTT-3.8.3-4]: the upper six bits of each requested-QoS byte of a
/// SUBSCRIBE are reserved and must be 0 (`mqttbytes` ignores them). `frame` is the
/// whole packet; truncation is left to `mqttbytes` to report.
fn check_subscribe_options(frame: &[u8]) -> Result<(), ProtocolError> {
    // Fixed header: the first byte and the remaining length (checked by `frame`).
    let mut i = 1;
    while frame.get(i).is_some_and(|b| b & 0x80 != 0) {
        i += 1;
    }
    // The last length byte and the packet id.
    i += 3;
    while let Some(len) = frame.get(i..i + 2) {
        i += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
        match frame.get(i) {
            Some(options) if options & 0xfc != 0 => {
                return Err(ProtocolError::Malformed(
                    "reserved bits set in a SUBSCRIBE requested QoS".into(),
                ))
            }
            Some(_) => i += 1,
            None => break,
        }
    }
    Ok(())
}

/// Payloads at least this large go out as their own iovec instead of being copied.
const COPY_PAYLOAD_BELOW: usize = 1024;

/// Encodes what the broker sends into a list of buffers for one vectored write:
/// headers and small payloads are gathered in one buffer, large payloads are passed
/// through as the very `Bytes` read from the log.
#[derive(Debug, Default)]
pub struct Encoder {
    small: BytesMut,
    chunks: Vec<Bytes>,
}

fn put_remaining_length(b: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        b.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Encoder::default()
    }

    /// CONNACK with a 3.1.1 return code (0..=5).
    pub fn connack(&mut self, session_present: bool, code: u8) {
        self.small
            .put_slice(&[0x20, 0x02, u8::from(session_present), code]);
    }

    /// PINGRESP.
    pub fn pingresp(&mut self) {
        self.small.put_slice(&[0xd0, 0x00]);
    }

    fn ack(&mut self, first: u8, id: PacketId) {
        self.small.put_slice(&[first, 0x02]);
        self.small.put_u16(id.0);
    }

    /// Encode a router reply. `Close` produces nothing (the connection acts on it).
    pub fn reply(&mut self, reply: &Reply) {
        match reply {
            Reply::ConnAck {
                code,
                session_present,
                ..
            } => {
                let code = match code {
                    ConnectCode::Accepted => 0,
                    ConnectCode::IdentifierRejected => 2,
                    ConnectCode::ServerUnavailable => 3,
                };
                self.connack(*session_present && code == 0, code);
            }
            Reply::PubAck(id) => self.ack(0x40, *id),
            Reply::PubRec(id) => self.ack(0x50, *id),
            Reply::PubRel(id) => self.ack(0x62, *id),
            Reply::PubComp(id) => self.ack(0x70, *id),
            Reply::UnsubAck(id) => self.ack(0xb0, *id),
            Reply::SubAck { pkid, codes } => {
                self.small.put_u8(0x90);
                put_remaining_length(&mut self.small, 2 + codes.len());
                self.small.put_u16(pkid.0);
                for c in codes {
                    self.small.put_u8(match c {
                        SubscribeCode::Granted(q) => *q as u8,
                        SubscribeCode::Failure => 0x80,
                    });
                }
            }
            Reply::Deliver(items) => {
                for d in items {
                    self.publish(d);
                }
            }
            Reply::Close(_) => {}
        }
    }

    /// A PUBLISH for `d`. A record that does not decode (it never should) is skipped
    /// with an error log rather than sent garbled.
    pub fn publish(&mut self, d: &Delivery) {
        let m = match Message::decode(&d.record) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "undecodable stored message skipped");
                return;
            }
        };
        let pkid_len = if d.pkid.is_some() { 2 } else { 0 };
        let remaining = 2 + m.topic.len() + pkid_len + m.payload.len();
        let first = 0x30 | (u8::from(d.dup) << 3) | ((d.qos as u8) << 1) | u8::from(d.retain);
        self.small.put_u8(first);
        put_remaining_length(&mut self.small, remaining);
        // Topics are at most 65535 bytes (validated on publish).
        self.small.put_u16(m.topic.len() as u16);
        self.small.put_slice(&m.topic);
        if let Some(id) = d.pkid {
            self.small.put_u16(id.0);
        }
        if m.payload.len() < COPY_PAYLOAD_BELOW {
            self.small.put_slice(&m.payload);
        } else {
            self.chunks.push(self.small.split().freeze());
            self.chunks.push(m.payload);
        }
    }

    /// True when nothing is waiting to be written.
    pub fn is_empty(&self) -> bool {
        self.small.is_empty() && self.chunks.is_empty()
    }

    /// Everything encoded so far, as buffers to write in order.
    pub fn take(&mut self, out: &mut Vec<Bytes>) {
        out.append(&mut self.chunks);
        if !self.small.is_empty() {
            out.push(self.small.split().freeze());
        }
    }

    /// Drop the buffers' memory (an idle connection keeps none).
    pub fn shrink(&mut self) {
        if self.small.is_empty() {
            self.small = BytesMut::new();
        }
        self.chunks.shrink_to(0);
    }
}

#[cfg(test)]
mod subscribe_option_tests {
    use super::*;

    fn subscribe(options: &[(&str, u8)]) -> BytesMut {
        let mut body = vec![0x00, 0x07];
        for (f, o) in options {
            body.extend_from_slice(&(f.len() as u16).to_be_bytes());
            body.extend_from_slice(f.as_bytes());
            body.push(*o);
        }
        let mut b = BytesMut::new();
        b.put_u8(0x82);
        put_remaining_length(&mut b, body.len());
        b.put_slice(&body);
        b
    }

    #[test]
    fn reserved_bits_in_a_requested_qos_are_malformed() {
        assert!(decode(subscribe(&[("a", 0x01), ("b/#", 0x02)])).is_ok());
        for bad in [0x04u8, 0x80, 0xfe] {
            assert!(
                matches!(
                    decode(subscribe(&[("a", 0x01), ("b", bad)])),
                    Err(ProtocolError::Malformed(_))
                ),
                "{bad:#x}"
            );
        }
        // A long filter: the remaining length takes two bytes.
        let long = "x".repeat(200);
        assert!(decode(subscribe(&[(&long, 0x00)])).is_ok());
        assert!(decode(subscribe(&[(&long, 0x40)])).is_err());
    }
}
