//! The protocol edge: bytes on the wire ↔ the broker's one internal model.
//!
//! Everything version-specific about MQTT lives below this module. Inbound packets
//! become [`Inbound`]; the router's [`router::Reply`]s become packets through
//! [`Encoder`]. The router never sees a protocol version.
//!
//! | module | owns |
//! |---|---|
//! | `framing` | packet types, the Variable Byte Integer, fixed headers (read, checked, written), packet ids |
//! | `reason` | MQTT 5 reason codes; 3.1.1 CONNACK and SUBACK return codes |
//! | `connect` | CONNECT parsing for MQTT 3.1, 3.1.1 and 5.0 |
//! | `publish` | PUBLISH from a client, either version, without copying |
//! | `v4` | the other packets of 3.1/3.1.1 a client sends (through `mqttbytes`) |
//! | `v5` | the other packets of MQTT 5 a client sends, AUTH included |
//! | `properties` | MQTT 5 property sections: checks on read, a writer |
//! | `alias` | MQTT 5 topic aliases, both directions |
//! | `encode` | everything the broker sends, in either version |
//!
//! The modules import downwards only: `framing` and `reason` import no sibling;
//! `properties` imports `framing`; the decoders and the encoder import those.
//!
//! ## What is ours and what is `mqttbytes`'
//!
//! Ours: framing, every encoder, CONNECT, PUBLISH and all of MQTT 5. CONNECT
//! because `mqttbytes` refuses MQTT 3.1 (`MQIsdp`) and skips the flag checks;
//! PUBLISH because it is the hot path and ours decodes it without copying or
//! allocating; MQTT 5 because `mqttbytes` 0.6's v5 reader refuses a bodiless
//! DISCONNECT, has no AUTH, and loses the order of user properties; encoders
//! because a large payload goes out as its own buffer or file range, never copied.
//! `mqttbytes` decodes the remaining 3.1.1 packets a client sends (acks, SUBSCRIBE,
//! UNSUBSCRIBE, PINGREQ, DISCONNECT): rare, simple, and well covered there, once
//! our framing has cut the packet and checked its fixed header (and SUBSCRIBE's
//! reserved bits, which it ignores).

pub mod alias;
mod connect;
mod encode;
pub mod framing;
pub mod properties;
mod publish;
pub mod reason;
mod v4;
mod v5;

use bytes::{Bytes, BytesMut};
use router::{PacketId, QoS, Subscription};

pub use connect::{ConnectPacket, LastWill, Version};
pub use encode::{Chunk, ConnAckProperties, Encoder, IdleEncoder};
pub use reason::return_code;

/// A packet from a client, in the broker's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// CONNECT.
    Connect(ConnectPacket),
    /// PUBLISH.
    Publish {
        /// Topic name (validated: no wildcards, valid UTF-8; MQTT 5: empty when a
        /// topic alias stands for it).
        topic: TopicName,
        /// QoS.
        qos: QoS,
        /// Retain.
        retain: bool,
        /// Duplicate flag.
        dup: bool,
        /// Packet id (QoS > 0).
        pkid: Option<PacketId>,
        /// Payload.
        payload: Bytes,
        /// MQTT 5 properties (defaults for 3.1.1).
        properties: PublishProperties,
    },
    /// PUBACK.
    PubAck(PacketId),
    /// PUBREC.
    PubRec {
        /// Packet id.
        pkid: PacketId,
        /// MQTT 5: a reason code of 0x80 or more (the client will not take it).
        refused: bool,
    },
    /// PUBREL.
    PubRel(PacketId),
    /// PUBCOMP.
    PubComp(PacketId),
    /// SUBSCRIBE (at least one filter).
    Subscribe {
        /// Packet id.
        pkid: PacketId,
        /// Filters with their options.
        filters: Vec<Subscription>,
        /// Subscription identifier (MQTT 5).
        id: Option<u32>,
    },
    /// UNSUBSCRIBE (at least one filter).
    Unsubscribe {
        /// Packet id.
        pkid: PacketId,
        /// Filters.
        filters: Vec<String>,
    },
    /// PINGREQ.
    PingReq,
    /// DISCONNECT.
    Disconnect {
        /// A new session expiry interval (MQTT 5).
        session_expiry: Option<u32>,
        /// Any reason but 0x00 (normal disconnection): the will is published
        /// (MQTT 5; 0x04 asks for it explicitly).
        publish_will: bool,
    },
    /// AUTH (MQTT 5).
    Auth {
        /// Reason code.
        reason: u8,
        /// Authentication method.
        method: Option<String>,
    },
}

/// A PUBLISH topic name: a view into the packet's own bytes (decoding a PUBLISH
/// allocates nothing), checked to be UTF-8 when decoded.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TopicName(Bytes);

impl TopicName {
    /// `bytes` if they are UTF-8.
    pub fn new(bytes: Bytes) -> Option<TopicName> {
        std::str::from_utf8(&bytes)
            .is_ok()
            .then_some(TopicName(bytes))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Checked in `new`; the fallback is never taken.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// True for the empty name (MQTT 5: a topic alias stands for it).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for TopicName {
    fn from(s: &str) -> TopicName {
        TopicName(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl std::fmt::Debug for TopicName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for TopicName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a PUBLISH carries besides topic and payload (MQTT 5; empty for 3.1.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// Topic alias.
    pub topic_alias: Option<u16>,
    /// Message expiry interval, seconds.
    pub expiry_secs: Option<u32>,
    /// The properties that travel with the message, as on the wire.
    pub forward: Bytes,
}

/// Why a connection's input cannot be accepted. Each closes that connection only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The bytes do not form a valid packet.
    #[error("malformed packet: {0}")]
    Malformed(String),
    /// A valid packet that breaks the protocol's rules.
    #[error("protocol violation: {0}")]
    Violation(&'static str),
    /// Larger than the configured maximum.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A CONNECT whose protocol level this broker does not speak.
    #[error("unsupported protocol level {0}")]
    UnsupportedVersion(u8),
    /// A topic alias of 0, above the maximum, or not yet set (MQTT 5).
    #[error("invalid topic alias")]
    TopicAliasInvalid,
    /// The payload format indicator says UTF-8 and the payload is not (MQTT 5).
    #[error("payload is not the UTF-8 its format indicator says")]
    PayloadFormatInvalid,
    /// A PUBLISH topic with a wildcard.
    #[error("wildcard in a PUBLISH topic")]
    TopicNameInvalid,
}

impl ProtocolError {
    /// The MQTT 5 reason code for a DISCONNECT (or CONNACK) about it.
    pub fn reason_code(&self) -> u8 {
        match self {
            ProtocolError::Malformed(_) => reason::MALFORMED_PACKET,
            ProtocolError::Violation(_) => reason::PROTOCOL_ERROR,
            ProtocolError::TooLarge { .. } => reason::PACKET_TOO_LARGE,
            ProtocolError::UnsupportedVersion(_) => reason::UNSUPPORTED_PROTOCOL_VERSION,
            ProtocolError::TopicAliasInvalid => reason::TOPIC_ALIAS_INVALID,
            ProtocolError::PayloadFormatInvalid => reason::PAYLOAD_FORMAT_INVALID,
            ProtocolError::TopicNameInvalid => reason::TOPIC_NAME_INVALID,
        }
    }
}

/// Whether the bytes at the front of `buf` begin an MQTT 5 CONNECT (so a CONNECT
/// that fails to parse can still be answered in MQTT 5's terms).
pub fn is_v5_connect(buf: &[u8]) -> bool {
    if buf.first() != Some(&framing::first_byte(framing::packet::CONNECT)) {
        return false;
    }
    let at = framing::fixed_header_len(buf);
    // Protocol name "MQTT" (length-prefixed), then protocol level 5.
    buf.get(at..at + 7) == Some(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 5][..])
}

/// Bytes still missing from the packet at the front of `buf`, when its header says.
/// Lets a reader ask for a large packet's rest in one read instead of many.
pub fn bytes_missing(buf: &[u8], max_packet_size: usize) -> usize {
    match framing::frame_len(buf, max_packet_size) {
        Ok(Some(total)) => total.saturating_sub(buf.len()),
        _ => 0,
    }
}

/// Decode one packet from the front of `buf`, consuming it. `Ok(None)` means more
/// bytes are needed. `connected` is the version of the accepted CONNECT, `None`
/// before it: only CONNECT may come first, and never again.
pub fn decode(
    buf: &mut BytesMut,
    connected: Option<Version>,
    max_packet_size: usize,
) -> Result<Option<Inbound>, ProtocolError> {
    let Some(frame) = framing::frame(buf, max_packet_size)? else {
        return Ok(None);
    };
    let first = frame.first().copied().unwrap_or(0);
    let is_connect = framing::packet_type(first) == framing::packet::CONNECT;
    match (connected, is_connect) {
        (None, true) => connect::parse(frame.freeze()).map(|c| Some(Inbound::Connect(c))),
        (None, false) => Err(ProtocolError::Violation("first packet is not CONNECT")),
        (Some(_), true) => Err(ProtocolError::Violation("second CONNECT")),
        (Some(Version::V5), false) => v5::decode(frame).map(Some),
        (Some(_), false) => v4::decode(frame).map(Some),
    }
}

#[cfg(test)]
mod tests;
