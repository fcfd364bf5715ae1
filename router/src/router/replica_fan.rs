//! What a replica offers this node's sessions: its committed records, in order,
//! a bounded number per call, each matched by the topic it holds; fences kept
//! (see `fence`).

use bytes::Bytes;
use commitlog::{Offset, ReadLimits};
use mesh::LogId;

use super::fence::Fence;
use super::publish::{beyond_positions, offer, offer_to, Offered};
use super::replication::share_key;
use super::{epoch_ms, Router};
use crate::storage::Storage;
use crate::{LogRef, Message, Position};

/// Records fanned out per replica per call: a large catch-up is spread over
/// flushes instead of stalling one.
const FAN_OUT_RECORDS_MAX: usize = 4096;

impl<S: Storage> Router<S> {
    /// Offer replica `i`'s newly committed records to the sessions they match.
    pub(super) fn fan_out_replica(&mut self, i: usize) {
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        let Some(r) = mesh.replicas.get(i) else {
            return;
        };
        if r.fanned >= r.commit {
            return;
        }
        let mut records = Vec::new();
        let limits = ReadLimits {
            records_max: FAN_OUT_RECORDS_MAX
                .min(usize::try_from(r.commit.distance_from(r.fanned)).unwrap_or(usize::MAX)),
            bytes_max: 16 * 1024 * 1024,
        };
        let (first, log) = match r.storage.read(r.fanned, limits, &mut records) {
            Ok(batch) => (batch.first, r.id),
            Err(commitlog::Error::OffsetOutOfRange { earliest, .. }) => {
                // Retention took what was not offered (a copy kept from an earlier
                // run, read from where it is known committed): on from its earliest.
                if let Some(r) = self.mesh.as_deref_mut().and_then(|m| m.replicas.get_mut(i)) {
                    r.fanned = earliest.max(r.fanned);
                    r.commit = r.commit.max(r.fanned);
                }
                return self.fan_out_replica(i);
            }
            Err(e) => {
                tracing::error!(log = %r.id, from = %r.fanned, error = %e, "cannot read a replica to fan out");
                return;
            }
        };
        let Ok(at) = u16::try_from(i + 1) else {
            return;
        };
        let mut offset = first;
        for record in &records {
            if let Some(f) = Fence::decode(record) {
                if !self.fence_passes(f) {
                    break;
                }
                self.pass_fence(LogRef(at), offset, f);
            } else {
                self.offer_replicated((LogRef(at), log), offset, record);
            }
            offset = offset.add(1);
        }
        let mut waited_on = false;
        if let Some(r) = self.mesh.as_deref_mut().and_then(|m| m.replicas.get_mut(i)) {
            r.fanned = offset.max(r.fanned);
            waited_on = r.waited_on.replace(false);
        }
        if waited_on {
            let wake = (self.sessions.iter())
                .filter(|(_, s)| s.cursor(LogRef(at)).is_some())
                .map(|(sid, _)| *sid);
            self.wake.extend(wake);
        }
        tracing::trace!(%log, to = %offset, "replica fanned out");
    }

    /// Offer one committed record of a replica: matched by the topic it holds.
    fn offer_replicated(&mut self, (log, id): (LogRef, LogId), offset: Offset, record: &Bytes) {
        let Ok(m) = Message::decode(record) else {
            tracing::warn!(%offset, "undecodable record in a replica; not offered");
            return;
        };
        if m.retain {
            self.apply_retained(record, (log, offset));
        }
        let started = (self.mesh.as_deref())
            .filter(|mesh| {
                let i = usize::from(log.0).checked_sub(1);
                i.and_then(|i| mesh.replicas.get(i))
                    .is_some_and(|r| r.history)
            })
            .map_or(0, |mesh| epoch_ms(mesh.started()));
        // History: offered only to the sessions that came with a place in it (a
        // session that caught up from its place and is live here now reads on).
        let history = m.time_ms != 0 && m.time_ms < started;
        let Some(pos) = Position::new(log, offset) else {
            beyond_positions(offset);
            return;
        };
        // The sessions a replica's record matches: found by its topic name (it has
        // no interned id here), into a buffer kept between records.
        let mut matched = self
            .mesh
            .as_deref_mut()
            .map(|mesh| std::mem::take(&mut mesh.matched))
            .unwrap_or_default();
        matched.sessions.clear();
        matched.groups.clear();
        self.tree.matches(m.topic_str(), &mut matched.sessions);
        self.shared.matches(m.topic_str(), &mut matched.groups);
        if history {
            let sessions = &self.sessions;
            (matched.sessions)
                .retain(|(sid, _)| sessions.get(sid).is_some_and(|s| s.placed.contains(&log)));
            matched.groups.clear();
        }
        let message = Offered {
            pos,
            qos: m.qos,
            retain: m.retain,
            publisher: None,
            key: share_key(id, offset),
        };
        offer(offer_to!(self), &matched, message);
        if let Some(mesh) = self.mesh.as_deref_mut() {
            mesh.matched = matched;
        }
    }

    /// Replicas with committed records not yet offered (a catch-up spread over
    /// flushes).
    pub(super) fn fan_out_replicas(&mut self) {
        let n = self.mesh.as_ref().map_or(0, |m| m.replicas.len());
        for i in 0..n {
            self.fan_out_replica(i);
        }
    }
}
