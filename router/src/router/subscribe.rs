//! SUBSCRIBE and UNSUBSCRIBE: the filter tree and shared groups, the retained
//! messages a new subscription is sent, and what a departing shared-group member
//! hands back.

use super::deliver::availability;
use super::Router;
use bytes::Bytes;

use crate::event::{Reply, RetainHandling, SubscribeCode, Subscription, UnsubscribeCode};
use crate::journal::Op;
use crate::storage::Storage;
use crate::subscriptions::{Grant, SubOptions};
use crate::{topic, ConnectionId, Layout, PacketId, QoS, SessionId};

impl<S: Storage> Router<S> {
    /// Remove one subscription of `sid` from the tree or its shared group.
    /// Subscribe `sid` to `filter`: in its shared group or in the tree. True if
    /// the filter is shared.
    pub(super) fn subscribe_filter(&mut self, filter: &str, sid: SessionId, grant: Grant) -> bool {
        let shared = topic::shared(filter).is_some();
        if shared {
            self.shared.join(filter, sid, grant);
        } else {
            self.tree.insert(filter, sid, grant);
        }
        shared
    }

    pub(super) fn unsubscribe_filter(&mut self, filter: &str, sid: SessionId) {
        if topic::shared(filter).is_some() {
            self.shared.leave(filter, sid);
        } else {
            self.tree.remove(filter, sid);
        }
    }

    /// A shared group member's connection is going: what it got through the group
    /// and has not acknowledged goes to other members (in-flight QoS 2 messages
    /// already PUBREC'd stay: the client has them).
    pub(super) fn hand_back_shared(&mut self, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let (items, freed) = s.release_shared();
        if items.is_empty() {
            return;
        }
        if !s.clean {
            for pkid in freed {
                self.journal.push(&Op::Acked { sid: sid.0, pkid });
            }
        }
        for q in items {
            let Some(gid) = q.shared else {
                continue;
            };
            let sessions = &self.sessions;
            let queue_max = self.config.session_queue_max;
            let picked = self.shared.pick(gid, Some(sid), |x| {
                availability(sessions.get(&x).map(|s| &**s), q.pos.log(), queue_max)
            });
            match picked.and_then(|(other, _)| Some(other).zip(self.sessions.get_mut(&other))) {
                Some((other, o)) if o.conn.is_some() || q.qos != QoS::AtMostOnce => {
                    o.adopt(q);
                    if o.ready(&mut self.credit_wanted) {
                        self.wake.push(other);
                    }
                }
                _ => {
                    self.stats.shared_dropped += 1;
                    tracing::warn!(position = %q.pos, "a shared subscription message left by a departing member has no other member to take it; dropped");
                }
            }
        }
    }

    pub(super) fn subscribe(
        &mut self,
        conn: ConnectionId,
        pkid: PacketId,
        filters: Vec<Subscription>,
        id: Option<u32>,
    ) {
        let Some(sid) = self.by_conn.get(&conn).copied() else {
            return;
        };
        let mut codes = Vec::with_capacity(filters.len());
        let mut retained = Vec::new();
        for sub in filters {
            let code = self.subscribe_one(conn, sid, sub, id, &mut retained);
            codes.push(code);
        }
        self.matches.clear();
        self.reply(conn, Reply::SubAck { pkid, codes });
        if let Some(s) = self.sessions.get_mut(&sid) {
            if !s.clean {
                for (record, qos) in &retained {
                    self.journal.push(&Op::Pending {
                        sid: sid.0,
                        qos: *qos,
                        record: record.clone(),
                    });
                }
            }
            s.retained.extend(retained);
            let pending = !s.retained.is_empty() || !s.system.is_empty();
            if pending && s.ready(&mut self.credit_wanted) {
                self.wake.push(sid);
            }
        }
        self.deliver_woken();
    }

    /// One filter of a SUBSCRIBE: validated, within the session's limit, added (or
    /// its options replaced), journaled; the retained messages it is to be sent are
    /// added to `retained`.
    fn subscribe_one(
        &mut self,
        conn: ConnectionId,
        sid: SessionId,
        sub: Subscription,
        id: Option<u32>,
        retained: &mut Vec<(Bytes, QoS)>,
    ) -> SubscribeCode {
        let filter = sub.filter;
        if topic::validate_filter(&filter).is_err() {
            return SubscribeCode::InvalidFilter;
        }
        if !sub.authorized {
            return SubscribeCode::NotAuthorized;
        }
        let existed = self
            .sessions
            .get(&sid)
            .is_some_and(|s| s.filters.contains_key(&filter));
        // A new filter past the per-session limit is refused (a replaced one is
        // not new): every subscription costs memory in the tree and on each match.
        let full = self
            .sessions
            .get(&sid)
            .is_some_and(|s| s.filters.len() >= self.config.subscriptions_max && !existed);
        if full {
            tracing::warn!(%conn, filter, max = self.config.subscriptions_max, "subscription refused: limit reached");
            return SubscribeCode::QuotaExceeded;
        }
        let options = SubOptions {
            qos: sub.qos,
            no_local: sub.no_local,
            retain_as_published: sub.retain_as_published,
            id,
        };
        let is_shared = self.subscribe_filter(&filter, sid, options.grant());
        // Retained messages are not sent for shared subscriptions (§4.8.2).
        let send_retained = !is_shared
            && match sub.retain_handling {
                RetainHandling::OnSubscribe => true,
                RetainHandling::OnNewSubscription => !existed,
                RetainHandling::Never => false,
            };
        if send_retained {
            for (name, record) in &self.retained {
                if topic::matches(&filter, name) {
                    let msg_qos = Layout::parse(record).map_or(QoS::AtMostOnce, |m| m.qos);
                    retained.push((record.clone(), msg_qos.min(sub.qos)));
                }
            }
            let system = self.system_retained_for(&filter);
            if let Some(s) = self.sessions.get_mut(&sid) {
                for record in system {
                    s.push_system(record, true);
                }
            }
        }
        if let Some(s) = self.sessions.get_mut(&sid) {
            if !s.clean {
                self.journal.push(&Op::Subscribe {
                    sid: sid.0,
                    filter: filter.clone(),
                    options,
                });
            }
            s.filters.insert(filter, options);
        }
        SubscribeCode::Granted(sub.qos)
    }

    pub(super) fn unsubscribe(&mut self, conn: ConnectionId, pkid: PacketId, filters: Vec<String>) {
        let Some(sid) = self.by_conn.get(&conn).copied() else {
            return;
        };
        let mut codes = Vec::with_capacity(filters.len());
        for f in &filters {
            self.unsubscribe_filter(f, sid);
            let mut code = UnsubscribeCode::NoSubscriptionExisted;
            if let Some(s) = self.sessions.get_mut(&sid) {
                if s.filters.remove(f).is_some() {
                    code = UnsubscribeCode::Success;
                    if !s.clean {
                        self.journal.push(&Op::Unsubscribe {
                            sid: sid.0,
                            filter: f.clone(),
                        });
                    }
                }
            }
            codes.push(code);
        }
        self.matches.clear();
        self.reply(conn, Reply::UnsubAck { pkid, codes });
    }
}
