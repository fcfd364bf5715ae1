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
