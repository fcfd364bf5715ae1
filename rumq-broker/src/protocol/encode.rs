//! Everything the broker sends, in the connection's protocol version. The router's
//! replies are the same for every client; only here do they become 3.1.1 or 5.0
//! packets.

use bytes::{BufMut, Bytes, BytesMut};
use commitlog::FileRange;
use router::{Delivery, Layout, PacketId, PubReason, Reply, SubscribeCode, UnsubscribeCode};

use super::alias::OutboundAliases;
use super::framing::{first_byte, packet, publish_first_byte, put_fixed_header, varint_len};
use super::properties::{id, Writer};
use super::reason::{self, return_code};
use super::Version;

/// What an MQTT 5 CONNACK tells the client about the broker (§3.2.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    /// The client id the broker assigned to an empty one.
    pub assigned_client_id: Option<String>,
    /// Keep alive the client must use instead of its own.
    pub server_keep_alive: Option<u16>,
    /// QoS 1/2 publishes the client may have unacknowledged.
    pub receive_maximum: u16,
    /// Largest packet the broker accepts.
    pub max_packet_size: u32,
    /// Topic aliases the client may use.
    pub topic_alias_max: u16,
    /// Whether shared subscriptions are available.
    pub shared_subscriptions: bool,
    /// Why the connection was refused (sent when the client asked for problem
    /// information).
    pub reason_string: Option<String>,
}

/// The user property that tells an MQTT 5 subscriber how many messages retention
/// removed before it could read them (at most; counted in log records).
pub const LOST_PROPERTY: &str = "rumq-messages-lost";

/// An empty MQTT 5 property section: its length, 0.
const NO_PROPERTIES: u8 = 0;

/// Payloads at least this large go out as their own iovec instead of being copied.
const COPY_PAYLOAD_BELOW: usize = 1024;

/// One piece of what is to be written, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Bytes in memory, for a vectored write.
    Bytes(Bytes),
    /// The rest of a large payload the log left in its segment file, to send with
    /// `sendfile` straight from the page cache.
    File(FileRange),
}

impl Chunk {
    /// The bytes, when in memory.
    pub fn in_memory(&self) -> Option<&Bytes> {
        match self {
            Chunk::Bytes(b) => Some(b),
            Chunk::File(_) => None,
        }
    }
}

/// Encodes what the broker sends into a list of buffers for one vectored write:
/// headers and small payloads are gathered in one buffer, large payloads are passed
/// through as the very `Bytes` read from the log, or the range of its file the log
/// left them in.
#[derive(Debug)]
pub struct Encoder {
    version: Version,
    small: BytesMut,
    chunks: Vec<Chunk>,
    /// MQTT 5: the client asked for reason strings (request problem information).
    problem_info: bool,
    /// MQTT 5: topic aliases for what we send, when the client allows any (boxed:
    /// most connections have none, and every idle connection carries its encoder).
    aliases: Option<Box<OutboundAliases>>,
    /// Wall-clock ms, for the message expiry left (set per batch by the connection).
    now_ms: u64,
    /// MQTT 5: the largest packet the client accepts. The router leaves out messages
    /// that would not fit; here, what the broker adds of its own (reason strings,
    /// the lost-messages user property) is left out when it would make a packet too
    /// large, as §3.1.2.11.4 and each ack's "MUST NOT send this property" ask.
    max_packet_size: u32,
    props: Writer,
}

/// What an encoder keeps while its connection is parked: its settings and the
/// topic aliases the client knows, without the (empty) buffers.
#[derive(Debug)]
pub struct IdleEncoder {
    version: Version,
    problem_info: bool,
    max_packet_size: u32,
    aliases: Option<Box<OutboundAliases>>,
}

impl IdleEncoder {
    /// The encoder again.
    pub fn resume(self) -> Encoder {
        Encoder {
            version: self.version,
            problem_info: self.problem_info,
            max_packet_size: self.max_packet_size,
            aliases: self.aliases,
            ..Encoder::new()
        }
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    /// An encoder for a connection whose version is not known yet (3.1.1 packets).
    pub fn new() -> Self {
        Encoder {
            version: Version::V311,
            small: BytesMut::new(),
            chunks: Vec::new(),
            problem_info: true,
            aliases: None,
            now_ms: 0,
            max_packet_size: u32::MAX,
            props: Writer::new(),
        }
    }

    /// Speak `version` from now on; for MQTT 5, with the client's topic alias maximum
    /// and its wish for problem information.
    pub fn set_version(&mut self, version: Version, topic_alias_max: u16, problem_info: bool) {
        self.version = version;
        self.aliases =
            (topic_alias_max > 0).then(|| Box::new(OutboundAliases::new(topic_alias_max)));
        self.problem_info = problem_info;
    }

    /// The client's Maximum Packet Size (MQTT 5 CONNECT; none is `u32::MAX`).
    pub fn set_max_packet_size(&mut self, max: u32) {
        self.max_packet_size = max;
    }

    /// Whether a packet fits the client's maximum size: `body` bytes of variable
    /// header and payload besides a property section holding `props` bytes.
    fn fits(&self, body: usize, props: usize) -> bool {
        let remaining = body + varint_len(props) + props;
        1 + varint_len(remaining) + remaining <= self.max_packet_size as usize
    }

    /// The version packets are encoded in.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Set the wall-clock time used for message expiry.
    pub fn set_now(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// CONNACK with a 3.1.1 return code ([`super::return_code`]).
    pub fn connack(&mut self, session_present: bool, code: u8) {
        self.small.put_slice(&[
            first_byte(packet::CONNACK),
            0x02,
            u8::from(session_present),
            code,
        ]);
    }

    /// MQTT 5 CONNACK with a reason code and the broker's properties.
    pub fn connack_v5(&mut self, session_present: bool, code: u8, p: &ConnAckProperties) {
        let w = &mut self.props;
        if let Some(idv) = &p.assigned_client_id {
            w.string(id::ASSIGNED_CLIENT_ID, idv);
        }
        if let Some(k) = p.server_keep_alive {
            w.u16(id::SERVER_KEEP_ALIVE, k);
        }
        if code == reason::SUCCESS {
            // Maximum QoS is 2: said by leaving the property out (§3.2.2.3.4).
            w.u16(id::RECEIVE_MAXIMUM, p.receive_maximum.max(1))
                .byte(id::RETAIN_AVAILABLE, 1)
                .u32(id::MAXIMUM_PACKET_SIZE, p.max_packet_size)
                .u16(id::TOPIC_ALIAS_MAXIMUM, p.topic_alias_max)
                .byte(id::WILDCARD_SUBSCRIPTION_AVAILABLE, 1)
                .byte(id::SUBSCRIPTION_ID_AVAILABLE, 1)
                .byte(
                    id::SHARED_SUBSCRIPTION_AVAILABLE,
                    u8::from(p.shared_subscriptions),
                );
        }
        if let (Some(r), true) = (&p.reason_string, self.problem_info) {
            // MQTT-3.2.2-19: not if it would make the CONNACK too large.
            if self.fits(2, self.props.len() + Writer::string_size(r)) {
                self.props.string(id::REASON_STRING, r);
            }
        }
        let len = self.props.len();
        put_fixed_header(
            &mut self.small,
            first_byte(packet::CONNACK),
            2 + varint_len(len) + len,
        );
        self.small
            .put_u8(u8::from(session_present && code == reason::SUCCESS));
        self.small.put_u8(code);
        self.props.finish(&mut self.small);
    }

    /// MQTT 5 DISCONNECT from the broker, with a reason string if the client wants
    /// problem information.
    pub fn disconnect_v5(&mut self, code: u8, reason_string: &str) {
        // MQTT-3.14.2-3: not if it would make the DISCONNECT too large.
        if self.problem_info
            && !reason_string.is_empty()
            && self.fits(1, Writer::string_size(reason_string))
        {
            self.props.string(id::REASON_STRING, reason_string);
        }
        let len = self.props.len();
        put_fixed_header(
            &mut self.small,
            first_byte(packet::DISCONNECT),
            1 + varint_len(len) + len,
        );
        self.small.put_u8(code);
        self.props.finish(&mut self.small);
    }

    /// PINGRESP.
    pub fn pingresp(&mut self) {
        self.small.put_slice(&[first_byte(packet::PINGRESP), 0x00]);
    }

    /// An ack of `kind`: the packet id alone.
    fn ack(&mut self, kind: u8, id: PacketId) {
        self.small.put_slice(&[first_byte(kind), 0x02]);
        self.small.put_u16(id.0);
    }

    /// An ack with an MQTT 5 reason code (left out when it is success, §3.4.2.1),
    /// and for a refusal `why` as the reason string if the client wants problem
    /// information and the ack stays within its maximum packet size (MQTT-3.4.2-2,
    /// 3.5.2-2, 3.7.2-2).
    fn ack_v5(&mut self, kind: u8, pkid: PacketId, code: u8, why: &str) {
        if code == reason::SUCCESS {
            return self.ack(kind, pkid);
        }
        if reason::is_error(code) && self.problem_info && self.fits(3, Writer::string_size(why)) {
            self.props.string(id::REASON_STRING, why);
        }
        let len = self.props.len();
        if len == 0 {
            self.small.put_slice(&[first_byte(kind), 0x03]);
            self.small.put_u16(pkid.0);
            self.small.put_u8(code);
            return;
        }
        put_fixed_header(&mut self.small, first_byte(kind), 3 + varint_len(len) + len);
        self.small.put_u16(pkid.0);
        self.small.put_u8(code);
        self.props.finish(&mut self.small);
    }

    fn pub_reason(reason: PubReason) -> u8 {
        match reason {
            PubReason::Success => reason::SUCCESS,
            PubReason::NoMatchingSubscribers => reason::NO_MATCHING_SUBSCRIBERS,
            PubReason::StorageFailure => reason::QUOTA_EXCEEDED,
            PubReason::NotAuthorized => reason::NOT_AUTHORIZED,
        }
    }

    /// Encode a router reply. `ConnAck` and `Close` produce nothing here (the
    /// connection answers them with what it knows); neither does a refused publish
    /// on 3.1.1, which has no way to say so (the connection closes).
    pub fn reply(&mut self, reply: &Reply) {
        let v5 = self.version == Version::V5;
        match reply {
            Reply::ConnAck { .. } | Reply::Close(_) => {}
            Reply::PubAck(id, r) | Reply::PubRec(id, r) => {
                let kind = if matches!(reply, Reply::PubAck(..)) {
                    packet::PUBACK
                } else {
                    packet::PUBREC
                };
                if v5 {
                    let why = match r {
                        PubReason::NotAuthorized => "not authorized to publish to this topic",
                        _ => "the message log refused the write",
                    };
                    self.ack_v5(kind, *id, Self::pub_reason(*r), why);
                } else if *r != PubReason::StorageFailure {
                    self.ack(kind, *id);
                }
            }
            Reply::PubRel(id) => self.ack(packet::PUBREL, *id),
            Reply::PubComp { pkid, known: false } if v5 => {
                let why = "no QoS 2 message awaits release under this packet id";
                self.ack_v5(packet::PUBCOMP, *pkid, reason::PACKET_ID_NOT_FOUND, why);
            }
            Reply::PubComp { pkid, .. } => self.ack(packet::PUBCOMP, *pkid),
            Reply::UnsubAck { pkid, codes } if v5 => self.unsuback_v5(*pkid, codes),
            Reply::UnsubAck { pkid, .. } => self.ack(packet::UNSUBACK, *pkid),
            Reply::SubAck { pkid, codes } => self.suback(*pkid, codes),
            Reply::Deliver(items) => {
                for d in items {
                    self.publish(d);
                }
            }
        }
    }

    /// MQTT 5 UNSUBACK: a reason code per filter (3.1.1's has none).
    fn unsuback_v5(&mut self, pkid: PacketId, codes: &[UnsubscribeCode]) {
        put_fixed_header(
            &mut self.small,
            first_byte(packet::UNSUBACK),
            3 + codes.len(),
        );
        self.small.put_u16(pkid.0);
        self.small.put_u8(NO_PROPERTIES);
        for c in codes {
            self.small.put_u8(match c {
                UnsubscribeCode::Success => reason::SUCCESS,
                UnsubscribeCode::NoSubscriptionExisted => reason::NO_SUBSCRIPTION_EXISTED,
            });
        }
    }

    /// SUBACK: a code per filter, MQTT 5 saying why one was refused.
    fn suback(&mut self, pkid: PacketId, codes: &[SubscribeCode]) {
        let v5 = self.version == Version::V5;
        put_fixed_header(
            &mut self.small,
            first_byte(packet::SUBACK),
            2 + usize::from(v5) + codes.len(),
        );
        self.small.put_u16(pkid.0);
        if v5 {
            self.small.put_u8(NO_PROPERTIES);
        }
        for c in codes {
            self.small.put_u8(match (c, v5) {
                (SubscribeCode::Granted(q), _) => *q as u8,
                (SubscribeCode::InvalidFilter, true) => reason::TOPIC_FILTER_INVALID,
                (SubscribeCode::QuotaExceeded, true) => reason::QUOTA_EXCEEDED,
                (SubscribeCode::NotAuthorized, true) => reason::NOT_AUTHORIZED,
                (_, false) => return_code::SUBSCRIBE_FAILURE,
            });
        }
    }

    /// A PUBLISH for `d`. A record that does not decode (it never should) is skipped
    /// with an error log rather than sent garbled.
    pub fn publish(&mut self, d: &Delivery) {
        // Parsed, not decoded into views: see `Layout` on reference counts.
        let head = d.record.head();
        let m = match Layout::parse(head) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "undecodable stored message skipped");
                return;
            }
        };
        let record: &[u8] = head;
        let payload = &record[m.payload.clone()];
        // Of a record given by reference, the payload's part left in the file.
        let rest = d.record.rest();
        let payload_len = payload.len() + rest.map_or(0, FileRange::len);
        let v5 = self.version == Version::V5;
        let mut topic: &[u8] = &record[m.topic.clone()];
        if v5 {
            let w = &mut self.props;
            if let Some(left) = m.expiry_left(self.now_ms) {
                w.u32(id::MESSAGE_EXPIRY, left);
            }
            if let Some((alias, with_topic)) = self.aliases.as_mut().and_then(|a| a.alias(topic)) {
                w.u16(id::TOPIC_ALIAS, alias);
                if !with_topic {
                    topic = &[];
                }
            }
            w.raw(&record[m.properties.clone()]);
            for sid in &d.subscription_ids {
                w.varint(id::SUBSCRIPTION_ID, *sid);
            }
        }
        let pkid_len = if d.pkid.is_some() { 2 } else { 0 };
        let body = 2 + topic.len() + pkid_len + payload_len;
        if v5 && d.lost_before > 0 {
            self.lost_property(body, d.lost_before);
        }
        let props = if v5 {
            let len = self.props.len();
            varint_len(len) + len
        } else {
            0
        };
        let remaining = body + props;
        let first = publish_first_byte(d.dup, d.qos, d.retain);
        put_fixed_header(&mut self.small, first, remaining);
        // Topics are at most 65535 bytes (validated on publish).
        self.small.put_u16(topic.len() as u16);
        self.small.put_slice(topic);
        if let Some(id) = d.pkid {
            self.small.put_u16(id.0);
        }
        if v5 {
            self.props.finish(&mut self.small);
        }
        if payload_len < COPY_PAYLOAD_BELOW && rest.is_none() {
            self.small.put_slice(payload);
        } else {
            self.chunks.push(Chunk::Bytes(self.small.split().freeze()));
            if !payload.is_empty() {
                self.chunks.push(Chunk::Bytes(head.slice(m.payload)));
            }
            if let Some(rest) = rest {
                self.chunks.push(Chunk::File(rest.clone()));
            }
        }
    }

    /// The retention policy's promise: a session is told what it lost
    /// (docs/architecture.md, Retention); unless the property would make the message
    /// (of `body` bytes without properties) too large for the client (the router
    /// checked the message without it), which would have to be dropped instead.
    fn lost_property(&mut self, body: usize, lost_before: u64) {
        let lost = lost_before.to_string();
        let size = Writer::string_size(LOST_PROPERTY) + Writer::string_size(&lost) - 1;
        if self.fits(body, self.props.len() + size) {
            self.props.user_property(LOST_PROPERTY, &lost);
        } else {
            tracing::debug!(
                lost = lost_before,
                max = self.max_packet_size,
                "lost-messages property left out: over the client's maximum packet size"
            );
        }
    }

    /// True when nothing is waiting to be written.
    pub fn is_empty(&self) -> bool {
        self.small.is_empty() && self.chunks.is_empty()
    }

    /// Everything encoded so far, as buffers to write in order.
    pub fn take(&mut self, out: &mut Vec<Chunk>) {
        out.append(&mut self.chunks);
        if !self.small.is_empty() {
            out.push(Chunk::Bytes(self.small.split().freeze()));
        }
    }

    /// Keep only what outlives the buffers, for a parked connection: only when
    /// nothing is waiting to be written ([`Encoder::is_empty`]), which the caller
    /// checks (what is waiting would be dropped).
    pub fn idle(self) -> IdleEncoder {
        debug_assert!(self.is_empty(), "parked with bytes to write");
        IdleEncoder {
            version: self.version,
            problem_info: self.problem_info,
            max_packet_size: self.max_packet_size,
            aliases: self.aliases,
        }
    }

    /// Drop the buffers' memory (an idle connection keeps none).
    pub fn shrink(&mut self) {
        if self.small.is_empty() {
            self.small = BytesMut::new();
        }
        self.chunks.shrink_to(0);
        self.props = Writer::new();
    }
}
