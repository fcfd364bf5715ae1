//! A session moves between nodes: the node that held it hands it over in its
//! journal, and the node its client connects to carries it on from its replica.

use std::time::Duration;

use ::mesh::{Incarnation, LogId, NodeId, Stream};

use super::*;
use crate::{MemStorage, PeerEvent, PeerReply};

pub(super) fn log(node: u8) -> LogId {
    LogId {
        node: NodeId(node),
        incarnation: Incarnation(1),
    }
}

/// Node `node` of three with a session journal, replicating the others' logs and
/// journals.
pub(super) fn node(node: u8) -> Router<MemStorage> {
    let mut r = super::journaled_node(log(node));
    for other in (1..=3).filter(|n| *n != node) {
        r.add_replica(log(other), MemStorage::new());
        r.add_journal_replica(log(other), MemStorage::new());
    }
    r.drain_peer_outbox().for_each(drop);
    r
}

/// The metadata group's change of owner `at`: node `node` owns `client_id` now.
pub(super) fn moved(r: &mut Router<MemStorage>, client_id: &str, node: u8, at: u64) {
    r.handle_peer(PeerEvent::Moved {
        client_id: client_id.into(),
        node: NodeId(node),
        at,
    });
}

/// Everything `from` holds of its messages and journal, replicated to `to`.
pub(super) fn replicate(from: &Router<MemStorage>, to: &mut Router<MemStorage>) {
    let log = from.own_log().expect("a cluster node");
    let journal = from.journal_storage().expect("a journal");
    for (stream, storage) in [
        (Stream::Messages, from.storage()),
        (Stream::Journal, journal),
    ] {
        let (base, head) = (storage.earliest(), storage.head());
        let records = storage.records().map(|(_, r)| Framed::new(r)).collect();
        to.handle_peer(PeerEvent::Replicated {
            log,
            stream,
            base,
            commit: head,
            records,
        });
    }
    to.drain_peer_outbox().for_each(drop);
}

/// The replies of `r`, once node `peer` holds its log and journal to their heads.
pub(super) fn replies(r: &mut Router<MemStorage>, peer: u8) -> Vec<(ConnectionId, Reply)> {
    r.flush();
    let own = r.own_log().expect("a cluster node");
    let heads = [
        (Stream::Messages, r.storage().head()),
        (
            Stream::Journal,
            r.journal_storage().expect("a journal").head(),
        ),
    ];
    for (stream, from) in heads {
        r.handle_peer(PeerEvent::Fetched {
            peer: NodeId(peer),
            log: own,
            stream,
            from,
            bytes_max: 1 << 20,
        });
    }
    r.drain_peer_outbox().for_each(drop);
    r.drain_outbox().collect()
}

pub(super) fn connect(
    r: &mut Router<MemStorage>,
    conn: ConnectionId,
    id: &str,
    moved_from: Option<u8>,
) {
    r.handle(Event::Connect {
        conn,
        connect: Connect {
            owned_since: 10,
            moved_from: moved_from.map(NodeId),
            ..Connect::v3(id, false, None)
        },
    });
}

pub(super) fn publish(r: &mut Router<MemStorage>, conn: ConnectionId, pkid: u16, payload: &str) {
    r.handle(Event::Publish {
        conn,
        pkid: Some(PacketId(pkid)),
        message: Publication {
            topic: TopicId(0),
            qos: QoS::AtLeastOnce,
            retain: false,
            record: NewMessage::new(QoS::AtLeastOnce, false, 2_000_000, "t", payload.as_bytes())
                .framed(),
        },
    });
}

/// Node 1 with "dev" subscribed to t: m1 in flight to it, unacknowledged, and m2
/// queued for it; then node 2 takes its client id over.
fn dev_on_node_1_taken_over() -> Router<MemStorage> {
    let mut a = dev_on_node_1();
    moved(&mut a, "dev", 2, 20);
    let closed = replies(&mut a, 3);
    assert!(
        closed.contains(&(C1, Reply::Close(CloseReason::SessionTakenOver))),
        "{closed:?}"
    );
    assert_eq!(
        a.session_count(),
        1,
        "only the publisher's is left on node 1"
    );
    a
}

/// Node 1 with "dev" subscribed to t: m1 in flight to it, unacknowledged, and m2
/// queued for it.
fn dev_on_node_1() -> Router<MemStorage> {
    let mut a = node(1);
    connect(&mut a, C1, "dev", None);
    a.handle(Event::Subscribe {
        conn: C1,
        pkid: PacketId(1),
        filters: vec![Subscription::new("t", QoS::AtLeastOnce)],
        id: None,
    });
    a.handle(Event::Connect {
        conn: C2,
        connect: Connect::v3("pub", true, None),
    });
    a.handle(Event::Pull { conn: C1 });
    publish(&mut a, C2, 1, "m1");
    replies(&mut a, 3);
    let got = delivered(replies(&mut a, 3).into_iter().map(|(_, r)| r).collect());
    assert_eq!(got.len(), 1, "m1 in flight to dev on node 1");
    publish(&mut a, C2, 2, "m2");
    replies(&mut a, 3);
    a
}

#[test]
fn a_session_taken_over_by_another_node_carries_on_there() {
    let a = dev_on_node_1_taken_over();
    let mut b = node(2);
    replicate(&a, &mut b);
    connect(&mut b, C3, "dev", Some(1));
    let out: Vec<Reply> = replies(&mut b, 3).into_iter().map(|(_, r)| r).collect();
    assert_eq!(out.first(), Some(&accepted(true)), "{out:?}");
    let resent = delivered(out);
    assert_eq!(payloads(&resent), vec![b"m1".to_vec()]);
    assert!(resent[0].dup && resent[0].pkid == Some(PacketId(1)));
    b.handle(Event::PubAck {
        conn: C3,
        pkid: PacketId(1),
    });
    b.handle(Event::Pull { conn: C3 });
    let got = delivered(replies(&mut b, 3).into_iter().map(|(_, r)| r).collect());
    assert_eq!(
        payloads(&got),
        vec![b"m2".to_vec()],
        "then what it had not got"
    );
}

#[test]
fn a_connect_waits_for_the_handoff_and_what_the_connection_sent_waits_with_it() {
    let a = dev_on_node_1_taken_over();
    let mut b = node(2);
    connect(&mut b, C3, "dev", Some(1));
    b.handle(Event::Subscribe {
        conn: C3,
        pkid: PacketId(5),
        filters: vec![Subscription::new("u", QoS::AtLeastOnce)],
        id: None,
    });
    assert_eq!(replies(&mut b, 3), vec![], "nothing from node 1 yet");
    replicate(&a, &mut b);
    let out: Vec<Reply> = replies(&mut b, 3).into_iter().map(|(_, r)| r).collect();
    assert_eq!(out.first(), Some(&accepted(true)), "{out:?}");
    assert!(
        out.iter()
            .any(|r| matches!(r, Reply::SubAck { pkid, .. } if *pkid == PacketId(5))),
        "the SUBACK follows the CONNACK: {out:?}"
    );
}

#[test]
fn without_a_handoff_a_connect_carries_on_after_failure_timeout() {
    let mut b = node(2);
    connect(&mut b, C3, "dev", Some(1));
    assert_eq!(replies(&mut b, 3), vec![]);
    others_gone_but(&mut b, 2, &mut node(3), 3);
    let out: Vec<Reply> = replies(&mut b, 3).into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        out.first(),
        Some(&accepted(false)),
        "node 1 held nothing this node knows of: a new session"
    );
}

#[test]
fn a_session_moved_back_resumes_where_it_left_off_on_the_other_node() {
    let mut a = dev_on_node_1_taken_over();
    let mut b = node(2);
    replicate(&a, &mut b);
    connect(&mut b, C3, "dev", Some(1));
    let resent = delivered(replies(&mut b, 3).into_iter().map(|(_, r)| r).collect());
    b.handle(Event::PubAck {
        conn: C3,
        pkid: resent[0].pkid.expect("QoS 1"),
    });
    b.handle(Event::Pull { conn: C3 });
    let got = delivered(replies(&mut b, 3).into_iter().map(|(_, r)| r).collect());
    assert_eq!(payloads(&got), vec![b"m2".to_vec()]);
    b.handle(Event::PubAck {
        conn: C3,
        pkid: got[0].pkid.expect("QoS 1"),
    });
    b.handle(Event::Disconnect {
        conn: C3,
        reason: DisconnectReason::Normal,
        session_expiry: None,
    });
    replies(&mut b, 3);
    // Back to node 1, which takes the client id back.
    moved(&mut b, "dev", 1, 30);
    replies(&mut b, 3);
    replicate(&b, &mut a);
    publish(&mut a, C2, 3, "m3");
    replies(&mut a, 3);
    connect(&mut a, ConnectionId(4), "dev", Some(2));
    let out: Vec<Reply> = replies(&mut a, 3).into_iter().map(|(_, r)| r).collect();
    assert_eq!(out, vec![accepted(true)], "nothing in flight");
    a.handle(Event::Pull {
        conn: ConnectionId(4),
    });
    let got = delivered(replies(&mut a, 3).into_iter().map(|(_, r)| r).collect());
    assert_eq!(
        payloads(&got),
        vec![b"m3".to_vec()],
        "m1 and m2 were acked on node 2"
    );
}

#[test]
fn a_qos2_publish_stored_before_its_node_died_is_not_stored_again_where_it_resumes() {
    let mut a = node(1);
    connect(&mut a, C1, "p2", None);
    replies(&mut a, 3);
    let mut b = node(2);
    replicate(&a, &mut b);
    // Stored and held by two nodes, but the node dies before its PUBREC leaves:
    // node 2 has the message, not the journal op that remembers its id.
    let publish = qos2_publish(C1, "p2", "once");
    a.handle(publish.clone());
    a.flush();
    let log = a.storage().clone();
    let records: Vec<Framed> = log.records().map(|(_, r)| Framed::new(r)).collect();
    b.handle_peer(PeerEvent::Replicated {
        log: ::mesh::LogId {
            node: NodeId(1),
            incarnation: Incarnation(1),
        },
        stream: Stream::Messages,
        base: Offset(0),
        commit: log.head(),
        records,
    });
    drop(a);
    connect(&mut b, C3, "p2", Some(1));
    others_gone_but(&mut b, 2, &mut node(3), 3);
    let out: Vec<Reply> = replies(&mut b, 3).into_iter().map(|(_, r)| r).collect();
    assert_eq!(out, vec![accepted(true)]);
    let head = b.storage().head();
    if let Event::Publish { pkid, message, .. } = publish {
        b.handle(Event::Publish {
            conn: C3,
            pkid,
            message,
        });
    }
    let out: Vec<Reply> = replies(&mut b, 3).into_iter().map(|(_, r)| r).collect();
    assert_eq!(out, vec![Reply::PubRec(PacketId(9), PubReason::Success)]);
    assert_eq!(b.storage().head(), head, "not stored a second time");
}

/// The peer messages `from` has for `to`, as `to` gets them: answers from `from`'s
/// replicas of other nodes' logs come in as `Relayed`.
pub(super) fn carry(
    from: &mut Router<MemStorage>,
    from_node: u8,
    to: &mut Router<MemStorage>,
    to_node: u8,
) {
    let out: Vec<_> = from.drain_peer_outbox().collect();
    for (dest, reply) in out {
        if dest != NodeId(to_node) {
            continue;
        }
        let event = match reply {
            PeerReply::Fetch { log, stream, from } => PeerEvent::Fetched {
                peer: NodeId(from_node),
                log,
                stream,
                from,
                bytes_max: 1 << 20,
            },
            PeerReply::Records {
                log,
                stream,
                base,
                commit,
                records,
            } => PeerEvent::Relayed {
                peer: NodeId(from_node),
                log,
                stream,
                base,
                commit,
                records: records.iter().map(|p| Framed::new(p)).collect(),
            },
            PeerReply::Done { log } => PeerEvent::Done {
                peer: NodeId(from_node),
                log,
            },
        };
        to.handle_peer(event);
    }
}

/// Node `peer` fetches node `own`'s log from `r` (so `r` hears from it).
/// The third node falls silent from 10 s on and is gone 3 s later; the other
/// node (`other`, numbered `other_node`) goes on being heard by `r` (numbered
/// `own`), and answers what `r` asks of its copies of the gone node's logs.
pub(super) fn others_gone_but(
    r: &mut Router<MemStorage>,
    own: u8,
    other: &mut Router<MemStorage>,
    other_node: u8,
) {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
    tick_to(r, t0);
    tick_to(r, t0 + Duration::from_secs(2));
    fetched_by(r, other_node, own);
    tick_to(r, t0 + Duration::from_secs(4));
    carry(r, own, other, other_node);
    carry(other, other_node, r, own);
}

pub(super) fn fetched_by(r: &mut Router<MemStorage>, peer: u8, own: u8) {
    r.handle_peer(PeerEvent::Fetched {
        peer: NodeId(peer),
        log: log(own),
        stream: Stream::Messages,
        from: Offset(0),
        bytes_max: 1 << 20,
    });
}

/// `client_id`'s QoS 2 publish of `payload` to t as packet 9 on `conn`, its
/// record naming it (what recovers its id after a crash).
pub(super) fn qos2_publish(conn: ConnectionId, client_id: &str, payload: &str) -> Event {
    let record = crate::NewMessage {
        origin: Some(crate::Origin { client_id, pkid: 9 }),
        ..NewMessage::new(QoS::ExactlyOnce, false, 2_000_000, "t", payload.as_bytes())
    }
    .framed();
    Event::Publish {
        conn,
        pkid: Some(PacketId(9)),
        message: Publication {
            topic: TopicId(0),
            qos: QoS::ExactlyOnce,
            retain: false,
            record,
        },
    }
}

/// A clean session "sub" on `r`, subscribed to t at QoS 1, ready for messages.
pub(super) fn clean_subscriber(r: &mut Router<MemStorage>, conn: ConnectionId) {
    clean_subscriber_via(r, conn, 1);
}

/// The same, its replies released by `peer`'s fetch.
pub(super) fn clean_subscriber_via(r: &mut Router<MemStorage>, conn: ConnectionId, peer: u8) {
    r.handle(Event::Connect {
        conn,
        connect: Connect::v3("sub", true, None),
    });
    r.handle(Event::Subscribe {
        conn,
        pkid: PacketId(1),
        filters: vec![Subscription::new("t", QoS::AtLeastOnce)],
        id: None,
    });
    r.handle(Event::Pull { conn });
    replies(r, peer);
}

#[test]
fn a_record_only_one_survivor_holds_reaches_the_other_once_its_writer_is_gone() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let (mut a, mut b, mut c) = (node(1), node(2), node(3));
    tick_to(&mut c, t0);
    clean_subscriber(&mut c, C3);
    a.handle(Event::Connect {
        conn: C1,
        connect: Connect::v3("pub", true, None),
    });
    publish(&mut a, C1, 1, "only on node 2");
    replies(&mut a, 2);
    // Node 2 holds it (with node 1: committed), node 3 does not; node 1 dies.
    replicate(&a, &mut b);
    drop(a);
    let later = t0 + Duration::from_secs(4);
    tick_to(&mut c, later);
    c.handle_peer(PeerEvent::LinkUp { peer: NodeId(2) });
    c.handle_peer(PeerEvent::Fetched {
        peer: NodeId(2),
        log: log(3),
        stream: Stream::Messages,
        from: Offset(0),
        bytes_max: 1 << 20,
    });
    c.drain_peer_outbox().for_each(drop);
    tick_to(&mut c, later + Duration::from_secs(1));
    carry(&mut c, 3, &mut b, 2);
    carry(&mut b, 2, &mut c, 3);
    let got = delivered(replies(&mut c, 2).into_iter().map(|(_, r)| r).collect());
    assert_eq!(payloads(&got), vec![b"only on node 2".to_vec()]);
}

#[test]
fn a_session_handed_to_a_node_that_never_took_it_up_carries_on_from_the_one_that_held_it() {
    // Node 1 handed "dev" to node 2, whose CONNECT for it did not last; the client
    // connects to node 3, and the metadata says node 2 owned it.
    let a = dev_on_node_1_taken_over();
    let mut c = node(3);
    replicate(&a, &mut c);
    connect(&mut c, C3, "dev", Some(2));
    assert_eq!(replies(&mut c, 1), vec![], "node 2 hands nothing over yet");
    others_gone_but(&mut c, 3, &mut node(1), 1);
    let out: Vec<Reply> = replies(&mut c, 1).into_iter().map(|(_, r)| r).collect();
    assert_eq!(out.first(), Some(&accepted(true)), "{out:?}");
    assert_eq!(payloads(&delivered(out)), vec![b"m1".to_vec()]);
}

#[test]
fn a_peer_without_a_copy_of_the_gone_nodes_log_says_so_and_the_move_goes_on() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let mut b = node(2);
    // Node 3 keeps no copy of node 1's log or journal (it never learnt of them).
    let mut c = super::journaled_node(log(3));
    tick_to(&mut b, t0);
    connect(&mut b, C3, "dev", Some(1));
    tick_to(&mut b, t0 + Duration::from_secs(2));
    fetched_by(&mut b, 3, 2);
    // Node 1 is gone now, node 3 is not: this node asks it what it holds.
    tick_to(&mut b, t0 + Duration::from_secs(4));
    assert_eq!(replies(&mut b, 3), vec![], "node 3 has not answered yet");
    // (`replies` dropped the asks: they go again a `fetch_wait` later.)
    tick_to(&mut b, t0 + Duration::from_millis(4_600));
    carry(&mut b, 2, &mut c, 3);
    carry(&mut c, 3, &mut b, 2);
    // Held nowhere: a new session, once the CONNECT has waited twice
    // failure_timeout (a handoff to node 1 in a journal still behind here could
    // yet come).
    tick_to(&mut b, t0 + Duration::from_millis(5_900));
    assert_eq!(replies(&mut b, 3), vec![], "not before 6 s");
    tick_to(&mut b, t0 + Duration::from_secs(6));
    let out: Vec<Reply> = replies(&mut b, 3).into_iter().map(|(_, r)| r).collect();
    assert_eq!(out.first(), Some(&accepted(false)), "{out:?}");
}

#[test]
fn a_node_that_restarted_and_linked_again_is_not_taken_as_gone() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let mut b = node(2);
    tick_to(&mut b, t0);
    // Node 1 died, silent past failure_timeout; then it is back (a new run whose
    // journal has not reached this node yet) and links again.
    tick_to(&mut b, t0 + Duration::from_secs(4));
    b.handle_peer(PeerEvent::LinkUp { peer: NodeId(1) });
    connect(&mut b, C3, "dev", Some(1));
    assert_eq!(
        replies(&mut b, 3),
        vec![],
        "it waits for node 1's handoff, not a new session"
    );
}

#[test]
fn a_restarted_node_serves_its_earlier_log_as_far_as_it_was_confirmed() {
    let mut a = node(1);
    connect(&mut a, C1, "pub", None);
    for (pkid, payload) in [(1, "p1"), (2, "p2"), (3, "p3")] {
        publish(&mut a, C1, pkid, payload);
    }
    a.flush();
    let earlier = a.storage().clone();
    assert_eq!(earlier.head(), Offset(3));
    // Node 1 runs again; its journal saw two of the three committed (the third
    // was its unacknowledged tail at the crash).
    let mut a2 = super::journaled_node(LogId {
        node: NodeId(1),
        incarnation: Incarnation(2),
    });
    a2.add_replica(log(1), earlier);
    let nothing = crate::Snapshot::default();
    a2.resume_run(nothing, Some(Offset(2)), log(1)).unwrap();
    a2.drain_peer_outbox().for_each(drop);
    // Node 3, whose copy lacks them, asks it (the other peer that held them died).
    a2.handle_peer(PeerEvent::Fetched {
        peer: NodeId(3),
        log: log(1),
        stream: Stream::Messages,
        from: Offset(0),
        bytes_max: 1 << 20,
    });
    let answers: Vec<usize> = (a2.drain_peer_outbox())
        .filter_map(|(to, reply)| match reply {
            PeerReply::Records {
                log: l, records, ..
            } if to == NodeId(3) && l == log(1) => Some(records.len()),
            _ => None,
        })
        .collect();
    assert_eq!(answers, vec![2], "what was confirmed, never the tail");
    // Its new run's log starts, at its first message, with a fence after the
    // earlier one.
    for peer in [2, 3] {
        super::confirmed_by(&mut a2, peer, log(1), 2);
    }
    connect(&mut a2, C2, "pub-2", None);
    assert!(
        a2.storage().head() == Offset(0),
        "no fence before a message"
    );
    publish(&mut a2, C2, 1, "p4");
    a2.flush();
    let records: Vec<Bytes> = a2.storage().records().map(|(_, r)| r.clone()).collect();
    let fence = crate::Fence {
        after: log(1),
        end: Offset(3),
    };
    assert_eq!(records.len(), 2);
    assert_eq!(crate::Fence::decode(&records[0]), Some(fence));
}

#[test]
fn a_relay_round_asks_each_peer_for_a_bounded_number_of_logs() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let mut b = node(2);
    // Node 1 restarted forty times: each earlier run's log is gone.
    for run in 2..=40 {
        let earlier = LogId {
            node: NodeId(1),
            incarnation: Incarnation(run),
        };
        b.add_replica(earlier, MemStorage::new());
        b.add_journal_replica(earlier, MemStorage::new());
    }
    tick_to(&mut b, t0);
    fetched_by(&mut b, 3, 2);
    b.drain_peer_outbox().for_each(drop);
    b.tick(t0 + Duration::from_millis(500));
    let to_3 = (b.drain_peer_outbox())
        .filter(|(to, r)| *to == NodeId(3) && matches!(r, PeerReply::Fetch { .. }))
        .count();
    assert!((1..=16).contains(&to_3), "{to_3} asks in one round");
}

#[test]
fn a_stall_of_this_node_does_not_count_as_its_peers_silence() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let mut b = node(2);
    tick_to(&mut b, t0);
    fetched_by(&mut b, 1, 2);
    fetched_by(&mut b, 3, 2);
    let live = |r: &Router<MemStorage>| r.mesh.as_deref().map(|m| m.live_peers(r.now));
    // The router did not run for 5 s (failure_timeout is 3 s): it heard nothing
    // because it did not listen.
    b.tick(t0 + Duration::from_secs(5));
    assert_eq!(live(&b), Some(vec![NodeId(1), NodeId(3)]));
    // Silent for failure_timeout while it runs: gone.
    tick_to(&mut b, t0 + Duration::from_secs(9));
    assert_eq!(live(&b), Some(vec![]));
}

#[test]
fn a_node_that_hears_from_no_peer_carries_no_session_on_from_a_gone_one() {
    // Node 2 hears from neither node 1 nor node 3: node 3 may hold more of node
    // 1's journal than node 2 does, so the move waits.
    let mut b = node(2);
    connect(&mut b, C3, "dev", Some(1));
    tick_to(&mut b, SystemTime::UNIX_EPOCH + Duration::from_secs(10));
    tick_to(&mut b, SystemTime::UNIX_EPOCH + Duration::from_secs(20));
    assert_eq!(replies(&mut b, 3), vec![], "synced with nobody");
    // Node 3 is heard again, and holds nothing more: the move goes on.
    let mut c = node(3);
    fetched_by(&mut b, 3, 2);
    tick_to(&mut b, SystemTime::UNIX_EPOCH + Duration::from_secs(21));
    carry(&mut b, 2, &mut c, 3);
    carry(&mut c, 3, &mut b, 2);
    let out: Vec<Reply> = replies(&mut b, 3).into_iter().map(|(_, r)| r).collect();
    assert_eq!(out.first(), Some(&accepted(false)), "{out:?}");
}

#[test]
fn a_session_handed_to_a_node_that_never_took_it_up_carries_on_from_the_one_that_held_it_while_that_node_lives(
) {
    // Node 1 hands "dev" to node 2, whose CONNECT waits there (its copy of node
    // 1's journal is behind); the client gives up and goes to node 3, which
    // takes the id from node 2 while node 2 is alive.
    let a = dev_on_node_1_taken_over();
    let mut b = node(2);
    connect(&mut b, C3, "dev", Some(1));
    assert!(
        replies(&mut b, 3).is_empty(),
        "it waits for node 1's handoff"
    );
    moved(&mut b, "dev", 3, 30);
    let closed = replies(&mut b, 3);
    assert!(
        closed.contains(&(C3, Reply::Close(CloseReason::SessionTakenOver))),
        "{closed:?}"
    );
    let mut c = node(3);
    replicate(&a, &mut c);
    replicate(&b, &mut c);
    connect(&mut c, C1, "dev", Some(2));
    let out: Vec<Reply> = replies(&mut c, 1).into_iter().map(|(_, r)| r).collect();
    assert_eq!(out.first(), Some(&accepted(true)), "{out:?}");
    assert_eq!(payloads(&delivered(out)), vec![b"m1".to_vec()]);
}

#[test]
fn a_session_handed_on_again_before_it_was_taken_up_carries_the_first_handoffs_state() {
    // Node 1 hands "dev" to node 2, then, applying the next change of owner
    // before node 2 took it up, to node 3.
    let mut a = dev_on_node_1_taken_over();
    moved(&mut a, "dev", 3, 30);
    replies(&mut a, 2);
    let mut c = node(3);
    replicate(&a, &mut c);
    connect(&mut c, C1, "dev", Some(1));
    let out: Vec<Reply> = replies(&mut c, 1).into_iter().map(|(_, r)| r).collect();
    assert_eq!(out.first(), Some(&accepted(true)), "{out:?}");
    assert_eq!(payloads(&delivered(out)), vec![b"m1".to_vec()]);
}

#[test]
fn a_session_a_node_waited_for_from_a_gone_node_carries_on_where_its_client_went_next() {
    // Node 1 holds "dev" and dies; node 2's CONNECT for it waits, and the client
    // goes on to node 3, which takes the id from node 2 (it hands over nothing).
    let a = dev_on_node_1();
    let mut b = node(2);
    replicate(&a, &mut b);
    connect(&mut b, C3, "dev", Some(1));
    moved(&mut b, "dev", 3, 30);
    replies(&mut b, 3);
    let mut c = node(3);
    replicate(&a, &mut c);
    replicate(&b, &mut c);
    connect(&mut c, C1, "dev", Some(2));
    assert_eq!(replies(&mut c, 1), vec![], "node 1 is not gone yet");
    others_gone_but(&mut c, 3, &mut b, 2);
    let out: Vec<Reply> = replies(&mut c, 1).into_iter().map(|(_, r)| r).collect();
    assert_eq!(out.first(), Some(&accepted(true)), "{out:?}");
    assert_eq!(payloads(&delivered(out)), vec![b"m1".to_vec()]);
}

#[test]
fn a_session_handed_away_and_never_taken_up_comes_back_as_handed_not_from_an_older_handoff() {
    // Node 3 once held "dev", subscribed to "old", and handed it to node 2 (stamp
    // 5); node 1 held it later and handed it to node 2 as well (stamp 20), where
    // it was never taken up. The client comes back to node 1; node 2 hands
    // nothing on.
    let mut c = node(3);
    connect(&mut c, C3, "dev", None);
    c.handle(Event::Subscribe {
        conn: C3,
        pkid: PacketId(1),
        filters: vec![Subscription::new("old", QoS::AtLeastOnce)],
        id: None,
    });
    replies(&mut c, 1);
    moved(&mut c, "dev", 2, 5);
    replies(&mut c, 1);
    let mut a = dev_on_node_1_taken_over();
    replicate(&c, &mut a);
    let mut b = node(2);
    moved(&mut b, "dev", 1, 30);
    replies(&mut b, 1);
    replicate(&b, &mut a);
    connect(&mut a, C2, "dev", Some(2));
    let out: Vec<Reply> = replies(&mut a, 3).into_iter().map(|(_, r)| r).collect();
    assert_eq!(out.first(), Some(&accepted(true)), "{out:?}");
    assert_eq!(
        payloads(&delivered(out)),
        vec![b"m1".to_vec()],
        "node 1's own state, m1 in flight again, not node 3's older one"
    );
}
