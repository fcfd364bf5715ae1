//! With `ack_copies` 3 a record is committed once all three nodes hold it, and a
//! node offers its copy of another node's log no further than that: what a
//! restarted node kept, and what its peers hold of a gone writer's log, count
//! only as far as three nodes are known to hold them.

use std::time::{Duration, SystemTime};

use ::mesh::{Incarnation, LogId, NodeId, Stream};
use commitlog::record::Framed;

use super::*;
use crate::{MemStorage, PeerEvent, PeerReply};

fn log(node: u8, incarnation: u32) -> LogId {
    LogId {
        node: NodeId(node),
        incarnation: Incarnation(incarnation),
    }
}

const STARTED: Duration = Duration::from_secs(1_000);

/// A node of three writing `own`, with `ack_copies` 3.
fn node(own: LogId) -> Router<MemStorage> {
    let mut r = super::journaled_node_of(own, RouterConfig::default(), 3);
    r.tick(SystemTime::UNIX_EPOCH + STARTED);
    r
}

/// Five QoS 1 messages on `t`, stamped before the node started.
fn five() -> Vec<Framed> {
    (0..5)
        .map(|i| NewMessage::new(QoS::AtLeastOnce, false, 500_000, "t", &[i]).framed())
        .collect()
}

fn commit_of(r: &Router<MemStorage>, log: LogId) -> Offset {
    let mesh = r.mesh.as_deref().expect("a cluster node");
    let copy = mesh.replicas.iter().find(|c| c.id == log).expect("a copy");
    copy.commit
}

/// `peer`'s answer from its copy of `log` (or, from `log`'s node, its next run's).
fn answer(peer: u8, log: LogId, (base, commit): (u64, u64), records: Vec<Framed>) -> PeerEvent {
    PeerEvent::Relayed {
        peer: NodeId(peer),
        log,
        stream: Stream::Messages,
        base: Offset(base),
        commit: Offset(commit),
        records,
    }
}

/// The fetches of `log` asked of `peer`, and the unasked answers told to it.
fn to_peer(r: &mut Router<MemStorage>, peer: u8, log: LogId) -> Vec<PeerReply> {
    (r.drain_peer_outbox())
        .filter(|(to, reply)| {
            *to == NodeId(peer)
                && matches!(reply, PeerReply::Fetch { log: l, .. } | PeerReply::Records { log: l, .. } if *l == log)
        })
        .map(|(_, reply)| reply)
        .collect()
}

#[test]
fn a_restarted_node_offers_the_copy_it_kept_of_another_nodes_log_as_far_as_the_writer_commits_it() {
    // Node 1's earlier run copied all five records of node 2's log; node 3 may
    // not have had them, so they were not known committed.
    let mut kept = MemStorage::new();
    kept.append(&five()).expect("memory appends");
    let mut a = node(log(1, 2));
    a.add_replica(log(2, 1), kept).expect("a cluster node");
    assert_eq!(
        commit_of(&a, log(2, 1)),
        Offset(0),
        "nothing known committed"
    );
    // Node 2 says three are.
    a.handle_peer(PeerEvent::Replicated {
        log: log(2, 1),
        stream: Stream::Messages,
        base: Offset(5),
        commit: Offset(3),
        records: Vec::new(),
    });
    assert_eq!(commit_of(&a, log(2, 1)), Offset(3));
}

#[test]
fn a_copy_of_a_gone_writers_log_that_grows_is_told_to_that_writers_next_run() {
    // Node 2 holds nothing of node 1's first run yet; node 1 runs anew.
    let mut b = node(log(2, 1));
    b.add_replica(log(1, 1), MemStorage::new());
    b.add_replica(log(1, 2), MemStorage::new());
    b.drain_peer_outbox().for_each(drop);
    // Node 3 relays all five.
    b.handle_peer(answer(3, log(1, 1), (0, 0), five()));
    let told = to_peer(&mut b, 1, log(1, 1));
    assert!(
        told.iter().any(|t| matches!(t,
            PeerReply::Records { base: Offset(5), records, .. } if records.is_empty())),
        "node 1 told that node 2 holds five: {told:?}"
    );
}

#[test]
fn the_next_run_of_a_gone_writer_is_asked_again_until_it_confirms_what_this_copy_holds() {
    let mut b = node(log(2, 1));
    b.add_replica(log(1, 1), MemStorage::new());
    b.add_replica(log(1, 2), MemStorage::new());
    b.handle_peer(answer(3, log(1, 1), (0, 0), five()));
    b.handle_peer(answer(3, log(1, 1), (5, 0), Vec::new()));
    // Node 1's next run has confirmed three of its earlier log so far.
    b.handle_peer(answer(1, log(1, 1), (5, 3), Vec::new()));
    assert_eq!(commit_of(&b, log(1, 1)), Offset(3));
    b.drain_peer_outbox().for_each(drop);
    let mut now = SystemTime::UNIX_EPOCH + STARTED + Duration::from_millis(600);
    b.tick(now);
    let asked = to_peer(&mut b, 1, log(1, 1));
    assert!(
        asked.iter().any(|a| matches!(
            a,
            PeerReply::Fetch {
                from: Offset(5),
                ..
            }
        )),
        "asked again: {asked:?}"
    );
    // Once it has confirmed all five, it is not asked again.
    b.handle_peer(answer(1, log(1, 1), (5, 5), Vec::new()));
    assert_eq!(commit_of(&b, log(1, 1)), Offset(5));
    b.drain_peer_outbox().for_each(drop);
    now += Duration::from_millis(600);
    b.handle_peer(answer(3, log(1, 1), (5, 0), Vec::new()));
    b.tick(now);
    assert!(
        !to_peer(&mut b, 1, log(1, 1))
            .iter()
            .any(|a| matches!(a, PeerReply::Fetch { .. })),
        "synced with node 1"
    );
}

#[test]
fn a_kept_copy_whose_start_retention_took_is_offered_on_from_its_earliest_record() {
    let mut kept = MemStorage::new();
    kept.append(&five()).expect("memory appends");
    kept.remove_before(Offset(3)).expect("memory removes");
    let mut a = node(log(1, 2));
    a.add_replica(log(2, 1), kept).expect("a cluster node");
    a.handle_peer(PeerEvent::Replicated {
        log: log(2, 1),
        stream: Stream::Messages,
        base: Offset(5),
        commit: Offset(5),
        records: Vec::new(),
    });
    let mesh = a.mesh.as_deref().expect("a cluster node");
    let copy = mesh
        .replicas
        .iter()
        .find(|c| c.id == log(2, 1))
        .expect("a copy");
    assert_eq!((copy.commit, copy.fanned), (Offset(5), Offset(5)));
}
