//! Restarts and crashes: what the session journal and the log bring back.

use super::faults::{connect_event, faulty};
use super::*;

#[test]
fn sessions_and_retained_messages_survive_a_restart() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "dev", false);
    h.subscribe(C1, "t/#", QoS::ExactlyOnce);
    h.connect(C2, "pub", true);
    h.publish(C2, "t/1", QoS::AtLeastOnce, false, 1, b"a");
    h.publish(C2, "t/2", QoS::ExactlyOnce, false, 2, b"b");
    h.router.flush();
    let d = h.pull(C1);
    assert_eq!(payloads(&d), vec![b"a".to_vec(), b"b".to_vec()]);
    let (pa, pb) = (d[0].pkid.unwrap(), d[1].pkid.unwrap());
    h.router.handle(Event::PubAck { conn: C1, pkid: pa });
    h.router.handle(Event::PubRec { conn: C1, pkid: pb });
    assert_eq!(h.take(C1), vec![Reply::PubRel(pb)]);
    disconnect_with(&mut h, C1, DisconnectReason::Normal);
    // Published while "dev" is offline.
    h.publish(C2, "t/3", QoS::AtLeastOnce, false, 3, b"c");
    h.publish(C2, "t/r", QoS::AtLeastOnce, true, 4, b"r");
    h.router.flush();
    // An inbound QoS 2 publish stored but not released.
    h.connect(C3, "pub2", false);
    h.publish(C3, "u", QoS::ExactlyOnce, false, 5, b"q2");
    h.router.flush();
    assert_eq!(
        h.take(C3),
        vec![Reply::PubRec(PacketId(5), PubReason::NoMatchingSubscribers)]
    );
    disconnect_with(&mut h, C3, DisconnectReason::Abrupt);
    let head = h.router.storage().head();

    // Shut down, restart on the same log with a fresh topic table.
    assert_eq!(
        h.router.snapshot().sessions.len(),
        2,
        "clean sessions are not saved"
    );
    let mut h = h.restart();

    // "dev": session present, the QoS 2 release resumes, then what it missed, in order.
    assert_eq!(
        h.connect(C1, "dev", false),
        vec![accepted(true), Reply::PubRel(pb)]
    );
    h.router.handle(Event::PubComp { conn: C1, pkid: pb });
    let d = h.pull(C1);
    assert_eq!(payloads(&d), vec![b"c".to_vec(), b"r".to_vec()]);
    assert!(d
        .iter()
        .all(|d| !d.dup && !d.retain && d.qos == QoS::AtLeastOnce));
    // Its subscription is still there.
    h.connect(C2, "pub", true);
    h.publish(C2, "t/4", QoS::AtLeastOnce, false, 6, b"d");
    h.router.flush();
    h.take(C2);
    assert_eq!(payloads(&h.pull(C1)), vec![b"d".to_vec()]);

    // The retained message is still retained.
    h.connect(ConnectionId(4), "late", true);
    h.subscribe(ConnectionId(4), "t/r", QoS::AtLeastOnce);
    let d = h.pull(ConnectionId(4));
    assert_eq!(payloads(&d), vec![b"r".to_vec()]);
    assert!(d[0].retain);

    // "pub2" still has its unreleased QoS 2 id: a retransmission is not stored again.
    assert_eq!(h.connect(C3, "pub2", false), vec![accepted(true)]);
    h.publish(C3, "u", QoS::ExactlyOnce, false, 5, b"q2");
    h.router.flush();
    assert_eq!(
        h.take(C3),
        vec![Reply::PubRec(PacketId(5), PubReason::Success)]
    );
    assert_eq!(
        h.router.storage().head(),
        head.add(1),
        "only t/4 was appended"
    );
}

#[test]
fn an_unacked_delivery_survives_a_restart_with_dup() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "dev", false);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    h.connect(C2, "pub", true);
    h.publish(C2, "t", QoS::AtLeastOnce, false, 1, b"m");
    h.publish(C2, "t", QoS::AtLeastOnce, false, 2, b"n");
    h.router.flush();
    let first = h.pull(C1);
    assert_eq!(payloads(&first), vec![b"m".to_vec(), b"n".to_vec()]);
    // Only the second is acknowledged; the connection is still up at shutdown.
    h.router.handle(Event::PubAck {
        conn: C1,
        pkid: first[1].pkid.unwrap(),
    });
    let mut h = h.restart();
    let replies = h.connect(C3, "dev", false);
    assert_eq!(replies[0], accepted(true));
    match &replies[1..] {
        [Reply::Deliver(d)] => {
            assert_eq!(d.len(), 1);
            assert!(d[0].dup);
            assert_eq!(d[0].pkid, first[0].pkid);
            assert_eq!(d[0].record, first[0].record);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        h.pull(C3).is_empty(),
        "the acknowledged one is not sent again"
    );
}

#[test]
fn after_a_crash_every_acked_message_reaches_persistent_sessions() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "online", false);
    h.subscribe(C1, "t/#", QoS::AtLeastOnce);
    h.connect(C3, "offline", false);
    h.subscribe(C3, "t/#", QoS::ExactlyOnce);
    disconnect(&mut h, C3);
    h.connect(C2, "pub", true);
    for i in 0..20u16 {
        h.publish(C2, "t/x", QoS::AtLeastOnce, false, i + 1, &[i as u8]);
    }
    assert_eq!(h.take(C2).len(), 20, "all acknowledged");
    // "online" got and acked the first 5; the rest were in flight or queued.
    let d = h.pull(C1);
    for delivery in &d[..5] {
        h.router.handle(Event::PubAck {
            conn: C1,
            pkid: delivery.pkid.unwrap(),
        });
    }
    h.take(C1);
    let mut h = h.crash();

    // "online": the 15 unacknowledged come back (in flight ones with DUP), in order.
    let replies = h.connect(C1, "online", false);
    assert_eq!(replies[0], accepted(true));
    let mut got: Vec<Delivery> = replies[1..]
        .iter()
        .flat_map(|r| match r {
            Reply::Deliver(d) => d.clone(),
            _ => Vec::new(),
        })
        .collect();
    got.extend(h.pull(C1));
    let want: Vec<Vec<u8>> = (5..20u8).map(|i| vec![i]).collect();
    assert_eq!(payloads(&got), want);
    // "offline": all 20, once each.
    assert_eq!(h.connect(C3, "offline", false), vec![accepted(true)]);
    let want: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i]).collect();
    assert_eq!(payloads(&h.pull(C3)), want);
    // The subscriptions are back too.
    h.connect(C2, "pub", true);
    h.publish(C2, "t/y", QoS::AtLeastOnce, false, 1, b"after");
    h.take(C2);
    assert_eq!(payloads(&h.pull(C3)), vec![b"after".to_vec()]);
}

#[test]
fn after_a_crash_outbound_qos2_resumes_without_a_second_copy() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", false);
    h.subscribe(C1, "t", QoS::ExactlyOnce);
    h.connect(C2, "pub", true);
    for i in 1..=3u16 {
        h.publish(C2, "t", QoS::ExactlyOnce, false, i, &[i as u8]);
    }
    h.take(C2);
    let d = h.pull(C1);
    assert_eq!(d.len(), 3);
    // 1: completed. 2: PUBREC'd (PUBREL sent). 3: only sent.
    let [p1, p2, p3] = [d[0].pkid.unwrap(), d[1].pkid.unwrap(), d[2].pkid.unwrap()];
    h.router.handle(Event::PubRec { conn: C1, pkid: p1 });
    h.router.handle(Event::PubComp { conn: C1, pkid: p1 });
    h.router.handle(Event::PubRec { conn: C1, pkid: p2 });
    assert_eq!(h.take(C1), vec![Reply::PubRel(p1), Reply::PubRel(p2)]);
    let mut h = h.crash();
    let replies = h.connect(C1, "sub", false);
    // 3 again with the same id and DUP (the client dedups it), then the PUBREL of 2.
    match &replies[..] {
        [a, Reply::Deliver(d), Reply::PubRel(rel)] => {
            assert_eq!(*a, accepted(true));
            assert_eq!(d.len(), 1);
            assert_eq!((d[0].pkid, d[0].dup), (Some(p3), true));
            assert_eq!(payloads(d), vec![vec![3u8]]);
            assert_eq!(*rel, p2);
        }
        other => panic!("{other:?}"),
    }
    assert!(h.pull(C1).is_empty(), "nothing is sent under a new id");
}

#[test]
fn after_a_crash_inbound_qos2_ids_survive_even_between_append_and_journal() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::default();
    {
        let (mut r, _, _, journal_full) = faulty(dir.path());
        r.handle(connect_event(C1, "pub", false));
        // Stored and PUBREC'd normally.
        r.handle(publish_qos2(&topics, 1, b"one"));
        let replies: Vec<_> = r.drain_outbox().collect();
        let pubrec = Reply::PubRec(PacketId(1), PubReason::NoMatchingSubscribers);
        assert!(replies.contains(&(C1, pubrec)), "{replies:?}");
        // Appended, but the journal does not take the commit (no PUBREC leaves),
        // and the process dies before it is repaired.
        journal_full.set(true);
        r.handle(publish_qos2(&topics, 2, b"two"));
        let replies: Vec<_> = r.drain_outbox().collect();
        assert!(
            !replies
                .iter()
                .any(|(_, r)| matches!(r, Reply::PubRec(PacketId(2), _))),
            "{replies:?}"
        );
        assert_eq!(r.storage().head(), Offset(2));
    }
    let mut h = open(RouterConfig::default(), dir);
    h.topics = topics;
    assert_eq!(h.connect(C1, "pub", false), vec![accepted(true)]);
    // Both retransmissions are recognised: PUBREC, nothing stored again.
    h.router.handle(publish_qos2(&h.topics, 1, b"one"));
    h.router.handle(publish_qos2(&h.topics, 2, b"two"));
    assert_eq!(
        h.take(C1),
        vec![
            Reply::PubRec(PacketId(1), PubReason::Success),
            Reply::PubRec(PacketId(2), PubReason::Success)
        ]
    );
    assert_eq!(h.router.storage().head(), Offset(2));
    // Released, the ids are free for new messages.
    h.router.handle(Event::PubRel {
        conn: C1,
        pkid: PacketId(2),
    });
    h.take(C1);
    let mut h = h.crash();
    h.connect(C1, "pub", false);
    h.router.handle(publish_qos2(&h.topics, 2, b"new"));
    h.take(C1);
    assert_eq!(h.router.storage().head(), Offset(3));
}

/// A QoS 2 PUBLISH to "q" from `C1`, client "pub", whose record names its origin.
fn publish_qos2(topics: &Topics, pkid: u16, payload: &[u8]) -> Event {
    Event::Publish {
        conn: C1,
        pkid: Some(PacketId(pkid)),
        message: Publication {
            topic: topics.intern("q").unwrap(),
            qos: QoS::ExactlyOnce,
            retain: false,
            record: NewMessage {
                origin: Some(Origin {
                    client_id: "pub",
                    pkid,
                }),
                ..NewMessage::new(QoS::ExactlyOnce, false, 0, "q", payload)
            }
            .framed(),
        },
    }
}

#[test]
fn checkpoints_compact_the_journal_and_lose_nothing() {
    let mut h = harness(RouterConfig {
        journal_checkpoint_bytes: 4 * 1024,
        ..RouterConfig::default()
    });
    h.connect(C1, "sub", false);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    h.connect(C2, "pub", true);
    h.publish(C2, "keep", QoS::AtLeastOnce, true, 1, b"retained");
    for round in 0..600u16 {
        h.publish(C2, "t", QoS::AtLeastOnce, false, round + 2, b"m");
        h.take(C2);
        for d in h.pull(C1) {
            h.router.handle(Event::PubAck {
                conn: C1,
                pkid: d.pkid.unwrap(),
            });
        }
    }
    h.take(C1);
    assert!(h.router.stats().checkpoints > 2, "{:?}", h.router.stats());
    let journal_bytes = h.router.journal_storage().unwrap().stats().bytes;
    assert!(
        journal_bytes < 200 * 1024,
        "journal not compacted: {journal_bytes} bytes"
    );
    // Unacked state after many checkpoints survives a crash.
    h.publish(C2, "t", QoS::AtLeastOnce, false, 999, b"last");
    h.take(C2);
    let mut h = h.crash();
    assert_eq!(h.connect(C1, "sub", false), vec![accepted(true)]);
    assert_eq!(payloads(&h.pull(C1)), vec![b"last".to_vec()]);
    h.connect(C3, "late", true);
    h.subscribe(C3, "keep", QoS::AtLeastOnce);
    assert_eq!(payloads(&h.pull(C3)), vec![b"retained".to_vec()]);
}

#[test]
fn a_cleared_retained_message_stays_cleared_after_a_crash() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "pub", true);
    h.publish(C1, "r/1", QoS::AtLeastOnce, true, 1, b"set");
    h.publish(C1, "r/2", QoS::AtLeastOnce, true, 2, b"kept");
    h.publish(C1, "r/1", QoS::AtLeastOnce, true, 3, b"");
    h.take(C1);
    let mut h = h.crash();
    h.connect(C2, "late", true);
    h.subscribe(C2, "r/+", QoS::AtLeastOnce);
    assert_eq!(payloads(&h.pull(C2)), vec![b"kept".to_vec()]);
}

#[test]
fn a_snapshot_keeps_an_inflight_log_record_by_its_offset_only_as_replay_does() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", false);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    h.connect(C2, "pub", true);
    h.publish(C2, "t", QoS::AtLeastOnce, false, 1, b"x");
    h.router.flush();
    // Delivered from the in-memory tail, so the record is in memory now.
    assert_eq!(payloads(&h.pull(C1)), vec![b"x".to_vec()]);
    let saved = h.router.snapshot();
    let inflight = &saved.sessions[0].inflight;
    assert_eq!(inflight.len(), 1);
    assert_eq!(inflight[0].offset, Some(Offset(0)));
    assert!(
        inflight[0].record.is_empty(),
        "saved absent, read back by offset"
    );
    // A crash and replay of the journal rebuild the same state.
    let h = h.crash();
    assert_eq!(h.router.snapshot(), saved);
}

/// One flush whose ops outgrow the journal's record limit (60 KiB here): they are
/// split over several records instead of being refused by the log, and all of them
/// come back after a crash.
#[test]
fn a_flush_larger_than_a_journal_record_is_split_and_survives_a_crash() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", false);
    let filters: Vec<String> = (0..100)
        .map(|i| format!("{i}/{}", "f".repeat(1000)))
        .collect();
    h.router.handle(Event::Subscribe {
        conn: C1,
        pkid: PacketId(1),
        filters: filters
            .iter()
            .map(|f| Subscription::new(f, QoS::AtLeastOnce))
            .collect(),
        id: None,
    });
    h.router.flush();
    let replies = h.take(C1);
    assert!(
        !replies.iter().any(|r| matches!(r, Reply::Close(_))),
        "the journal append failed: {replies:?}"
    );
    let before = h.router.snapshot().sessions[0].filters.clone();
    let h = h.crash();
    let after = &h.router.snapshot().sessions[0].filters;
    assert_eq!(after.len(), 100);
    assert_eq!(*after, before);
}
