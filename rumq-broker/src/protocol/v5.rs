//! MQTT 5.0 packets a client sends (other than CONNECT), decoded here rather than by
//! `mqttbytes`: its 0.6 v5 reader refuses a DISCONNECT without a body (the usual
//! "normal disconnection"), has no AUTH packet, and turns properties into structs
//! that lose their order, which user properties must keep. Framing is
//! [`super::framing`]'s and PUBLISH [`super::publish`]'s, both shared with 3.1.1.

use bytes::{Buf, Bytes, BytesMut};
use router::{PacketId, QoS, RetainHandling, Subscription};

use super::framing::{self, packet, read_packet_id as pkid};
use super::properties::{self, Section};
use super::{reason, Inbound, ProtocolError};

fn malformed(what: &str) -> ProtocolError {
    ProtocolError::Malformed(what.into())
}

/// An ack (PUBACK, PUBREC, PUBREL, PUBCOMP): packet id, then an optional reason code
/// and optional properties (§3.4.2.1: both may be left out).
fn ack(b: &mut Bytes) -> Result<(PacketId, u8), ProtocolError> {
    let id = pkid(b)?;
    let code = if b.has_remaining() {
        b.get_u8()
    } else {
        reason::SUCCESS
    };
    if b.has_remaining() {
        properties::parse(b, Section::Ack)?;
    }
    if b.has_remaining() {
        return Err(malformed("bytes after the properties"));
    }
    Ok((id, code))
}

/// DISCONNECT and AUTH: a reason code and properties, both optional (§3.14.2.1).
fn reason_and_properties(
    b: &mut Bytes,
    section: Section,
) -> Result<(u8, properties::Properties), ProtocolError> {
    let code = if b.has_remaining() {
        b.get_u8()
    } else {
        reason::SUCCESS
    };
    let props = if b.has_remaining() {
        properties::parse(b, section)?
    } else {
        properties::Properties::default()
    };
    if b.has_remaining() {
        return Err(malformed("bytes after the properties"));
    }
    Ok((code, props))
}

/// Decode a framed packet (not CONNECT) from an MQTT 5 client.
pub fn decode(frame: BytesMut) -> Result<Inbound, ProtocolError> {
    let first = frame.first().copied().unwrap_or(0);
    let kind = framing::packet_type(first);
    framing::check_fixed_header(first, kind == packet::AUTH)?;
    let mut b = framing::body(frame);
    Ok(match kind {
        packet::PUBLISH => super::publish::decode(first, b, true)?,
        packet::PUBACK => Inbound::PubAck(ack(&mut b)?.0),
        packet::PUBREC => {
            let (id, code) = ack(&mut b)?;
            Inbound::PubRec {
                pkid: id,
                refused: reason::is_error(code),
            }
        }
        packet::PUBREL => Inbound::PubRel(ack(&mut b)?.0),
        packet::PUBCOMP => Inbound::PubComp(ack(&mut b)?.0),
        packet::SUBSCRIBE => subscribe(b)?,
        packet::UNSUBSCRIBE => {
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
        packet::PINGREQ => {
            if b.has_remaining() {
                return Err(malformed("PINGREQ with a body"));
            }
            Inbound::PingReq
        }
        packet::DISCONNECT => {
            let (code, props) = reason_and_properties(&mut b, Section::Disconnect)?;
            Inbound::Disconnect {
                session_expiry: props.session_expiry,
                // The will is discarded only for 0x00, normal disconnection
                // (§3.14.4); 0x04 asks for it, and any error code implies it.
                publish_will: code != reason::SUCCESS,
            }
        }
        packet::AUTH => {
            let (code, props) = reason_and_properties(&mut b, Section::Auth)?;
            Inbound::Auth {
                reason: code,
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
            authorized: true,
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
