//! The replicas of logs that restarts left behind are retired once no node needs
//! them (`retire`).

use std::time::Duration;

use ::mesh::{Incarnation, LogId, NodeId, Stream};

use super::session_move::{connect, log, node, publish, replicate, replies};
use super::*;
use crate::{MemStorage, PeerEvent, PeerReply};

fn second_run_of_1() -> LogId {
    LogId {
        node: NodeId(1),
        incarnation: Incarnation(2),
    }
}

/// Node 1's first run: "pub" stored p1, p2 and p3.
fn first_run_of_1() -> Router<MemStorage> {
    let mut a = node(1);
    connect(&mut a, C1, "pub", None);
    for (pkid, payload) in [(1, "p1"), (2, "p2"), (3, "p3")] {
        publish(&mut a, C1, pkid, payload);
    }
    a.flush();
    a
}

/// Node 2, holding all of node 1's first run (three messages on t, and its
/// journal); node 1 runs anew. With `sub`, a persistent subscriber to t on node 2
/// first (the three are in flight to it, unacknowledged).
fn superseded(sub: bool) -> Router<MemStorage> {
    let a = first_run_of_1();
    let mut b = node(2);
    if sub {
        subscriber(&mut b);
    }
    replicate(&a, &mut b);
    b.add_replica(second_run_of_1(), MemStorage::new());
    b.add_journal_replica(second_run_of_1(), MemStorage::new());
    b.drain_peer_outbox().for_each(drop);
    // The new run's journal begins with a checkpoint (no session carried over):
    // the first run's journal no longer says where sessions are.
    let mut a2 = super::journaled_node(second_run_of_1());
    a2.flush();
    replicate(&a2, &mut b);
    assert!(
        (b.journal_replica_state(second_run_of_1())).is_some_and(|j| j.checkpointed()),
        "the new run's first checkpoint"
    );
    b
}

/// A persistent subscriber to t, on `C2`, waiting for messages.
fn subscriber(r: &mut Router<MemStorage>) {
    connect(r, C2, "sub", None);
    r.handle(Event::Subscribe {
        conn: C2,
        pkid: PacketId(1),
        filters: vec![Subscription::new("t", QoS::AtLeastOnce)],
        id: None,
    });
    r.handle(Event::Pull { conn: C2 });
}

/// The packet ids `r` delivered, once node `peer` holds its log and journal.
fn in_flight(r: &mut Router<MemStorage>, peer: u8) -> Vec<PacketId> {
    (replies(r, peer).into_iter())
        .flat_map(|(_, r)| match r {
            Reply::Deliver(batch) => batch.into_iter().filter_map(|d| d.pkid).collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// Node `peer` answers `r`'s asks for node 1's first run (its messages and
/// journal) with nothing more; and, with `done`, says it is done with it.
fn synced_with(r: &mut Router<MemStorage>, peer: u8, done: bool) {
    let (peer, log) = (NodeId(peer), log(1));
    for stream in [Stream::Messages, Stream::Journal] {
        let from = match stream {
            Stream::Messages => r.replica(log).map(Storage::head),
            Stream::Journal => r.journal_replica(log).map(Storage::head),
        }
        .expect("a copy of node 1's first run");
        r.handle_peer(PeerEvent::Relayed {
            peer,
            log,
            stream,
            base: from,
            commit: from,
            records: Vec::new(),
        });
    }
    if done {
        r.handle_peer(PeerEvent::Done { peer, log });
    }
}

/// From `t0`, nodes 1 and 3 are synced with `b` on node 1's first run and done
/// with it; 90 s later `b` has kept it, and not said it is done (`why`).
fn kept_though_every_other_node_is_done(b: &mut Router<MemStorage>, t0: SystemTime, why: &str) {
    tick_to(b, t0);
    synced_with(b, 1, true);
    synced_with(b, 3, true);
    tick_to(b, t0 + Duration::from_secs(90));
    assert!(b.drain_retired().is_empty(), "{why}");
    assert!(!told_done(b, 3), "nor does node 2 say it is done");
}

/// Whether `r` told node `peer` it is done with node 1's first run.
fn told_done(r: &mut Router<MemStorage>, peer: u8) -> bool {
    (r.drain_peer_outbox())
        .any(|(to, reply)| to == NodeId(peer) && reply == PeerReply::Done { log: log(1) })
}

#[test]
fn a_log_whose_writer_runs_anew_is_retired_once_every_node_is_done_with_it() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let mut b = superseded(false);
    tick_to(&mut b, t0);
    synced_with(&mut b, 1, true);
    synced_with(&mut b, 3, true);
    tick_to(&mut b, t0 + Duration::from_secs(30));
    assert!(
        told_done(&mut b, 3),
        "node 2 is done with it too, and says so"
    );
    assert!(
        b.drain_retired().is_empty(),
        "kept for superseded_keep (60 s)"
    );
    assert!(b.replica(log(1)).is_some());
    tick_to(&mut b, t0 + Duration::from_secs(90));
    assert_eq!(b.drain_retired().len(), 2, "its messages and its journal");
    assert!(b.replica(log(1)).is_none() && b.journal_replica(log(1)).is_none());
    assert!(
        b.replica(second_run_of_1()).is_some(),
        "the new run's stays"
    );
    // A peer that asks for it now is told that this node holds none of it, and
    // needs none.
    b.drain_peer_outbox().for_each(drop);
    b.handle_peer(PeerEvent::Fetched {
        peer: NodeId(3),
        log: log(1),
        stream: Stream::Messages,
        from: Offset(0),
        bytes_max: 1 << 20,
    });
    let out: Vec<PeerReply> = (b.drain_peer_outbox()).map(|(_, r)| r).collect();
    assert!(
        matches!(&out[..], [PeerReply::Records { records, .. }, PeerReply::Done { .. }] if records.is_empty()),
        "{out:?}"
    );
}

#[test]
fn a_superseded_log_is_kept_while_another_node_is_not_done_with_it() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let mut b = superseded(false);
    tick_to(&mut b, t0);
    synced_with(&mut b, 1, true);
    // Node 3 holds all of it, and has not said it is done (a session there has
    // not read it): a session that moves from there to here would need it.
    synced_with(&mut b, 3, false);
    tick_to(&mut b, t0 + Duration::from_secs(90));
    assert!(b.drain_retired().is_empty());
    assert!(b.replica(log(1)).is_some() && b.journal_replica(log(1)).is_some());
    b.handle_peer(PeerEvent::Done {
        peer: NodeId(3),
        log: log(1),
    });
    tick_to(&mut b, t0 + Duration::from_secs(120));
    assert_eq!(b.drain_retired().len(), 2, "now every node is done");
}

#[test]
fn a_superseded_log_is_kept_while_a_session_here_has_not_read_it() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let mut b = superseded(true);
    kept_though_every_other_node_is_done(
        &mut b,
        t0,
        "sub has not acknowledged what it got from it",
    );
    let sent = in_flight(&mut b, 3);
    assert_eq!(sent.len(), 3, "p1, p2 and p3 in flight");
    for pkid in sent {
        b.handle(Event::PubAck { conn: C2, pkid });
    }
    tick_to(&mut b, t0 + Duration::from_secs(200));
    assert_eq!(b.drain_retired().len(), 2, "read: retired");
}

/// The journal records `to` does not yet hold of `from`'s.
fn replicate_journal_tail(from: &Router<MemStorage>, to: &mut Router<MemStorage>) {
    let log = from.own_log().expect("a cluster node");
    let journal = from.journal_storage().expect("a journal");
    let head = (to.journal_replica(log).map(Storage::head)).expect("a copy of the journal");
    let records = (journal.records())
        .filter(|(at, _)| *at >= head)
        .map(|(_, r)| Framed::new(r))
        .collect();
    to.handle_peer(PeerEvent::Replicated {
        log,
        stream: Stream::Journal,
        base: head,
        commit: journal.head(),
        records,
    });
    to.drain_peer_outbox().for_each(drop);
}

#[test]
fn a_superseded_log_is_kept_while_a_session_in_another_nodes_journal_has_not_read_it() {
    // Node 1's first run stored p1..p3; a persistent subscriber on node 3 has them
    // in flight, unacknowledged.
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let a = first_run_of_1();
    let mut c = node(3);
    subscriber(&mut c);
    replicate(&a, &mut c);
    let sent = in_flight(&mut c, 2);
    assert_eq!(sent.len(), 3, "p1, p2 and p3 in flight on node 3");
    // Node 2 holds node 1's first run and node 3's journal; no session of its own
    // reads it. Node 3 said it is done (a `Done` told before the subscriber moved
    // there is not taken back).
    let mut b = superseded(false);
    replicate(&c, &mut b);
    kept_though_every_other_node_is_done(&mut b, t0, "sub, on node 3, may move here and needs it");
    for pkid in sent {
        c.handle(Event::PubAck { conn: C2, pkid });
    }
    c.flush();
    replicate_journal_tail(&c, &mut b);
    tick_to(&mut b, t0 + Duration::from_secs(200));
    assert_eq!(b.drain_retired().len(), 2, "read on node 3: retired");
}

#[test]
fn an_earlier_own_log_opened_late_is_read_only_as_far_as_the_peers_confirm_it() {
    // Node 1's first run stored p1..p3; its peers hold p1 and p2 (p3 was never
    // acknowledged: its publisher sends it again elsewhere).
    let a = first_run_of_1();
    let kept = a.storage().clone();
    let records: Vec<Framed> = kept.records().map(|(_, r)| Framed::new(r)).collect();
    // Its second run opens the first run's log, no session here reading it.
    let mut a2 = super::journaled_node(second_run_of_1());
    let at = (a2.add_earlier_own_log(log(1), kept)).expect("a cluster node");
    let end = |r: &Router<MemStorage>| {
        super::super::logs::Logs::new(&r.storage, r.mesh.as_deref()).end(at)
    };
    assert_eq!(
        end(&a2),
        Offset(0),
        "nothing readable before the peers confirm it"
    );
    a2.handle_peer(PeerEvent::Relayed {
        peer: NodeId(2),
        log: log(1),
        stream: Stream::Messages,
        base: Offset(0),
        commit: Offset(2),
        records: records[..2].to_vec(),
    });
    assert_eq!(end(&a2), Offset(2), "what node 2 holds, never p3");
}
