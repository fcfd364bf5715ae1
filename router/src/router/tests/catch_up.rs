//! Reading back from the log: a subscriber that fell behind catches up from it, and large
//! records come by reference.

use super::*;

/// A router whose sessions leave their queue after 3 messages and catch up from the
/// log `scan` records at a time.
fn slow_subscriber_harness(scan: usize) -> Harness {
    harness(RouterConfig {
        session_queue_max: 3,
        deliver_records_max: 4,
        scan_records_max: scan,
        ..RouterConfig::default()
    })
}

/// Pull until a pull brings nothing; the payloads, in order.
fn pull_until_empty(h: &mut Harness, conn: ConnectionId) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    for _ in 0..100 {
        let d = h.pull(conn);
        if d.is_empty() {
            break;
        }
        got.extend(payloads(&d));
    }
    got
}

#[test]
fn a_slow_subscriber_falls_back_to_the_log_and_loses_nothing() {
    let mut h = slow_subscriber_harness(5);
    h.connect(C1, "slow", true);
    h.subscribe(C1, "t/#", QoS::AtMostOnce);
    h.connect(C2, "pub", true);
    for i in 0..50u8 {
        // Interleave a topic the subscriber does not want.
        h.publish(C2, "t/x", QoS::AtMostOnce, false, 0, &[i]);
        h.publish(C2, "u/x", QoS::AtMostOnce, false, 0, &[100 + i]);
    }
    h.router.flush();
    let got = pull_until_empty(&mut h, C1);
    assert_eq!(got, (0..50u8).map(|i| vec![i]).collect::<Vec<_>>());
    assert!(h
        .router
        .sessions
        .values()
        .all(|s| s.is_live_everywhere() || s.conn.is_none()));
}

#[test]
fn catching_up_from_the_log_matches_runs_of_one_topic_and_their_ends() {
    // Scanning remembers the previous record's match: runs of one topic, and the
    // switches between a wanted and an unwanted topic, must come out exact.
    let mut h = slow_subscriber_harness(7);
    h.connect(C1, "slow", true);
    h.subscribe(C1, "t/+", QoS::AtMostOnce);
    h.connect(C2, "pub", true);
    let mut want = Vec::new();
    for i in 0..60u8 {
        let topic = match i % 12 {
            0..=3 => "t/a",
            4..=6 => "u/a",
            7 | 8 => "t/b",
            9 => "t/a",
            _ => "t",
        };
        h.publish(C2, topic, QoS::AtMostOnce, false, 0, &[i]);
        if topic.starts_with("t/") {
            want.push(vec![i]);
        }
    }
    h.router.flush();
    let got = pull_until_empty(&mut h, C1);
    assert_eq!(got, want);
}

/// Large messages a subscriber reads back from a segment come by reference (the rest
/// of the payload left in the file, for the connection to `sendfile`); one whose topic
/// does not fit in the head read is read whole. Either way the subscriber gets what
/// was published, and an unacknowledged one is resent after a restart.
#[test]
fn large_messages_read_back_from_segments_come_by_reference() {
    let log_config = || LogConfig {
        tail_bytes_max: 0,
        ..LogConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut h = open_with_log(RouterConfig::default(), log_config(), dir);
    h.connect(C1, "sub", false);
    h.subscribe(C1, "#", QoS::AtLeastOnce);
    assert!(h.pull(C1).is_empty(), "nothing yet; the pull waits");
    h.connect(C2, "pub", true);
    let big: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
    let long_topic = "t/".repeat(400);
    h.publish(C2, "big", QoS::AtLeastOnce, false, 1, &big);
    h.publish(C2, &long_topic, QoS::AtLeastOnce, false, 2, &big);
    h.publish(C2, "small", QoS::AtLeastOnce, false, 3, b"s");
    h.router.flush();
    let mut d = h.deliveries(C1);
    loop {
        let more = h.pull(C1);
        if more.is_empty() {
            break;
        }
        d.extend(more);
    }
    let want = vec![big.clone(), big.clone(), b"s".to_vec()];
    // (Compared without printing 80 KB on failure.)
    assert!(
        payloads(&d) == want,
        "{} deliveries, not what was published",
        d.len()
    );
    assert!(d[0].record.rest().is_some(), "by reference");
    assert!(
        d[1].record.rest().is_none(),
        "the topic is past the head: read whole"
    );
    assert!(d[2].record.rest().is_none(), "small: whole");
    let topic = Message::decode(d[1].record.head()).unwrap();
    assert_eq!(topic.topic_str(), long_topic);

    // Offline, the session keeps the offset, not the segment file; on its return
    // the message is read again and resent.
    disconnect(&mut h, C1);
    let session = h
        .router
        .sessions
        .values()
        .find(|s| s.conn.is_none())
        .unwrap();
    assert!(session.inflight.values().all(|i| i.record.rest().is_none()));
    let resent = delivered(h.connect(C1, "sub", false));
    assert_resent(&resent, &want);

    // Unacknowledged: resent after a restart (read again from the log).
    let dir = h._dir;
    drop(h.router);
    let mut h = open_with_log(RouterConfig::default(), log_config(), dir);
    let again = delivered(h.connect(C1, "sub", false));
    assert_resent(&again, &want);
}
