//! Fences: a client's messages keep their order when it moves between nodes
//! (docs/mesh.md).
//!
//! Each node writes its own log, and a reader offers each log's records as they
//! arrive, independently of the others. A client that published on node A and
//! carries on on node B has its messages in two logs: a reader whose copy of A's
//! log is behind (a node that just restarted, or whose replica missed A's last
//! records when A died and gets them later from a survivor) would offer B's new
//! messages before A's last ones, out of the order the client sent them.
//!
//! So when B carries a session on from A's log (a move, `session_move`), it appends
//! a fence to its own log: "what follows here comes after log A up to `end`", `end`
//! being how far B holds A's log then (every message the client had published
//! there, once the handoff or the survivors' sync is in). Every reader keeps it:
//!
//! - a node offers the fenced log's records past the fence only once it has
//!   offered A's up to `end`, or A's writer is gone, this node holds all its
//!   live peers hold of A (nothing more of A will come) and has offered all of
//!   that (a copy is offered a stretch per flush); a node that does not read A at
//!   all passes it;
//! - a session that is behind on A (reading it from the log, its cursor below
//!   where A's offered records end, up to `end`) stops reading the fenced log at
//!   the fence, and reads A first.
//!
//! A fence is one small record (format byte [`FENCE_FORMAT`], so no message
//! decoder takes it for a message); subscribers never see it.

use bytes::{BufMut, BytesMut};
use commitlog::record::{Framed, HEADER_BYTES};
use commitlog::Offset;
use mesh::{Incarnation, LogId, NodeId};

use super::logs::Logs;
use super::{Router, Staged};
use crate::storage::Storage;
use crate::LogRef;

/// The first byte of a fence record (a message's is its format version, 1).
pub const FENCE_FORMAT: u8 = 0x80;

/// format byte, node, incarnation (u32 BE), end (u64 BE).
const FENCE_BYTES: usize = 1 + 1 + 4 + 8;

/// "What follows in this log comes after `after` up to `end`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The log the moved client wrote before.
    pub after: LogId,
    /// How far that log held its messages when it moved.
    pub end: Offset,
}

impl Fence {
    /// The record, framed for the log.
    #[must_use]
    pub fn framed(self) -> Framed {
        let mut buf = BytesMut::with_capacity(HEADER_BYTES + FENCE_BYTES);
        buf.put_bytes(0, HEADER_BYTES);
        buf.put_u8(FENCE_FORMAT);
        buf.put_u8(self.after.node.0);
        buf.put_u32(self.after.incarnation.0);
        buf.put_u64(self.end.0);
        // A header and 14 bytes always seal.
        Framed::seal(buf).unwrap_or_else(|| Framed::new(&[FENCE_FORMAT]))
    }

    /// The fence a record holds, if it is one.
    #[must_use]
    pub fn decode(record: &[u8]) -> Option<Fence> {
        let bytes: [u8; FENCE_BYTES] = record.try_into().ok()?;
        let [format, node, i0, i1, i2, i3, end @ ..] = bytes;
        (format == FENCE_FORMAT).then_some(Fence {
            after: LogId {
                node: NodeId(node),
                incarnation: Incarnation(u32::from_be_bytes([i0, i1, i2, i3])),
            },
            end: Offset(u64::from_be_bytes(end)),
        })
    }

    /// How far a session that reads `after` (as `log` here) behind must have
    /// read it to pass: `end`, or less where this node's copy ends for good
    /// below it (a reader passes the fence only then, see `passes`).
    fn needed<S: Storage>(self, log: LogRef, logs: Logs<'_, S>) -> Offset {
        self.end.min(logs.end(log))
    }

    /// Whether session cursor `cursor` on `after` (read here as `log`; `None`:
    /// live on it) lets it read on past this fence.
    pub(super) fn lets_pass<S: Storage>(
        self,
        cursor: Option<Offset>,
        log: LogRef,
        logs: Logs<'_, S>,
    ) -> bool {
        cursor.is_none_or(|c| c >= self.needed(log, logs))
    }
}

impl<S: Storage> Router<S> {
    /// Whether this node may offer what follows fence `f`: it has offered
    /// `f.after` up to `f.end`, or will get no more of it, or does not read it.
    pub(super) fn fence_passes(&self, f: Fence) -> bool {
        let Some(mesh) = self.mesh.as_deref() else {
            return true;
        };
        let Some(log) = mesh.log_ref(f.after) else {
            return true;
        };
        let logs = Logs::new(&self.storage, Some(mesh));
        // Synced with the survivors is not enough: what this copy holds must also
        // have been offered (a copy read stretch by stretch, as a restarted node's
        // earlier own log is, let the fenced log go first: the soak's order break
        // of 630,000 messages).
        let offered_all = (usize::from(log.0).checked_sub(1))
            .and_then(|i| mesh.replicas.get(i))
            .is_none_or(|r| r.fanned >= r.commit);
        logs.end(log) >= f.end
            || (mesh.writer_gone(f.after, self.now) && self.relay_synced(f.after) && offered_all)
    }

    /// Append a fence after `after` up to `end` to this node's log, before
    /// anything staged after it.
    pub(super) fn stage_fence(&mut self, after: LogId, end: Offset) {
        self.staged.push(fence_entry(Fence { after, end }));
    }

    /// A restarted node's first fence (`Mesh::first_fence`) goes before the first
    /// record staged, a message or a fence (so that a fence after this run's log
    /// that covers any record covers it: `Router::move_fences`).
    pub(super) fn fence_first_message(&mut self) {
        let first = |s: &Staged| s.publish.is_some() || s.fence.is_some();
        let Some(i) = self.staged.iter().position(first) else {
            return;
        };
        let Some(f) = self.mesh.as_deref_mut().and_then(|m| m.first_fence.take()) else {
            return;
        };
        self.staged.insert(i, fence_entry(f));
    }

    /// Fence `f`, at `at` in `log`, is offered: the sessions live on `log` that
    /// have not read `f.after` far enough read `log` from the fence on (see
    /// `Fence::lets_pass`), once they have.
    pub(super) fn pass_fence(&mut self, log: LogRef, at: Offset, f: Fence) {
        let Some(mesh) = self.mesh.as_deref() else {
            return;
        };
        let Some(after) = mesh.log_ref(f.after) else {
            return;
        };
        let logs = Logs::new(&self.storage, Some(mesh));
        let mut held = 0usize;
        for s in self.sessions.values_mut() {
            if s.is_live(log) && !f.lets_pass(s.cursor(after), after, logs) {
                s.set_behind(log, at);
                held += 1;
            }
        }
        let id = logs.id(log).map(|l| l.to_string()).unwrap_or_default();
        tracing::info!(log = %id, %at, after = %f.after, end = %f.end, held, "fence passed: what follows comes after that log up to its end");
    }
}

/// A staging entry that appends fence `f`.
fn fence_entry(f: Fence) -> Staged {
    Staged {
        publish: None,
        reply: None,
        qos2: None,
        fence: Some(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_round_trips_and_is_no_message() {
        let f = Fence {
            after: LogId {
                node: NodeId(3),
                incarnation: Incarnation(22),
            },
            end: Offset(40_181_440),
        };
        let framed = f.framed();
        let payload = framed.payload();
        assert_eq!(Fence::decode(&payload), Some(f));
        assert!(crate::Message::decode(&payload).is_err());
        assert_eq!(Fence::decode(&payload[..payload.len() - 1]), None);
        // A message is never taken for one, whatever its length.
        let message = crate::NewMessage::new(crate::QoS::AtLeastOnce, false, 0, "t", &[]).encode();
        assert_eq!(Fence::decode(&message[..FENCE_BYTES]), None);
    }
}
