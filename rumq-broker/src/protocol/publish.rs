//! PUBLISH from a client, in either version: the one packet on the hot path, so it
//! is decoded here, by one function for 3.1.1 and 5.0, without copying or
//! allocating (topic and payload are views into the packet's bytes).

use bytes::{Buf, Bytes};
use router::QoS;

use super::framing::{self, publish_dup, publish_qos_bits, publish_retain};
use super::properties::{self, Section};
use super::{Inbound, ProtocolError, PublishProperties, TopicName};

fn malformed(what: &str) -> ProtocolError {
    ProtocolError::Malformed(what.into())
}

/// A PUBLISH topic name: valid, and without wildcards (a protocol violation).
pub fn validate_topic(topic: &str) -> Result<(), ProtocolError> {
    router::topic::validate_name(topic).map_err(|e| match e {
        router::topic::TopicError::Wildcard => ProtocolError::TopicNameInvalid,
        other => ProtocolError::Malformed(format!("PUBLISH topic {other}")),
    })
}

/// A PUBLISH (fixed-header flags already checked): `first` is its first byte, `b`
/// what follows the fixed header; MQTT 5 when `v5`, else 3.1.1 (no properties).
pub fn decode(first: u8, mut b: Bytes, v5: bool) -> Result<Inbound, ProtocolError> {
    let qos =
        QoS::from_u8(publish_qos_bits(first)).ok_or_else(|| malformed("PUBLISH with QoS 3"))?;
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
        validate_topic(topic.as_str())?;
    }
    let id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(framing::read_packet_id(&mut b)?)
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
        retain: publish_retain(first),
        dup: publish_dup(first),
        pkid: id,
        payload: b,
        properties: PublishProperties {
            topic_alias: props.topic_alias,
            expiry_secs: props.message_expiry,
            forward: props.forward,
        },
    })
}
