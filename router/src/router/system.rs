//! `$SYS` topics: the broker's own state, published by the driver every
//! `sys_interval_secs` (the router reads no clock and knows nothing of the edge's
//! counters, so the driver composes them). They are retained, but never enter the
//! message log or the session journal: they are regenerated, so a restart starts
//! without them until the first round. Each goes to the online sessions whose
//! filters match it, at QoS 0, through a small per-session queue that holds the
//! newest value of each topic only (so it is bounded by the number of `$SYS`
//! topics, whatever a slow subscriber does), ahead of the session's other messages.

use bytes::Bytes;

use super::Router;
use crate::message::NewMessage;
use crate::storage::Storage;
use crate::{topic, Layout, QoS};

/// The prefix every system topic has.
pub const SYSTEM_PREFIX: &str = "$SYS/";

/// Whether `topic` is the broker's own: `$SYS` or under it. Clients may not publish
/// there.
pub fn is_system_topic(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with(SYSTEM_PREFIX)
}

impl<S: Storage> Router<S> {
    /// Publish `payload`, retained, on the system topic `topic` (which starts with
    /// `$SYS/`; any other name, or a wildcard, is ignored and logged).
    pub fn publish_system(&mut self, topic: &str, payload: &[u8]) {
        if !topic.starts_with(SYSTEM_PREFIX) || topic::validate_name(topic).is_err() {
            tracing::warn!(topic, "not a $SYS topic name; not published");
            return;
        }
        let time_ms = super::epoch_ms(self.now);
        let Ok(record) =
            NewMessage::new(QoS::AtMostOnce, true, time_ms, topic, payload).try_encode()
        else {
            tracing::warn!(topic, "$SYS payload too long; not published");
            return;
        };
        self.system_retained.insert(topic.into(), record.clone());
        let mut matched = Vec::new();
        self.tree.matches(topic, &mut matched);
        for (sid, grant) in matched {
            let Some(s) = self.sessions.get_mut(&sid) else {
                continue;
            };
            if s.conn.is_none() {
                continue;
            }
            // Sent because of a subscription that exists: retained only when the
            // subscription keeps the flag as published (§3.3.1.3).
            s.push_system(record.clone(), grant.retain_as_published);
            if s.ready(&mut self.credit_wanted) {
                self.wake.push(sid);
            }
        }
        self.deliver_woken();
    }

    /// The retained system messages a new subscription to `filter` is sent.
    pub(super) fn system_retained_for(&self, filter: &str) -> Vec<Bytes> {
        if !filter.starts_with('$') {
            return Vec::new();
        }
        self.system_retained
            .iter()
            .filter(|(name, _)| topic::matches(filter, name))
            .map(|(_, record)| record.clone())
            .collect()
    }

    /// System topics held, retained.
    pub fn system_topic_count(&self) -> usize {
        self.system_retained.len()
    }
}

/// The topic of a system record (the router made it: it parses).
pub(crate) fn record_topic(record: &[u8]) -> Option<&[u8]> {
    Layout::parse(record).ok().map(|l| &record[l.topic])
}
