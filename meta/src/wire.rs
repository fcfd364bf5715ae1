//! How the `mesh` ids travel in Raft entries and snapshots. `mesh` stays free of serde,
//! so the commands name these helpers with `#[serde(with = ...)]`; node id 0 is refused
//! on the way in, as the peer frame decoder refuses it.

use mesh::{Incarnation, LogId, NodeId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

fn node_from(raw: u8) -> Result<NodeId, String> {
    if raw == 0 {
        return Err("node id 0 is never a node".to_string());
    }
    Ok(NodeId(raw))
}

/// `NodeId` as its number.
pub(crate) mod node {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(node: &NodeId, s: S) -> Result<S::Ok, S::Error> {
        node.0.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NodeId, D::Error> {
        node_from(u8::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// `Option<NodeId>` as a number or null.
pub(crate) mod opt_node {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(node: &Option<NodeId>, s: S) -> Result<S::Ok, S::Error> {
        node.map(|n| n.0).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NodeId>, D::Error> {
        match Option::<u8>::deserialize(d)? {
            None => Ok(None),
            Some(raw) => node_from(raw).map(Some).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct LogIdWire {
    node: u8,
    incarnation: u32,
}

/// `LogId` as `{ "node": n, "incarnation": i }`.
pub(crate) mod log {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(log: &LogId, s: S) -> Result<S::Ok, S::Error> {
        LogIdWire {
            node: log.node.0,
            incarnation: log.incarnation.0,
        }
        .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LogId, D::Error> {
        let wire = LogIdWire::deserialize(d)?;
        let node = node_from(wire.node).map_err(serde::de::Error::custom)?;
        Ok(LogId {
            node,
            incarnation: Incarnation(wire.incarnation),
        })
    }
}
