//! What the peer links bring the router ([`PeerEvent`]) and what it sends its
//! peers ([`PeerReply`]): fetches and records of a log's two streams (its messages
//! and its session journal), and what the metadata group decided.

use bytes::Bytes;
use commitlog::record::Framed;
use commitlog::Offset;
use mesh::{LogId, NodeId, Stream};

/// What a peer link brings in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A follower of this node's log (its messages or its journal) fetches from `from`: it holds everything
    /// below.
    Fetched {
        /// The follower.
        peer: NodeId,
        /// The log asked for.
        log: LogId,
        /// Which of its streams.
        stream: Stream,
        /// Where the follower's replica ends.
        from: Offset,
        /// The most record bytes it takes in one answer.
        bytes_max: u32,
    },
    /// A link to `peer` is (re)established: what was in flight on the one before is
    /// gone, so the fetches to it are sent again and its parked fetch is dropped.
    LinkUp {
        /// The peer.
        peer: NodeId,
    },
    /// A writer's answer to this node's fetch: records from `base`, checked by the
    /// link (see [`Framed::split`]), and the writer's commit.
    Replicated {
        /// The log.
        log: LogId,
        /// Which of its streams.
        stream: Stream,
        /// The offset of the first record.
        base: Offset,
        /// Everything below is held by `ack_copies` nodes.
        commit: Offset,
        /// The records, framed as stored.
        records: Vec<Framed>,
    },
    /// A peer's answer to this node's fetch of a log it does not write: what its
    /// replica holds from `base` (see `relay`: a gone writer's logs, synced
    /// between the survivors).
    Relayed {
        /// The peer.
        peer: NodeId,
        /// The log.
        log: LogId,
        /// Which of its streams.
        stream: Stream,
        /// The offset of the first record.
        base: Offset,
        /// What the writer told that peer is committed.
        commit: Offset,
        /// The records, framed as stored.
        records: Vec<Framed>,
    },
    /// The cluster's metadata applied a new owner of `client_id`, `node`, at entry
    /// `at`: if that is not this node, a session it holds here ends (its connection
    /// closed as taken over).
    Moved {
        /// The session's client id.
        client_id: String,
        /// Its new owner.
        node: NodeId,
        /// The metadata entry.
        at: u64,
    },
    /// The cluster's metadata applied a change of the nodes with members of the
    /// shared subscription group `group` (`$share/{name}/{filter}`): now `nodes`.
    SharedNodes {
        /// The group.
        group: String,
        /// The nodes with members of it.
        nodes: Vec<NodeId>,
    },
    /// This node took `client_id` from gone node `from` in the metadata, as
    /// `Router::drain_will_claims` asked: its will there is published here.
    WillClaimed {
        /// The client id.
        client_id: String,
        /// The node it was taken from.
        from: NodeId,
    },
    /// `peer` is done with `log`, which never grows again (see `retire`).
    Done {
        /// The peer.
        peer: NodeId,
        /// The log.
        log: LogId,
    },
}

/// What the router sends a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerReply {
    /// Records of this node's log from `base` (payloads: the link frames them), and
    /// its commit.
    Records {
        /// The log.
        log: LogId,
        /// Which of its streams.
        stream: Stream,
        /// The offset of the first record.
        base: Offset,
        /// Everything below is held by `ack_copies` nodes.
        commit: Offset,
        /// The payloads, in order.
        records: Vec<Bytes>,
    },
    /// Ask the writer of `log` for the records of its `stream` from `from`.
    Fetch {
        /// The log.
        log: LogId,
        /// Which of its streams.
        stream: Stream,
        /// Where this node's replica ends.
        from: Offset,
    },
    /// This node is done with `log`, which never grows again (see `retire`).
    Done {
        /// The log.
        log: LogId,
    },
}
