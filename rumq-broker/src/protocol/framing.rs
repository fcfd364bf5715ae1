//! MQTT framing, the same in every version (§2.1, §1.5.5): the packet types, the
//! Variable Byte Integer, and the fixed header — cutting whole packets off a read
//! buffer, checking the first byte of a client's packet, and writing the broker's.
//! Also the packet identifier, the one field most packets share after it (§2.2.1).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use router::{PacketId, QoS};

use super::ProtocolError;

/// Packet types (§2.1.2): the high four bits of a packet's first byte.
pub mod packet {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
    /// MQTT 5 only.
    pub const AUTH: u8 = 15;
}

/// The packet type a first byte carries ([`packet`]).
pub const fn packet_type(first: u8) -> u8 {
    first >> 4
}

/// The flags a packet of `kind` other than PUBLISH must carry (§2.1.3): PUBREL,
/// SUBSCRIBE and UNSUBSCRIBE `0010`, every other type `0000`.
const fn required_flags(kind: u8) -> u8 {
    match kind {
        packet::PUBREL | packet::SUBSCRIBE | packet::UNSUBSCRIBE => 0b0010,
        _ => 0,
    }
}

/// The first byte of a packet of `kind` other than PUBLISH: its type and the flags
/// the type requires.
pub const fn first_byte(kind: u8) -> u8 {
    (kind << 4) | required_flags(kind)
}

/// PUBLISH fixed-header flags (§3.3.1): DUP, QoS (two bits), RETAIN.
const PUBLISH_DUP: u8 = 0b1000;
const PUBLISH_QOS_SHIFT: u8 = 1;
const PUBLISH_RETAIN: u8 = 0b0001;

/// The first byte of a PUBLISH.
pub fn publish_first_byte(dup: bool, qos: QoS, retain: bool) -> u8 {
    let mut first = (packet::PUBLISH << 4) | ((qos as u8) << PUBLISH_QOS_SHIFT);
    if dup {
        first |= PUBLISH_DUP;
    }
    if retain {
        first |= PUBLISH_RETAIN;
    }
    first
}

/// The QoS bits of a PUBLISH's first byte (3 is not a QoS).
pub const fn publish_qos_bits(first: u8) -> u8 {
    (first >> PUBLISH_QOS_SHIFT) & 0b11
}

/// The DUP flag of a PUBLISH's first byte.
pub const fn publish_dup(first: u8) -> bool {
    first & PUBLISH_DUP != 0
}

/// The RETAIN flag of a PUBLISH's first byte.
pub const fn publish_retain(first: u8) -> bool {
    first & PUBLISH_RETAIN != 0
}

/// Most bytes a Variable Byte Integer takes (§1.5.5).
pub const VARINT_BYTES_MAX: usize = 4;

/// A Variable Byte Integer read off the front of some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Varint {
    /// Its value and the bytes it took.
    Value {
        /// The value.
        value: u32,
        /// Bytes it took (1 to 4).
        len: usize,
    },
    /// The bytes end before it does.
    Incomplete,
    /// Its fourth byte says more follow: malformed.
    TooLong,
}

/// The Variable Byte Integer at the front of `b` (§1.5.5). The one decoder of it:
/// the remaining length and the varints inside MQTT 5 properties both use it.
pub fn decode_varint(b: &[u8]) -> Varint {
    let mut value = 0u32;
    for i in 0..VARINT_BYTES_MAX {
        let Some(&byte) = b.get(i) else {
            return Varint::Incomplete;
        };
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Varint::Value { value, len: i + 1 };
        }
    }
    Varint::TooLong
}

/// Bytes a Variable Byte Integer takes: the router's, which sizes stored messages'
/// packets with it, so the size it computes is the size [`put_varint`] writes.
pub use router::varint_len;

/// Write a Variable Byte Integer (values are at most 268,435,455 by construction).
pub fn put_varint(b: &mut BytesMut, mut v: usize) {
    loop {
        let mut byte = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            byte |= 0x80;
        }
        b.put_u8(byte);
        if v == 0 {
            break;
        }
    }
}

/// Write a fixed header: the first byte and the remaining length.
pub fn put_fixed_header(b: &mut BytesMut, first: u8, remaining: usize) {
    b.put_u8(first);
    put_varint(b, remaining);
}

/// The bytes of the fixed header at the front of `frame`: the first byte and the
/// remaining length (at most four bytes; [`frame_len`] checked it for a framed
/// packet, and where it did not, as much as there could be).
pub fn fixed_header_len(frame: &[u8]) -> usize {
    match decode_varint(frame.get(1..).unwrap_or_default()) {
        Varint::Value { len, .. } => 1 + len,
        Varint::Incomplete | Varint::TooLong => 1 + VARINT_BYTES_MAX,
    }
}

/// The length of the packet at the front of `buf` (fixed header included), once its
/// fixed header is complete.
pub fn frame_len(buf: &[u8], max_packet_size: usize) -> Result<Option<usize>, ProtocolError> {
    let (remaining, len) = match decode_varint(buf.get(1..).unwrap_or_default()) {
        Varint::Value { value, len } => (value as usize, len),
        Varint::Incomplete => return Ok(None),
        Varint::TooLong => {
            return Err(ProtocolError::Malformed(
                "remaining length longer than 4 bytes".into(),
            ))
        }
    };
    let total = 1 + len + remaining;
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

/// The variable header and payload of a framed packet: what follows the fixed header.
pub fn body(frame: BytesMut) -> Bytes {
    let header = fixed_header_len(&frame).min(frame.len());
    let mut b = frame.freeze();
    b.advance(header);
    b
}

/// Check the first byte of a packet from a client (not CONNECT): a type a client
/// may send (AUTH only in MQTT 5), with the flags its type requires.
pub fn check_fixed_header(first: u8, auth_allowed: bool) -> Result<(), ProtocolError> {
    let flags = first & 0x0f;
    let kind = packet_type(first);
    let expected_flags = match kind {
        packet::PUBLISH => {
            if publish_qos_bits(first) == 0b11 {
                return Err(ProtocolError::Malformed("PUBLISH with QoS 3".into()));
            }
            if publish_qos_bits(first) == 0 && publish_dup(first) {
                return Err(ProtocolError::Violation("DUP set on a QoS 0 PUBLISH"));
            }
            flags
        }
        packet::PUBACK
        | packet::PUBREC
        | packet::PUBREL
        | packet::PUBCOMP
        | packet::SUBSCRIBE
        | packet::UNSUBSCRIBE
        | packet::PINGREQ
        | packet::DISCONNECT => required_flags(kind),
        packet::AUTH if auth_allowed => required_flags(kind),
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

/// A packet identifier as a packet carries it: never 0 (§2.2.1).
pub fn packet_id(id: u16) -> Result<PacketId, ProtocolError> {
    if id == 0 {
        return Err(ProtocolError::Malformed("packet identifier 0".into()));
    }
    Ok(PacketId(id))
}

/// Read a packet identifier off the front of `b`.
pub fn read_packet_id(b: &mut Bytes) -> Result<PacketId, ProtocolError> {
    if b.remaining() < 2 {
        return Err(ProtocolError::Malformed(
            "truncated packet identifier".into(),
        ));
    }
    packet_id(b.get_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [
            0usize,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            assert_eq!(
                decode_varint(&b),
                Varint::Value {
                    value: v as u32,
                    len: b.len()
                }
            );
            assert_eq!(decode_varint(&b[..b.len() - 1]), Varint::Incomplete);
        }
        assert_eq!(
            decode_varint(&[0xff, 0xff, 0xff, 0xff, 0x01]),
            Varint::TooLong
        );
    }

    #[test]
    fn first_bytes_carry_the_flags_their_types_require() {
        assert_eq!(first_byte(packet::PUBACK), 0x40);
        assert_eq!(first_byte(packet::PUBREL), 0x62);
        assert_eq!(first_byte(packet::SUBSCRIBE), 0x82);
        assert_eq!(first_byte(packet::UNSUBACK), 0xb0);
        assert_eq!(first_byte(packet::DISCONNECT), 0xe0);
        assert_eq!(publish_first_byte(true, QoS::AtLeastOnce, true), 0x3b);
        assert_eq!(publish_first_byte(false, QoS::ExactlyOnce, false), 0x34);
        for kind in [
            packet::PUBACK,
            packet::PUBREL,
            packet::SUBSCRIBE,
            packet::PINGREQ,
        ] {
            assert_eq!(check_fixed_header(first_byte(kind), false), Ok(()));
        }
        assert!(check_fixed_header(first_byte(packet::AUTH), false).is_err());
        assert_eq!(check_fixed_header(first_byte(packet::AUTH), true), Ok(()));
    }
}
