//! The session journal replicated: a reply waits for the journal ops it implies to
//! be held by `ack_copies` nodes, and a follower keeps the writer's persistent
//! state live from its replica.

use ::mesh::{Incarnation, LogId, NodeId, Stream};

use super::*;
use crate::{MemStorage, PeerEvent, PeerReply};

fn log(node: u8) -> LogId {
    LogId {
        node: NodeId(node),
        incarnation: Incarnation(1),
    }
}

/// Node `node` of three with a session journal.
fn node(node: u8) -> Router<MemStorage> {
    super::journaled_node(log(node))
}

fn fetched(r: &mut Router<MemStorage>, stream: Stream, from: Offset) {
    fetched_by(r, 2, stream, from);
}

/// Node `peer` fetches node 1's `stream` from `from`.
fn fetched_by(r: &mut Router<MemStorage>, peer: u8, stream: Stream, from: Offset) {
    r.handle_peer(PeerEvent::Fetched {
        peer: NodeId(peer),
        log: log(1),
        stream,
        from,
        bytes_max: 1 << 20,
    });
}

#[test]
fn a_delivery_to_a_persistent_session_waits_for_its_journal_op_to_be_held_twice() {
    let mut a = node(1);
    a.handle(Event::Connect {
        conn: C1,
        connect: Connect::v3("sub", false, None),
    });
    a.handle(Event::Subscribe {
        conn: C1,
        pkid: PacketId(1),
        filters: vec![Subscription::new("t", QoS::AtLeastOnce)],
        id: None,
    });
    a.handle(Event::Pull { conn: C1 });
    assert!(
        a.drain_outbox().next().is_none(),
        "the CONNACK and SUBACK wait: the session's Open and Subscribe are journaled"
    );
    let journal_head = a.journal_storage().map(Storage::head).expect("a journal");
    fetched(&mut a, Stream::Journal, journal_head);
    let got: Vec<_> = a.drain_outbox().map(|(_, reply)| reply).collect();
    assert_eq!(got.len(), 2, "{got:?}");

    a.handle(Event::Connect {
        conn: C2,
        connect: Connect::v3("pub", true, None),
    });
    a.handle(Event::Publish {
        conn: C2,
        pkid: Some(PacketId(7)),
        message: Publication {
            topic: TopicId(0),
            qos: QoS::AtLeastOnce,
            retain: false,
            record: NewMessage::new(QoS::AtLeastOnce, false, 0, "t", b"m").framed(),
        },
    });
    a.flush();
    // The message is held twice: the clean publisher's PUBACK promises nothing
    // journaled and goes; the delivery to the persistent subscriber was journaled
    // (Sent) and waits.
    fetched(&mut a, Stream::Messages, Offset(1));
    let out: Vec<_> = a.drain_outbox().map(|(conn, _)| conn).collect();
    assert_eq!(out, vec![C2, C2], "the CONNACK and PUBACK");
    let journal_head = a.journal_storage().map(Storage::head).expect("a journal");
    fetched(&mut a, Stream::Journal, journal_head);
    let kinds: Vec<_> = a
        .drain_outbox()
        .map(|(conn, reply)| (conn, matches!(reply, Reply::Deliver(_))))
        .collect();
    assert_eq!(kinds, vec![(C1, true)], "then the delivery");
}

#[test]
fn a_follower_keeps_the_writers_persistent_state_from_its_journal() {
    let mut a = node(1);
    a.handle(Event::Connect {
        conn: C1,
        connect: Connect::v3("dev", false, None),
    });
    a.handle(Event::Subscribe {
        conn: C1,
        pkid: PacketId(1),
        filters: vec![Subscription::new("a/#", QoS::ExactlyOnce)],
        id: None,
    });
    a.flush();
    // Node 2 fetches node 1's journal from its start and gets it.
    fetched(&mut a, Stream::Journal, Offset(0));
    let answers: Vec<_> = a.drain_peer_outbox().collect();
    let Some((
        _,
        PeerReply::Records {
            base,
            commit,
            records,
            ..
        },
    )) = answers.into_iter().find(|(_, r)| {
        matches!(
            r,
            PeerReply::Records {
                stream: Stream::Journal,
                ..
            }
        )
    })
    else {
        panic!("no journal records for node 2");
    };
    let mut b = node(2);
    assert!(b.add_journal_replica(log(1), MemStorage::new()));
    b.handle_peer(PeerEvent::Replicated {
        log: log(1),
        stream: Stream::Journal,
        base,
        commit,
        records: records.iter().map(|p| Framed::new(p)).collect(),
    });
    let state = b.journal_replica_state(log(1)).expect("a journal replica");
    let session = state.session("dev").expect("node 1's session");
    assert_eq!(
        session.filters,
        vec![("a/#".to_string(), SubOptions::qos(QoS::ExactlyOnce))]
    );
    let head = base.add(records.len() as u64);
    assert!(
        b.drain_peer_outbox().any(|(to, r)| to == NodeId(1)
            && matches!(r, PeerReply::Fetch { stream: Stream::Journal, from, .. } if from == head)),
        "it fetches on from its head"
    );
}

#[test]
fn a_follower_keeps_several_checkpoints_so_that_a_lagging_peer_can_sync_from_it() {
    let config = RouterConfig {
        journal_checkpoint_bytes: 1024,
        ..RouterConfig::default()
    };
    let mut a = super::journaled_node_with(log(1), config.clone());
    let mut b = super::journaled_node_with(log(2), config);
    assert!(b.add_journal_replica(log(1), MemStorage::new()));
    a.handle(Event::Connect {
        conn: C1,
        connect: Connect::v3("dev", false, None),
    });
    // Node 1 journals subscriptions, checkpointing every KiB; node 2 gets each
    // flush's records as they are written.
    for i in 0..400u16 {
        let head = b
            .journal_replica(log(1))
            .map(Storage::head)
            .expect("a replica");
        a.handle(Event::Subscribe {
            conn: C1,
            pkid: PacketId(i + 1),
            filters: vec![Subscription::new(format!("f/{}", i % 8), QoS::AtLeastOnce)],
            id: None,
        });
        a.flush();
        let journal = a.journal_storage().expect("a journal");
        let records = (journal.records())
            .filter(|(at, _)| *at >= head)
            .map(|(_, r)| Framed::new(r))
            .collect();
        b.handle_peer(PeerEvent::Replicated {
            log: log(1),
            stream: Stream::Journal,
            base: head,
            commit: journal.head(),
            records,
        });
    }
    let copy = b.journal_replica(log(1)).expect("a replica");
    let begins = (copy.records())
        .filter(|(_, r)| {
            let mut r = (*r).clone();
            std::iter::from_fn(|| crate::journal::Op::decode(&mut r).ok())
                .any(|op| op == crate::journal::Op::Begin)
        })
        .count();
    let earliest = copy.earliest();
    assert!(earliest > Offset(0), "it dropped what is older");
    assert!(
        begins >= 2,
        "it keeps more than the last checkpoint: {begins}"
    );
    // A peer whose copy ends before the last checkpoint syncs from it.
    b.drain_peer_outbox().for_each(drop);
    fetched_by(&mut b, 3, Stream::Journal, earliest);
    let answered = b.drain_peer_outbox().any(|(to, r)| {
        to == NodeId(3) && matches!(r, PeerReply::Records { records, .. } if !records.is_empty())
    });
    assert!(answered);
}
