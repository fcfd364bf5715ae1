//! The tail a crash left in this node's earlier run's log: records appended whose
//! acknowledgements the crash held back. On one node they are stored, and the
//! QoS 2 ids they carry are put back at once (`recover_inbound_qos2`), so that a
//! publisher's retransmission is not stored again. In a cluster only what the
//! peers confirm of that log was committed and is ever offered (`confirmed`);
//! the rest is dropped, and a retransmission of it must be stored anew. So the
//! ids are put back only once every other node has said how far it holds that log,
//! from where its journal last saw the commit up to the confirmed end, and the
//! CONNECTs that arrive meanwhile wait (at most twice `failure_timeout`, as a
//! moving session's do): a publisher that resent first would have its message
//! stored twice, or not at all.
//!
//! Owns: that pending recovery.

use std::time::SystemTime;

use commitlog::Offset;
use mesh::LogId;

use super::replication::Mesh;
use super::Router;
use crate::storage::Storage;
use crate::LogRef;

/// The earlier run's log whose tail waits for its confirmed end.
#[derive(Debug)]
pub(crate) struct EarlierTail {
    log: LogRef,
    id: LogId,
    /// Where its journal last saw the commit: the scan starts here.
    from: Offset,
    /// The first tick that found it pending.
    since: Option<SystemTime>,
}

impl<S: Storage> Mesh<S> {
    /// Whether every other node has said how far it holds `log` (this node's
    /// earlier run's): its confirmed end (`confirmed`) is then what the
    /// survivors' copies hold, and offered as far as that by every node. (Not
    /// `relay_synced`, which a node with `ack_copies` 3 meets alone.)
    fn confirmed_by_all(&self, log: LogId) -> bool {
        (self.replicas.iter().find(|r| r.id == log))
            .is_some_and(|r| self.peers().iter().all(|p| r.relay.synced.contains(p)))
    }

    /// What `log` is known committed to here.
    pub(super) fn commit_of(&self, log: LogRef) -> Option<Offset> {
        if log == LogRef::OWN {
            return Some(self.messages.tracker.commit());
        }
        self.replica_at(log).map(|r| r.commit)
    }
}

impl<S: Storage> Router<S> {
    /// Put back the inbound QoS 2 ids of `log`'s tail from `from` (earlier run
    /// `id`'s log): at once on one node, once its end is confirmed in a cluster.
    pub(super) fn earlier_tail_from(&mut self, log: LogRef, id: LogId, from: Offset) {
        match self.mesh.as_deref_mut() {
            None => self.recover_inbound_qos2(log, (from, None), None),
            Some(mesh) => {
                mesh.earlier_tail = Some(EarlierTail {
                    log,
                    id,
                    from,
                    since: None,
                });
            }
        }
    }

    /// Whether CONNECTs wait for the earlier run's tail.
    pub(super) fn earlier_tail_pending(&self) -> bool {
        self.mesh
            .as_deref()
            .is_some_and(|m| m.earlier_tail.is_some())
    }

    /// Recover the earlier run's tail once every other node has said how far it
    /// holds that log (or twice `failure_timeout` after it began to wait: a node
    /// is down), up to the confirmed end; the CONNECTs held for it go on.
    pub(super) fn settle_earlier_tail(&mut self) {
        let now = self.now;
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        let wait = mesh.failure_timeout().saturating_mul(2);
        let Some(tail) = mesh.earlier_tail.as_mut() else {
            return;
        };
        let since = *tail.since.get_or_insert(now);
        let too_long = now.duration_since(since).is_ok_and(|d| d >= wait);
        let id = tail.id;
        if !too_long && !mesh.confirmed_by_all(id) {
            return;
        }
        let Some(tail) = self.mesh.as_deref_mut().and_then(|m| m.earlier_tail.take()) else {
            return;
        };
        let until = self.mesh.as_deref().and_then(|m| m.commit_of(tail.log));
        if too_long {
            tracing::warn!(log = %id, "not every node said in time how far it holds the earlier run's log; its tail counts as far as it is confirmed");
        }
        self.recover_inbound_qos2(tail.log, (tail.from, until), None);
        // The ids recovered go into the next checkpoint.
        self.journal.want_checkpoint();
        self.try_awaiting();
    }
}
