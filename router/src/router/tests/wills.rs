//! The wills of a gone node's connections (`wills`): journaled while armed,
//! claimed by a survivor once that node is silent, and published there.

use ::mesh::NodeId;

use super::session_move::{
    clean_subscriber, clean_subscriber_via, node, others_gone_but, replicate, replies,
};
use super::*;
use crate::PeerEvent;

/// A clean session `id` whose will is "<id> gone" on t.
fn with_will(id: &str) -> Connect {
    let payload = format!("{id} gone");
    let will = Publication {
        topic: TopicId(5),
        qos: QoS::AtLeastOnce,
        retain: false,
        record: NewMessage::new(QoS::AtLeastOnce, false, 1_000, "t", payload.as_bytes()).framed(),
    };
    Connect::v3(id, true, Some(will))
}

/// Node 1 with "dev" connected (on C1) with a will.
fn dev_with_a_will_on_node_1() -> Router<crate::MemStorage> {
    let mut a = node(1);
    a.handle(Event::Connect {
        conn: C1,
        connect: with_will("dev"),
    });
    a
}

/// The payloads delivered to `conn` among `out`.
fn payloads_to(out: Vec<(ConnectionId, Reply)>, conn: ConnectionId) -> Vec<String> {
    let to: Vec<Reply> = (out.into_iter())
        .filter(|(c, _)| *c == conn)
        .map(|(_, r)| r)
        .collect();
    delivered(to)
        .iter()
        .map(|d| {
            let m = Message::decode(d.record.head()).expect("a stored message");
            String::from_utf8(m.payload.to_vec()).expect("utf-8")
        })
        .collect()
}

#[test]
fn a_gone_nodes_armed_will_is_claimed_and_published_by_the_survivor_that_took_it() {
    // On node 1: "dev" connected with a will, "left" too but said DISCONNECT.
    let mut a = dev_with_a_will_on_node_1();
    a.handle(Event::Connect {
        conn: C2,
        connect: with_will("left"),
    });
    a.handle(Event::Disconnect {
        conn: C2,
        reason: DisconnectReason::Normal,
        session_expiry: None,
    });
    replies(&mut a, 2);
    let mut b = node(2);
    clean_subscriber(&mut b, C3);
    replicate(&a, &mut b);
    assert_eq!(b.drain_will_claims().count(), 0, "node 1 is alive");
    // Node 1 goes silent; node 2 syncs with node 3 on its journal.
    others_gone_but(&mut b, 2, &mut node(3), 3);
    let now = b.now + Duration::from_millis(100);
    b.tick(now);
    let claims: Vec<(Box<str>, NodeId)> = b.drain_will_claims().collect();
    assert_eq!(
        claims,
        vec![("dev".into(), NodeId(1))],
        "only the armed will"
    );
    let later = b.now + Duration::from_secs(1);
    b.tick(later);
    assert_eq!(b.drain_will_claims().count(), 0, "asked once");
    // The metadata gave it to node 2: published here.
    b.handle_peer(PeerEvent::WillClaimed {
        client_id: "dev".into(),
        from: NodeId(1),
    });
    assert_eq!(payloads_to(replies(&mut b, 3), C3), vec!["dev gone"]);
}

/// Node 1's second run, after its first had "dev" connected with a will and
/// crashed; every other node has said how far it holds the first run's log.
fn restarted_with_a_will() -> Router<crate::MemStorage> {
    let mut a = dev_with_a_will_on_node_1();
    replies(&mut a, 2);
    let (snapshot, head) =
        crate::journal::replay(a.journal_storage().expect("a journal")).expect("its journal");
    assert_eq!(snapshot.wills.len(), 1, "{snapshot:?}");
    let mut a2 = super::journaled_node(::mesh::LogId {
        node: NodeId(1),
        incarnation: ::mesh::Incarnation(2),
    });
    a2.add_replica(super::session_move::log(1), a.storage().clone());
    a2.resume_run(snapshot, head, super::session_move::log(1))
        .expect("a checkpoint");
    for peer in [2, 3] {
        super::confirmed_by(&mut a2, peer, super::session_move::log(1), 0);
    }
    a2
}

#[test]
fn a_restarted_node_publishes_the_wills_its_crash_left_once_it_still_owns_their_ids() {
    let mut a2 = restarted_with_a_will();
    let claims: Vec<(Box<str>, NodeId)> = a2.drain_will_claims().collect();
    assert_eq!(
        claims,
        vec![("dev".into(), NodeId(1))],
        "claimed from itself"
    );
    clean_subscriber_via(&mut a2, C3, 2);
    a2.handle_peer(PeerEvent::WillClaimed {
        client_id: "dev".into(),
        from: NodeId(1),
    });
    assert_eq!(payloads_to(replies(&mut a2, 2), C3), vec!["dev gone"]);
}

#[test]
fn a_will_the_crash_left_goes_out_before_its_client_connects_again() {
    let mut a2 = restarted_with_a_will();
    clean_subscriber_via(&mut a2, C3, 2);
    a2.handle(Event::Connect {
        conn: C1,
        connect: Connect::v3("dev", true, None),
    });
    assert_eq!(payloads_to(replies(&mut a2, 2), C3), vec!["dev gone"]);
    // Its claim comes back later: nothing more.
    a2.handle_peer(PeerEvent::WillClaimed {
        client_id: "dev".into(),
        from: NodeId(1),
    });
    assert_eq!(payloads_to(replies(&mut a2, 2), C3), Vec::<String>::new());
}

#[test]
fn a_client_that_reconnects_to_a_survivor_first_has_its_dead_connections_will_published_there() {
    let mut a = dev_with_a_will_on_node_1();
    replies(&mut a, 2);
    let mut b = node(2);
    clean_subscriber(&mut b, C3);
    replicate(&a, &mut b);
    others_gone_but(&mut b, 2, &mut node(3), 3);
    // "dev" reconnects to node 2, which took its id from node 1 first.
    b.handle(Event::Connect {
        conn: C2,
        connect: Connect {
            moved_from: Some(NodeId(1)),
            ..Connect::v3("dev", true, None)
        },
    });
    assert_eq!(payloads_to(replies(&mut b, 3), C3), vec!["dev gone"]);
}
