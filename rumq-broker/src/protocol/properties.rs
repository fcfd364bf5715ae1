//! MQTT 5 properties (§2.2.2): reading a packet's property section with the checks
//! the spec asks for, and writing the properties the broker sends.
//!
//! A property that is not valid for its packet, or whose value is not of its type,
//! makes the packet malformed (0x81); a property given twice that may appear once,
//! or a value out of its range, is a protocol error (0x82).
//!
//! For a PUBLISH (and a will) the properties that travel with the message are also
//! kept as the bytes they arrived as, in their order, so the stored record carries
//! them unchanged to every v5 subscriber (user properties keep their order).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::framing::{decode_varint, put_varint, Varint};
use super::ProtocolError;

/// Property identifiers (§2.2.2.2).
pub mod id {
    pub const PAYLOAD_FORMAT: u8 = 0x01;
    pub const MESSAGE_EXPIRY: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_ID: u8 = 0x0b;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTH_METHOD: u8 = 0x15;
    pub const AUTH_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
    pub const WILL_DELAY: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFO: u8 = 0x19;
    pub const RESPONSE_INFO: u8 = 0x1a;
    pub const SERVER_REFERENCE: u8 = 0x1c;
    pub const REASON_STRING: u8 = 0x1f;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_ID_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2a;
}

/// The packet a property section belongs to: it decides which properties may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// CONNECT.
    Connect,
    /// The will properties in CONNECT's payload.
    Will,
    /// PUBLISH from a client.
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    /// SUBSCRIBE.
    Subscribe,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// DISCONNECT from a client.
    Disconnect,
    /// AUTH.
    Auth,
}

impl Section {
    fn allows(self, property: u8) -> bool {
        use id::*;
        let allowed: &[u8] = match self {
            Section::Connect => &[
                SESSION_EXPIRY,
                RECEIVE_MAXIMUM,
                MAXIMUM_PACKET_SIZE,
                TOPIC_ALIAS_MAXIMUM,
                REQUEST_RESPONSE_INFO,
                REQUEST_PROBLEM_INFO,
                USER_PROPERTY,
                AUTH_METHOD,
                AUTH_DATA,
            ],
            Section::Will => &[
                WILL_DELAY,
                PAYLOAD_FORMAT,
                MESSAGE_EXPIRY,
                CONTENT_TYPE,
                RESPONSE_TOPIC,
                CORRELATION_DATA,
                USER_PROPERTY,
            ],
            Section::Publish => &[
                PAYLOAD_FORMAT,
                MESSAGE_EXPIRY,
                CONTENT_TYPE,
                RESPONSE_TOPIC,
                CORRELATION_DATA,
                USER_PROPERTY,
                TOPIC_ALIAS,
                SUBSCRIPTION_ID,
            ],
            Section::Ack => &[REASON_STRING, USER_PROPERTY],
            Section::Subscribe => &[SUBSCRIPTION_ID, USER_PROPERTY],
            Section::Unsubscribe => &[USER_PROPERTY],
            Section::Disconnect => &[
                SESSION_EXPIRY,
                REASON_STRING,
                USER_PROPERTY,
                SERVER_REFERENCE,
            ],
            Section::Auth => &[AUTH_METHOD, AUTH_DATA, REASON_STRING, USER_PROPERTY],
        };
        allowed.contains(&property)
    }
}

/// The properties the broker acts on, from one section. Everything else allowed in
/// the section is checked and, for messages, kept in `forward`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// Session expiry interval, seconds (CONNECT, DISCONNECT).
    pub session_expiry: Option<u32>,
    /// Receive maximum (CONNECT), never 0.
    pub receive_maximum: Option<u16>,
    /// Maximum packet size the client accepts (CONNECT), never 0.
    pub max_packet_size: Option<u32>,
    /// Topic alias maximum the client accepts (CONNECT).
    pub topic_alias_max: Option<u16>,
    /// Request problem information (CONNECT).
    pub request_problem_info: Option<bool>,
    /// Authentication method (CONNECT, AUTH).
    pub auth_method: Option<String>,
    /// Will delay interval, seconds (will).
    pub will_delay: Option<u32>,
    /// Message expiry interval, seconds (PUBLISH, will).
    pub message_expiry: Option<u32>,
    /// Topic alias (PUBLISH), never 0.
    pub topic_alias: Option<u16>,
    /// Subscription identifier (SUBSCRIBE), never 0.
    pub subscription_id: Option<u32>,
    /// Payload format indicator: the payload is UTF-8 (PUBLISH, will).
    pub payload_is_utf8: bool,
    /// PUBLISH and will: the properties that travel with the message, as on the
    /// wire and in their order (payload format, content type, response topic,
    /// correlation data, user properties).
    pub forward: Bytes,
}

fn malformed(what: &str) -> ProtocolError {
    ProtocolError::Malformed(format!("properties: {what}"))
}

/// A Variable Byte Integer (§1.5.5) inside a property section: [`decode_varint`]
/// on the section's bytes, consumed.
pub fn read_varint(b: &mut Bytes) -> Result<u32, ProtocolError> {
    match decode_varint(b) {
        Varint::Value { value, len } => {
            b.advance(len);
            Ok(value)
        }
        Varint::Incomplete => Err(malformed("truncated variable byte integer")),
        Varint::TooLong => Err(malformed("variable byte integer longer than 4 bytes")),
    }
}

fn take(b: &mut Bytes, n: usize) -> Result<Bytes, ProtocolError> {
    if b.remaining() < n {
        return Err(malformed("value runs past the section"));
    }
    Ok(b.split_to(n))
}

fn read_u16(b: &mut Bytes) -> Result<u16, ProtocolError> {
    let v = take(b, 2)?;
    Ok(u16::from_be_bytes([v[0], v[1]]))
}

fn read_u32(b: &mut Bytes) -> Result<u32, ProtocolError> {
    let v = take(b, 4)?;
    Ok(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
}

fn read_binary(b: &mut Bytes) -> Result<Bytes, ProtocolError> {
    let n = usize::from(read_u16(b)?);
    take(b, n)
}

/// A UTF-8 Encoded String (§1.5.4): valid UTF-8 without U+0000.
pub fn read_string(b: &mut Bytes) -> Result<String, ProtocolError> {
    let raw = read_binary(b)?;
    let s = String::from_utf8(raw.to_vec()).map_err(|_| malformed("string is not UTF-8"))?;
    if s.contains('\0') {
        return Err(malformed("string contains U+0000"));
    }
    Ok(s)
}

fn read_flag(b: &mut Bytes, what: &'static str) -> Result<bool, ProtocolError> {
    match take(b, 1)?[0] {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(ProtocolError::Violation(what)),
    }
}

/// Read a property section (its length, then the properties) off the front of `b`.
pub fn parse(b: &mut Bytes, section: Section) -> Result<Properties, ProtocolError> {
    let len = read_varint(b)? as usize;
    let mut props = take(b, len)?;
    let mut p = Properties::default();
    let mut seen = 0u64;
    let mut forward = BytesMut::new();
    while props.has_remaining() {
        let start = props.clone();
        let property = props.get_u8();
        check_allowed_once(section, property, &mut seen)?;
        let keep = if is_forwarded(property) {
            read_forwarded(&mut props, property, &mut p)?;
            true
        } else {
            read_acted_on(&mut props, property, section, &mut p)?;
            false
        };
        if keep && matches!(section, Section::Publish | Section::Will) {
            let used = start.len() - props.len();
            forward.put_slice(&start[..used]);
        }
    }
    p.forward = forward.freeze();
    Ok(p)
}

/// A property may appear in `section`, and (but for user properties) not twice:
/// `seen` holds a bit for each identifier read so far.
fn check_allowed_once(section: Section, property: u8, seen: &mut u64) -> Result<(), ProtocolError> {
    if !section.allows(property) {
        return Err(malformed(&format!(
            "property {property:#04x} is not allowed in this packet"
        )));
    }
    if property != id::USER_PROPERTY {
        // Every identifier allowed here is below 64.
        let bit = 1u64 << property;
        if *seen & bit != 0 {
            return Err(ProtocolError::Violation("a property appears twice"));
        }
        *seen |= bit;
    }
    Ok(())
}

/// The properties that travel with a message to its subscribers (§3.3.2.3).
fn is_forwarded(property: u8) -> bool {
    matches!(
        property,
        id::PAYLOAD_FORMAT
            | id::CONTENT_TYPE
            | id::RESPONSE_TOPIC
            | id::CORRELATION_DATA
            | id::USER_PROPERTY
    )
}

/// Check the value of a property that travels with the message ([`is_forwarded`]).
fn read_forwarded(
    props: &mut Bytes,
    property: u8,
    p: &mut Properties,
) -> Result<(), ProtocolError> {
    match property {
        id::PAYLOAD_FORMAT => {
            p.payload_is_utf8 = read_flag(props, "payload format indicator not 0 or 1")?;
        }
        id::CONTENT_TYPE | id::RESPONSE_TOPIC => {
            let s = read_string(props)?;
            if property == id::RESPONSE_TOPIC && router::topic::validate_name(&s).is_err() {
                return Err(ProtocolError::Violation(
                    "response topic is not a topic name",
                ));
            }
        }
        id::CORRELATION_DATA => {
            read_binary(props)?;
        }
        _ => {
            // id::USER_PROPERTY: a name and a value.
            read_string(props)?;
            read_string(props)?;
        }
    }
    Ok(())
}

/// Read the value of a property the broker acts on (or only checks) into `p`.
fn read_acted_on(
    props: &mut Bytes,
    property: u8,
    section: Section,
    p: &mut Properties,
) -> Result<(), ProtocolError> {
    match property {
        id::MESSAGE_EXPIRY => p.message_expiry = Some(read_u32(props)?),
        id::SUBSCRIPTION_ID => p.subscription_id = Some(read_subscription_id(props, section)?),
        id::SESSION_EXPIRY => p.session_expiry = Some(read_u32(props)?),
        id::AUTH_METHOD => p.auth_method = Some(read_string(props)?),
        id::AUTH_DATA => {
            read_binary(props)?;
        }
        id::REQUEST_PROBLEM_INFO => {
            p.request_problem_info =
                Some(read_flag(props, "request problem information not 0 or 1")?)
        }
        id::WILL_DELAY => p.will_delay = Some(read_u32(props)?),
        id::REQUEST_RESPONSE_INFO => {
            // Checked, not kept: the broker offers no response information.
            read_flag(props, "request response information not 0 or 1")?;
        }
        id::REASON_STRING | id::SERVER_REFERENCE => {
            read_string(props)?;
        }
        id::RECEIVE_MAXIMUM => {
            p.receive_maximum = Some(read_nonzero_u16(props, "receive maximum 0")?);
        }
        id::TOPIC_ALIAS_MAXIMUM => p.topic_alias_max = Some(read_u16(props)?),
        id::TOPIC_ALIAS => {
            let v = read_u16(props)?;
            if v == 0 {
                return Err(ProtocolError::TopicAliasInvalid);
            }
            p.topic_alias = Some(v);
        }
        id::MAXIMUM_PACKET_SIZE => {
            let v = read_u32(props)?;
            if v == 0 {
                return Err(ProtocolError::Violation("maximum packet size 0"));
            }
            p.max_packet_size = Some(v);
        }
        // `allows` let through only the identifiers above and the forwarded ones.
        other => {
            return Err(malformed(&format!("property {other:#04x}")));
        }
    }
    Ok(())
}

/// A subscription identifier: never 0, and never in a client's PUBLISH.
fn read_subscription_id(props: &mut Bytes, section: Section) -> Result<u32, ProtocolError> {
    if section == Section::Publish {
        return Err(ProtocolError::Violation(
            "subscription identifier in a client's PUBLISH",
        ));
    }
    match read_varint(props)? {
        0 => Err(ProtocolError::Violation("subscription identifier 0")),
        v => Ok(v),
    }
}

fn read_nonzero_u16(props: &mut Bytes, zero: &'static str) -> Result<u16, ProtocolError> {
    match read_u16(props)? {
        0 => Err(ProtocolError::Violation(zero)),
        v => Ok(v),
    }
}

/// Writes a property section: properties go into `body`, and `finish` prefixes the
/// length.
#[derive(Debug, Default)]
pub struct Writer {
    body: BytesMut,
}

impl Writer {
    /// An empty section.
    pub fn new() -> Self {
        Writer::default()
    }

    /// A one-byte property.
    pub fn byte(&mut self, property: u8, v: u8) -> &mut Self {
        self.body.put_u8(property);
        self.body.put_u8(v);
        self
    }

    /// A two-byte integer property.
    pub fn u16(&mut self, property: u8, v: u16) -> &mut Self {
        self.body.put_u8(property);
        self.body.put_u16(v);
        self
    }

    /// A four-byte integer property.
    pub fn u32(&mut self, property: u8, v: u32) -> &mut Self {
        self.body.put_u8(property);
        self.body.put_u32(v);
        self
    }

    /// A Variable Byte Integer property.
    pub fn varint(&mut self, property: u8, v: u32) -> &mut Self {
        self.body.put_u8(property);
        put_varint(&mut self.body, v as usize);
        self
    }

    /// A string property (cut at 65535 bytes, on a character boundary).
    pub fn string(&mut self, property: u8, v: &str) -> &mut Self {
        self.body.put_u8(property);
        self.put_str(v);
        self
    }

    /// At most the bytes [`Writer::string`] writes for `v`: the identifier, the
    /// length and the text (a cut may end a few bytes earlier, on a character
    /// boundary).
    pub fn string_size(v: &str) -> usize {
        3 + v.len().min(usize::from(u16::MAX))
    }

    /// A user property: a name and a value (each cut as for [`Writer::string`]).
    pub fn user_property(&mut self, name: &str, value: &str) -> &mut Self {
        self.string(id::USER_PROPERTY, name);
        self.put_str(value);
        self
    }

    /// A length-prefixed UTF-8 string, cut at 65535 bytes on a character boundary.
    fn put_str(&mut self, v: &str) {
        let mut end = v.len().min(usize::from(u16::MAX));
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        // end <= 65535 (cut above).
        self.body.put_u16(end as u16);
        self.body.put_slice(&v.as_bytes()[..end]);
    }

    /// Properties already encoded (the forwarded ones of a stored message).
    pub fn raw(&mut self, encoded: &[u8]) -> &mut Self {
        self.body.put_slice(encoded);
        self
    }

    /// Bytes of the properties written so far (without the length prefix).
    pub fn len(&self) -> usize {
        self.body.len()
    }

    /// True when no property was written.
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// Write the section (length, then properties) to `out` and start over.
    pub fn finish(&mut self, out: &mut BytesMut) {
        put_varint(out, self.body.len());
        out.put_slice(&self.body);
        self.body.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn section(props: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        put_varint(&mut b, props.len());
        b.put_slice(props);
        b.freeze()
    }

    #[test]
    fn connect_properties_are_read() {
        let mut w = Writer::new();
        w.u32(id::SESSION_EXPIRY, 3600)
            .u16(id::RECEIVE_MAXIMUM, 10)
            .u32(id::MAXIMUM_PACKET_SIZE, 2048)
            .u16(id::TOPIC_ALIAS_MAXIMUM, 5)
            .byte(id::REQUEST_PROBLEM_INFO, 0)
            .string(id::USER_PROPERTY, "k")
            .raw(&[0, 1, b'v']);
        let mut out = BytesMut::new();
        w.finish(&mut out);
        let p = parse(&mut out.freeze(), Section::Connect).unwrap();
        assert_eq!(p.session_expiry, Some(3600));
        assert_eq!(p.receive_maximum, Some(10));
        assert_eq!(p.max_packet_size, Some(2048));
        assert_eq!(p.topic_alias_max, Some(5));
        assert_eq!(p.request_problem_info, Some(false));
        assert!(p.forward.is_empty(), "CONNECT keeps nothing to forward");
    }

    #[test]
    fn publish_properties_forward_in_order_without_alias_and_expiry() {
        let mut w = Writer::new();
        w.string(id::USER_PROPERTY, "b")
            .raw(&[0, 1, b'2'])
            .u16(id::TOPIC_ALIAS, 3)
            .u32(id::MESSAGE_EXPIRY, 9)
            .string(id::CONTENT_TYPE, "text/plain")
            .string(id::USER_PROPERTY, "a")
            .raw(&[0, 1, b'1']);
        let mut out = BytesMut::new();
        w.finish(&mut out);
        let p = parse(&mut out.freeze(), Section::Publish).unwrap();
        assert_eq!(p.topic_alias, Some(3));
        assert_eq!(p.message_expiry, Some(9));
        let mut expected = Writer::new();
        expected
            .string(id::USER_PROPERTY, "b")
            .raw(&[0, 1, b'2'])
            .string(id::CONTENT_TYPE, "text/plain")
            .string(id::USER_PROPERTY, "a")
            .raw(&[0, 1, b'1']);
        assert_eq!(&p.forward[..], &expected.body[..]);
    }

    #[test]
    fn wrong_duplicate_and_out_of_range_properties_are_refused() {
        // Session expiry is not a PUBLISH property: malformed.
        assert!(matches!(
            parse(&mut section(&[0x11, 0, 0, 0, 1]), Section::Publish),
            Err(ProtocolError::Malformed(_))
        ));
        // Twice: protocol error.
        assert!(matches!(
            parse(
                &mut section(&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2]),
                Section::Publish
            ),
            Err(ProtocolError::Violation(_))
        ));
        // Receive maximum 0, payload format 2, topic alias 0.
        assert!(parse(&mut section(&[0x21, 0, 0]), Section::Connect).is_err());
        assert!(parse(&mut section(&[0x01, 2]), Section::Publish).is_err());
        assert_eq!(
            parse(&mut section(&[0x23, 0, 0]), Section::Publish),
            Err(ProtocolError::TopicAliasInvalid)
        );
        // A value that runs past the section.
        assert!(matches!(
            parse(&mut section(&[0x02, 0, 0]), Section::Publish),
            Err(ProtocolError::Malformed(_))
        ));
        // A section longer than the packet.
        assert!(parse(&mut Bytes::from_static(&[5, 0x01]), Section::Publish).is_err());
    }

    #[test]
    fn varints_are_read_and_consumed() {
        let mut b = BytesMut::new();
        put_varint(&mut b, 16_384);
        b.put_u8(7);
        let mut b = b.freeze();
        assert_eq!(read_varint(&mut b).unwrap(), 16_384);
        assert_eq!(&b[..], [7]);
        assert!(read_varint(&mut Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x01])).is_err());
        assert!(read_varint(&mut Bytes::from_static(&[0xff])).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), s in 0usize..8) {
            let section = [Section::Connect, Section::Will, Section::Publish, Section::Ack,
                Section::Subscribe, Section::Unsubscribe, Section::Disconnect, Section::Auth][s];
            let _ = parse(&mut Bytes::from(bytes), section);
        }
    }
}
