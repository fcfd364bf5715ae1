//! A node of a cluster restarts: its next run opens a new log and journal and
//! carries on from the earlier run's journal (`Router::resume_run`), its sessions'
//! positions in its old log and in the replicas it kept.

use ::mesh::{Incarnation, LogId, NodeId, Stream};
use commitlog::record::Framed;

use super::*;
use crate::{replay_journal, MemStorage, PeerEvent};

fn log(node: u8, incarnation: u32) -> LogId {
    LogId {
        node: NodeId(node),
        incarnation: Incarnation(incarnation),
    }
}

/// Node 1 of three writing `own`.
fn joined(own: LogId) -> Router<MemStorage> {
    super::journaled_node(own)
}

/// A QoS 1 message on `t` stamped `ms` after the epoch.
fn at(ms: u64, payload: &str) -> Framed {
    NewMessage::new(QoS::AtLeastOnce, false, ms, "t", payload.as_bytes()).framed()
}

/// Node 2's log 2.1 sends `records` from `base`, all committed.
fn from_node_2(r: &mut Router<MemStorage>, base: u64, records: Vec<Framed>) {
    let commit = Offset(base + records.len() as u64);
    r.handle_peer(PeerEvent::Replicated {
        stream: Stream::Messages,
        log: log(2, 1),
        base: Offset(base),
        commit,
        records,
    });
}

/// The replies, once node 2 holds the journal up to its head: in a cluster they
/// wait for that.
fn replies(r: &mut Router<MemStorage>) -> Vec<Reply> {
    r.flush();
    let head = r.journal_storage().expect("a journal").head();
    r.handle_peer(PeerEvent::Fetched {
        peer: NodeId(2),
        log: r.own_log().expect("a cluster node"),
        stream: Stream::Journal,
        from: head,
        bytes_max: 1 << 20,
    });
    r.drain_peer_outbox().for_each(drop);
    r.drain_outbox().map(|(_, reply)| reply).collect()
}

fn connect(r: &mut Router<MemStorage>, conn: ConnectionId, id: &str, clean: bool) -> Vec<Reply> {
    r.handle(Event::Connect {
        conn,
        connect: Connect::v3(id, clean, None),
    });
    replies(r)
}

/// What `conn` is delivered on one pull, as (payload, packet id, dup).
fn pull(r: &mut Router<MemStorage>, conn: ConnectionId) -> Vec<(Vec<u8>, u16, bool)> {
    r.handle(Event::Pull { conn });
    delivered(replies(r))
        .iter()
        .map(|d| {
            let m = Message::decode(d.record.head()).expect("a stored message");
            (m.payload.to_vec(), d.pkid.map_or(0, |p| p.0), d.dup)
        })
        .collect()
}

/// Run 1 of node 1: "sub" reads t from node 2's log and its own, and the process
/// dies with r2 and o1 in flight to it and r3 queued. What its storage holds: its
/// log, its journal, its replica of node 2's log.
fn first_run() -> (MemStorage, MemStorage, MemStorage) {
    let mut a = joined(log(1, 1));
    a.add_replica(log(2, 1), MemStorage::new())
        .expect("a replica");
    connect(&mut a, C1, "sub", false);
    a.handle(Event::Subscribe {
        conn: C1,
        pkid: PacketId(1),
        filters: vec![Subscription::new("t", QoS::AtLeastOnce)],
        id: None,
    });
    a.drain_outbox().for_each(drop);
    pull(&mut a, C1);
    from_node_2(&mut a, 0, vec![at(1_500_000, "r1"), at(1_500_000, "r2")]);
    assert_eq!(
        pull(&mut a, C1),
        vec![(b"r1".to_vec(), 1, false), (b"r2".to_vec(), 2, false)]
    );
    a.handle(Event::PubAck {
        conn: C1,
        pkid: PacketId(1),
    });
    connect(&mut a, C2, "pub", true);
    a.handle(Event::Publish {
        conn: C2,
        pkid: Some(PacketId(9)),
        message: Publication {
            topic: TopicId(0),
            qos: QoS::AtLeastOnce,
            retain: false,
            record: at(1_500_000, "o1"),
        },
    });
    a.flush();
    a.handle_peer(PeerEvent::Fetched {
        stream: Stream::Messages,
        peer: NodeId(2),
        log: log(1, 1),
        from: Offset(1),
        bytes_max: 1 << 20,
    });
    assert_eq!(pull(&mut a, C1), vec![(b"o1".to_vec(), 3, false)]);
    a.handle(Event::Disconnect {
        conn: C1,
        reason: DisconnectReason::Abrupt,
        session_expiry: None,
    });
    // Offline: queued for it, not sent.
    from_node_2(&mut a, 2, vec![at(1_500_000, "r3")]);
    a.flush();
    a.drain_outbox().for_each(drop);

    // The process dies; what its storage holds is what run 2 has.
    let old_log = a.storage().clone();
    let journal = a.journal_storage().expect("a journal").clone();
    let replica = a.replica(log(2, 1)).expect("a replica").clone();
    (old_log, journal, replica)
}

#[test]
fn a_restarted_node_resumes_its_sessions_in_its_old_log_and_its_replicas() {
    let (old_log, journal, replica) = first_run();

    // Run 2: a new log, the old one and the replica read as they were.
    let mut b = joined(log(1, 2));
    b.add_replica(log(1, 1), old_log).expect("the old log");
    b.add_replica(log(2, 1), replica).expect("the replica");
    let (snapshot, head) = replay_journal(&journal).expect("the journal replays");
    assert!(snapshot.logs().contains(&log(2, 1)), "{snapshot:?}");
    b.resume_run(snapshot, head, log(1, 1))
        .expect("a checkpoint");
    assert_eq!(
        b.drain_peer_outbox().collect::<Vec<_>>(),
        vec![(
            NodeId(2),
            PeerReply::Fetch {
                stream: Stream::Messages,
                log: log(2, 1),
                from: Offset(3)
            }
        )],
        "the replica fetches on; its own old log is fetched from nobody"
    );
    // Node 2 published while this one was down (stamped before run 2 started: the
    // replica is not new here, so it is not history); it holds o1 of node 1's log.
    from_node_2(&mut b, 3, vec![at(500_000, "r4")]);
    for peer in [2, 3] {
        super::confirmed_by(&mut b, peer, log(1, 1), 1);
    }

    let replies = connect(&mut b, C3, "sub", false);
    assert_eq!(replies.first(), Some(&accepted(true)), "{replies:?}");
    let resent: Vec<_> = delivered(replies)
        .iter()
        .map(|d| {
            let m = Message::decode(d.record.head()).expect("a stored message");
            (m.payload.to_vec(), d.pkid.map_or(0, |p| p.0), d.dup)
        })
        .collect();
    assert_eq!(
        resent,
        vec![(b"o1".to_vec(), 3, true), (b"r2".to_vec(), 2, true)],
        "what was in flight, read back from the old log and the replica"
    );
    assert_eq!(
        pull(&mut b, C3),
        vec![(b"r3".to_vec(), 1, false), (b"r4".to_vec(), 4, false)],
        "what it missed, each once; r1 was acknowledged"
    );
}

#[test]
fn with_three_copies_a_restarted_node_confirms_its_earlier_log_as_far_as_both_peers_hold_it() {
    // Node 1's first run wrote five records (under ack_copies 3), then crashed.
    let mut earlier = MemStorage::new();
    let five: Vec<Framed> = (0..5)
        .map(|i| NewMessage::new(QoS::AtLeastOnce, false, 0, "t", &[i]).framed())
        .collect();
    earlier.append(&five).expect("memory appends");
    let (first, own) = (log(1, 1), log(1, 2));
    let mut a = Router::open(
        RouterConfig::default(),
        MemStorage::new(),
        MemStorage::new(),
    )
    .expect("a journal in memory");
    a.join_mesh(crate::MeshConfig {
        own,
        ack_copies: 3,
        followers: vec![NodeId(2), NodeId(3)],
        fetch_bytes_max: 1 << 20,
        fetch_wait: std::time::Duration::from_millis(500),
        failure_timeout: std::time::Duration::from_secs(3),
        superseded_keep: std::time::Duration::from_secs(60),
        started: SystemTime::UNIX_EPOCH,
    });
    a.add_earlier_own_log(first, earlier);
    // Node 2 holds all five, node 3 the first three: only those three are on
    // three nodes.
    for (peer, n) in [(2, 5), (3, 3)] {
        a.handle_peer(PeerEvent::Relayed {
            peer: NodeId(peer),
            log: first,
            stream: Stream::Messages,
            base: Offset(0),
            commit: Offset(0),
            records: five[..n].to_vec(),
        });
    }
    let mesh = a.mesh.as_deref().expect("a cluster node");
    let copy = mesh
        .replicas
        .iter()
        .find(|r| r.id == first)
        .expect("its copy");
    assert_eq!(copy.commit, Offset(3));
}
