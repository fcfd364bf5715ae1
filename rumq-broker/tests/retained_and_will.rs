//! Retained messages and last wills, against the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use rumqttc::{LastWill, QoS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_set_replace_clear() {
    let broker = Broker::start();
    let port = broker.port();
    let mut publisher = Mqtt::connect(port, "ret-pub").await;

    // Set.
    publisher
        .publish("ret/a", QoS::AtLeastOnce, true, b"v1")
        .await;
    let mut early = Mqtt::connect(port, "ret-early").await;
    early.subscribed("ret/#", QoS::ExactlyOnce).await;
    let p = early.recv_publish().await;
    assert_publish(&p, "ret/a", b"v1", QoS::AtLeastOnce, true);

    // Replace: the existing subscriber gets it live, retain flag clear.
    publisher
        .publish("ret/a", QoS::AtLeastOnce, true, b"v2")
        .await;
    let p = early.recv_publish().await;
    assert_publish(&p, "ret/a", b"v2", QoS::AtLeastOnce, false);

    // A new subscriber gets only the latest, flagged retained, at min(1, its QoS).
    for (id, sub_qos, want) in [
        ("ret-late-0", QoS::AtMostOnce, QoS::AtMostOnce),
        ("ret-late-2", QoS::ExactlyOnce, QoS::AtLeastOnce),
    ] {
        let mut late = Mqtt::connect(port, id).await;
        late.subscribed("ret/+", sub_qos).await;
        let p = late.recv_publish().await;
        assert_publish(&p, "ret/a", b"v2", want, true);
        late.expect_no_publish(QUIET).await;
    }

    // Clear with an empty payload: still delivered live (empty, retain clear)...
    publisher.publish("ret/a", QoS::AtMostOnce, true, b"").await;
    let p = early.recv_publish().await;
    assert_publish(&p, "ret/a", b"", QoS::AtMostOnce, false);
    // ... and no longer retained.
    let mut after = Mqtt::connect(port, "ret-after-clear").await;
    after.subscribed("ret/#", QoS::AtLeastOnce).await;
    after.subscribed("fence", QoS::AtLeastOnce).await;
    publisher
        .publish("fence", QoS::AtLeastOnce, false, b"f")
        .await;
    let p = after.recv_publish().await;
    assert_publish(&p, "fence", b"f", QoS::AtLeastOnce, false);
    early.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_on_subscribe_carry_the_retain_flag_and_live_ones_do_not() {
    let broker = Broker::start();
    let port = broker.port();
    let mut publisher = Mqtt::connect(port, "flag-pub").await;
    let binary: Vec<u8> = (0..=255u8).rev().collect();
    publisher
        .publish("flag/1", QoS::ExactlyOnce, true, &binary)
        .await;
    publisher
        .publish("flag/2", QoS::AtMostOnce, true, b"two")
        .await;
    // Not retained: never replayed.
    publisher
        .publish("flag/3", QoS::AtLeastOnce, false, b"x")
        .await;

    let mut sub = Mqtt::connect(port, "flag-sub").await;
    sub.subscribed("flag/#", QoS::ExactlyOnce).await;
    let mut got = [sub.recv_publish().await, sub.recv_publish().await];
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_publish(&got[0], "flag/1", &binary, QoS::ExactlyOnce, true);
    assert_publish(&got[1], "flag/2", b"two", QoS::AtMostOnce, true);
    sub.expect_no_publish(QUIET).await;

    // Live: a retained publish to a subscriber that already exists has retain clear.
    publisher
        .publish("flag/2", QoS::AtLeastOnce, true, b"live")
        .await;
    let p = sub.recv_publish().await;
    assert_publish(&p, "flag/2", b"live", QoS::AtLeastOnce, false);

    // On the wire: the retained one has bit 0 set, the live one has it clear.
    let mut raw = Raw::connected(port, &ConnectOpts::new("flag-raw")).await;
    raw.send(&subscribe_packet(1, &[("flag/2", 0)])).await;
    assert_eq!(raw.recv().await.bytes(), [0x90, 0x03, 0x00, 0x01, 0x00]);
    let p = raw.recv().await;
    assert_eq!(
        p.bytes(),
        publish_packet("flag/2", b"live", 0, true, false, 0)
    );
    publisher
        .publish("flag/2", QoS::AtMostOnce, true, b"again")
        .await;
    let p = raw.recv().await;
    assert_eq!(
        p.bytes(),
        publish_packet("flag/2", b"again", 0, false, false, 0)
    );
}

/// A watcher subscribed to `will/#` at QoS 1 and `fence`.
async fn watcher(port: u16, id: &str) -> Mqtt {
    let mut w = Mqtt::connect(port, id).await;
    w.subscribed("will/#", QoS::AtLeastOnce).await;
    w.subscribed("fence", QoS::AtLeastOnce).await;
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_on_abrupt_disconnect() {
    let broker = Broker::start();
    let port = broker.port();
    let mut w = watcher(port, "watch-abrupt").await;
    let mut o = options(port, "dies");
    o.set_last_will(LastWill::new(
        "will/dies",
        b"gone\x00\xff".to_vec(),
        QoS::AtLeastOnce,
        false,
    ));
    let m = Mqtt::connect_with(o).await;
    w.expect_no_publish(QUIET).await;
    m.kill().await;
    let p = w.recv_publish().await;
    assert_publish(&p, "will/dies", b"gone\x00\xff", QoS::AtLeastOnce, false);

    // Raw: drop the socket.
    let raw = Raw::connected(
        port,
        &ConnectOpts::new("dies-raw").will("will/raw", b"raw gone", 2, false),
    )
    .await;
    drop(raw);
    let p = w.recv_publish().await;
    assert_publish(&p, "will/raw", b"raw gone", QoS::AtLeastOnce, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_on_keepalive_timeout() {
    let broker = Broker::start();
    let port = broker.port();
    let mut w = watcher(port, "watch-keepalive").await;
    let _silent = Raw::connected(
        port,
        &ConnectOpts::new("silent")
            .keep_alive(1)
            .will("will/silent", b"timed out", 1, false),
    )
    .await;
    let start = tokio::time::Instant::now();
    let p = w.recv_publish().await;
    let elapsed = start.elapsed();
    assert_publish(&p, "will/silent", b"timed out", QoS::AtLeastOnce, false);
    assert!(
        elapsed >= Duration::from_millis(1200) && elapsed <= Duration::from_secs(3),
        "will after {elapsed:?}, expected about 1.5 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_on_protocol_error() {
    let broker = Broker::start();
    let port = broker.port();
    let mut w = watcher(port, "watch-violation").await;
    let violations: [(&str, Vec<u8>); 3] = [
        ("second-connect", ConnectOpts::new("again").encode()),
        (
            "wildcard-publish",
            publish_packet("a/+", b"no", 0, false, false, 0),
        ),
        ("garbage", vec![0xff, 0xff, 0xff, 0xff, 0xff]),
    ];
    for (name, bad) in violations {
        let topic = format!("will/{name}");
        let mut raw = Raw::connected(
            port,
            &ConnectOpts::new(name).will(&topic, name.as_bytes(), 0, false),
        )
        .await;
        raw.send(&bad).await;
        raw.expect_closed(STEP).await;
        let p = w.recv_publish().await;
        assert_publish(&p, &topic, name.as_bytes(), QoS::AtMostOnce, false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_not_published_on_disconnect() {
    let broker = Broker::start();
    let port = broker.port();
    let mut w = watcher(port, "watch-polite").await;
    let mut raw = Raw::connected(
        port,
        &ConnectOpts::new("polite").will("will/polite", b"should not", 1, false),
    )
    .await;
    raw.send(&DISCONNECT).await;
    raw.expect_closed(STEP).await;

    let mut o = options(port, "polite-rumqttc");
    o.set_last_will(LastWill::new(
        "will/polite2",
        b"nope".to_vec(),
        QoS::AtLeastOnce,
        true,
    ));
    Mqtt::connect_with(o).await.disconnect().await;

    let mut publisher = Mqtt::connect(port, "polite-fence").await;
    publisher
        .publish("fence", QoS::AtLeastOnce, false, b"f")
        .await;
    let p = w.recv_publish().await;
    assert_publish(&p, "fence", b"f", QoS::AtLeastOnce, false);
    // Nor retained for later subscribers.
    let mut late = Mqtt::connect(port, "polite-late").await;
    late.subscribed("will/#", QoS::AtLeastOnce).await;
    late.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_will_is_kept_for_later_subscribers() {
    let broker = Broker::start();
    let port = broker.port();
    let mut w = watcher(port, "watch-retained").await;
    let raw = Raw::connected(
        port,
        &ConnectOpts::new("dev-7").will("will/dev-7/status", b"offline", 1, true),
    )
    .await;
    drop(raw);
    let p = w.recv_publish().await;
    assert_publish(&p, "will/dev-7/status", b"offline", QoS::AtLeastOnce, false);
    let mut late = Mqtt::connect(port, "late").await;
    late.subscribed("will/+/status", QoS::ExactlyOnce).await;
    let p = late.recv_publish().await;
    assert_publish(&p, "will/dev-7/status", b"offline", QoS::AtLeastOnce, true);
}
