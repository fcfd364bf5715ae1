//! What goes into the router and what comes out: the one internal model of MQTT that
//! both protocol versions are translated to and from at the connection's edge.

use commitlog::record::Framed;
use commitlog::Record;

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
    /// The client refused a QoS 2 delivery (MQTT 5 PUBREC with a reason code of
    /// 0x80 or more): the exchange ends there, as if completed.
    PubRecRefused {
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
        /// Filters with their options, in order. Invalid filters get a failure code.
        filters: Vec<Subscription>,
        /// Subscription identifier (MQTT 5), given to every filter of the packet.
        id: Option<u32>,
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
        /// A new session expiry interval from the client's DISCONNECT (MQTT 5).
        session_expiry: Option<u32>,
    },
}

/// Session expiry interval meaning "never expires" (also what a 3.1.1 persistent
/// session gets).
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// One filter of a SUBSCRIBE with its options (MQTT 5 §3.8.3.1; a 3.1.1 client gets
/// the defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The topic filter.
    pub filter: String,
    /// Maximum QoS.
    pub qos: QoS,
    /// Do not send this session the messages it published itself.
    pub no_local: bool,
    /// Keep the retain flag a message was published with (else it is cleared, except
    /// for retained messages sent because of the subscription).
    pub retain_as_published: bool,
    /// When to send retained messages.
    pub retain_handling: RetainHandling,
    /// The connection's access control allows it (else it is refused, MQTT 5:
    /// 0x87, 3.1.1: 0x80).
    pub authorized: bool,
}

impl Subscription {
    /// A filter with default options (what a 3.1.1 SUBSCRIBE means).
    #[must_use]
    pub fn new(filter: impl Into<String>, qos: QoS) -> Subscription {
        Subscription {
            filter: filter.into(),
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::OnSubscribe,
            authorized: true,
        }
    }
}

/// When retained messages are sent for a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainHandling {
    /// At every SUBSCRIBE (0).
    OnSubscribe,
    /// Only when the subscription did not exist before (1).
    OnNewSubscription,
    /// Never (2).
    Never,
}

impl Event {
    /// The connection the event is from.
    #[must_use]
    pub fn conn(&self) -> ConnectionId {
        match self {
            Event::Connect { conn, .. }
            | Event::Publish { conn, .. }
            | Event::PubAck { conn, .. }
            | Event::PubRec { conn, .. }
            | Event::PubRecRefused { conn, .. }
            | Event::PubComp { conn, .. }
            | Event::PubRel { conn, .. }
            | Event::Subscribe { conn, .. }
            | Event::Unsubscribe { conn, .. }
            | Event::Pull { conn }
            | Event::Disconnect { conn, .. } => *conn,
        }
    }
}

/// A validated CONNECT.
#[derive(Debug, Clone)]
pub struct Connect {
    /// Client id; empty asks the broker to assign one (clean sessions only).
    pub client_id: String,
    /// Clean start: discard any existing session (3.1.1: clean session).
    pub clean_start: bool,
    /// Seconds the session outlives its connection: 0 ends it with the connection,
    /// [`NEVER_EXPIRES`] keeps it forever (3.1.1: clean session 1 → 0, 0 → never).
    /// A session with an interval above 0 is persistent: journaled, kept on restart.
    pub session_expiry: u32,
    /// Most QoS 1/2 deliveries the client takes unacknowledged (MQTT 5 receive
    /// maximum; 3.1.1: 65535). The router sends at most the lower of this and its
    /// own `inflight_max`.
    pub receive_maximum: u16,
    /// Largest packet the client accepts (MQTT 5); larger messages are not sent to it.
    pub max_packet_size: u32,
    /// The will message, if any.
    pub will: Option<Will>,
    /// Seconds to wait after an abrupt disconnect before publishing the will (MQTT 5);
    /// a reconnect within it cancels the will.
    pub will_delay: u32,
    /// In a cluster, the metadata entry at (or after) which this node owns the client
    /// id: a change of owner applied later ([`crate::PeerEvent::Moved`]) ends the
    /// session here, an earlier one is stale. 0 outside a cluster.
    pub owned_since: u64,
    /// In a cluster, the node that owned the client id before this node claimed
    /// it: a persistent session there carries on here (see `session_move`).
    pub moved_from: Option<mesh::NodeId>,
}

impl Connect {
    /// A CONNECT as MQTT 3.1.1 has it.
    #[must_use]
    pub fn v3(client_id: impl Into<String>, clean_session: bool, will: Option<Will>) -> Connect {
        Connect {
            client_id: client_id.into(),
            clean_start: clean_session,
            session_expiry: if clean_session { 0 } else { NEVER_EXPIRES },
            receive_maximum: u16::MAX,
            max_packet_size: u32::MAX,
            will,
            will_delay: 0,
            owned_since: 0,
            moved_from: None,
        }
    }
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
    /// The broker cannot serve (e.g. its storage is failing).
    ServerUnavailable,
}

/// SUBACK outcome for one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeCode {
    /// Granted at this QoS.
    Granted(QoS),
    /// The filter is not valid (MQTT 5: 0x8F).
    InvalidFilter,
    /// The session holds `subscriptions_max` filters (MQTT 5: 0x97).
    QuotaExceeded,
    /// The connection's access control does not allow it (MQTT 5: 0x87).
    NotAuthorized,
}

/// UNSUBACK outcome for one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsubscribeCode {
    /// Removed.
    Success,
    /// The session had no such subscription (MQTT 5: 0x11).
    NoSubscriptionExisted,
}

/// What became of an inbound QoS 1/2 publish, for its PUBACK/PUBREC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubReason {
    /// Stored, and some subscription matched.
    Success,
    /// Stored, but no subscription matched (MQTT 5: 0x10).
    NoMatchingSubscribers,
    /// Not stored: the log refused the write, e.g. the disk is full (MQTT 5: 0x97;
    /// a 3.1.1 connection has no way to say so and is closed).
    StorageFailure,
    /// Not stored: the connection's access control does not let the client publish
    /// to the topic (MQTT 5: 0x87; 3.1.1 gets a plain ack, as from Mosquitto, and
    /// the message is dropped). Said by the connection, never the router.
    NotAuthorized,
}

impl PubReason {
    /// The message was stored.
    #[must_use]
    pub fn is_success(self) -> bool {
        !matches!(self, PubReason::StorageFailure | PubReason::NotAuthorized)
    }
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
    /// The connection sent more than the router holds for it while its session
    /// moved to this node.
    ServerBusy,
}

/// One message going out to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The stored record (topic, payload, properties): in memory, or, large and read
    /// from a segment, its first bytes in memory and the rest in the segment's file
    /// (for the connection to send with `sendfile`).
    pub record: Record,
    /// Effective QoS: the minimum of published and subscribed.
    pub qos: QoS,
    /// Packet id for QoS 1 and 2.
    pub pkid: Option<PacketId>,
    /// Redelivery of an unacknowledged message.
    pub dup: bool,
    /// The retain flag to send: set for retained messages sent because of a
    /// subscription, and for any retained publish to a retain-as-published one.
    pub retain: bool,
    /// Identifiers of the session's subscriptions that matched (MQTT 5).
    pub subscription_ids: Vec<u32>,
    /// Log records retention removed before this session read them, since its last
    /// delivery (an upper bound of its lost messages: not all would have matched).
    /// MQTT 5 clients are told with a user property.
    pub lost_before: u64,
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
    PubAck(PacketId, PubReason),
    /// PUBREC for an inbound QoS 2 publish, sent after the append.
    PubRec(PacketId, PubReason),
    /// PUBREL for an outbound QoS 2 delivery.
    PubRel(PacketId),
    /// PUBCOMP for an inbound QoS 2 release; `known` is false when no message was
    /// awaiting release under that id (MQTT 5 says so with 0x92, "Packet Identifier
    /// not found": a retransmitted PUBREL whose PUBCOMP was lost, or one for a
    /// session that did not survive).
    PubComp {
        /// The id released.
        pkid: PacketId,
        /// A message was awaiting release under it.
        known: bool,
    },
    /// SUBACK.
    SubAck {
        /// Packet id.
        pkid: PacketId,
        /// One per filter, in order.
        codes: Vec<SubscribeCode>,
    },
    /// UNSUBACK.
    UnsubAck {
        /// Packet id.
        pkid: PacketId,
        /// One per filter, in order.
        codes: Vec<UnsubscribeCode>,
    },
    /// Messages to write out; the connection sends `Event::Pull` when done.
    Deliver(Vec<Delivery>),
    /// Close the connection.
    Close(CloseReason),
}
