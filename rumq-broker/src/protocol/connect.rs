//! CONNECT, parsed here rather than by `mqttbytes` so that MQTT 3.1 (`MQIsdp`, level 3)
//! is accepted, the reserved flag and the flag combinations are checked, and an
//! unsupported level can be answered with the right CONNACK.

use bytes::{Buf, Bytes};
use router::QoS;

use super::ProtocolError;

/// Protocol version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1 (`MQIsdp`, level 3).
    V31,
    /// MQTT 3.1.1 (`MQTT`, level 4).
    V311,
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
}

/// A parsed CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectPacket {
    /// Protocol version.
    pub version: Version,
    /// Clean session flag.
    pub clean_session: bool,
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
    let first = read_u8(&mut frame)?;
    if first != 0x10 {
        return Err(malformed("reserved fixed-header flags set"));
    }
    // Skip the remaining length (already checked by framing).
    loop {
        if read_u8(&mut frame)? & 0x80 == 0 {
            break;
        }
    }
    let name = read_binary(&mut frame)?;
    let level = read_u8(&mut frame)?;
    let version = match (&name[..], level) {
        (b"MQTT", 4) => Version::V311,
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
    let client_id = read_string(&mut frame, "client id")?;
    let will = if will_flag {
        let topic = read_string(&mut frame, "will topic")?;
        router::topic::validate_name(&topic).map_err(|e| malformed(&format!("will topic {e}")))?;
        let payload = read_binary(&mut frame)?;
        Some(LastWill {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
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
    Ok(ConnectPacket {
        version,
        clean_session,
        keep_alive,
        client_id,
        will,
        username,
        password,
    })
}
