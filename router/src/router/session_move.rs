//! Sessions that move between nodes (docs/mesh.md, issue 23).
//!
//! A client that connects to this node with a session another node held (the
//! metadata said that node owned its id: `Connect::moved_from`) carries on from
//! that node's state, which this node follows in its replica of that node's
//! journal. The old node, applying the change of owner, closes the client's
//! connection there and journals a `Handoff`: from then on the session's state is
//! final, and its copy here is complete once that op and the messages the session
//! had reached have arrived. Until then the CONNECT waits here, and whatever the
//! connection sends meanwhile waits with it (at most `HELD_EVENTS_MAX` events).
//!
//! A node that is gone (silent for `MeshConfig::failure_timeout`) writes no
//! `Handoff`: once this node's replicas of its journal and log hold what every
//! live peer's do (`relay`), the session carries on from that state, and a position
//! past what has arrived waits there. A CONNECT waits for that, or twice
//! `failure_timeout` at most, then goes on with what is here; never before the
//! survivors agree on what the gone node left.

use std::collections::BTreeMap;
use std::time::SystemTime;

use commitlog::Offset;
use mesh::{LogId, NodeId};

use super::logs::Logs;
use super::Router;
use crate::event::{CloseReason, Connect, Event, Reply};
use crate::journal::Op;
use crate::snapshot::SavedSession;
use crate::storage::Storage;
use crate::ConnectionId;

/// A CONNECT waiting for its session's state from the node that held it.
#[derive(Debug)]
pub(super) struct Awaiting {
    conn: ConnectionId,
    connect: Connect,
    from: NodeId,
    since: SystemTime,
    /// What the connection sent after its CONNECT, in order.
    events: Vec<Event>,
}

/// Where a session handed through a node that never held it is (`held_elsewhere`).
enum Held {
    /// In the journal of that log, as its node left or handed it.
    At(SavedSession, LogId),
    /// Found, but not to be taken up yet.
    NotYet,
    /// Nowhere this node can see.
    Nowhere,
}

/// Events a connection may send while its CONNECT waits; past it, it is closed.
const HELD_EVENTS_MAX: usize = 1024;

/// What a waiting CONNECT can carry on from now.
enum Ready {
    /// Not yet.
    Wait,
    /// The old node's state (none: it had no session), from its journal of `LogId`.
    With(Option<SavedSession>, Option<LogId>),
}

impl<S: Storage> Router<S> {
    /// A CONNECT whose session another node held: true when this took it (it
    /// waits here for that node's state, see the module docs, or went on with it
    /// already), false when it goes on as any CONNECT.
    pub(super) fn connect_moved(&mut self, conn: ConnectionId, connect: &Connect) -> bool {
        let own = self.mesh.as_deref().map(|m| m.own().node);
        let persistent = connect.session_expiry > 0 && !connect.clean_start;
        let moved = (connect.moved_from).filter(|f| own.is_some_and(|o| o != *f) && persistent);
        let (Some(own), held) = (own, self.earlier_tail_pending()) else {
            return false;
        };
        if moved.is_none() && !held {
            return false;
        }
        let from = moved.unwrap_or(own);
        let id = connect.client_id.as_str();
        if let Some(sid) = moved.and_then(|_| self.by_client.get(id).copied()) {
            // Another node owned the id since this node's session (say, one that
            // this node carried over from before a restart): that is stale.
            tracing::info!(client_id = id, %from, "a session here is older than the client id's last owner's; dropped");
            self.take_over(sid, false, id);
            self.forget_session(sid);
        }
        let waiting = Awaiting {
            conn,
            connect: connect.clone(),
            from,
            since: self.now,
            events: Vec::new(),
        };
        if let Some(mesh) = self.mesh.as_deref_mut() {
            mesh.awaiting.push(waiting);
        }
        self.try_awaiting();
        true
    }

    /// Hold `event` if its connection's CONNECT waits; the event back otherwise.
    pub(super) fn hold_for_move(&mut self, event: Event) -> Option<Event> {
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return Some(event);
        };
        if mesh.awaiting.is_empty() {
            return Some(event);
        }
        let conn = event.conn();
        let Some(i) = mesh.awaiting.iter().position(|a| a.conn == conn) else {
            return Some(event);
        };
        if mesh.awaiting[i].events.len() >= HELD_EVENTS_MAX {
            let a = mesh.awaiting.swap_remove(i);
            tracing::warn!(client_id = %a.connect.client_id, "a connection sent too much while its session moved here; closed");
            self.outbox
                .push((conn, Reply::Close(CloseReason::ServerBusy)));
            return None;
        }
        mesh.awaiting[i].events.push(event);
        None
    }

    /// Carry on the waiting CONNECTs whose sessions' state is here now, or whose
    /// old node is taken as gone.
    pub(super) fn try_awaiting(&mut self) {
        let n = self.mesh.as_deref().map_or(0, |m| m.awaiting.len());
        for i in (0..n).rev() {
            let ready = match self.mesh.as_deref().and_then(|m| m.awaiting.get(i)) {
                Some(a) => self.ready(a),
                None => continue,
            };
            let Ready::With(saved, journal) = ready else {
                continue;
            };
            let Some(a) = self.mesh.as_deref_mut().map(|m| m.awaiting.swap_remove(i)) else {
                continue;
            };
            if let (Some(saved), Some(journal)) = (saved, journal) {
                self.adopt(saved, journal, &a.connect.client_id);
            }
            let clean = a.connect.clean_start;
            self.moved_clients_will(&a.connect.client_id, a.from, clean);
            self.connect(
                a.conn,
                Connect {
                    moved_from: None,
                    ..a.connect
                },
            );
            for e in a.events {
                self.handle(e);
            }
        }
    }

    /// Whether `a` can go on, and from what.
    fn ready(&self, a: &Awaiting) -> Ready {
        let Some(mesh) = self.mesh.as_deref() else {
            return Ready::With(None, None);
        };
        // Held for the earlier run's tail (`earlier_tail`), or only for that.
        if mesh.earlier_tail.is_some() {
            return Ready::Wait;
        }
        if a.from == mesh.own().node {
            return Ready::With(None, None);
        }
        let id = a.connect.client_id.as_str();
        let journal = mesh.latest_journal(a.from);
        let state = journal.and_then(|j| self.journal_replica_state(j));
        let handed = state.and_then(|s| s.handed(id, mesh.own().node));
        let now = self.now;
        // Never longer than this, whatever is missing.
        let too_long = (now.duration_since(a.since))
            .is_ok_and(|d| d >= mesh.failure_timeout().saturating_mul(2));
        let gone = match journal {
            Some(j) => mesh.writer_gone(j, now),
            None => !mesh.live_peers(now).contains(&a.from),
        };
        // What it published there, and the messages it had reached, are here.
        let here = |saved: Option<&SavedSession>, j: Option<LogId>| {
            too_long || (self.offered(j) && self.holds_positions(saved, j))
        };
        match handed {
            // That node handed over nothing: it never held the session (it
            // claimed the id for a CONNECT that waited there and did not last,
            // the soak of session 21: four clients given new sessions); the node
            // that handed it to that one has it.
            Some(None) => match self.held_elsewhere(id, a.from) {
                Held::At(saved, j) if here(Some(&saved), Some(j)) => {
                    Ready::With(Some(saved), Some(j))
                }
                Held::Nowhere if too_long => Ready::With(None, journal),
                _ => Ready::Wait,
            },
            Some(saved) if here(saved.as_ref(), journal) => Ready::With(saved, journal),
            Some(_) => Ready::Wait,
            // A gone node hands nothing over: its journal and log, as complete as
            // the survivors hold them (`relay`), say where the session was.
            // Never before the survivors agree (not even past `too_long`): a
            // state older than what the client saw would send it a QoS 2
            // message it completed again.
            None if gone && journal.is_none_or(|j| self.relay_synced(j)) => {
                let found = match state.and_then(|s| s.session(id)) {
                    Some(saved) => Some((saved, journal)),
                    // That node never held it (it claimed the id for a CONNECT that
                    // did not last): the node that handed it to that one has it.
                    None => (self.handed_elsewhere(id, a.from)).map(|(saved, j)| (saved, Some(j))),
                };
                match found {
                    Some((saved, j)) if here(Some(&saved), j) => {
                        tracing::warn!(client_id = id, from = %a.from, "no handoff from the session's node, which is gone; carrying on from what the survivors hold of its journal");
                        Ready::With(Some(saved), j)
                    }
                    Some(_) => Ready::Wait,
                    // Held nowhere this node can see, yet: the node that handed it
                    // to that one may have written the handoff in a journal whose
                    // copy here is still behind (the chaos soak: a new session
                    // 1.8 s after the handoff). A new session only once waiting
                    // has lasted twice `failure_timeout`.
                    None if too_long => Ready::With(None, journal),
                    None => Ready::Wait,
                }
            }
            None => Ready::Wait,
        }
    }

    /// Whether this node has offered all it holds of `log` (see `fence_end`).
    fn offered(&self, log: Option<LogId>) -> bool {
        log.is_none_or(|j| self.fence_end(j).is_none_or(|(_, all)| all))
    }

    /// The session `client_id` had where another node handed it to `to`, and that
    /// node's journal, if this node follows one that did: the newest such handoff
    /// (by the metadata group's stamp), since a journal keeps a node's last
    /// handoff of each client id until the client comes back to it, and copies of
    /// earlier runs' journals are kept (the soak of session 22: sessions taken up
    /// from a handoff 20 runs old, millions of messages sent again).
    fn handed_elsewhere(&self, client_id: &str, to: NodeId) -> Option<(SavedSession, LogId)> {
        let mesh = self.mesh.as_deref()?;
        let own =
            (mesh.handed_away.handed(client_id, to)).map(|(saved, at)| (saved, mesh.own(), at));
        (mesh.journal_replicas.iter())
            .filter_map(|r| {
                let (saved, at) = r.state.handed_at(client_id, to)?;
                Some((saved?, r.id, at))
            })
            .chain(own)
            .max_by_key(|(_, log, at)| (*at, *log))
            .map(|(saved, log, _)| (saved, log))
    }

    /// Where the session of `client_id` is, when node `via` handed over nothing
    /// (it never held it): handed to `via` or to this node by another node, or
    /// held by the one gone node whose journal in force holds it (what `via`
    /// waited for), once this node is synced with the survivors on that journal.
    fn held_elsewhere(&self, client_id: &str, via: NodeId) -> Held {
        let Some(mesh) = self.mesh.as_deref() else {
            return Held::Nowhere;
        };
        let handed = (self.handed_elsewhere(client_id, via))
            .or_else(|| self.handed_elsewhere(client_id, mesh.own().node));
        if let Some((saved, j)) = handed {
            return Held::At(saved, j);
        }
        let now = self.now;
        let mut gone = (mesh.journals_in_force().into_iter())
            .filter(|r| mesh.writer_gone(r.id, now))
            .filter_map(|r| Some((r.state.session(client_id)?, r.id)));
        match (gone.next(), gone.next()) {
            (None, _) => Held::Nowhere,
            (Some((saved, j)), None) if self.relay_synced(j) => Held::At(saved, j),
            // Not synced on it yet; or held by two gone nodes, and which is newer
            // nothing here says.
            _ => Held::NotYet,
        }
    }

    /// Whether this node's logs reach every position of `saved` (written by the
    /// run of `journal`): the messages the session had reached are here.
    fn holds_positions(&self, saved: Option<&SavedSession>, journal: Option<LogId>) -> bool {
        let (Some(saved), Some(mesh)) = (saved, self.mesh.as_deref()) else {
            return true;
        };
        let logs = Logs::new(&self.storage, Some(mesh));
        let reaches = |log: Option<LogId>, at: Offset| {
            log.and_then(|l| mesh.log_ref(l))
                .is_none_or(|r| logs.end(r) >= at)
        };
        reaches(journal, saved.resume)
            && saved.resume_in.iter().all(|(l, at)| reaches(Some(*l), *at))
            && (saved.inflight.iter()).all(|i| {
                i.offset
                    .is_none_or(|o| reaches(i.log.or(journal), o.add(1)))
            })
    }

    /// Where the fence for a client moving from `log`'s writer ends (how far this
    /// node holds that log, or its journal says it was committed), and whether
    /// this node has offered all of that.
    fn fence_end(&self, log: LogId) -> Option<(Offset, bool)> {
        let mesh = self.mesh.as_deref()?;
        let r = mesh.log_ref(log)?;
        let logs = Logs::new(&self.storage, Some(mesh));
        let head = logs.get(r).map_or(Offset(0), Storage::head);
        let committed = (self.journal_replica_state(log)).and_then(|s| s.head());
        let end = committed.map_or(head, |c| c.max(head));
        Some((end, logs.end(r) >= end))
    }

    /// The fences for a client moving from `log`'s writer: after that log up to
    /// `fence_end`. A restarted writer's log begins with a fence after its earlier
    /// run (which the client may have published in last), written with its first
    /// record: while this node holds nothing of `log`, that fence may not be
    /// written yet, so the newest earlier run of that node held here is fenced
    /// after too (and so on back while each is empty here).
    fn move_fences(&self, log: LogId) -> Vec<(LogId, Offset)> {
        let mut fences = Vec::new();
        let mut next = Some(log);
        while let Some((after, (end, _))) = next.and_then(|l| Some((l, self.fence_end(l)?))) {
            fences.push((after, end));
            if end > Offset(0) {
                break;
            }
            let earlier = |id: &LogId| id.node == after.node && id.incarnation < after.incarnation;
            next = (self.mesh.as_deref())
                .and_then(|mesh| mesh.replicas.iter().map(|r| r.id).filter(earlier).max());
        }
        fences
    }

    /// Make `saved`, a session another node held (its journal `journal`), this
    /// node's, and journal it here; what its client publishes here from now on
    /// is fenced after what it published there (see `fence`).
    fn adopt(&mut self, saved: SavedSession, journal: LogId, client_id: &str) {
        // (Its own state, handed away and never taken up: nothing to fence.)
        if self.mesh.as_deref().is_some_and(|m| m.own() != journal) {
            for (after, end) in self.move_fences(journal) {
                self.stage_fence(after, end);
            }
        }
        let sid = crate::SessionId(self.next_session);
        tracing::info!(client_id, from = %journal, "session carried on from another node");
        let restored = crate::Snapshot {
            retained: Vec::new(),
            sessions: vec![SavedSession { id: sid.0, ..saved }],
            wills: Vec::new(),
        };
        self.restore_from(restored, Some(journal));
        // What it published at QoS 2 after the old node's journal last committed
        // was stored, unacknowledged: its retransmission here must not be.
        let head = self.journal_replica_state(journal).and_then(|s| s.head());
        let log = self.mesh.as_deref().and_then(|m| m.log_ref(journal));
        // All that this node holds of it: the survivors agree on that end
        // (`relay`), and it is offered in the end, with `ack_copies` 3 once that
        // node's next run confirms it.
        if let (Some(log), Some(from)) = (log, head) {
            self.recover_inbound_qos2(log, (from, None), Some(client_id));
        }
        if let Some(s) = self.saved_session(sid) {
            self.journal.push_session(&s);
        }
        if let Some(mesh) = self.mesh.as_deref_mut() {
            mesh.handed_away.remove(client_id);
            if let Some(state) = mesh.journal_replicas.iter_mut().find(|r| r.id == journal) {
                state.state.forget_handed(client_id);
            }
        }
    }

    /// A CONNECT of `client_id` waiting here for its session ends: another node
    /// owns the id now (its connection is closed as taken over; what it sent
    /// meanwhile is dropped with it).
    fn drop_awaiting(&mut self, client_id: &str) {
        let Some(mesh) = self.mesh.as_deref_mut() else {
            return;
        };
        let Some(i) = (mesh.awaiting.iter()).position(|a| a.connect.client_id == client_id) else {
            return;
        };
        let a = mesh.awaiting.swap_remove(i);
        tracing::info!(
            client_id,
            "a connection waiting here for its session was taken over by another node"
        );
        (self.outbox).push((a.conn, Reply::Close(CloseReason::SessionTakenOver)));
    }

    /// Another node owns `client_id` now (metadata entry `at`), and carries its
    /// session on: the session here ends as taken over (its connection closed with
    /// 0x8E), unless this node took it back since (`owned_since`), and leaves
    /// this node in a `Handoff` (so that node finds its last state in this node's
    /// journal), not a `Remove`.
    pub(super) fn session_moved(&mut self, client_id: &str, at: u64, to: NodeId) {
        if self.mesh.as_deref().is_none_or(|m| m.own().node == to) {
            return;
        }
        let sid = self.by_client.get(client_id).copied();
        if let Some(s) = sid.and_then(|sid| self.sessions.get(&sid)) {
            if s.owned_since >= at {
                return;
            }
        }
        self.drop_awaiting(client_id);
        self.cancel_orphan_will(client_id);
        if let Some(sid) = sid {
            tracing::info!(client_id, at, %to, "session taken over by another node");
            let persistent = self.sessions.get(&sid).is_some_and(|s| !s.clean);
            self.take_over(sid, !persistent, client_id);
            if persistent {
                let saved = self.saved_session(sid);
                if let (Some(saved), Some(mesh)) = (saved, self.mesh.as_deref_mut()) {
                    mesh.handed_away.insert(client_id, to, at, saved);
                }
                self.forget_session(sid);
            }
        }
        self.journal.push(&Op::Handoff {
            client_id: client_id.to_string(),
            to,
            at,
        });
    }
}

/// The sessions this node handed to another node, as it handed them (by client
/// id: the node, the metadata group's stamp, the state), kept while that node
/// may not take them up: a CONNECT that waited there and did not last hands
/// nothing on, and the client's next node carries on from here (`held_elsewhere`).
/// At most `HANDED_AWAY_MAX`, the oldest stamps going first.
#[derive(Debug, Default)]
pub(crate) struct HandedAway(BTreeMap<String, (NodeId, u64, SavedSession)>);

/// Sessions kept as handed away, at most.
const HANDED_AWAY_MAX: usize = 65_536;

impl HandedAway {
    fn insert(&mut self, client_id: &str, to: NodeId, at: u64, saved: SavedSession) {
        if self.0.len() >= HANDED_AWAY_MAX && !self.0.contains_key(client_id) {
            let oldest = (self.0.iter())
                .min_by_key(|(_, (_, at, _))| *at)
                .map(|(id, _)| id.clone());
            if let Some(id) = oldest {
                self.0.remove(&id);
            }
        }
        self.0.insert(client_id.to_string(), (to, at, saved));
    }

    /// The session handed to `to`, and when.
    fn handed(&self, client_id: &str, to: NodeId) -> Option<(SavedSession, u64)> {
        let (node, at, saved) = self.0.get(client_id)?;
        (*node == to).then(|| (saved.clone(), *at))
    }

    fn remove(&mut self, client_id: &str) {
        self.0.remove(client_id);
    }
}
