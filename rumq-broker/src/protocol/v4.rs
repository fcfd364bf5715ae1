//! MQTT 3.1 / 3.1.1 packets other than CONNECT. PUBLISH goes to [`super::publish`],
//! the decoder it shares with MQTT 5; the rest — acks, SUBSCRIBE, UNSUBSCRIBE,
//! PINGREQ, DISCONNECT, none of them on the hot path — are decoded by `mqttbytes`,
//! after the checks it leaves out (fixed-header flags, SUBSCRIBE's reserved bits).

use bytes::BytesMut;
use mqttbytes::v4 as mq;
use router::{QoS, Subscription};

use super::framing::{self, packet, packet_id as pkid};
use super::{Inbound, ProtocolError};

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
    framing::check_fixed_header(first, false)?;
    match framing::packet_type(first) {
        packet::PUBLISH => return super::publish::decode(first, framing::body(frame), false),
        packet::SUBSCRIBE => check_subscribe_options(&frame)?,
        _ => {}
    }
    let decoded =
        mq::read(&mut frame, usize::MAX).map_err(|e| ProtocolError::Malformed(format!("{e:?}")))?;
    Ok(match decoded {
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
    let mut i = framing::fixed_header_len(frame) + 2;
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
        framing::put_fixed_header(&mut b, framing::first_byte(packet::SUBSCRIBE), body.len());
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
