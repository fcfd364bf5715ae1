//! Clean and persistent sessions, against the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use rumqttc::QoS;

fn persistent(port: u16, id: &str) -> rumqttc::MqttOptions {
    let mut o = options(port, id);
    o.set_clean_session(false);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_session_starts_empty_and_is_discarded() {
    let broker = Broker::start();
    let port = broker.port();
    let mut m = Mqtt::connect(port, "cleaner").await;
    m.subscribed("clean/t", QoS::AtLeastOnce).await;
    m.disconnect().await;

    let mut publisher = Mqtt::connect(port, "clean-pub").await;
    publisher
        .publish("clean/t", QoS::AtLeastOnce, false, b"while away")
        .await;

    let mut m = Mqtt::connect(port, "cleaner").await;
    assert!(!m.connack.session_present);
    m.subscribed("fence", QoS::AtLeastOnce).await;
    publisher
        .publish("clean/t", QoS::AtLeastOnce, false, b"now")
        .await;
    publisher
        .publish("fence", QoS::AtLeastOnce, false, b"f")
        .await;
    // Neither the old subscription nor what was published while away.
    let p = m.recv_publish().await;
    assert_publish(&p, "fence", b"f", QoS::AtLeastOnce, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_keeps_subscriptions_and_queues_qos1_and_qos2() {
    let broker = Broker::start();
    let port = broker.port();
    let mut m = Mqtt::connect_with(persistent(port, "keeper")).await;
    assert!(!m.connack.session_present);
    m.subscribed("keep/#", QoS::ExactlyOnce).await;
    m.disconnect().await;

    let mut publisher = Mqtt::connect(port, "keep-pub").await;
    publisher
        .publish("keep/1", QoS::AtLeastOnce, false, b"one")
        .await;
    publisher
        .publish("keep/0", QoS::AtMostOnce, false, b"zero")
        .await;
    publisher
        .publish("keep/2", QoS::ExactlyOnce, false, b"two")
        .await;
    publisher
        .publish("other", QoS::ExactlyOnce, false, b"no")
        .await;

    let mut m = Mqtt::connect_with(persistent(port, "keeper")).await;
    assert!(m.connack.session_present, "session present flag");
    let p = m.recv_publish().await;
    assert_publish(&p, "keep/1", b"one", QoS::AtLeastOnce, false);
    let p = m.recv_publish().await;
    assert_publish(&p, "keep/2", b"two", QoS::ExactlyOnce, false);
    // The subscription is still there for new messages, without resubscribing.
    publisher
        .publish("keep/3", QoS::AtLeastOnce, false, b"three")
        .await;
    let p = m.recv_publish().await;
    assert_publish(&p, "keep/3", b"three", QoS::AtLeastOnce, false);
    m.expect_no_publish(QUIET).await;

    // The session present flag on the wire.
    m.disconnect().await;
    let (_raw, connack) = Raw::connect(port, &ConnectOpts::new("keeper").clean(false)).await;
    assert_eq!(connack, CONNACK_SESSION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_connect_discards_a_persistent_session() {
    let broker = Broker::start();
    let port = broker.port();
    let (mut raw, connack) = Raw::connect(port, &ConnectOpts::new("switch").clean(false)).await;
    assert_eq!(connack, CONNACK_OK);
    raw.send(&subscribe_packet(1, &[("switch/t", 1)])).await;
    assert_eq!(raw.recv().await.bytes(), [0x90, 0x03, 0x00, 0x01, 0x01]);
    raw.send(&DISCONNECT).await;
    raw.expect_closed(STEP).await;

    // Clean session: no session present, and the old one is gone for good.
    let (mut raw, connack) = Raw::connect(port, &ConnectOpts::new("switch")).await;
    assert_eq!(connack, CONNACK_OK);
    let mut publisher = Mqtt::connect(port, "switch-pub").await;
    publisher
        .publish("switch/t", QoS::AtLeastOnce, false, b"x")
        .await;
    raw.expect_silence(QUIET).await;
    raw.send(&DISCONNECT).await;
    raw.expect_closed(STEP).await;
    let (_raw, connack) = Raw::connect(port, &ConnectOpts::new("switch").clean(false)).await;
    assert_eq!(connack, CONNACK_OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_qos1_is_redelivered_with_dup_on_reconnect() {
    let broker = Broker::start();
    let port = broker.port();
    let opts = ConnectOpts::new("forgetful").clean(false);
    let mut raw = Raw::connected(port, &opts).await;
    raw.send(&subscribe_packet(1, &[("redo/#", 1)])).await;
    assert_eq!(raw.recv().await.bytes(), [0x90, 0x03, 0x00, 0x01, 0x01]);

    let mut publisher = Mqtt::connect(port, "redo-pub").await;
    publisher
        .publish("redo/a", QoS::AtLeastOnce, false, b"first")
        .await;
    publisher
        .publish("redo/b", QoS::AtLeastOnce, false, b"second")
        .await;
    let first = raw.recv_publish().await;
    let second = raw.recv_publish().await;
    assert_eq!(
        (
            first.topic.as_str(),
            &first.payload[..],
            first.qos,
            first.dup
        ),
        ("redo/a", &b"first"[..], 1, false)
    );
    assert_eq!(
        (
            second.topic.as_str(),
            &second.payload[..],
            second.qos,
            second.dup
        ),
        ("redo/b", &b"second"[..], 1, false)
    );
    // Acknowledge only the second, then vanish.
    raw.send(&ack_packet(0x40, second.pkid)).await;
    // Let the PUBACK be processed before the socket goes.
    raw.send(&PINGREQ).await;
    assert_eq!(raw.recv().await.bytes(), PINGRESP);
    drop(raw);

    let (mut raw, connack) = Raw::connect(port, &opts).await;
    assert_eq!(connack, CONNACK_SESSION);
    let again = raw.recv().await;
    assert_eq!(
        again.first, 0x3a,
        "PUBLISH, DUP, QoS 1, no retain: {again:?}"
    );
    assert_eq!(
        again.bytes(),
        publish_packet("redo/a", b"first", 1, false, true, first.pkid)
    );
    raw.send(&ack_packet(0x40, first.pkid)).await;
    // The acknowledged one is not sent again, nor the first after its PUBACK.
    raw.expect_silence(QUIET).await;
    raw.send(&DISCONNECT).await;
    raw.expect_closed(STEP).await;
    let (mut raw, connack) = Raw::connect(port, &opts).await;
    assert_eq!(connack, CONNACK_SESSION);
    raw.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_qos2_is_resumed_on_reconnect() {
    let broker = Broker::start();
    let port = broker.port();
    let opts = ConnectOpts::new("q2-resume").clean(false);
    let mut raw = Raw::connected(port, &opts).await;
    raw.send(&subscribe_packet(1, &[("q2/#", 2)])).await;
    assert_eq!(raw.recv().await.bytes(), [0x90, 0x03, 0x00, 0x01, 0x02]);
    let mut publisher = Mqtt::connect(port, "q2-pub").await;
    publisher
        .publish("q2/x", QoS::ExactlyOnce, false, b"exactly")
        .await;

    // Received, not PUBREC'd: the PUBLISH comes again with DUP.
    let p = raw.recv_publish().await;
    assert_eq!((p.qos, p.dup, &p.payload[..]), (2, false, &b"exactly"[..]));
    drop(raw);
    let (mut raw, connack) = Raw::connect(port, &opts).await;
    assert_eq!(connack, CONNACK_SESSION);
    assert_eq!(
        raw.recv().await.bytes(),
        publish_packet("q2/x", b"exactly", 2, false, true, p.pkid)
    );

    // PUBREC'd, not PUBCOMP'd: the PUBREL comes again, not the PUBLISH.
    raw.send(&ack_packet(0x50, p.pkid)).await;
    assert_eq!(raw.recv().await.bytes(), ack_packet(0x62, p.pkid));
    drop(raw);
    let (mut raw, connack) = Raw::connect(port, &opts).await;
    assert_eq!(connack, CONNACK_SESSION);
    assert_eq!(raw.recv().await.bytes(), ack_packet(0x62, p.pkid));
    raw.send(&ack_packet(0x70, p.pkid)).await;
    raw.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_session_catches_up_from_the_log_in_order() {
    const N: u32 = 300;
    let broker = Broker::with_config("[router]\nsession_queue_max = 8\ninflight_max = 4\n");
    let port = broker.port();
    let mut m = Mqtt::connect_with(persistent(port, "behind")).await;
    m.subscribed("behind/#", QoS::ExactlyOnce).await;
    m.disconnect().await;
    let mut publisher = Mqtt::connect(port, "behind-pub").await;
    for i in 0..N {
        let q = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        publisher
            .publish(&format!("behind/{}", i % 3), q, false, &i.to_be_bytes())
            .await;
    }
    let mut m = Mqtt::connect_with(persistent(port, "behind")).await;
    assert!(m.connack.session_present);
    for i in 0..N {
        let q = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        let p = m.recv_publish().await;
        assert_publish(&p, &format!("behind/{}", i % 3), &i.to_be_bytes(), q, false);
    }
    m.expect_no_publish(QUIET).await;
}
