//! Topic interning: topic names become dense `TopicId`s so the router's maps are keyed
//! by integers. Shared (behind an `Arc`) by the connection tasks, which intern as they
//! parse, and the router, which looks names up; a read lock on the hot path.
//!
//! Ids are never freed while the broker runs; `topics_max` bounds the table so that a
//! client publishing to a new topic each time cannot grow it without limit.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::TopicId;

/// The table is full: `topics_max` distinct topics exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the broker already has the maximum of {max} distinct topics")]
pub struct TopicsFull {
    /// The configured limit.
    pub max: usize,
}

#[derive(Debug, Default)]
struct Table {
    ids: HashMap<Arc<str>, TopicId>,
    names: Vec<Arc<str>>,
}

/// Interns topic names.
#[derive(Debug)]
pub struct TopicInterner {
    table: RwLock<Table>,
    topics_max: usize,
}

impl TopicInterner {
    /// An empty table that holds at most `topics_max` topics.
    #[must_use]
    pub fn new(topics_max: usize) -> Self {
        TopicInterner {
            table: RwLock::new(Table::default()),
            topics_max,
        }
    }

    /// The id of `name`, adding it if new.
    pub fn intern(&self, name: &str) -> Result<TopicId, TopicsFull> {
        // A poisoned lock means a panic elsewhere mid-update; the table itself is
        // still consistent (we never leave it half-updated), so carry on.
        if let Some(id) = self
            .table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .ids
            .get(name)
        {
            return Ok(*id);
        }
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = t.ids.get(name) {
            return Ok(*id);
        }
        if t.names.len() >= self.topics_max {
            return Err(TopicsFull {
                max: self.topics_max,
            });
        }
        // names.len() < topics_max <= u32::MAX as configured.
        let id = TopicId(u32::try_from(t.names.len()).map_err(|_| TopicsFull {
            max: self.topics_max,
        })?);
        let name: Arc<str> = Arc::from(name);
        t.names.push(name.clone());
        t.ids.insert(name, id);
        Ok(id)
    }

    /// The name of `id`.
    #[must_use]
    pub fn name(&self, id: TopicId) -> Option<Arc<str>> {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .names
            .get(id.0 as usize)
            .cloned()
    }

    /// Topics interned so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .names
            .len()
    }

    /// True when no topic was interned yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        assert_eq!(t.name(b).as_deref(), Some("b"));
    }
}
