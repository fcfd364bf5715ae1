//! A client that moves between nodes keeps the order of what it publishes at every
//! reader, whatever each reader's copies of the two logs hold (see `fence`); and a
//! session that moves to a node whose copy of a log is behind its place there
//! waits at its place.

use std::time::Duration;

use ::mesh::Stream;

use super::session_move::{
    carry, clean_subscriber, connect, fetched_by, log, moved, node, publish, replicate, replies,
};
use super::*;
use crate::PeerEvent;

/// The payloads delivered by `r` once node `peer` fetched its heads.
fn got(r: &mut Router<crate::MemStorage>, peer: u8) -> Vec<Vec<u8>> {
    payloads(&delivered(
        replies(r, peer).into_iter().map(|(_, r)| r).collect(),
    ))
}

#[test]
fn a_publisher_moved_from_a_dead_node_is_read_in_order_where_its_old_log_lagged() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let (mut a, mut b, mut c) = (node(1), node(2), node(3));
    for r in [&mut a, &mut b, &mut c] {
        tick_to(r, t0);
    }
    clean_subscriber(&mut c, C3);
    // "pub" publishes p1 and p2 on node 1; node 2 holds them (so they are
    // committed and acknowledged), node 3 does not yet; then node 1 dies.
    connect(&mut a, C1, "pub", None);
    publish(&mut a, C1, 1, "p1");
    publish(&mut a, C1, 2, "p2");
    replies(&mut a, 2);
    replicate(&a, &mut b);
    drop(a);
    // It carries on on node 2 once node 1 counts as gone there.
    let later = t0 + Duration::from_secs(4);
    tick_to(&mut b, later);
    fetched_by(&mut b, 3, 2);
    connect(&mut b, C2, "pub", Some(1));
    tick_to(&mut b, later + Duration::from_secs(1));
    for _ in 0..3 {
        carry(&mut b, 2, &mut c, 3);
        carry(&mut c, 3, &mut b, 2);
    }
    let out: Vec<Reply> = replies(&mut b, 3).into_iter().map(|(_, r)| r).collect();
    assert_eq!(out.first(), Some(&accepted(true)), "{out:?}");
    publish(&mut b, C2, 3, "p3");
    replies(&mut b, 3);
    // Node 3 gets node 2's log before what it lacks of node 1's.
    tick_to(&mut c, later);
    replicate(&b, &mut c);
    assert_eq!(
        got(&mut c, 2),
        Vec::<Vec<u8>>::new(),
        "p3 waits for p1 and p2"
    );
    tick_to(&mut c, later + Duration::from_secs(1));
    for _ in 0..3 {
        carry(&mut c, 3, &mut b, 2);
        carry(&mut b, 2, &mut c, 3);
    }
    assert_eq!(
        got(&mut c, 2),
        vec![b"p1".to_vec(), b"p2".to_vec(), b"p3".to_vec()]
    );
}

/// `records` as node `node`'s log from its start, committed, arriving at `r`.
fn arrive(r: &mut Router<crate::MemStorage>, node: u8, records: Vec<Framed>) {
    let commit = Offset(records.len() as u64);
    r.handle_peer(PeerEvent::Replicated {
        log: log(node),
        stream: Stream::Messages,
        base: Offset(0),
        commit,
        records,
    });
    r.drain_peer_outbox().for_each(drop);
}

fn message(payload: &str) -> Framed {
    NewMessage::new(QoS::AtLeastOnce, false, 2_000_000, "t", payload.as_bytes()).framed()
}

/// "sub", restored as after a restart or a move, subscribed to t, its place in
/// node 3's log at `place`.
fn restore_sub(r: &mut Router<crate::MemStorage>, place: u64) {
    r.restore(crate::Snapshot {
        retained: Vec::new(),
        sessions: vec![crate::SavedSession {
            id: 1,
            client_id: "sub".into(),
            filters: vec![("t".into(), crate::SubOptions::qos(QoS::AtLeastOnce))],
            expiry_secs: crate::event::NEVER_EXPIRES,
            resume: Offset(0),
            resume_in: vec![(log(3), Offset(place))],
            retained: Vec::new(),
            inflight: Vec::new(),
            incoming_qos2: Vec::new(),
        }],
        wills: Vec::new(),
    });
}

/// What "sub", connected as `C1`, gets in up to eight pulls, acknowledging each.
fn pull_all(r: &mut Router<crate::MemStorage>) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    for _ in 0..8 {
        r.handle(Event::Pull { conn: C1 });
        let batch = delivered(replies(r, 2).into_iter().map(|(_, r)| r).collect());
        for d in &batch {
            r.handle(Event::PubAck {
                conn: C1,
                pkid: d.pkid.expect("QoS 1"),
            });
        }
        got.extend(payloads(&batch));
    }
    got
}

#[test]
fn a_session_whose_place_is_past_this_nodes_copy_waits_there() {
    let mut r = node(1);
    tick_to(&mut r, SystemTime::UNIX_EPOCH + Duration::from_secs(1_000));
    // It had read node 3's log up to 2 where it was; this node's copy is empty.
    restore_sub(&mut r, 2);
    connect(&mut r, C1, "sub", None);
    assert_eq!(pull_all(&mut r), Vec::<Vec<u8>>::new());
    arrive(&mut r, 3, vec![message("m0"), message("m1"), message("m2")]);
    assert_eq!(
        pull_all(&mut r),
        vec![b"m2".to_vec()],
        "what lies below its place it had, and never gets again"
    );
}

#[test]
fn a_session_behind_on_both_logs_reads_the_old_one_up_to_the_fence_first() {
    let mut r = node(1);
    tick_to(&mut r, SystemTime::UNIX_EPOCH + Duration::from_secs(1_000));
    // Restored as after a restart: behind on every log, which it reads in the
    // order this node added them (node 2's before node 3's).
    restore_sub(&mut r, 0);
    // A client published p1 and p2 on node 3, then p3 on node 2.
    arrive(&mut r, 3, vec![message("p1"), message("p2")]);
    let fence = crate::Fence {
        after: log(3),
        end: Offset(2),
    };
    arrive(&mut r, 2, vec![fence.framed(), message("p3")]);
    connect(&mut r, C1, "sub", None);
    let got = pull_all(&mut r);
    assert_eq!(got, vec![b"p1".to_vec(), b"p2".to_vec(), b"p3".to_vec()]);
}

/// Node 1's first run, where "pub" published `payloads`, and its second run,
/// which carried "pub" over (replicating the logs of `others`, empty).
fn restarted_node_1(
    payloads: &[&str],
    others: &[u8],
) -> (Router<crate::MemStorage>, Router<crate::MemStorage>) {
    let mut a = node(1);
    connect(&mut a, C1, "pub", None);
    for (pkid, payload) in (1..).zip(payloads) {
        publish(&mut a, C1, pkid, payload);
    }
    replies(&mut a, 2);
    let (snapshot, head) = crate::journal::replay(a.journal_storage().expect("a journal"))
        .expect("the first run's journal");
    let mut a2 = super::journaled_node(::mesh::LogId {
        node: ::mesh::NodeId(1),
        incarnation: ::mesh::Incarnation(2),
    });
    a2.add_replica(log(1), a.storage().clone());
    for other in others {
        a2.add_replica(log(*other), crate::MemStorage::new());
        a2.add_journal_replica(log(*other), crate::MemStorage::new());
    }
    (a2.resume_run(snapshot, head, log(1))).expect("the new run's checkpoint");
    let held = a.storage().head().0;
    for peer in [2, 3] {
        super::confirmed_by(&mut a2, peer, log(1), held);
    }
    (a, a2)
}

#[test]
fn a_client_moved_from_a_restarted_node_before_its_first_record_is_fenced_after_the_earlier_run() {
    // "pub" published p1 and p2 on node 1's first run. Node 1 runs again and
    // carries "pub" over; before its new log holds a record, node 2 takes the
    // client over.
    let (a, mut a2) = restarted_node_1(&["p1", "p2"], &[]);
    let second_run = a2.own_log().expect("a cluster node");
    moved(&mut a2, "pub", 2, 20);
    replies(&mut a2, 3);
    assert_eq!(a2.storage().head(), Offset(0), "nothing in its new log yet");
    let mut b = node(2);
    replicate(&a, &mut b);
    b.add_replica(second_run, crate::MemStorage::new());
    b.add_journal_replica(second_run, crate::MemStorage::new());
    replicate(&a2, &mut b);
    connect(&mut b, C2, "pub", Some(1));
    let out: Vec<Reply> = replies(&mut b, 3).into_iter().map(|(_, r)| r).collect();
    assert_eq!(out.first(), Some(&accepted(true)), "{out:?}");
    publish(&mut b, C2, 3, "p3");
    replies(&mut b, 3);
    // What it publishes on node 2 comes after what it published on node 1's
    // first run at every reader, not only after the empty second run.
    let fences: Vec<crate::Fence> = (b.storage().records())
        .filter_map(|(_, r)| crate::Fence::decode(r))
        .collect();
    let after_first = crate::Fence {
        after: log(1),
        end: Offset(2),
    };
    assert!(fences.contains(&after_first), "{fences:?}");
}

/// `records` stamped at 500 s (before the node started, at 1,000 s: history to a
/// replica new to it), as node 3's log from `base`, committed.
fn arrive_old(r: &mut Router<crate::MemStorage>, base: u64, payloads: &[&str]) {
    let records: Vec<Framed> = (payloads.iter())
        .map(|p| NewMessage::new(QoS::AtLeastOnce, false, 500_000, "t", p.as_bytes()).framed())
        .collect();
    r.handle_peer(PeerEvent::Replicated {
        log: log(3),
        stream: Stream::Messages,
        base: Offset(base),
        commit: Offset(base + records.len() as u64),
        records,
    });
    r.drain_peer_outbox().for_each(drop);
}

#[test]
fn a_session_placed_in_a_new_replica_reads_its_history_on_after_catching_up() {
    let mut r = node(1);
    tick_to(&mut r, SystemTime::UNIX_EPOCH + Duration::from_secs(1_000));
    // "sub" moved here with its place in node 3's log at 1; "new" is live from
    // the start, and gets none of what was stamped before this node started.
    restore_sub(&mut r, 1);
    connect(&mut r, C1, "sub", None);
    r.handle(Event::Connect {
        conn: C3,
        connect: Connect::v3("new", true, None),
    });
    r.handle(Event::Subscribe {
        conn: C3,
        pkid: PacketId(1),
        filters: vec![Subscription::new("t", QoS::AtLeastOnce)],
        id: None,
    });
    arrive_old(&mut r, 0, &["h0", "h1"]);
    assert_eq!(pull_all(&mut r), vec![b"h1".to_vec()], "from its place");
    // Caught up, it is live on that log: what arrives next of its history too.
    arrive_old(&mut r, 2, &["h2"]);
    assert_eq!(pull_all(&mut r), vec![b"h2".to_vec()]);
    r.handle(Event::Pull { conn: C3 });
    assert_eq!(got(&mut r, 2), Vec::<Vec<u8>>::new(), "history to \"new\"");
}

#[test]
fn a_restarted_nodes_first_fence_goes_before_the_fence_of_a_session_moved_there() {
    // Node 1's first run stored p1; it runs again, and before anything is
    // published there, "dev" moves to it from node 3.
    let (_, mut a2) = restarted_node_1(&["p1"], &[2, 3]);
    let mut c = node(3);
    connect(&mut c, C3, "dev", None);
    moved(&mut c, "dev", 1, 20);
    replies(&mut c, 2);
    replicate(&c, &mut a2);
    connect(&mut a2, C2, "dev", Some(3));
    let out: Vec<Reply> = replies(&mut a2, 2).into_iter().map(|(_, r)| r).collect();
    assert_eq!(out.first(), Some(&accepted(true)), "{out:?}");
    // Any fence after this run's log that covers a record covers the first.
    let fences: Vec<Option<crate::Fence>> = (a2.storage().records())
        .map(|(_, r)| crate::Fence::decode(r))
        .collect();
    let restart = crate::Fence {
        after: log(1),
        end: Offset(1),
    };
    assert_eq!(fences.first(), Some(&Some(restart)), "{fences:?}");
    assert!(fences.len() >= 2, "and the move's after it: {fences:?}");
}

#[test]
fn a_fence_after_a_gone_writers_log_waits_until_this_node_offered_all_it_holds_of_it() {
    // Node 3 gets node 1's log (node 1 gone) from node 2 in one relay answer,
    // more than it offers in one stretch; then node 2's log, fenced after all of
    // it. Synced with node 2 on node 1's log, node 3 still offers all it holds
    // of it before what follows the fence, to a subscriber that keeps up.
    const N: u64 = 5 * 4096;
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let mut c = node(3);
    tick_to(&mut c, t0);
    clean_subscriber(&mut c, C3);
    fetched_by(&mut c, 1, 3);
    let later = t0 + Duration::from_secs(4);
    tick_to(&mut c, later);
    fetched_by(&mut c, 2, 3);
    // It matches only the last of them.
    let other = NewMessage::new(QoS::AtLeastOnce, false, 2_000_000, "x", b"").framed();
    let mut old = vec![other; N as usize - 1];
    old.push(message("last"));
    let relayed = [
        (Stream::Messages, 0, old),
        (Stream::Messages, N, Vec::new()),
        (Stream::Journal, 0, Vec::new()),
    ];
    for (stream, base, records) in relayed {
        c.handle_peer(PeerEvent::Relayed {
            peer: ::mesh::NodeId(2),
            log: log(1),
            stream,
            base: Offset(base),
            commit: Offset(base + records.len() as u64),
            records,
        });
    }
    assert!(c.relay_synced(log(1)), "synced with node 2 on node 1's log");
    let fence = crate::Fence {
        after: log(1),
        end: Offset(N),
    };
    arrive(&mut c, 2, vec![fence.framed(), message("new")]);
    let mut got = Vec::new();
    for _ in 0..20 {
        c.handle(Event::Pull { conn: C3 });
        let batch = delivered(replies(&mut c, 1).into_iter().map(|(_, r)| r).collect());
        for d in &batch {
            c.handle(Event::PubAck {
                conn: C3,
                pkid: d.pkid.expect("QoS 1"),
            });
        }
        got.extend(payloads(&batch));
    }
    assert_eq!(got, vec![b"last".to_vec(), b"new".to_vec()]);
}
