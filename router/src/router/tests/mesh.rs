//! The router in a cluster, one node at a time: acks and fan-out wait for the
//! commit, fetches are answered and parked, replicas offer committed records.
//! (Three nodes together: `router/tests/sim.rs`.)

use std::time::{Duration, SystemTime};

use ::mesh::{Incarnation, LogId, NodeId, Stream};
use commitlog::record::Framed;

use super::*;
use crate::{MemStorage, MeshConfig, PeerEvent, PeerReply};

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

fn log_of(node: NodeId) -> LogId {
    LogId {
        node,
        incarnation: Incarnation(1),
    }
}

/// `node` in a cluster: its log, `ack_copies`, the nodes that follow it; fetches
/// held 500 ms; started 1,000 s after the epoch.
fn mesh_config(node: NodeId, ack_copies: usize, followers: Vec<NodeId>) -> MeshConfig {
    MeshConfig {
        own: log_of(node),
        ack_copies,
        followers,
        fetch_bytes_max: 1 << 20,
        fetch_wait: Duration::from_millis(500),
        failure_timeout: std::time::Duration::from_secs(3),
        superseded_keep: std::time::Duration::from_secs(60),
        started: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
    }
}

/// Node `node` of three, `ack_copies = 2`, with replicas of the other two logs.
fn node(node: NodeId) -> Router<MemStorage> {
    node_with(node, 2)
}

/// As `node`, with `ack_copies`.
fn node_with(node: NodeId, ack_copies: usize) -> Router<MemStorage> {
    let mut r = Router::new(RouterConfig::default(), MemStorage::new());
    let others: Vec<NodeId> = [N1, N2, N3].into_iter().filter(|n| *n != node).collect();
    r.join_mesh(mesh_config(node, ack_copies, others.clone()));
    for n in others {
        r.add_replica(log_of(n), MemStorage::new()).unwrap();
    }
    r.drain_peer_outbox().for_each(drop);
    r
}

fn record(topic: &str, qos: QoS, payload: &[u8]) -> Framed {
    NewMessage::new(qos, false, 0, topic, payload).framed()
}

fn publish(r: &mut Router<MemStorage>, conn: ConnectionId, topic: &str, pkid: u16) {
    r.handle(Event::Publish {
        conn,
        pkid: Some(PacketId(pkid)),
        message: Publication {
            topic: TopicId(0),
            qos: QoS::AtLeastOnce,
            retain: false,
            record: record(topic, QoS::AtLeastOnce, b"m"),
        },
    });
}

fn online(r: &mut Router<MemStorage>, conn: ConnectionId, id: &str, filter: Option<&str>) {
    r.handle(Event::Connect {
        conn,
        connect: Connect::v3(id, true, None),
    });
    if let Some(f) = filter {
        r.handle(Event::Subscribe {
            conn,
            pkid: PacketId(1),
            filters: vec![Subscription::new(f, QoS::AtLeastOnce)],
            id: None,
        });
    }
    r.handle(Event::Pull { conn });
    r.drain_outbox().for_each(drop);
}

fn replies(r: &mut Router<MemStorage>) -> Vec<(ConnectionId, Reply)> {
    r.drain_outbox().collect()
}

/// The fetch a replica of `writer`'s log sends from `from`.
fn fetch_of(writer: NodeId, from: u64) -> (NodeId, PeerReply) {
    let fetch = PeerReply::Fetch {
        stream: Stream::Messages,
        log: log_of(writer),
        from: Offset(from),
    };
    (writer, fetch)
}

fn fetched(peer: NodeId, log: NodeId, from: u64) -> PeerEvent {
    PeerEvent::Fetched {
        stream: Stream::Messages,
        peer,
        log: log_of(log),
        from: Offset(from),
        bytes_max: 1 << 20,
    }
}

#[test]
fn an_ack_and_the_fan_out_wait_until_a_follower_holds_the_record() {
    let mut a = node(N1);
    online(&mut a, C2, "sub", Some("t"));
    online(&mut a, C1, "pub", None);
    publish(&mut a, C1, "t", 7);
    assert_eq!(
        replies(&mut a),
        vec![],
        "appended, not committed: nothing leaves"
    );
    assert_eq!(a.commit(), Offset(0));

    // Node 2 fetches from 0: it holds nothing yet, and gets the record.
    a.handle_peer(fetched(N2, N1, 0));
    let out: Vec<_> = a.drain_peer_outbox().collect();
    let [(
        to,
        PeerReply::Records {
            stream: Stream::Messages,
            base,
            commit,
            records,
            ..
        },
    )] = &out[..]
    else {
        panic!("{out:?}");
    };
    assert_eq!(
        (*to, *base, *commit, records.len()),
        (N2, Offset(0), Offset(0), 1)
    );
    assert_eq!(replies(&mut a), vec![]);

    // Its next fetch says it holds the record: two copies, committed.
    a.handle_peer(fetched(N2, N1, 1));
    assert_eq!(a.commit(), Offset(1));
    let out = replies(&mut a);
    assert_eq!(out[0], (C1, Reply::PubAck(PacketId(7), PubReason::Success)));
    assert!(
        matches!(&out[1], (C2, Reply::Deliver(d)) if d.len() == 1),
        "{out:?}"
    );
    // The follower learns the new commit at once (its fetch is answered empty).
    let out: Vec<_> = a.drain_peer_outbox().collect();
    assert!(
        matches!(&out[..], [(N2, PeerReply::Records { stream: Stream::Messages, commit: Offset(1), records, .. })] if records.is_empty()),
        "{out:?}"
    );
}

#[test]
fn replies_after_an_uncommitted_publish_keep_their_order() {
    let mut a = node(N1);
    online(&mut a, C1, "pub", None);
    publish(&mut a, C1, "t", 1);
    a.handle(Event::Subscribe {
        conn: C1,
        pkid: PacketId(2),
        filters: vec![Subscription::new("x", QoS::AtLeastOnce)],
        id: None,
    });
    assert_eq!(
        replies(&mut a),
        vec![],
        "the SUBACK waits behind the PUBACK"
    );
    a.handle_peer(fetched(N3, N1, 1));
    let out = replies(&mut a);
    assert_eq!(out[0], (C1, Reply::PubAck(PacketId(1), PubReason::Success)));
    assert!(matches!(out[1], (C1, Reply::SubAck { .. })), "{out:?}");
}

#[test]
fn a_parked_fetch_is_answered_by_new_records_or_after_its_wait() {
    let mut a = node(N1);
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    a.tick(start);
    a.handle_peer(fetched(N2, N1, 0));
    assert_eq!(a.drain_peer_outbox().count(), 0, "nothing to send: parked");
    a.tick(start + Duration::from_millis(499));
    assert_eq!(a.drain_peer_outbox().count(), 0);
    a.tick(start + Duration::from_millis(500));
    let out: Vec<_> = a.drain_peer_outbox().collect();
    assert!(
        matches!(&out[..], [(N2, PeerReply::Records { stream: Stream::Messages, records, .. })] if records.is_empty()),
        "the heartbeat: {out:?}"
    );
    a.handle_peer(fetched(N2, N1, 0));
    online(&mut a, C1, "pub", None);
    publish(&mut a, C1, "t", 1);
    a.flush();
    let out: Vec<_> = a.drain_peer_outbox().collect();
    assert!(
        matches!(&out[..], [(N2, PeerReply::Records { stream: Stream::Messages, records, .. })] if records.len() == 1),
        "answered by the append: {out:?}"
    );
}

#[test]
fn a_replica_offers_what_its_writer_committed_and_fetches_on() {
    // Three copies: the writer's and this node's are not enough.
    let mut b = node_with(N2, 3);
    online(&mut b, C2, "sub", Some("t/+"));
    let r = record("t/1", QoS::AtLeastOnce, b"from node 1");
    b.handle_peer(PeerEvent::Replicated {
        stream: Stream::Messages,
        log: log_of(N1),
        base: Offset(0),
        commit: Offset(0),
        records: vec![r],
    });
    assert_eq!(
        replies(&mut b),
        vec![],
        "held by one node only: not offered"
    );
    let out: Vec<_> = b.drain_peer_outbox().collect();
    assert_eq!(out, vec![fetch_of(N1, 1)]);
    b.handle_peer(PeerEvent::Replicated {
        stream: Stream::Messages,
        log: log_of(N1),
        base: Offset(1),
        commit: Offset(1),
        records: Vec::new(),
    });
    let out = replies(&mut b);
    let [(C2, Reply::Deliver(d))] = &out[..] else {
        panic!("{out:?}");
    };
    let m = Message::decode(d[0].record.head()).unwrap();
    assert_eq!(
        (m.topic_str(), &m.payload[..]),
        ("t/1", &b"from node 1"[..])
    );
    assert_eq!(d[0].qos, QoS::AtLeastOnce);
}

#[test]
fn records_below_the_replica_head_are_ignored_and_fetched_again() {
    // (Records past it, from the writer, say that it no longer holds what lies
    // between: see `lag`.)
    let mut b = node(N2);
    let r = record("t", QoS::AtLeastOnce, b"y");
    for _ in 0..2 {
        b.handle_peer(PeerEvent::Replicated {
            stream: Stream::Messages,
            log: log_of(N1),
            base: Offset(0),
            commit: Offset(0),
            records: vec![r.clone()],
        });
    }
    let out: Vec<_> = b.drain_peer_outbox().collect();
    assert_eq!(out.last(), Some(&fetch_of(N1, 1)));
    let held = b.mesh.as_deref().map(|m| m.replicas[0].storage.head());
    assert_eq!(held, Some(Offset(1)), "the duplicate is not appended");
}

#[test]
fn one_node_with_one_copy_acks_at_the_append() {
    let mut a = Router::new(RouterConfig::default(), MemStorage::new());
    a.join_mesh(mesh_config(N1, 1, Vec::new()));
    online(&mut a, C1, "pub", None);
    publish(&mut a, C1, "t", 3);
    assert_eq!(
        replies(&mut a),
        vec![(C1, Reply::PubAck(PacketId(3), PubReason::Success))]
    );
    assert_eq!(a.commit(), Offset(1));
}

/// A node does not hand its sessions what its peers published before it started
/// (by the records' times): a replica's history is held, not offered.
#[test]
fn a_replica_offers_only_what_was_published_after_this_node_started() {
    let mut b = node(N2);
    online(&mut b, C2, "sub", Some("t"));
    let at = |ms: u64, payload: &str| {
        NewMessage::new(QoS::AtLeastOnce, false, ms, "t", payload.as_bytes()).framed()
    };
    b.handle_peer(PeerEvent::Replicated {
        stream: Stream::Messages,
        log: log_of(N1),
        base: Offset(0),
        commit: Offset(3),
        records: vec![at(999_999, "old"), at(1_000_000, "new"), at(0, "untimed")],
    });
    let out = replies(&mut b);
    let [(C2, Reply::Deliver(d))] = &out[..] else {
        panic!("{out:?}");
    };
    let got: Vec<_> = d
        .iter()
        .map(|x| Message::decode(x.record.head()).unwrap().payload)
        .collect();
    assert_eq!(got, vec![&b"new"[..], b"untimed"]);
}

/// A follower that holds every record but not the news that they are committed is
/// answered at once, not at the heartbeat: the commit moved on another follower's
/// fetch while its own was on the way.
#[test]
fn a_caught_up_follower_behind_on_the_commit_is_answered_at_once() {
    let mut a = node(N1);
    online(&mut a, C1, "pub", None);
    publish(&mut a, C1, "t", 1);
    a.flush();
    for peer in [N3, N2] {
        a.handle_peer(fetched(peer, N1, 0));
    }
    a.handle_peer(fetched(N2, N1, 1));
    assert_eq!(a.commit(), Offset(1));
    a.drain_peer_outbox().for_each(drop);
    // Node 3 now holds the record too, and was told commit 0.
    a.handle_peer(fetched(N3, N1, 1));
    let out: Vec<_> = a.drain_peer_outbox().collect();
    assert!(
        matches!(&out[..], [(N3, PeerReply::Records { stream: Stream::Messages, commit: Offset(1), records, .. })] if records.is_empty()),
        "{out:?}"
    );
}

/// With two copies asked, a follower that appended a record knows it committed: the
/// writer's copy and its own. It offers it at once, before the writer says so.
#[test]
fn with_two_copies_a_replica_offers_what_it_holds_without_waiting() {
    let mut b = node(N2);
    online(&mut b, C2, "sub", Some("t"));
    b.handle_peer(PeerEvent::Replicated {
        stream: Stream::Messages,
        log: log_of(N1),
        base: Offset(0),
        commit: Offset(0),
        records: vec![record("t", QoS::AtLeastOnce, b"two copies now")],
    });
    let out = replies(&mut b);
    assert!(
        matches!(&out[..], [(C2, Reply::Deliver(d))] if d.len() == 1),
        "{out:?}"
    );
}

/// A replica whose disk refuses the records does not ask for them again at once
/// (that would be a loop at network speed), but after a wait.
#[test]
fn a_refused_replica_append_is_fetched_again_after_a_wait_not_at_once() {
    let mut b = Router::new(RouterConfig::default(), MemStorage::new());
    b.join_mesh(mesh_config(N2, 2, vec![N1]));
    let mut full = MemStorage::new();
    full.set_failing(true);
    b.add_replica(log_of(N1), full).unwrap();
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    b.tick(start);
    b.drain_peer_outbox().for_each(drop);
    b.handle_peer(PeerEvent::Replicated {
        stream: Stream::Messages,
        log: log_of(N1),
        base: Offset(0),
        commit: Offset(0),
        records: vec![record("t", QoS::AtLeastOnce, b"x")],
    });
    b.flush();
    assert_eq!(b.drain_peer_outbox().count(), 0, "no fetch at once");
    b.tick(start + Duration::from_millis(900));
    assert_eq!(b.drain_peer_outbox().count(), 0);
    b.tick(start + Duration::from_secs(1));
    let out: Vec<_> = b.drain_peer_outbox().collect();
    assert_eq!(out, vec![fetch_of(N1, 0)]);
}

#[test]
fn a_session_moved_to_another_node_ends_here_and_its_connection_is_closed() {
    let mut r = node(N1);
    let conn = ConnectionId(1);
    r.handle(Event::Connect {
        conn,
        connect: Connect {
            owned_since: 4,
            ..Connect::v3("dev", false, None)
        },
    });
    r.drain_outbox().for_each(drop);
    assert_eq!(r.session_count(), 1);

    // A change this node had already seen when the client connected: stale.
    r.handle_peer(PeerEvent::Moved {
        client_id: "dev".into(),
        node: N2,
        at: 4,
    });
    // A move to this node itself (its own claim, applied): nothing to end.
    r.handle_peer(PeerEvent::Moved {
        client_id: "dev".into(),
        node: N1,
        at: 9,
    });
    assert!(replies(&mut r).is_empty());
    assert_eq!(r.session_count(), 1);

    r.handle_peer(PeerEvent::Moved {
        client_id: "dev".into(),
        node: N3,
        at: 5,
    });
    assert_eq!(
        replies(&mut r),
        vec![(conn, Reply::Close(CloseReason::SessionTakenOver))]
    );
    assert_eq!(r.session_count(), 0, "the persistent session ends here");
    // Its connection's end, when it comes, finds nothing to do.
    r.handle(Event::Disconnect {
        conn,
        reason: DisconnectReason::Abrupt,
        session_expiry: None,
    });
    assert!(replies(&mut r).is_empty());
}

#[test]
fn a_client_id_assigned_in_a_cluster_names_the_node_and_its_incarnation() {
    let mut r = node(N2);
    r.handle(Event::Connect {
        conn: ConnectionId(1),
        connect: Connect::v3("", true, None),
    });
    let assigned = replies(&mut r)
        .into_iter()
        .find_map(|(_, reply)| match reply {
            Reply::ConnAck {
                assigned_client_id, ..
            } => assigned_client_id,
            _ => None,
        });
    assert_eq!(assigned.as_deref(), Some("rumq-2.1-1"));
}

/// A retained record stamped `secs` after the epoch.
fn retained_at(topic: &str, payload: &[u8], secs: u64) -> Framed {
    NewMessage::new(QoS::AtMostOnce, true, secs * 1_000, topic, payload).framed()
}

/// The retained message a new subscriber to `topic` gets from `r`, if any.
fn retained_payload(
    r: &mut Router<MemStorage>,
    conn: ConnectionId,
    topic: &str,
) -> Option<Vec<u8>> {
    online(r, conn, &format!("reader-{}", conn.0), None);
    r.handle(Event::Subscribe {
        conn,
        pkid: PacketId(1),
        filters: vec![Subscription::new(topic, QoS::AtMostOnce)],
        id: None,
    });
    r.handle(Event::Pull { conn });
    replies(r).into_iter().find_map(|(_, reply)| match reply {
        Reply::Deliver(d) => Some(
            Message::decode(d[0].record.head())
                .unwrap()
                .payload
                .to_vec(),
        ),
        _ => None,
    })
}

#[test]
fn retained_messages_from_several_logs_converge_on_the_newest_in_any_order() {
    // Node 1 gets node 2's newer set and node 3's older set and older clear in one
    // order, node 2's twin in the other: both keep the newest.
    let newer = || retained_at("r/t", b"newer", 2_000);
    let older = || retained_at("r/t", b"older", 1_500);
    let old_clear = || retained_at("r/t", b"", 1_600);
    let send = |r: &mut Router<MemStorage>, from: NodeId, base: u64, records: Vec<Framed>| {
        r.handle_peer(PeerEvent::Replicated {
            stream: Stream::Messages,
            log: log_of(from),
            base: Offset(base),
            commit: Offset(base),
            records,
        });
    };
    let mut a = node(N1);
    send(&mut a, N2, 0, vec![newer()]);
    send(&mut a, N3, 0, vec![older(), old_clear()]);
    let mut b = node(N1);
    send(&mut b, N3, 0, vec![older(), old_clear()]);
    send(&mut b, N2, 0, vec![newer()]);
    for r in [&mut a, &mut b] {
        assert_eq!(retained_payload(r, C2, "r/t"), Some(b"newer".to_vec()));
    }
    // A clear newer than the set clears it, wherever it comes from.
    send(&mut a, N3, 2, vec![retained_at("r/t", b"", 2_500)]);
    assert_eq!(retained_payload(&mut a, ConnectionId(9), "r/t"), None);
    assert_eq!(a.retained_count(), 0);
}

/// Messages node `r`'s connection `conn` gets, pulling until none come.
fn delivered_count(r: &mut Router<MemStorage>, conn: ConnectionId) -> usize {
    let mut count = 0;
    for _ in 0..100 {
        let got: usize = replies(r)
            .into_iter()
            .map(|(_, reply)| match reply {
                Reply::Deliver(d) => d.len(),
                _ => 0,
            })
            .sum();
        if got == 0 {
            break;
        }
        count += got;
        r.handle(Event::Pull { conn });
    }
    count
}

#[test]
fn a_shared_group_across_nodes_gets_each_message_once_in_the_cluster() {
    const GROUP: &str = "$share/g/s/#";
    let (mut a, mut b) = (node(N1), node(N2));
    for r in [&mut a, &mut b] {
        online(r, C1, "member", None);
        r.handle(Event::Subscribe {
            conn: C1,
            pkid: PacketId(1),
            filters: vec![Subscription::new(GROUP, QoS::AtMostOnce)],
            id: None,
        });
        r.handle(Event::Pull { conn: C1 });
        replies(r);
        assert_eq!(
            r.take_shared_groups_changed(),
            Some(vec![GROUP.to_string()])
        );
    }
    let publish_from_3 = |r: &mut Router<MemStorage>, base: u64, n: u64| {
        let records = (0..n)
            .map(|_| record("s/x", QoS::AtMostOnce, b"m"))
            .collect();
        r.handle_peer(PeerEvent::Replicated {
            stream: Stream::Messages,
            log: log_of(N3),
            base: Offset(base),
            commit: Offset(base),
            records,
        });
    };
    // Before the metadata says who has members, each node counts itself in: both
    // deliver (twice rather than never).
    publish_from_3(&mut a, 0, 10);
    publish_from_3(&mut b, 0, 10);
    assert_eq!(
        (delivered_count(&mut a, C1), delivered_count(&mut b, C1)),
        (10, 10)
    );
    for r in [&mut a, &mut b] {
        r.handle_peer(PeerEvent::SharedNodes {
            group: GROUP.into(),
            nodes: vec![N2, N1],
        });
    }
    publish_from_3(&mut a, 10, 60);
    publish_from_3(&mut b, 10, 60);
    let (on_a, on_b) = (delivered_count(&mut a, C1), delivered_count(&mut b, C1));
    assert_eq!(on_a + on_b, 60, "{on_a} + {on_b}");
    assert!(on_a > 10 && on_b > 10, "spread over both: {on_a} + {on_b}");
}

#[test]
fn retention_keeps_what_the_slowest_follower_and_a_replicas_sessions_need() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000);
    let later = start + Duration::from_secs(60);
    // The writer: node 2 holds all five records, node 3 only the first.
    let mut a = node(N1);
    online(&mut a, C1, "pub", None);
    for pkid in 1..=5 {
        publish(&mut a, C1, "t/x", pkid);
    }
    a.flush();
    for (peer, from) in [(N2, 5), (N3, 1)] {
        a.handle_peer(PeerEvent::Fetched {
            stream: Stream::Messages,
            peer,
            log: log_of(N1),
            from: Offset(from),
            bytes_max: 1 << 20,
        });
    }
    a.tick(start);
    assert_eq!(a.storage().last_hold_back(), Some(Some(Offset(1))));

    // A replica: its subscriber's unacknowledged deliveries are kept, then only
    // what is not offered yet.
    let mut b = node(N2);
    online(&mut b, C2, "sub", Some("t/#"));
    let records = (0..3)
        .map(|_| record("t/x", QoS::AtLeastOnce, b"m"))
        .collect();
    b.handle_peer(PeerEvent::Replicated {
        stream: Stream::Messages,
        log: log_of(N1),
        base: Offset(0),
        commit: Offset(0),
        records,
    });
    let delivered: Vec<u16> = replies(&mut b)
        .into_iter()
        .flat_map(|(_, reply)| match reply {
            Reply::Deliver(d) => d.into_iter().filter_map(|d| d.pkid).map(|p| p.0).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(delivered.len(), 3, "{delivered:?}");
    b.tick(start);
    let replica = |b: &Router<MemStorage>| b.replica(log_of(N1)).unwrap().last_hold_back();
    assert_eq!(replica(&b), Some(Some(Offset(0))), "in flight");
    for pkid in delivered {
        b.handle(Event::PubAck {
            conn: C2,
            pkid: PacketId(pkid),
        });
    }
    b.tick(later);
    assert_eq!(replica(&b), Some(Some(Offset(3))), "all acknowledged");
}

#[test]
fn a_claimed_client_id_is_released_when_its_session_ends_here() {
    let mut r = node(N1);
    let connect = |r: &mut Router<MemStorage>, conn, id: &str, persistent: bool| {
        r.handle(Event::Connect {
            conn,
            connect: Connect {
                owned_since: u64::from(!id.is_empty()) * 7,
                ..Connect::v3(id, !persistent, None)
            },
        });
        r.handle(Event::Disconnect {
            conn,
            reason: DisconnectReason::Normal,
            session_expiry: None,
        });
    };
    connect(&mut r, ConnectionId(1), "clean", false);
    connect(&mut r, ConnectionId(2), "kept", true);
    connect(&mut r, ConnectionId(3), "", false);
    let released: Vec<Box<str>> = r.drain_released().collect();
    assert_eq!(
        released,
        vec![Box::from("clean")],
        "not the persistent one, not an assigned id"
    );
    assert_eq!(r.drain_released().count(), 0);
}

#[test]
fn a_session_behind_on_its_own_log_reads_it_up_to_the_commit_only() {
    let config = RouterConfig {
        session_queue_max: 2,
        ..RouterConfig::default()
    };
    let mut a = Router::new(config, MemStorage::new());
    a.join_mesh(mesh_config(N1, 2, vec![N2, N3]));
    online(&mut a, C2, "sub", Some("t"));
    online(&mut a, C1, "pub", None);
    // The first takes the subscriber's credit; the next three overflow its queue
    // of two, so it falls behind on the log.
    for pkid in 1..=4 {
        publish(&mut a, C1, "t", pkid);
    }
    a.flush();
    a.handle_peer(fetched(N2, N1, 4));
    // Two more, appended and not committed.
    publish(&mut a, C1, "t", 5);
    publish(&mut a, C1, "t", 6);
    a.flush();
    a.drain_peer_outbox().for_each(drop);
    assert_eq!(a.commit(), Offset(4));
    assert_eq!(
        delivered_count(&mut a, C2),
        4,
        "the subscriber's scan stops at the commit"
    );
    a.handle_peer(fetched(N2, N1, 6));
    assert_eq!(
        delivered_count(&mut a, C2),
        2,
        "what is committed later comes once, not a second time"
    );
}
