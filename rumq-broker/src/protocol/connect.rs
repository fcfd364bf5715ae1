//! CONNECT, parsed here rather than by `mqttbytes` so that MQTT 3.1 (`MQIsdp`, level 3)
//! is accepted, the reserved flag and the flag combinations are checked, MQTT 5's
//! properties are read with the spec's checks, and an unsupported level can be
//! answered with the right CONNACK.

use bytes::{Buf, Bytes};
use router::{QoS, NEVER_EXPIRES};

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

/// Parse a framed CONNECT packet (fixed header included).
pub fn parse(mut frame: Bytes) -> Result<ConnectPacket, ProtocolError> {
    if frame.first() != Some(&0x10) {
        return Err(malformed("reserved fixed-header flags set"));
    }
    // The remaining length was checked by framing.
    let header = super::v4::fixed_header_len(&frame);
    if frame.len() < header {
        return Err(malformed("truncated"));
    }
    frame.advance(header);
    let name = read_binary(&mut frame)?;
    let level = read_u8(&mut frame)?;
    let version = match (&name[..], level) {
        (b"MQTT", 4) => Version::V311,
        (b"MQTT", 5) => Version::V5,
        (b"MQIsdp", 3) => Version::V31,
        (b"MQTT", other) => return Err(ProtocolError::UnsupportedVersion(other)),
        (b"MQIsdp", other) => return Err(ProtocolError::UnsupportedVersion(other)),
        _ => return Err(malformed("unknown protocol name")),
    };
    let flags = read_u8(&mut frame)?;
    if flags & 0x01 != 0 {
        return Err(malformed("reserved connect flag set"));
    }
    let clean_session = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(malformed("will QoS or retain set without a will"));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or_else(|| malformed("will QoS 3"))?;
    if version == Version::V311 && password_flag && !username_flag {
        return Err(malformed("password without user name"));
    }
    let keep_alive = read_u16(&mut frame)?;
    let v5 = version == Version::V5;
    let props = if v5 {
        properties::parse(&mut frame, Section::Connect)?
    } else {
        Properties::default()
    };
    let client_id = read_string(&mut frame, "client id")?;
    let will = if will_flag {
        let will_props = if v5 {
            properties::parse(&mut frame, Section::Will)?
        } else {
            Properties::default()
        };
        let topic = read_string(&mut frame, "will topic")?;
        router::topic::validate_name(&topic).map_err(|e| malformed(&format!("will topic {e}")))?;
        let payload = read_binary(&mut frame)?;
        if will_props.payload_is_utf8 && std::str::from_utf8(&payload).is_err() {
            return Err(ProtocolError::PayloadFormatInvalid);
        }
        Some(LastWill {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            delay_secs: will_props.will_delay.unwrap_or(0),
            expiry_secs: will_props.message_expiry,
            properties: will_props.forward,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(read_string(&mut frame, "user name")?)
    } else {
        None
    };
    let password = if password_flag {
        Some(read_binary(&mut frame)?)
    } else {
        None
    };
    if frame.has_remaining() {
        return Err(malformed("bytes after the payload"));
    }
    let session_expiry = match (v5, clean_session) {
        (true, _) => props.session_expiry.unwrap_or(0),
        (false, true) => 0,
        (false, false) => NEVER_EXPIRES,
    };
    Ok(ConnectPacket {
        version,
        clean_session,
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
