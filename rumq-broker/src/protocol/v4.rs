//! MQTT 3.1 / 3.1.1 packets other than CONNECT: framing and fixed-header checks
//! (shared with MQTT 5), and decoding through `mqttbytes` — except PUBLISH, the one
//! packet on the hot path, which is decoded without copying or allocating by the
//! same code as MQTT 5's (`v5::publish`).

use bytes::BytesMut;
use mqttbytes::v4 as mq;
use router::{PacketId, QoS, Subscription};

use super::{Inbound, ProtocolError};

/// The bytes of the fixed header at the front of `frame`: the first byte and the
/// remaining length (at most four bytes; `frame_len` checked it for a framed packet).
pub fn fixed_header_len(frame: &[u8]) -> usize {
    let mut i = 1;
    while i < 4 && frame.get(i).is_some_and(|b| b & 0x80 != 0) {
        i += 1;
    }
    i + 1
}

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

/// Check the first byte of a packet from a client (not CONNECT): a type a client
/// may send (AUTH only in MQTT 5), with the flags its type requires.
pub fn check_fixed_header(first: u8, auth_allowed: bool) -> Result<(), ProtocolError> {
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
        15 if auth_allowed => 0,
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
    Ok(())
}

/// A PUBLISH topic name: valid, and without wildcards (a protocol violation).
pub fn validate_publish_topic(topic: &str) -> Result<(), ProtocolError> {
    router::topic::validate_name(topic).map_err(|e| match e {
        router::topic::TopicError::Wildcard => ProtocolError::TopicNameInvalid,
        other => ProtocolError::Malformed(format!("PUBLISH topic {other}")),
    })
}

/// Decode a framed packet (not CONNECT).
pub fn decode(mut frame: BytesMut) -> Result<Inbound, ProtocolError> {
    let first = frame.first().copied().unwrap_or(0);
    check_fixed_header(first, false)?;
    if first >> 4 == 3 {
        return super::v5::publish(first, super::v5::body(frame), false);
    }
    if first >> 4 == 8 {
        check_subscribe_options(&frame)?;
    }
    let packet =
        mq::read(&mut frame, usize::MAX).map_err(|e| ProtocolError::Malformed(format!("{e:?}")))?;
    Ok(match packet {
        mq::Packet::PubAck(a) => Inbound::PubAck(pkid(a.pkid)?),
        mq::Packet::PubRec(a) => Inbound::PubRec {
            pkid: pkid(a.pkid)?,
            refused: false,
        },
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
                    .map(|f| Subscription::new(f.path, qos(f.qos)))
                    .collect(),
                id: None,
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
        mq::Packet::Disconnect => Inbound::Disconnect {
            session_expiry: None,
            publish_will: false,
        },
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
    // After the fixed header, the packet id.
    let mut i = fixed_header_len(frame) + 2;
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

#[cfg(test)]
mod subscribe_option_tests {
    use super::*;
    use bytes::BufMut;

    fn subscribe(options: &[(&str, u8)]) -> BytesMut {
        let mut body = vec![0x00, 0x07];
        for (f, o) in options {
            body.extend_from_slice(&(f.len() as u16).to_be_bytes());
            body.extend_from_slice(f.as_bytes());
            body.push(*o);
        }
        let mut b = BytesMut::new();
        b.put_u8(0x82);
        crate::protocol::properties::put_varint(&mut b, body.len());
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
