//! Who is who in a cluster: nodes, their incarnations, and the logs they write.

use std::fmt;

/// A node of the cluster, `1..=255` (`cluster.node_id`); 0 is never a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u8);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One run of a node: every start opens a new incarnation, and with it a new log, so
/// no log is ever extended by two runs or truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Incarnation(pub u32);

/// A log: the one written by `node` in its `incarnation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogId {
    /// Its only writer.
    pub node: NodeId,
    /// The writer's run.
    pub incarnation: Incarnation,
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.node.0, self.incarnation.0)
    }
}

/// What a link between two nodes carries. Two links per pair of nodes, so that a
/// large batch of records never delays the metadata group's heartbeats behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    /// The metadata group's messages (Raft): small, and late ones cost elections.
    Meta,
    /// Replication: fetches and records.
    Data,
}

impl Channel {
    /// Both channels.
    pub const ALL: [Channel; 2] = [Channel::Meta, Channel::Data];

    /// Its byte on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            Channel::Meta => 1,
            Channel::Data => 2,
        }
    }

    /// The channel a byte names, if any.
    pub fn from_byte(b: u8) -> Option<Channel> {
        match b {
            1 => Some(Channel::Meta),
            2 => Some(Channel::Data),
            _ => None,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Channel::Meta => "meta",
            Channel::Data => "data",
        })
    }
}

/// Which of a run's two replicated streams: its message log, or its session
/// journal (what lets another node carry on a session of this one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stream {
    /// The message log.
    Messages,
    /// The session journal.
    Journal,
}

impl Stream {
    /// Its byte on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            Stream::Messages => 1,
            Stream::Journal => 2,
        }
    }

    /// The stream a byte names, if any.
    pub fn from_byte(b: u8) -> Option<Stream> {
        match b {
            1 => Some(Stream::Messages),
            2 => Some(Stream::Journal),
            _ => None,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Messages => "messages",
            Stream::Journal => "journal",
        })
    }
}
