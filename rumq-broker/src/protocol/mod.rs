//! The protocol edge: bytes on the wire ↔ the broker's one internal model.
//!
//! Everything version-specific about MQTT lives below this module. Inbound packets
//! become [`Inbound`]; the router's [`router::Reply`]s become packets through
//! [`Encoder`]. The router never sees a protocol version.
//!
//! | module | owns |
//! |---|---|
//! | `connect` | CONNECT parsing for MQTT 3.1, 3.1.1 (and the version check for 5.0) |
//! | `v4` | every other packet of MQTT 3.1/3.1.1: framing checks, decoding (with `mqttbytes`), encoding |

mod connect;
mod v4;

use bytes::{Bytes, BytesMut};
use router::{PacketId, QoS};

pub use connect::{ConnectPacket, LastWill};
pub use v4::Encoder;

/// A packet from a client, in the broker's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// CONNECT.
    Connect(ConnectPacket),
    /// PUBLISH.
    Publish {
        /// Topic name (validated: no wildcards, valid UTF-8).
        topic: String,
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
    },
    /// PUBACK.
    PubAck(PacketId),
    /// PUBREC.
    PubRec(PacketId),
    /// PUBREL.
    PubRel(PacketId),
    /// PUBCOMP.
    PubComp(PacketId),
    /// SUBSCRIBE (at least one filter).
    Subscribe {
        /// Packet id.
        pkid: PacketId,
        /// Filters with requested QoS.
        filters: Vec<(String, QoS)>,
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
    Disconnect,
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
}

/// Bytes still missing from the packet at the front of `buf`, when its header says.
/// Lets a reader ask for a large packet's rest in one read instead of many.
pub fn bytes_missing(buf: &[u8], max_packet_size: usize) -> usize {
    match v4::frame_len(buf, max_packet_size) {
        Ok(Some(total)) => total.saturating_sub(buf.len()),
        _ => 0,
    }
}

/// Decode one packet from the front of `buf`, consuming it. `Ok(None)` means more
/// bytes are needed. `connected` is false until CONNECT was accepted: only CONNECT
/// may come first, and never again.
pub fn decode(
    buf: &mut BytesMut,
    connected: bool,
    max_packet_size: usize,
) -> Result<Option<Inbound>, ProtocolError> {
    let Some(frame) = v4::frame(buf, max_packet_size)? else {
        return Ok(None);
    };
    let first = frame.first().copied().unwrap_or(0);
    let is_connect = first >> 4 == 1;
    match (connected, is_connect) {
        (false, true) => connect::parse(frame.freeze()).map(|c| Some(Inbound::Connect(c))),
        (false, false) => Err(ProtocolError::Violation("first packet is not CONNECT")),
        (true, true) => Err(ProtocolError::Violation("second CONNECT")),
        (true, false) => v4::decode(frame).map(Some),
    }
}

#[cfg(test)]
mod tests;
