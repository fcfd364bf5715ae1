//! MQTT 5.0 packets a client sends (other than CONNECT), decoded here rather than by
//! `mqttbytes`: its 0.6 v5 reader refuses a DISCONNECT without a body (the usual
//! "normal disconnection"), has no AUTH packet, and turns properties into structs
//! that lose their order, which user properties must keep. The framing and the
//! fixed-header checks are shared with 3.1.1 (`v4`).

use bytes::{Buf, Bytes, BytesMut};
use router::{PacketId, QoS, RetainHandling, Subscription};

use super::properties::{self, Section};
use super::{Inbound, ProtocolError, PublishProperties, TopicName};

fn malformed(what: &str) -> ProtocolError {
    ProtocolError::Malformed(what.into())
}

fn pkid(b: &mut Bytes) -> Result<PacketId, ProtocolError> {
    if b.remaining() < 2 {
        return Err(malformed("truncated packet identifier"));
    }
    match b.get_u16() {
        0 => Err(malformed("packet identifier 0")),
        id => Ok(PacketId(id)),
    }
}

/// The variable header and payload of a framed packet: what follows the fixed header.
pub fn body(frame: BytesMut) -> Bytes {
    let header = super::v4::fixed_header_len(&frame).min(frame.len());
    let mut b = frame.freeze();
    b.advance(header);
    b
}

/// An ack (PUBACK, PUBREC, PUBREL, PUBCOMP): packet id, then an optional reason code
/// and optional properties (§3.4.2.1: both may be left out).
fn ack(b: &mut Bytes) -> Result<(PacketId, u8), ProtocolError> {
    let id = pkid(b)?;
    let reason = if b.has_remaining() { b.get_u8() } else { 0 };
    if b.has_remaining() {
        properties::parse(b, Section::Ack)?;
    }
    if b.has_remaining() {
        return Err(malformed("bytes after the properties"));
    }
    Ok((id, reason))
}

/// DISCONNECT and AUTH: a reason code and properties, both optional (§3.14.2.1).
fn reason_and_properties(
    b: &mut Bytes,
    section: Section,
) -> Result<(u8, properties::Properties), ProtocolError> {
    let reason = if b.has_remaining() { b.get_u8() } else { 0 };
    let props = if b.has_remaining() {
        properties::parse(b, section)?
    } else {
        properties::Properties::default()
    };
    if b.has_remaining() {
        return Err(malformed("bytes after the properties"));
    }
    Ok((reason, props))
}

/// Decode a framed packet (not CONNECT) from an MQTT 5 client.
pub fn decode(frame: BytesMut) -> Result<Inbound, ProtocolError> {
    let first = frame.first().copied().unwrap_or(0);
    let kind = first >> 4;
    super::v4::check_fixed_header(first, kind == 15)?;
    let mut b = body(frame);
    Ok(match kind {
        3 => publish(first, b, true)?,
        4 => Inbound::PubAck(ack(&mut b)?.0),
        5 => {
            let (id, reason) = ack(&mut b)?;
            Inbound::PubRec {
                pkid: id,
                refused: reason >= 0x80,
            }
        }
        6 => Inbound::PubRel(ack(&mut b)?.0),
        7 => Inbound::PubComp(ack(&mut b)?.0),
        8 => subscribe(b)?,
        10 => {
            let id = pkid(&mut b)?;
            properties::parse(&mut b, Section::Unsubscribe)?;
            let mut filters = Vec::new();
            while b.has_remaining() {
                filters.push(properties::read_string(&mut b)?);
            }
            if filters.is_empty() {
                return Err(ProtocolError::Violation("UNSUBSCRIBE with no filters"));
            }
            Inbound::Unsubscribe { pkid: id, filters }
        }
        12 => {
            if b.has_remaining() {
                return Err(malformed("PINGREQ with a body"));
            }
            Inbound::PingReq
        }
        14 => {
            let (reason, props) = reason_and_properties(&mut b, Section::Disconnect)?;
            Inbound::Disconnect {
                session_expiry: props.session_expiry,
                // The will is discarded only for 0x00, normal disconnection
                // (§3.14.4); 0x04 asks for it, and any error code implies it.
                publish_will: reason != 0x00,
            }
        }
        15 => {
            let (reason, props) = reason_and_properties(&mut b, Section::Auth)?;
            Inbound::Auth {
                reason,
                method: props.auth_method,
            }
        }
        _ => {
            return Err(ProtocolError::Violation(
                "packet type a client may not send",
            ))
        }
    })
}

/// A PUBLISH (fixed-header flags already checked), MQTT 5 or (without properties)
/// 3.1.1. Nothing is copied: topic and payload are views into `b`.
pub fn publish(first: u8, mut b: Bytes, v5: bool) -> Result<Inbound, ProtocolError> {
    let qos = QoS::from_u8((first >> 1) & 0b11).ok_or_else(|| malformed("PUBLISH with QoS 3"))?;
    if b.remaining() < 2 {
        return Err(malformed("truncated PUBLISH topic"));
    }
    let len = usize::from(b.get_u16());
    if b.remaining() < len {
        return Err(malformed("PUBLISH topic runs past the packet"));
    }
    let topic =
        TopicName::new(b.split_to(len)).ok_or_else(|| malformed("PUBLISH topic is not UTF-8"))?;
    // MQTT 5: an empty topic is allowed when a topic alias stands for it (checked by
    // the connection, which holds the aliases).
    if !(v5 && topic.is_empty()) {
        super::v4::validate_publish_topic(topic.as_str())?;
    }
    let id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(pkid(&mut b)?)
    };
    let props = if v5 {
        properties::parse(&mut b, Section::Publish)?
    } else {
        properties::Properties::default()
    };
    if props.payload_is_utf8 && std::str::from_utf8(&b).is_err() {
        return Err(ProtocolError::PayloadFormatInvalid);
    }
    Ok(Inbound::Publish {
        topic,
        qos,
        retain: first & 0b0001 != 0,
        dup: first & 0b1000 != 0,
        pkid: id,
        payload: b,
        properties: PublishProperties {
            topic_alias: props.topic_alias,
            expiry_secs: props.message_expiry,
            forward: props.forward,
        },
    })
}

fn subscribe(mut b: Bytes) -> Result<Inbound, ProtocolError> {
    let id = pkid(&mut b)?;
    let props = properties::parse(&mut b, Section::Subscribe)?;
    let mut filters = Vec::new();
    while b.has_remaining() {
        let filter = properties::read_string(&mut b)?;
        if !b.has_remaining() {
            return Err(malformed("SUBSCRIBE filter without options"));
        }
        let options = b.get_u8();
        if options & 0xc0 != 0 {
            return Err(malformed("reserved bits set in subscription options"));
        }
        let qos = QoS::from_u8(options & 0b11)
            .ok_or_else(|| malformed("subscription options with QoS 3"))?;
        let retain_handling = match (options >> 4) & 0b11 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscription,
            2 => RetainHandling::Never,
            _ => return Err(ProtocolError::Violation("retain handling 3")),
        };
        let no_local = options & 0b100 != 0;
        if no_local && filter.starts_with("$share/") {
            // §3.8.3.1: no local on a shared subscription is a protocol error.
            return Err(ProtocolError::Violation(
                "no local on a shared subscription",
            ));
        }
        filters.push(Subscription {
            filter,
            qos,
            no_local,
            retain_as_published: options & 0b1000 != 0,
            retain_handling,
        });
    }
    if filters.is_empty() {
        return Err(ProtocolError::Violation("SUBSCRIBE with no filters"));
    }
    Ok(Inbound::Subscribe {
        pkid: id,
        filters,
        id: props.subscription_id,
    })
}
