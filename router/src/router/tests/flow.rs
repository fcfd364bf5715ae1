//! Connecting, publishing and subscribing: acks after the append, QoS 1 and 2 both ways, sessions,
//! wills, retained messages, limits.

use super::*;

#[test]
fn connect_assigns_ids() {
    let mut h = harness(RouterConfig::default());
    assert_eq!(h.connect(C1, "a", true), vec![accepted(false)]);
    match &h.connect(C2, "", true)[..] {
        [Reply::ConnAck {
            code: ConnectCode::Accepted,
            assigned_client_id: Some(id),
            ..
        }] => assert!(id.starts_with("rumq-")),
        other => panic!("{other:?}"),
    }
    // (3.1.1 refuses an empty id with a persistent session at the connection;
    // MQTT 5 gets one assigned.)
    match &h.connect(C3, "", false)[..] {
        [Reply::ConnAck {
            code: ConnectCode::Accepted,
            assigned_client_id: Some(id),
            ..
        }] => assert!(id.starts_with("rumq-")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn puback_only_after_the_append() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "pub", true);
    h.publish(C1, "t", QoS::AtLeastOnce, false, 7, b"x");
    assert_eq!(h.router.storage().head(), Offset(0), "not appended yet");
    h.router.flush();
    assert_eq!(
        h.take(C1),
        vec![Reply::PubAck(PacketId(7), PubReason::NoMatchingSubscribers)]
    );
    assert_eq!(h.router.storage().head(), Offset(1));
}

#[test]
fn pubsub_in_order_with_effective_qos() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", true);
    assert_eq!(
        h.subscribe(C1, "a/+", QoS::AtLeastOnce),
        vec![Reply::SubAck {
            pkid: PacketId(1),
            codes: vec![SubscribeCode::Granted(QoS::AtLeastOnce)]
        }]
    );
    assert!(h.pull(C1).is_empty(), "nothing yet; the pull waits");
    h.connect(C2, "pub", true);
    h.publish(C2, "a/b", QoS::ExactlyOnce, false, 1, b"one");
    h.publish(C2, "a/c", QoS::AtMostOnce, false, 0, b"two");
    h.publish(C2, "b/c", QoS::AtMostOnce, false, 0, b"not matched");
    h.router.flush();
    // The waiting pull was answered at the flush.
    let d: Vec<Delivery> = h.deliveries(C1);
    assert_eq!(payloads(&d), vec![b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(d[0].qos, QoS::AtLeastOnce, "min(2, 1)");
    assert!(d[0].pkid.is_some() && !d[0].dup && !d[0].retain);
    assert_eq!((d[1].qos, d[1].pkid), (QoS::AtMostOnce, None));
}

#[test]
fn qos2_inbound_is_stored_once() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "pub", false);
    h.publish(C1, "t", QoS::ExactlyOnce, false, 9, b"x");
    h.router.flush();
    assert_eq!(
        h.take(C1),
        vec![Reply::PubRec(PacketId(9), PubReason::NoMatchingSubscribers)]
    );
    // Retransmitted before PUBREL: acknowledged, not stored again.
    h.publish(C1, "t", QoS::ExactlyOnce, false, 9, b"x");
    h.router.flush();
    assert_eq!(
        h.take(C1),
        vec![Reply::PubRec(PacketId(9), PubReason::Success)]
    );
    assert_eq!(h.router.storage().head(), Offset(1));
    h.release(C1, 9, true);
    // After release the id is free again: a new message.
    h.publish(C1, "t", QoS::ExactlyOnce, false, 9, b"y");
    h.router.flush();
    assert_eq!(h.router.storage().head(), Offset(2));
}

#[test]
fn a_pubrel_for_an_id_not_awaiting_release_is_completed_as_unknown() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "pub", true);
    h.publish(C1, "t", QoS::ExactlyOnce, false, 9, b"x");
    h.router.flush();
    h.take(C1);
    h.release(C1, 9, true);
    // A retransmission whose PUBCOMP the client lost.
    h.release(C1, 9, false);
}

#[test]
fn qos2_retransmission_before_the_append_is_stored_once() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "pub", true);
    // Both arrive in one drain, before the flush appends the first.
    h.publish(C1, "t", QoS::ExactlyOnce, false, 9, b"x");
    h.publish(C1, "t", QoS::ExactlyOnce, false, 9, b"x");
    h.router.flush();
    assert_eq!(
        h.take(C1),
        vec![
            Reply::PubRec(PacketId(9), PubReason::NoMatchingSubscribers),
            Reply::PubRec(PacketId(9), PubReason::Success)
        ]
    );
    assert_eq!(h.router.storage().head(), Offset(1));
    // Still remembered after the flush until PUBREL.
    h.publish(C1, "t", QoS::ExactlyOnce, false, 9, b"x");
    h.router.flush();
    assert_eq!(
        h.take(C1),
        vec![Reply::PubRec(PacketId(9), PubReason::Success)]
    );
    assert_eq!(h.router.storage().head(), Offset(1));
    h.release(C1, 9, true);
}

#[test]
fn outbound_qos2_flow() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", false);
    h.subscribe(C1, "t", QoS::ExactlyOnce);
    h.connect(C2, "pub", true);
    h.publish(C2, "t", QoS::ExactlyOnce, false, 1, b"x");
    h.router.flush();
    let d = h.pull(C1);
    let pkid = d[0].pkid.unwrap();
    h.router.handle(Event::PubRec { conn: C1, pkid });
    assert_eq!(h.take(C1), vec![Reply::PubRel(pkid)]);
    h.router.handle(Event::PubComp { conn: C1, pkid });
    let saved = h.router.snapshot();
    assert!(saved.sessions.iter().all(|s| s.inflight.is_empty()));
}

#[test]
fn inflight_limit_holds_back_until_acked() {
    let mut h = harness(RouterConfig {
        inflight_max: 2,
        ..RouterConfig::default()
    });
    h.connect(C1, "sub", true);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    h.connect(C2, "pub", true);
    for i in 0..5u8 {
        h.publish(C2, "t", QoS::AtLeastOnce, false, u16::from(i) + 1, &[i]);
    }
    h.router.flush();
    let d = h.pull(C1);
    assert_eq!(payloads(&d), vec![vec![0], vec![1]]);
    assert!(h.pull(C1).is_empty(), "window full");
    h.router.handle(Event::PubAck {
        conn: C1,
        pkid: d[0].pkid.unwrap(),
    });
    let next: Vec<Delivery> = h.deliveries(C1);
    assert_eq!(payloads(&next), vec![vec![2]]);
}

#[test]
fn persistent_session_gets_what_was_published_while_offline() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "dev", false);
    h.subscribe(C1, "cmd/#", QoS::ExactlyOnce);
    disconnect_with(&mut h, C1, DisconnectReason::Normal);
    h.connect(C2, "pub", true);
    h.publish(C2, "cmd/1", QoS::AtLeastOnce, false, 1, b"q1");
    h.publish(C2, "cmd/2", QoS::AtMostOnce, false, 0, b"q0 is not kept");
    h.publish(C2, "cmd/3", QoS::ExactlyOnce, false, 2, b"q2");
    h.router.flush();
    assert_eq!(h.connect(C3, "dev", false), vec![accepted(true)]);
    let d = h.pull(C3);
    assert_eq!(payloads(&d), vec![b"q1".to_vec(), b"q2".to_vec()]);
    assert_eq!(d[1].qos, QoS::ExactlyOnce);
}

#[test]
fn unacked_messages_are_redelivered_with_dup_on_reconnect() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "dev", false);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    h.connect(C2, "pub", true);
    h.publish(C2, "t", QoS::AtLeastOnce, false, 1, b"m");
    h.router.flush();
    let first = h.pull(C1);
    disconnect_with(&mut h, C1, DisconnectReason::Abrupt);
    let replies = h.connect(C3, "dev", false);
    assert_eq!(replies[0], accepted(true));
    match &replies[1] {
        Reply::Deliver(d) => {
            assert_eq!(d.len(), 1);
            assert!(d[0].dup);
            assert_eq!(d[0].pkid, first[0].pkid);
            assert_eq!(d[0].record, first[0].record);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn clean_session_forgets_everything() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "dev", false);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    disconnect_with(&mut h, C1, DisconnectReason::Normal);
    assert_eq!(h.connect(C2, "dev", true), vec![accepted(false)]);
    disconnect_with(&mut h, C2, DisconnectReason::Normal);
    assert_eq!(h.router.session_count(), 0);
    assert_eq!(h.router.subscription_count(), 0);
}

#[test]
fn takeover_closes_the_old_connection_and_fires_its_will() {
    let mut h = harness(RouterConfig::default());
    h.connect(C3, "watcher", true);
    h.subscribe(C3, "will/#", QoS::AtMostOnce);
    h.pull(C3);
    let will = h.will("will/dev", QoS::AtMostOnce, b"gone");
    h.connect_with_will(C1, "dev", false, Some(will));
    // CONNACK leaves after the old connection's will was appended.
    assert_eq!(h.connect(C2, "dev", false), vec![accepted(true)]);
    assert_eq!(h.router.storage().head(), Offset(1));
    let old = h.take(C1);
    assert_eq!(old, vec![Reply::Close(CloseReason::SessionTakenOver)]);
    let got: Vec<Delivery> = h.deliveries(C3);
    assert_eq!(payloads(&got), vec![b"gone".to_vec()]);
    // The old connection's late disconnect changes nothing.
    disconnect_with(&mut h, C1, DisconnectReason::Abrupt);
    let still = h.subscribe(C2, "x", QoS::AtMostOnce);
    assert!(
        matches!(still[..], [Reply::SubAck { .. }]),
        "C2 still connected"
    );
}

#[test]
fn will_fires_on_abrupt_disconnect_only() {
    for (reason, expect) in [
        (DisconnectReason::Abrupt, 1u64),
        (DisconnectReason::Normal, 0),
    ] {
        let mut h = harness(RouterConfig::default());
        let will = h.will("w", QoS::AtLeastOnce, b"bye");
        h.connect_with_will(C1, "dev", true, Some(will));
        h.router.handle(Event::Disconnect {
            conn: C1,
            reason,
            session_expiry: None,
        });
        h.router.flush();
        assert_eq!(h.router.storage().head(), Offset(expect), "{reason:?}");
    }
}

#[test]
fn retained_set_replace_clear() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "pub", true);
    h.publish(C1, "r/1", QoS::AtLeastOnce, true, 1, b"old");
    h.publish(C1, "r/1", QoS::AtLeastOnce, true, 2, b"new");
    h.publish(C1, "r/2", QoS::AtMostOnce, true, 0, b"other");
    h.router.flush();
    h.connect(C2, "sub", true);
    h.subscribe(C2, "r/#", QoS::ExactlyOnce);
    let mut d = h.pull(C2);
    d.sort_by_key(|d| d.record.head().clone());
    let mut p = payloads(&d);
    p.sort();
    assert_eq!(p, vec![b"new".to_vec(), b"other".to_vec()]);
    assert!(d.iter().all(|d| d.retain));
    // Clear r/1 with an empty retained payload.
    h.publish(C1, "r/1", QoS::AtMostOnce, true, 0, b"");
    h.router.flush();
    h.connect(C3, "sub2", true);
    h.subscribe(C3, "r/#", QoS::AtMostOnce);
    assert_eq!(payloads(&h.pull(C3)), vec![b"other".to_vec()]);
}

#[test]
fn overlapping_subscriptions_deliver_one_copy() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", true);
    h.subscribe(C1, "a/#", QoS::AtMostOnce);
    h.subscribe(C1, "a/+", QoS::AtLeastOnce);
    h.connect(C2, "pub", true);
    h.publish(C2, "a/b", QoS::AtLeastOnce, false, 1, b"x");
    h.router.flush();
    let d = h.pull(C1);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].qos, QoS::AtLeastOnce);
}

#[test]
fn invalid_filter_gets_failure() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", true);
    assert_eq!(
        h.subscribe(C1, "a/#/b", QoS::AtMostOnce),
        vec![Reply::SubAck {
            pkid: PacketId(1),
            codes: vec![SubscribeCode::InvalidFilter]
        }]
    );
}

#[test]
fn unsubscribe_stops_delivery() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", true);
    h.subscribe(C1, "t", QoS::AtMostOnce);
    h.router.handle(Event::Unsubscribe {
        conn: C1,
        pkid: PacketId(4),
        filters: vec!["t".into()],
    });
    assert_eq!(
        h.take(C1),
        vec![Reply::UnsubAck {
            pkid: PacketId(4),
            codes: vec![UnsubscribeCode::Success]
        }]
    );
    h.connect(C2, "pub", true);
    h.publish(C2, "t", QoS::AtMostOnce, false, 0, b"x");
    h.router.flush();
    assert!(h.pull(C1).is_empty());
}

#[test]
fn acks_keep_arrival_order_across_staging() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "pub", false);
    h.publish(C1, "t", QoS::AtLeastOnce, false, 1, b"a");
    h.router.handle(Event::Subscribe {
        conn: C1,
        pkid: PacketId(2),
        filters: vec![Subscription::new("x", QoS::AtMostOnce)],
        id: None,
    });
    h.publish(C1, "t", QoS::AtLeastOnce, false, 3, b"b");
    h.router.flush();
    let r = h.take(C1);
    assert_eq!(
        r[0],
        Reply::PubAck(PacketId(1), PubReason::NoMatchingSubscribers)
    );
    assert!(matches!(
        r[1],
        Reply::SubAck {
            pkid: PacketId(2),
            ..
        }
    ));
    assert_eq!(
        r[2],
        Reply::PubAck(PacketId(3), PubReason::NoMatchingSubscribers)
    );
}

#[test]
fn a_byte_budget_cut_keeps_the_rest_queued_in_order() {
    let mut h = harness(RouterConfig {
        deliver_bytes_max: 100,
        ..RouterConfig::default()
    });
    h.connect(C1, "sub", true);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    h.connect(C2, "pub", true);
    for i in 0..10u8 {
        h.publish(C2, "t", QoS::AtLeastOnce, false, u16::from(i) + 1, &[i; 40]);
    }
    h.router.flush();
    let mut got = Vec::new();
    for _ in 0..20 {
        let d = h.pull(C1);
        if d.is_empty() {
            break;
        }
        assert!(d.len() < 10, "the budget cut the batch");
        got.extend(payloads(&d));
    }
    assert_eq!(got, (0..10u8).map(|i| vec![i; 40]).collect::<Vec<_>>());
}

#[test]
fn subscriptions_past_the_limit_are_refused_but_replacements_are_not() {
    let mut h = harness(RouterConfig {
        subscriptions_max: 2,
        ..RouterConfig::default()
    });
    h.connect(C1, "sub", true);
    h.router.handle(Event::Subscribe {
        conn: C1,
        pkid: PacketId(1),
        filters: vec![
            Subscription::new("a", QoS::AtMostOnce),
            Subscription::new("b", QoS::AtMostOnce),
            Subscription::new("c", QoS::AtMostOnce),
            Subscription::new("a", QoS::AtLeastOnce),
        ],
        id: None,
    });
    assert_eq!(
        h.take(C1),
        vec![Reply::SubAck {
            pkid: PacketId(1),
            codes: vec![
                SubscribeCode::Granted(QoS::AtMostOnce),
                SubscribeCode::Granted(QoS::AtMostOnce),
                SubscribeCode::QuotaExceeded,
                SubscribeCode::Granted(QoS::AtLeastOnce),
            ]
        }]
    );
    assert_eq!(h.router.subscription_count(), 2);
}
