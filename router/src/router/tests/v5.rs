//! Scenario tests of what MQTT 5 added to the one internal model: session expiry,
//! will delay, subscription options and identifiers, receive maximum, message
//! expiry, shared subscriptions.

use std::time::{Duration, SystemTime};

use super::*;

/// "dev" connects on `conn` with a session expiry of 100 s and a will delayed by
/// `delay` seconds.
fn connect_with_delayed_will(h: &mut Harness, conn: ConnectionId, delay: u32) {
    let will = h.will("w", QoS::AtLeastOnce, b"bye");
    h.router.handle(Event::Connect {
        conn,
        connect: Connect {
            session_expiry: 100,
            will_delay: delay,
            ..Connect::v3("dev", false, Some(will))
        },
    });
}

fn v5_connect(h: &mut Harness, conn: ConnectionId, id: &str, expiry: u32) -> Vec<Reply> {
    h.router.handle(Event::Connect {
        conn,
        connect: Connect {
            session_expiry: expiry,
            ..Connect::v3(id, false, None)
        },
    });
    h.take(conn)
}

/// Subscribe; returns what was delivered with the SUBACK (retained messages, when
/// the connection was waiting for data).
fn subscribe_with(
    h: &mut Harness,
    conn: ConnectionId,
    sub: Subscription,
    id: Option<u32>,
) -> Vec<Delivery> {
    h.router.handle(Event::Subscribe {
        conn,
        pkid: PacketId(1),
        filters: vec![sub],
        id,
    });
    h.router.flush();
    h.deliveries(conn)
}

fn leave(h: &mut Harness, conn: ConnectionId) {
    h.router.handle(Event::Disconnect {
        conn,
        reason: DisconnectReason::Normal,
        session_expiry: None,
    });
    h.router.flush();
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

#[test]
fn an_offline_session_ends_when_its_expiry_interval_has_passed() {
    let mut h = harness(RouterConfig::default());
    h.router.tick(at(0));
    v5_connect(&mut h, C1, "dev", 10);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    leave(&mut h, C1);
    h.router.tick(at(1)); // arms the timer: ends at 11
    h.router.tick(at(10));
    assert_eq!(h.router.session_count(), 1, "still within its interval");
    h.router.tick(at(12));
    assert_eq!(h.router.session_count(), 0, "expired");
    // Its end is journaled: a crash does not bring it back.
    let h = h.crash();
    assert_eq!(h.router.session_count(), 0);
}

#[test]
fn the_expiry_interval_is_journaled_and_a_disconnect_can_change_it() {
    let mut h = harness(RouterConfig::default());
    v5_connect(&mut h, C1, "dev", 3600);
    leave(&mut h, C1);
    let mut h = h.crash();
    assert_eq!(h.router.snapshot().sessions[0].expiry_secs, 3600);
    // Back, then gone with DISCONNECT setting 0: the session ends at once.
    assert_eq!(v5_connect(&mut h, C1, "dev", 3600), vec![accepted(true)]);
    h.router.handle(Event::Disconnect {
        conn: C1,
        reason: DisconnectReason::Normal,
        session_expiry: Some(0),
    });
    h.router.flush();
    assert_eq!(h.router.session_count(), 0);
    // A 3.1.1 persistent session never expires.
    h.connect(C2, "old", false);
    leave(&mut h, C2);
    h.router.tick(at(0));
    h.router.tick(at(10_000_000));
    assert_eq!(h.router.session_count(), 1);
    assert_eq!(h.router.snapshot().sessions[0].expiry_secs, NEVER_EXPIRES);
}

#[test]
fn a_delayed_will_waits_and_a_reconnect_cancels_it() {
    for reconnect in [false, true] {
        let mut h = harness(RouterConfig::default());
        h.router.tick(at(0));
        connect_with_delayed_will(&mut h, C1, 5);
        h.take(C1);
        h.router.handle(Event::Disconnect {
            conn: C1,
            reason: DisconnectReason::Abrupt,
            session_expiry: None,
        });
        h.router.flush();
        h.router.tick(at(1));
        assert_eq!(h.router.storage().head(), Offset(0), "not yet");
        if reconnect {
            v5_connect(&mut h, C2, "dev", 100);
        }
        h.router.tick(at(7));
        let expect = if reconnect { 0 } else { 1 };
        assert_eq!(
            h.router.storage().head(),
            Offset(expect),
            "reconnect {reconnect}"
        );
    }
}

#[test]
fn a_takeover_cancels_a_delayed_will_unless_the_session_ends() {
    for clean_start in [false, true] {
        let mut h = harness(RouterConfig::default());
        connect_with_delayed_will(&mut h, C1, 30);
        h.take(C1);
        h.router.handle(Event::Connect {
            conn: C2,
            connect: Connect {
                session_expiry: 100,
                ..Connect::v3("dev", clean_start, None)
            },
        });
        h.router.flush();
        let expect = u64::from(clean_start);
        assert_eq!(
            h.router.storage().head(),
            Offset(expect),
            "clean start {clean_start}: the will goes only when the session ends"
        );
    }
}

#[test]
fn no_local_retain_as_published_and_identifiers() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "me", true);
    subscribe_with(
        &mut h,
        C1,
        Subscription {
            no_local: true,
            ..Subscription::new("t/#", QoS::AtLeastOnce)
        },
        Some(5),
    );
    subscribe_with(
        &mut h,
        C1,
        Subscription {
            retain_as_published: true,
            ..Subscription::new("r/#", QoS::AtLeastOnce)
        },
        Some(9),
    );
    h.publish(C1, "t/own", QoS::AtMostOnce, false, 0, b"mine");
    h.connect(C2, "other", true);
    h.publish(C2, "t/x", QoS::AtMostOnce, false, 0, b"theirs");
    h.publish(C2, "r/x", QoS::AtMostOnce, true, 0, b"kept");
    h.router.flush();
    let d = h.pull(C1);
    assert_eq!(payloads(&d), vec![b"theirs".to_vec(), b"kept".to_vec()]);
    assert_eq!(d[0].subscription_ids, vec![5]);
    assert!(!d[0].retain);
    assert_eq!(d[1].subscription_ids, vec![9]);
    assert!(d[1].retain, "retain as published");
}

#[test]
fn retain_handling_1_sends_only_for_a_new_subscription_and_2_never() {
    let mut h = harness(RouterConfig::default());
    h.connect(C2, "pub", true);
    h.publish(C2, "r", QoS::AtMostOnce, true, 0, b"kept");
    h.router.flush();
    h.connect(C1, "sub", true);
    let sub = |handling| Subscription {
        retain_handling: handling,
        ..Subscription::new("r", QoS::AtMostOnce)
    };
    assert!(subscribe_with(&mut h, C1, sub(RetainHandling::Never), None).is_empty());
    assert!(h.pull(C1).is_empty(), "2: never");
    h.router.handle(Event::Unsubscribe {
        conn: C1,
        pkid: PacketId(2),
        filters: vec!["r".into()],
    });
    h.take(C1);
    let d = subscribe_with(&mut h, C1, sub(RetainHandling::OnNewSubscription), None);
    assert_eq!(payloads(&d), vec![b"kept".to_vec()], "1: new");
    assert!(d[0].retain);
    h.pull(C1);
    let d = subscribe_with(&mut h, C1, sub(RetainHandling::OnNewSubscription), None);
    assert!(d.is_empty(), "1: not again for an existing one");
    assert!(h.pull(C1).is_empty());
}

#[test]
fn the_clients_receive_maximum_bounds_the_window() {
    let mut h = harness(RouterConfig::default());
    h.router.handle(Event::Connect {
        conn: C1,
        connect: Connect {
            receive_maximum: 2,
            ..Connect::v3("sub", true, None)
        },
    });
    h.take(C1);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    h.connect(C2, "pub", true);
    for i in 0..4u8 {
        h.publish(C2, "t", QoS::AtLeastOnce, false, u16::from(i) + 1, &[i]);
    }
    h.router.flush();
    let d = h.pull(C1);
    assert_eq!(payloads(&d), vec![vec![0], vec![1]]);
    assert!(h.pull(C1).is_empty());
}

#[test]
fn expired_and_oversized_messages_are_skipped() {
    let mut h = harness(RouterConfig::default());
    let now = at(0);
    h.router.tick(now);
    let now_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    h.router.handle(Event::Connect {
        conn: C1,
        connect: Connect {
            max_packet_size: 100,
            ..Connect::v3("sub", true, None)
        },
    });
    h.take(C1);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    h.connect(C2, "pub", true);
    let publish = |h: &mut Harness, expiry: Option<u32>, age_ms: u64, payload: &[u8], pkid| {
        let record = NewMessage {
            expiry_secs: expiry,
            ..NewMessage::new(QoS::AtLeastOnce, false, now_ms - age_ms, "t", payload)
        }
        .framed();
        let topic = h.topics.intern("t").unwrap();
        h.router.handle(Event::Publish {
            conn: C2,
            pkid: Some(PacketId(pkid)),
            message: Publication {
                topic,
                qos: QoS::AtLeastOnce,
                retain: false,
                record,
            },
        });
    };
    publish(&mut h, Some(5), 6_000, b"stale", 1);
    publish(&mut h, Some(5), 1_000, b"fresh", 2);
    publish(&mut h, None, 0, &[0u8; 200], 3);
    publish(&mut h, None, 0, b"small", 4);
    h.router.flush();
    assert_eq!(
        payloads(&h.pull(C1)),
        vec![b"fresh".to_vec(), b"small".to_vec()]
    );
}

#[test]
fn a_shared_group_spreads_messages_and_hands_back_a_departed_members_share() {
    let mut h = harness(RouterConfig::default());
    for (c, id) in [(C1, "m1"), (C2, "m2")] {
        h.connect(c, id, true);
        h.subscribe(c, "$share/g/job/+", QoS::AtLeastOnce);
        // Waiting for data, like a connection that wrote its last batch.
        assert!(h.pull(c).is_empty());
    }
    h.connect(C3, "pub", true);
    for i in 0..4u8 {
        h.publish(C3, "job/x", QoS::AtLeastOnce, false, u16::from(i) + 1, &[i]);
    }
    h.router.flush();
    let one = h.deliveries(C1);
    let two = h.deliveries(C2);
    assert_eq!(payloads(&one), vec![vec![0], vec![2]], "turns");
    assert_eq!(payloads(&two), vec![vec![1], vec![3]]);
    // m1 acknowledges one and drops: the other goes to m2.
    h.router.handle(Event::PubAck {
        conn: C1,
        pkid: one[0].pkid.unwrap(),
    });
    h.router.handle(Event::Disconnect {
        conn: C1,
        reason: DisconnectReason::Abrupt,
        session_expiry: None,
    });
    h.router.flush();
    for d in &two {
        h.router.handle(Event::PubAck {
            conn: C2,
            pkid: d.pkid.unwrap(),
        });
    }
    h.router.handle(Event::Pull { conn: C2 });
    h.router.flush();
    assert_eq!(payloads(&h.deliveries(C2)), vec![vec![2]], "handed back");
    // A plain subscriber of the same topic still gets every message.
    assert_eq!(h.router.stats().shared_dropped, 0);
}

/// A router over a log with 4 KiB segments whose retention removes everything no
/// session holds back.
fn tiny_retention(offline_bytes_max: u64) -> Harness {
    use commitlog::RetentionConfig;
    let dir = tempfile::tempdir().unwrap();
    let log_config = LogConfig {
        segment_bytes_max: 4096,
        index_bytes_max: 4096,
        record_bytes_max: 1024,
        retention: RetentionConfig {
            bytes_max: 1,
            segments_max: 0,
            age_ms_max: 0,
            hold_bytes_max: 0,
        },
        ..LogConfig::default()
    };
    let log = Log::open(dir.path().join("messages"), log_config).unwrap();
    let journal = Log::open(dir.path().join("state"), LogConfig::default()).unwrap();
    let config = RouterConfig {
        offline_bytes_max,
        retention_interval_ms: 0,
        ..RouterConfig::default()
    };
    Harness {
        router: Router::open(config.clone(), log, journal).unwrap(),
        config,
        topics: Topics::default(),
        pending: Vec::new(),
        _dir: dir,
    }
}

/// 2000 QoS 1 publishes of 64 bytes to "t" from a clean session on `C2`.
fn publish_2000(h: &mut Harness) {
    h.connect(C2, "pub", true);
    for i in 0..2000u16 {
        h.publish(C2, "t", QoS::AtLeastOnce, false, i % 1000 + 1, &[7u8; 64]);
        if i % 100 == 99 {
            h.router.flush();
            h.take(C2);
        }
    }
    h.router.flush();
}

#[test]
fn an_online_clean_session_holds_back_what_it_has_not_been_sent() {
    let mut h = tiny_retention(16 * 1024);
    h.connect(C1, "reader", true);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    publish_2000(&mut h);
    h.router.tick(at(0));
    assert_eq!(
        h.router.storage().earliest(),
        Offset(0),
        "a connected subscriber that has not read yet loses nothing to retention"
    );
    let d = h.pull(C1);
    assert_eq!(d[0].lost_before, 0);
    assert_eq!(h.router.stats().lost_to_retention, 0);
}

#[test]
fn an_offline_session_holds_back_at_most_offline_bytes_max_and_is_told_what_it_lost() {
    let mut h = tiny_retention(16 * 1024);
    h.connect(C1, "away", false);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    leave(&mut h, C1);
    publish_2000(&mut h);
    h.router.tick(at(0));
    let earliest = h.router.storage().earliest();
    assert!(
        earliest > Offset(0),
        "retention removed what it held past the cap"
    );
    let kept = h.router.storage().head().distance_from(earliest);
    assert!(
        kept < 2000 / 2,
        "about 16 KiB of 2000 × ~90 B records kept: {kept}"
    );
    // Back online: it gets what is left, and is told how much it lost.
    assert_eq!(h.connect(C1, "away", false), vec![accepted(true)]);
    let d = h.pull(C1);
    assert!(!d.is_empty());
    assert_eq!(d[0].lost_before, earliest.0, "{:?}", d[0]);
    assert!(h.router.stats().lost_to_retention >= earliest.0);
}
