//! `$SYS` topics: retained and delivered, never stored.

use super::*;

/// The topics of `d`, with each delivery's retain flag.
fn topics(d: &[Delivery]) -> Vec<(String, bool)> {
    d.iter()
        .map(|d| {
            let m = Message::decode(&d.record.load().unwrap()).unwrap();
            (m.topic_str().to_owned(), d.retain)
        })
        .collect()
}

#[test]
fn system_messages_reach_live_subscribers_and_later_ones_retained_never_the_log() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "watcher", false);
    h.subscribe(C1, "$SYS/broker/#", QoS::AtLeastOnce);
    h.connect(C2, "everything", true);
    h.subscribe(C2, "#", QoS::AtLeastOnce);
    h.pull(C1);
    h.pull(C2);
    let head = h.router.storage().head();

    h.router.publish_system("$SYS/broker/uptime", b"10 seconds");
    h.router
        .publish_system("$SYS/broker/clients/connected", b"2");
    h.router.flush();
    let d = h.deliveries(C1);
    assert_eq!(
        topics(&d),
        vec![("$SYS/broker/uptime".into(), false)],
        "a batch is sent at once; the rest waits for the next pull"
    );
    assert!(d
        .iter()
        .all(|d| d.qos == QoS::AtMostOnce && d.pkid.is_none()));
    assert_eq!(
        topics(&h.pull(C1)),
        vec![("$SYS/broker/clients/connected".into(), false)]
    );
    assert!(
        h.deliveries(C2).is_empty(),
        "`#` does not match $SYS (§4.7.2)"
    );

    // A later subscription is sent the retained values, flagged retained.
    h.connect(C3, "late", true);
    h.subscribe(C3, "$SYS/#", QoS::AtMostOnce);
    let mut got = topics(&h.pull(C3));
    got.extend(topics(&h.pull(C3)));
    got.sort();
    assert_eq!(
        got,
        vec![
            ("$SYS/broker/clients/connected".into(), true),
            ("$SYS/broker/uptime".into(), true)
        ]
    );
    assert_eq!(h.router.storage().head(), head, "nothing was appended");
    assert_eq!(h.router.retained_count(), 0);
    assert_eq!(h.router.system_topic_count(), 2);

    // A restart starts without them: they are regenerated, not stored.
    let mut h = h.restart();
    assert_eq!(h.router.system_topic_count(), 0);
    h.connect(C1, "watcher", false);
    assert!(h.pull(C1).is_empty());
}

#[test]
fn a_subscriber_that_does_not_pull_is_owed_only_the_newest_value_of_each_topic() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "slow", true);
    h.subscribe(C1, "$SYS/#", QoS::AtMostOnce);
    for round in 0..100 {
        h.router
            .publish_system("$SYS/broker/uptime", format!("{round}").as_bytes());
        h.router.publish_system("$SYS/broker/version", b"rumq");
    }
    h.router.flush();
    let mut got = payloads(&h.pull(C1));
    got.extend(payloads(&h.pull(C1)));
    got.extend(payloads(&h.pull(C1)));
    got.sort();
    assert_eq!(got, vec![b"99".to_vec(), b"rumq".to_vec()]);
}

#[test]
fn offline_sessions_get_no_system_messages_and_bad_names_are_not_published() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "dev", false);
    h.subscribe(C1, "$SYS/#", QoS::AtLeastOnce);
    disconnect(&mut h, C1);
    h.router.publish_system("$SYS/broker/uptime", b"1");
    h.router.publish_system("$SYS/broker/+", b"wildcard");
    h.router.publish_system("not/system", b"x");
    assert_eq!(h.router.system_topic_count(), 1);
    h.connect(C1, "dev", false);
    // Resuming is not subscribing: no retained copy is sent either.
    assert!(h.pull(C1).is_empty());
}
