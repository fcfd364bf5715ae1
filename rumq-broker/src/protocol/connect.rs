//! CONNECT, parsed here rather than by `mqttbytes` so that MQTT 3.1 (`MQIsdp`, level 3)
//! is accepted, the reserved flag and the flag combinations are checked, MQTT 5's
//! properties are read with the spec's checks, and an unsupported level can be
//! answered with the right CONNACK.

use bytes::{Buf, Bytes};
use router::{QoS, NEVER_EXPIRES};

use super::framing::{self, packet};
use super::properties::{self, Properties, Section};
use super::ProtocolError;

/// Protocol version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1 (`MQIsdp`, level 3).
    V31,
    /// MQTT 3.1.1 (`MQTT`, level 4).
    V311,
    /// MQTT 5.0 (`MQTT`, level 5).
    V5,
}

/// A will message as sent in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain.
    pub retain: bool,
    /// Will delay interval, seconds (MQTT 5).
    pub delay_secs: u32,
    /// Message expiry interval, seconds (MQTT 5).
    pub expiry_secs: Option<u32>,
    /// Will properties that travel with the message (MQTT 5), as on the wire.
    pub properties: Bytes,
}

/// A parsed CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectPacket {
    /// Protocol version.
    pub version: Version,
    /// Clean session (3.1.1) / clean start (MQTT 5) flag.
    pub clean_session: bool,
    /// Session expiry interval, seconds: MQTT 5's property (0 when absent); for
    /// 3.1.1, 0 with a clean session and never otherwise.
    pub session_expiry: u32,
    /// Receive maximum (MQTT 5; 65535 when absent).
    pub receive_maximum: u16,
    /// Largest packet the client accepts (MQTT 5; no limit when absent).
    pub max_packet_size: u32,
    /// Topic aliases the client accepts from us (MQTT 5; 0 when absent).
    pub topic_alias_max: u16,
    /// The client wants reason strings and user properties on errors (MQTT 5).
    pub request_problem_info: bool,
    /// Enhanced authentication method (MQTT 5).
    pub auth_method: Option<String>,
    /// Keep alive, seconds (0: off).
    pub keep_alive: u16,
    /// Client identifier.
    pub client_id: String,
    /// Will.
    pub will: Option<LastWill>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Bytes>,
}

fn malformed(what: &str) -> ProtocolError {
    ProtocolError::Malformed(format!("CONNECT: {what}"))
}

fn read_u8(b: &mut Bytes) -> Result<u8, ProtocolError> {
    if b.remaining() < 1 {
        return Err(malformed("truncated"));
    }
    Ok(b.get_u8())
}

fn read_u16(b: &mut Bytes) -> Result<u16, ProtocolError> {
    if b.remaining() < 2 {
        return Err(malformed("truncated"));
    }
    Ok(b.get_u16())
}

fn read_binary(b: &mut Bytes) -> Result<Bytes, ProtocolError> {
    let len = usize::from(read_u16(b)?);
    if b.remaining() < len {
        return Err(malformed("field runs past the packet"));
    }
    Ok(b.split_to(len))
}

fn read_string(b: &mut Bytes, what: &str) -> Result<String, ProtocolError> {
    let raw = read_binary(b)?;
    let s =
        String::from_utf8(raw.to_vec()).map_err(|_| malformed(&format!("{what} is not UTF-8")))?;
    if s.contains('\0') {
        return Err(malformed(&format!("{what} contains U+0000")));
    }
    Ok(s)
}

/// Connect flags (§3.1.2.3).
mod flag {
    pub const RESERVED: u8 = 0x01;
    pub const CLEAN_SESSION: u8 = 0x02;
    pub const WILL: u8 = 0x04;
    pub const WILL_QOS_SHIFT: u8 = 3;
    pub const WILL_RETAIN: u8 = 0x20;
    pub const PASSWORD: u8 = 0x40;
    pub const USER_NAME: u8 = 0x80;
}

/// What the connect flags byte says, checked.
#[derive(Debug, Clone, Copy)]
struct Flags {
    clean_session: bool,
    will: bool,
    will_qos: QoS,
    will_retain: bool,
    password: bool,
    username: bool,
}

/// Parse a framed CONNECT packet (fixed header included).
pub fn parse(mut frame: Bytes) -> Result<ConnectPacket, ProtocolError> {
    skip_fixed_header(&mut frame)?;
    let version = read_protocol(&mut frame)?;
    let flags = read_flags(&mut frame, version)?;
    let keep_alive = read_u16(&mut frame)?;
    let v5 = version == Version::V5;
    let props = read_properties(&mut frame, v5, Section::Connect)?;
    let client_id = read_string(&mut frame, "client id")?;
    let will = if flags.will {
        Some(read_will(&mut frame, v5, flags)?)
    } else {
        None
    };
    let username = if flags.username {
        Some(read_string(&mut frame, "user name")?)
    } else {
        None
    };
    let password = if flags.password {
        Some(read_binary(&mut frame)?)
    } else {
        None
    };
    if frame.has_remaining() {
        return Err(malformed("bytes after the payload"));
    }
    let session_expiry = match (v5, flags.clean_session) {
        (true, _) => props.session_expiry.unwrap_or(0),
        (false, true) => 0,
        (false, false) => NEVER_EXPIRES,
    };
    Ok(ConnectPacket {
        version,
        clean_session: flags.clean_session,
        session_expiry,
        receive_maximum: props.receive_maximum.unwrap_or(u16::MAX),
        max_packet_size: props.max_packet_size.unwrap_or(u32::MAX),
        topic_alias_max: props.topic_alias_max.unwrap_or(0),
        request_problem_info: props.request_problem_info.unwrap_or(true),
        auth_method: props.auth_method,
        keep_alive,
        client_id,
        will,
        username,
        password,
    })
}

/// Check the first byte and step past the fixed header.
fn skip_fixed_header(frame: &mut Bytes) -> Result<(), ProtocolError> {
    if frame.first() != Some(&framing::first_byte(packet::CONNECT)) {
        return Err(malformed("reserved fixed-header flags set"));
    }
    // The remaining length was checked by framing.
    let header = framing::fixed_header_len(frame);
    if frame.len() < header {
        return Err(malformed("truncated"));
    }
    frame.advance(header);
    Ok(())
}

/// Protocol name and level: the version, or the level this broker does not speak.
fn read_protocol(b: &mut Bytes) -> Result<Version, ProtocolError> {
    let name = read_binary(b)?;
    let level = read_u8(b)?;
    match (&name[..], level) {
        (b"MQTT", 4) => Ok(Version::V311),
        (b"MQTT", 5) => Ok(Version::V5),
        (b"MQIsdp", 3) => Ok(Version::V31),
        (b"MQTT", other) => Err(ProtocolError::UnsupportedVersion(other)),
        (b"MQIsdp", other) => Err(ProtocolError::UnsupportedVersion(other)),
        _ => Err(malformed("unknown protocol name")),
    }
}

/// The connect flags, with the combinations the spec forbids refused.
fn read_flags(b: &mut Bytes, version: Version) -> Result<Flags, ProtocolError> {
    let bits = read_u8(b)?;
    if bits & flag::RESERVED != 0 {
        return Err(malformed("reserved connect flag set"));
    }
    let will = bits & flag::WILL != 0;
    let will_qos = (bits >> flag::WILL_QOS_SHIFT) & 0x03;
    let will_retain = bits & flag::WILL_RETAIN != 0;
    let password = bits & flag::PASSWORD != 0;
    let username = bits & flag::USER_NAME != 0;
    if !will && (will_qos != 0 || will_retain) {
        return Err(malformed("will QoS or retain set without a will"));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or_else(|| malformed("will QoS 3"))?;
    if version == Version::V311 && password && !username {
        return Err(malformed("password without user name"));
    }
    Ok(Flags {
        clean_session: bits & flag::CLEAN_SESSION != 0,
        will,
        will_qos,
        will_retain,
        password,
        username,
    })
}

/// MQTT 5's property section; none (defaults) before MQTT 5.
fn read_properties(b: &mut Bytes, v5: bool, section: Section) -> Result<Properties, ProtocolError> {
    if v5 {
        properties::parse(b, section)
    } else {
        Ok(Properties::default())
    }
}

/// The will in the payload: its properties (MQTT 5), topic and payload.
fn read_will(b: &mut Bytes, v5: bool, flags: Flags) -> Result<LastWill, ProtocolError> {
    let will_props = read_properties(b, v5, Section::Will)?;
    let topic = read_string(b, "will topic")?;
    router::topic::validate_name(&topic).map_err(|e| malformed(&format!("will topic {e}")))?;
    let payload = read_binary(b)?;
    if will_props.payload_is_utf8 && std::str::from_utf8(&payload).is_err() {
        return Err(ProtocolError::PayloadFormatInvalid);
    }
    Ok(LastWill {
        topic,
        payload,
        qos: flags.will_qos,
        retain: flags.will_retain,
        delay_secs: will_props.will_delay.unwrap_or(0),
        expiry_secs: will_props.message_expiry,
        properties: will_props.forward,
    })
}
