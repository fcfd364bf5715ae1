//! MQTT 5 topic aliases (§3.3.2.3.4): a number standing for a topic name on one
//! connection, set by sending both once. Each direction has its own table, bounded
//! by the maximum the receiving side announced in CONNECT / CONNACK.

use std::collections::HashMap;

use bytes::Bytes;

use super::{ProtocolError, TopicName};

/// Aliases the client set for its PUBLISHes, at most the maximum we announced.
#[derive(Debug, Default)]
pub struct InboundAliases {
    max: u16,
    topics: HashMap<u16, TopicName>,
}

impl InboundAliases {
    /// A table for up to `max` aliases (0: the client may not use any).
    pub fn new(max: u16) -> Self {
        InboundAliases {
            max,
            topics: HashMap::new(),
        }
    }

    /// The topic of a PUBLISH on a connection that may use no aliases (MQTT 3.1.1).
    pub fn resolve_without(
        topic: TopicName,
        alias: Option<u16>,
    ) -> Result<TopicName, ProtocolError> {
        match alias {
            Some(_) => Err(ProtocolError::TopicAliasInvalid),
            None if topic.is_empty() => Err(ProtocolError::Violation(
                "empty topic without a topic alias",
            )),
            None => Ok(topic),
        }
    }

    /// The topic of a PUBLISH: `topic` itself (remembering it under `alias`, if
    /// given), or, when `topic` is empty, the one `alias` stands for.
    pub fn resolve(
        &mut self,
        topic: TopicName,
        alias: Option<u16>,
    ) -> Result<TopicName, ProtocolError> {
        let Some(alias) = alias else {
            return Self::resolve_without(topic, None);
        };
        if alias == 0 || alias > self.max {
            return Err(ProtocolError::TopicAliasInvalid);
        }
        if topic.is_empty() {
            return self
                .topics
                .get(&alias)
                .cloned()
                .ok_or(ProtocolError::TopicAliasInvalid);
        }
        // A copy: the packet's buffer is not kept alive by the table.
        self.topics.insert(alias, TopicName::from(topic.as_str()));
        Ok(topic)
    }
}

/// Aliases we set for the PUBLISHes we send, at most the client's maximum. Once all
/// are taken, further topics go out in full (aliases are never reassigned, so a
/// client never sees one change meaning).
#[derive(Debug, Default)]
pub struct OutboundAliases {
    max: u16,
    by_topic: HashMap<Bytes, u16>,
}

impl OutboundAliases {
    /// A table for up to `max` aliases (0: none).
    pub fn new(max: u16) -> Self {
        OutboundAliases {
            max,
            by_topic: HashMap::new(),
        }
    }

    /// The alias to send `topic` with, and whether the topic must go along (the
    /// first time). `None`: send the topic without an alias.
    pub fn alias(&mut self, topic: &[u8]) -> Option<(u16, bool)> {
        if let Some(a) = self.by_topic.get(topic) {
            return Some((*a, false));
        }
        let next = u16::try_from(self.by_topic.len() + 1).ok()?;
        if next > self.max {
            return None;
        }
        // A copy: the topic is a view into a log read buffer, which the table must
        // not keep alive for the life of the connection.
        self.by_topic.insert(Bytes::copy_from_slice(topic), next);
        Some((next, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_aliases_are_set_used_and_bounded() {
        let mut a = InboundAliases::new(2);
        assert_eq!(a.resolve("a/b".into(), Some(1)).unwrap().as_str(), "a/b");
        assert_eq!(
            a.resolve(TopicName::default(), Some(1)).unwrap().as_str(),
            "a/b"
        );
        // Reassigned to another topic.
        assert_eq!(a.resolve("c".into(), Some(1)).unwrap().as_str(), "c");
        assert_eq!(
            a.resolve(TopicName::default(), Some(1)).unwrap().as_str(),
            "c"
        );
        assert_eq!(
            a.resolve(TopicName::default(), Some(2)),
            Err(ProtocolError::TopicAliasInvalid),
            "never set"
        );
        assert_eq!(
            a.resolve("x".into(), Some(3)),
            Err(ProtocolError::TopicAliasInvalid),
            "above the maximum"
        );
        assert!(matches!(
            a.resolve(TopicName::default(), None),
            Err(ProtocolError::Violation(_))
        ));
        assert_eq!(
            InboundAliases::new(0).resolve("x".into(), Some(1)),
            Err(ProtocolError::TopicAliasInvalid)
        );
    }

    #[test]
    fn outbound_aliases_fill_up_then_send_topics() {
        let mut a = OutboundAliases::new(2);
        let t = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert_eq!(a.alias(&t("a")), Some((1, true)));
        assert_eq!(a.alias(&t("a")), Some((1, false)));
        assert_eq!(a.alias(&t("b")), Some((2, true)));
        assert_eq!(a.alias(&t("c")), None);
        assert_eq!(a.alias(&t("b")), Some((2, false)));
        assert_eq!(OutboundAliases::new(0).alias(&t("a")), None);
    }
}
