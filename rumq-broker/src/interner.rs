//! Topic interning: topic names become dense `TopicId`s, so the router's match cache
//! is keyed by integers. Shared (behind an `Arc`) by the connection tasks, which
//! intern as they parse (a read lock on the hot path); the router never sees the
//! table: it reads a topic's name from the message's record when it needs it.
//!
//! Ids are never freed while the broker runs; `topics_max` bounds the table so that a
//! client publishing to a new topic each time cannot grow it without limit.

use std::collections::HashMap;
use std::sync::RwLock;

use router::TopicId;

/// The table is full: `topics_max` distinct topics exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the broker already has the maximum of {max} distinct topics")]
pub struct TopicsFull {
    /// The configured limit.
    pub max: usize,
}

/// Interns topic names.
#[derive(Debug)]
pub struct TopicInterner {
    ids: RwLock<HashMap<Box<str>, TopicId>>,
    topics_max: usize,
}

impl TopicInterner {
    /// An empty table that holds at most `topics_max` topics.
    #[must_use]
    pub fn new(topics_max: usize) -> Self {
        TopicInterner {
            ids: RwLock::new(HashMap::new()),
            topics_max,
        }
    }

    /// The id of `name`, adding it if new (ids are handed out densely from 0).
    pub fn intern(&self, name: &str) -> Result<TopicId, TopicsFull> {
        // A poisoned lock means a panic elsewhere mid-update; the table itself is
        // still consistent (we never leave it half-updated), so carry on.
        if let Some(id) = self.ids.read().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Ok(*id);
        }
        let mut ids = self.ids.write().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = ids.get(name) {
            return Ok(*id);
        }
        let full = TopicsFull {
            max: self.topics_max,
        };
        if ids.len() >= self.topics_max {
            return Err(full);
        }
        let id = TopicId(u32::try_from(ids.len()).map_err(|_| full)?);
        ids.insert(name.into(), id);
        Ok(id)
    }
}

impl TopicInterner {
    /// The topics interned whose names start with `prefix`, with their ids (for the
    /// admin API; a copy of at most `topics_max` names, taken under the read lock).
    pub fn with_prefix(&self, prefix: &str) -> Vec<(Box<str>, TopicId)> {
        let ids = self.ids.read().unwrap_or_else(|e| e.into_inner());
        ids.iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, id)| (name.clone(), *id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_and_bounds() {
        let t = TopicInterner::new(2);
        let a = t.intern("a").unwrap();
        assert_eq!(t.intern("a").unwrap(), a);
        let b = t.intern("b").unwrap();
        assert_ne!(a, b);
        assert_eq!(t.intern("c"), Err(TopicsFull { max: 2 }));
        assert_eq!(t.intern("b").unwrap(), b);
    }
}
