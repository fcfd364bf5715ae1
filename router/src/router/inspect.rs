//! What the admin API reads: sessions, subscriptions and topics, a page at a time,
//! as plain data. Read-only; the driver runs these on the router's thread between
//! iterations, like a metrics scrape.

use std::ops::Bound;

use serde::Serialize;

use super::Router;
use crate::storage::Storage;
use crate::{topic, TopicId};

/// One session, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// The client id.
    pub client_id: String,
    /// A connection is attached.
    pub connected: bool,
    /// Ends with its connection (clean start / clean session).
    pub clean: bool,
    /// Seconds it outlives its connection (`u32::MAX`: never expires).
    pub expiry_secs: u32,
    /// Its subscriptions.
    pub subscriptions: usize,
    /// Messages matched and waiting to be sent (more may wait in the log for a
    /// session that fell behind: `behind`).
    pub queued: usize,
    /// It fell behind and reads its messages from the log.
    pub behind: bool,
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub inflight: usize,
    /// Inbound QoS 2 messages received and not yet released.
    pub incoming_qos2: usize,
}

/// One subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionInfo {
    /// Whose.
    pub client_id: String,
    /// The filter, `$share/{group}/` included for a shared one.
    pub filter: String,
    /// Maximum QoS.
    pub qos: u8,
    /// MQTT 5 options.
    pub no_local: bool,
    /// MQTT 5 options.
    pub retain_as_published: bool,
    /// MQTT 5 subscription identifier.
    pub id: Option<u32>,
}

/// Which subscriptions a page lists.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubscriptionQuery<'a> {
    /// Only this filter, exactly.
    pub filter: Option<&'a str>,
    /// Only filters that match this topic name (who gets a message published to it;
    /// a shared subscription's filter is matched without its `$share/{group}/`).
    pub topic: Option<&'a str>,
}

/// One topic: messages published to it here, and whether one is retained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicInfo {
    /// The name.
    pub topic: String,
    /// Messages published to it on this node since the broker started.
    pub messages: u64,
    /// A retained message is held for it.
    pub retained: bool,
}

/// In a cluster: where this node's log and its replicas of the others' stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeshStatus {
    /// The log this node writes in this run (`node.incarnation`).
    pub log: String,
    /// Its head: the next offset to be written.
    pub head: u64,
    /// Below this, `ack_copies` nodes hold every record (acknowledged).
    pub commit: u64,
    /// Each follower's node id and how many records it is behind the head.
    pub followers: Vec<(u8, u64)>,
    /// Each replica held here: its log, its head here, the commit its writer told.
    pub replicas: Vec<(String, u64, u64)>,
}

impl<S: Storage> Router<S> {
    /// In a cluster, where this node's log and its replicas stand.
    pub fn mesh_status(&self) -> Option<MeshStatus> {
        let head = self.storage.head();
        self.mesh.as_deref().map(|m| m.status(head))
    }

    /// Sessions in client id order from `offset`, at most `limit`; and how many
    /// there are.
    pub fn sessions_page(&self, offset: usize, limit: usize) -> (usize, Vec<SessionInfo>) {
        let page = self
            .by_client
            .values()
            .skip(offset)
            .take(limit)
            .filter_map(|sid| self.session_info_by_id(*sid))
            .collect();
        (self.by_client.len(), page)
    }

    /// The session of `client_id`.
    pub fn session_info(&self, client_id: &str) -> Option<SessionInfo> {
        self.session_info_by_id(*self.by_client.get(client_id)?)
    }

    fn session_info_by_id(&self, sid: crate::SessionId) -> Option<SessionInfo> {
        let s = self.sessions.get(&sid)?;
        Some(SessionInfo {
            client_id: s.client_id.to_string(),
            connected: s.conn.is_some(),
            clean: s.clean,
            expiry_secs: s.expiry_secs,
            subscriptions: s.filters.len(),
            queued: s.queue.len() + s.retained.len() + s.system.len(),
            behind: !s.behind.is_empty(),
            inflight: s.inflight.len(),
            incoming_qos2: s.incoming_qos2.len(),
        })
    }

    /// The subscriptions `query` selects, in client id then filter order, from
    /// `offset`, at most `limit`; and how many it selects.
    pub fn subscriptions_page(
        &self,
        query: SubscriptionQuery<'_>,
        offset: usize,
        limit: usize,
    ) -> (usize, Vec<SubscriptionInfo>) {
        let selected = self
            .by_client
            .values()
            .filter_map(|sid| self.sessions.get(sid))
            .flat_map(|s| {
                s.filters
                    .iter()
                    .map(move |(filter, options)| (s, filter, options))
            });
        let selected = selected.filter(|(_, filter, _)| {
            query.filter.is_none_or(|f| f == filter.as_str())
                && query.topic.is_none_or(|name| {
                    let inner = topic::shared(filter).map_or(filter.as_str(), |(_, f)| f);
                    topic::matches(inner, name)
                })
        });
        let mut total = 0;
        let mut page = Vec::new();
        for (s, filter, options) in selected {
            if total >= offset && page.len() < limit {
                page.push(SubscriptionInfo {
                    client_id: s.client_id.to_string(),
                    filter: filter.clone(),
                    qos: options.qos as u8,
                    no_local: options.no_local,
                    retain_as_published: options.retain_as_published,
                    id: options.id,
                });
            }
            total += 1;
        }
        (total, page)
    }

    /// The topics starting with `prefix`, in name order, from `offset`, at most
    /// `limit`, and how many there are: each of `interned` (names with the ids the
    /// connections interned them as, **sorted by name**) and each retained topic,
    /// with the messages published to it here and whether one is retained. Only the
    /// page is built: the rest is walked and counted (two sorted runs merged).
    pub fn topics(
        &self,
        prefix: &str,
        interned: &[(Box<str>, TopicId)],
        (offset, limit): (usize, usize),
    ) -> (usize, Vec<TopicInfo>) {
        let mut retained = self
            .retained
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .map(|(name, _)| &**name)
            .take_while(|name| name.starts_with(prefix))
            .peekable();
        let mut interned = interned
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .peekable();
        let (mut total, mut page) = (0, Vec::new());
        loop {
            let next = match (retained.peek(), interned.peek()) {
                (None, None) => break,
                (Some(r), Some((i, id))) if **r == **i => {
                    let id = *id;
                    retained.next();
                    interned.next().map(|(name, _)| (&**name, Some(id)))
                }
                (Some(r), Some((i, _))) if **r < **i => retained.next().map(|n| (n, None)),
                (Some(_), None) => retained.next().map(|n| (n, None)),
                _ => interned.next().map(|(name, id)| (&**name, Some(*id))),
            };
            let Some((name, id)) = next else { break };
            if total >= offset && page.len() < limit {
                page.push(self.topic_info(name, id));
            }
            total += 1;
        }
        (total, page)
    }

    fn topic_info(&self, name: &str, id: Option<TopicId>) -> TopicInfo {
        let messages = id.map_or(0, |id| {
            let i = usize::try_from(id.0).unwrap_or(usize::MAX);
            self.topic_messages.get(i).copied().unwrap_or(0)
        });
        TopicInfo {
            topic: name.to_owned(),
            messages,
            retained: self.retained.contains_key(name),
        }
    }

    /// The most messages any connected session has queued, and in flight: the
    /// sessions a slow client holds back.
    pub fn backlog_max(&self) -> (usize, usize) {
        self.sessions
            .values()
            .filter(|s| s.conn.is_some())
            .fold((0, 0), |(queued, inflight), s| {
                (
                    queued.max(s.queue.len() + s.retained.len()),
                    inflight.max(s.inflight.len()),
                )
            })
    }
}
