//! MQTT 5 packets built byte by byte, and their replies taken apart.

use super::*;

/// Property ids used here (MQTT 5 §2.2.2.2).
pub const MESSAGE_EXPIRY: u8 = 0x02;
pub const CONTENT_TYPE: u8 = 0x03;
pub const SUBSCRIPTION_ID: u8 = 0x0b;
pub const SESSION_EXPIRY: u8 = 0x11;
pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
pub const AUTH_METHOD: u8 = 0x15;
pub const RECEIVE_MAXIMUM: u8 = 0x21;
pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub const TOPIC_ALIAS: u8 = 0x23;
pub const USER_PROPERTY: u8 = 0x26;
pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;

pub fn varint(out: &mut Vec<u8>, v: usize) {
    put_remaining_length(out, v);
}

pub fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A property section: length, then the properties.
pub fn props(p: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(&mut out, p.len());
    out.extend_from_slice(p);
    out
}

pub fn connect5(client_id: &str, clean_start: bool, properties: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.push(5);
    body.push(u8::from(clean_start) << 1);
    body.extend_from_slice(&60u16.to_be_bytes());
    body.extend_from_slice(&props(properties));
    string(&mut body, client_id);
    packet(0x10, &body)
}

pub fn publish5(topic: &str, qos: u8, pkid: u16, properties: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(&props(properties));
    body.extend_from_slice(payload);
    packet(0x30 | qos << 1, &body)
}

pub fn subscribe5(pkid: u16, properties: &[u8], filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.extend_from_slice(&props(properties));
    for (f, options) in filters {
        string(&mut body, f);
        body.push(*options);
    }
    packet(0x82, &body)
}

pub fn unsubscribe5(pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.push(0);
    for f in filters {
        string(&mut body, f);
    }
    packet(0xa2, &body)
}

pub fn u32_prop(id: u8, v: u32) -> Vec<u8> {
    let mut p = vec![id];
    p.extend_from_slice(&v.to_be_bytes());
    p
}

pub fn u16_prop(id: u8, v: u16) -> Vec<u8> {
    let mut p = vec![id];
    p.extend_from_slice(&v.to_be_bytes());
    p
}

pub fn str_prop(id: u8, s: &str) -> Vec<u8> {
    let mut p = vec![id];
    string(&mut p, s);
    p
}

pub fn user_prop(k: &str, v: &str) -> Vec<u8> {
    let mut p = vec![USER_PROPERTY];
    string(&mut p, k);
    string(&mut p, v);
    p
}

/// Parsed properties of a packet, in order: (id, raw value bytes).
pub fn parse_props(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some((&id, rest)) = b.split_first() {
        let n = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2a => 1,
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            SUBSCRIPTION_ID => varint_at(rest).0,
            0x26 => {
                let k = 2 + u16::from_be_bytes([rest[0], rest[1]]) as usize;
                k + 2 + u16::from_be_bytes([rest[k], rest[k + 1]]) as usize
            }
            _ => 2 + u16::from_be_bytes([rest[0], rest[1]]) as usize,
        };
        out.push((id, rest[..n].to_vec()));
        b = &rest[n..];
    }
    out
}

/// The bytes a varint at the front of `b` takes, and its value.
pub fn varint_at(b: &[u8]) -> (usize, usize) {
    match decode_varint(b) {
        Varint::Value { value, len } => (len, usize::try_from(value).unwrap()),
        other => panic!("no varint at the front of {b:x?}: {other:?}"),
    }
}

/// The body after a varint length prefix: (section, rest).
pub fn section(b: &[u8]) -> (&[u8], &[u8]) {
    let (i, len) = varint_at(b);
    (&b[i..i + len], &b[i + len..])
}

/// The reason code of a DISCONNECT from the broker (which also carries a reason
/// string: the client did not turn problem information off).
pub fn disconnect_reason(p: &RawPacket) -> u8 {
    assert_eq!(p.kind(), 14, "DISCONNECT expected, got {:x?}", p.bytes());
    let b = p.body.clone();
    let (props, _) = section(&b[1..]);
    assert!(
        parse_props(props).iter().any(|(id, _)| *id == 0x1f),
        "reason string"
    );
    b[0]
}

/// Connect a raw MQTT 5 client; returns it with the CONNACK's reason code,
/// session-present flag and properties.
pub async fn connect(port: u16, packet: &[u8]) -> (Raw, u8, bool, Vec<(u8, Vec<u8>)>) {
    let mut raw = Raw::open(port).await;
    raw.send(packet).await;
    let ack = raw.recv().await;
    assert_eq!(ack.kind(), 2, "CONNACK expected");
    let b = ack.body.clone();
    let (p, _) = section(&b[2..]);
    (raw, b[1], b[0] & 1 == 1, parse_props(p))
}

pub struct Pub5 {
    pub topic: String,
    pub pkid: Option<u16>,
    pub retain: bool,
    pub props: Vec<(u8, Vec<u8>)>,
    pub payload: Vec<u8>,
}

pub fn publish_of(p: &RawPacket) -> Pub5 {
    assert_eq!(p.kind(), 3, "PUBLISH expected, got {:?}", p.bytes());
    let first = p.bytes()[0];
    let b = p.body.clone();
    let tl = u16::from_be_bytes([b[0], b[1]]) as usize;
    let topic = String::from_utf8(b[2..2 + tl].to_vec()).unwrap();
    let mut at = 2 + tl;
    let pkid = if first & 0b110 != 0 {
        at += 2;
        Some(u16::from_be_bytes([b[at - 2], b[at - 1]]))
    } else {
        None
    };
    let (props, payload) = section(&b[at..]);
    Pub5 {
        topic,
        pkid,
        retain: first & 1 == 1,
        props: parse_props(props),
        payload: payload.to_vec(),
    }
}
