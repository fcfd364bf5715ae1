//! What goes into the router and what comes out: the one internal model of MQTT that
//! both protocol versions are translated to and from at the connection's edge.

use bytes::Bytes;
use commitlog::record::Framed;

use crate::{ConnectionId, PacketId, QoS, TopicId};

/// A request from a connection (or the driver) to the router.
#[derive(Debug, Clone)]
pub enum Event {
    /// A client's CONNECT, already validated and authenticated by its connection.
    Connect {
        /// The connection.
        conn: ConnectionId,
        /// What it asked for.
        connect: Connect,
    },
    /// A PUBLISH from a connected client.
    Publish {
        /// The connection.
        conn: ConnectionId,
        /// Packet id (QoS 1 and 2).
        pkid: Option<PacketId>,
        /// What to append.
        message: Publication,
    },
    /// The client acknowledged a QoS 1 delivery.
    PubAck {
        /// The connection.
        conn: ConnectionId,
        /// Packet id.
        pkid: PacketId,
    },
    /// The client received a QoS 2 delivery.
    PubRec {
        /// The connection.
        conn: ConnectionId,
        /// Packet id.
        pkid: PacketId,
    },
    /// The client releases its QoS 2 publish.
    PubRel {
        /// The connection.
        conn: ConnectionId,
        /// Packet id.
        pkid: PacketId,
    },
    /// The client completed a QoS 2 delivery.
    PubComp {
        /// The connection.
        conn: ConnectionId,
        /// Packet id.
        pkid: PacketId,
    },
    /// SUBSCRIBE.
    Subscribe {
        /// The connection.
        conn: ConnectionId,
        /// Packet id.
        pkid: PacketId,
        /// Filters and requested QoS, in order. Invalid filters get a failure code.
        filters: Vec<(String, QoS)>,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// The connection.
        conn: ConnectionId,
        /// Packet id.
        pkid: PacketId,
        /// Filters.
        filters: Vec<String>,
    },
    /// The connection has written out everything it was given and can take more.
    Pull {
        /// The connection.
        conn: ConnectionId,
    },
    /// The connection is gone.
    Disconnect {
        /// The connection.
        conn: ConnectionId,
        /// Whether the client said goodbye (DISCONNECT) or not.
        reason: DisconnectReason,
    },
}

/// A validated CONNECT.
#[derive(Debug, Clone)]
pub struct Connect {
    /// Client id; empty asks the broker to assign one (clean sessions only).
    pub client_id: String,
    /// Clean session (3.1.1) / clean start with zero expiry.
    pub clean_session: bool,
    /// The will message, if any.
    pub will: Option<Will>,
}

/// A message on its way into the log: a client's PUBLISH, or a will when it fires.
#[derive(Debug, Clone)]
pub struct Publication {
    /// Interned topic name.
    pub topic: TopicId,
    /// QoS as published.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// The message in stored form (see [`crate::Message`]), framed for the log by
    /// the connection (so the checksum is computed off the router thread).
    pub record: Framed,
}

/// A will is the publication a connection leaves behind.
pub type Will = Publication;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT: the will is discarded.
    Normal,
    /// The network connection dropped, keepalive expired, or a protocol error: the will
    /// is published.
    Abrupt,
}

/// CONNACK outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectCode {
    /// Accepted.
    Accepted,
    /// The client id is not allowed (e.g. empty with a persistent session).
    IdentifierRejected,
    /// The broker cannot serve (e.g. its storage is failing).
    ServerUnavailable,
}

/// SUBACK outcome for one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeCode {
    /// Granted at this QoS.
    Granted(QoS),
    /// Refused (invalid filter, or a limit).
    Failure,
}

/// Why the router closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Another connection took over the session (same client id).
    SessionTakenOver,
    /// The commitlog refused a write.
    StorageFailure,
    /// The client broke the protocol in a way only the router could see.
    ProtocolError,
}

/// One message going out to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The stored record (topic, payload, properties).
    pub record: Bytes,
    /// Effective QoS: the minimum of published and subscribed.
    pub qos: QoS,
    /// Packet id for QoS 1 and 2.
    pub pkid: Option<PacketId>,
    /// Redelivery of an unacknowledged message.
    pub dup: bool,
    /// Sent because of a subscription to a retained message.
    pub retain: bool,
}

/// What the router sends to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// CONNACK.
    ConnAck {
        /// Outcome.
        code: ConnectCode,
        /// A stored session was resumed.
        session_present: bool,
        /// The id assigned when the client sent an empty one.
        assigned_client_id: Option<String>,
    },
    /// PUBACK for an inbound QoS 1 publish, sent after the append.
    PubAck(PacketId),
    /// PUBREC for an inbound QoS 2 publish, sent after the append.
    PubRec(PacketId),
    /// PUBREL for an outbound QoS 2 delivery.
    PubRel(PacketId),
    /// PUBCOMP for an inbound QoS 2 release.
    PubComp(PacketId),
    /// SUBACK.
    SubAck {
        /// Packet id.
        pkid: PacketId,
        /// One per filter, in order.
        codes: Vec<SubscribeCode>,
    },
    /// UNSUBACK.
    UnsubAck(PacketId),
    /// Messages to write out; the connection sends `Event::Pull` when done.
    Deliver(Vec<Delivery>),
    /// Close the connection.
    Close(CloseReason),
}
