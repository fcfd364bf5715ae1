//! The tail a crash left in a node's log (`earlier_tail`): a QoS 2 publish
//! appended but never confirmed by the peers is stored again when its publisher
//! resends it to the node's next run; one they confirm is not; and CONNECTs wait
//! until the next run is synced with its peers on that log.

use ::mesh::{Incarnation, LogId, NodeId};

use super::session_move::{connect, log, replies};
use super::*;
use crate::MemStorage;

fn qos2(conn: ConnectionId, payload: &str) -> Event {
    super::session_move::qos2_publish(conn, "p2", payload)
}

/// Node 1's second run, after its first stored "p2"'s QoS 2 publish "tail" and
/// crashed before any peer held it (its journal saw nothing of it committed).
fn after_a_crash_with_a_tail() -> Router<MemStorage> {
    let mut a = super::session_move::node(1);
    connect(&mut a, C1, "p2", None);
    replies(&mut a, 2);
    a.handle(qos2(C1, "tail"));
    a.flush();
    let (snapshot, head) =
        crate::journal::replay(a.journal_storage().expect("a journal")).expect("its journal");
    let mut a2 = super::journaled_node(LogId {
        node: NodeId(1),
        incarnation: Incarnation(2),
    });
    a2.add_replica(log(1), a.storage().clone());
    a2.resume_run(snapshot, head, log(1)).expect("a checkpoint");
    a2.drain_peer_outbox().for_each(drop);
    a2
}

/// What "sub" (on C3) and "p2" (on C1) get after "p2" resends its publish.
fn resent(a2: &mut Router<MemStorage>) -> (Vec<Vec<u8>>, Vec<Reply>) {
    super::session_move::clean_subscriber_via(a2, C3, 2);
    connect(a2, C1, "p2", None);
    replies(a2, 2);
    a2.handle(qos2(C1, "tail"));
    // Its PUBREC waits for the journal op that remembers the id.
    let mut out = replies(a2, 2);
    out.extend(replies(a2, 2));
    let to = |conn| -> Vec<Reply> {
        (out.iter())
            .filter(|(c, _)| *c == conn)
            .map(|(_, r)| r.clone())
            .collect()
    };
    let got = (delivered(to(C3)).iter())
        .map(|d| {
            let m = Message::decode(d.record.head()).expect("a stored message");
            m.payload.to_vec()
        })
        .collect();
    (got, to(C1))
}

#[test]
fn a_qos2_publish_no_peer_confirmed_is_stored_again_when_its_publisher_resends_it() {
    let mut a2 = after_a_crash_with_a_tail();
    // Node 2 holds none of node 1's first run: "tail" was never committed.
    for peer in [2, 3] {
        super::confirmed_by(&mut a2, peer, log(1), 0);
    }
    let (got, acks) = resent(&mut a2);
    assert_eq!(got, vec![b"tail".to_vec()], "stored now, and delivered");
    assert!(
        acks.contains(&Reply::PubRec(PacketId(9), PubReason::Success)),
        "{acks:?}"
    );
}

#[test]
fn a_qos2_publish_a_peer_confirmed_is_not_stored_again() {
    let mut a2 = after_a_crash_with_a_tail();
    // Node 2 holds it: it was committed (and offered from the first run's log).
    super::confirmed_by(&mut a2, 2, log(1), 1);
    super::confirmed_by(&mut a2, 3, log(1), 0);
    let (got, acks) = resent(&mut a2);
    assert_eq!(got, Vec::<Vec<u8>>::new(), "not delivered again");
    assert!(
        acks.contains(&Reply::PubRec(PacketId(9), PubReason::Success)),
        "{acks:?}"
    );
    let stored = (a2.storage().records())
        .filter_map(|(_, r)| Message::decode(r).ok())
        .count();
    assert_eq!(stored, 0, "not stored again in the new run's log");
}

#[test]
fn a_connect_to_a_restarted_node_waits_until_every_node_said_how_far_it_holds_its_earlier_log() {
    let mut a2 = after_a_crash_with_a_tail();
    connect(&mut a2, C1, "p2", None);
    assert_eq!(replies(&mut a2, 2), vec![], "held");
    super::confirmed_by(&mut a2, 2, log(1), 0);
    assert_eq!(replies(&mut a2, 2), vec![], "held until every node said");
    super::confirmed_by(&mut a2, 3, log(1), 0);
    let out: Vec<Reply> = replies(&mut a2, 2).into_iter().map(|(_, r)| r).collect();
    assert_eq!(out.first(), Some(&accepted(true)), "{out:?}");
}
