//! CONNECT / CONNACK, MQTT 3.1, client id takeover and keepalive, against the real
//! binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use rumqttc::{ConnectReturnCode, ConnectionError, QoS};

/// A broker that lets in only alice (password "secret"), from a password file in
/// `dir`.
fn auth_broker(dir: &std::path::Path) -> Broker {
    let file = password_file(dir, &[("alice", "secret")]);
    Broker::with_config(&format!(
        "[auth]\nallow_anonymous = false\npassword_file = {:?}\n",
        file.display().to_string()
    ))
}

/// A round trip through the broker proves a client works: it subscribes to `topic`
/// and receives what it publishes there.
async fn assert_works(m: &mut Mqtt, topic: &str) {
    m.subscribed(topic, QoS::AtLeastOnce).await;
    m.publish(topic, QoS::AtLeastOnce, false, b"ping").await;
    let p = m.recv_publish().await;
    assert_publish(&p, topic, b"ping", QoS::AtLeastOnce, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_0_accepted() {
    let broker = Broker::start();
    let (mut raw, connack) = Raw::connect(broker.port(), &ConnectOpts::new("raw-ok")).await;
    assert_eq!(connack, CONNACK_OK);
    raw.send(&PINGREQ).await;
    assert_eq!(raw.recv().await.bytes(), PINGRESP);

    let mut m = Mqtt::connect(broker.port(), "rumqttc-ok").await;
    assert_eq!(m.connack.code, ConnectReturnCode::Success);
    assert!(!m.connack.session_present);
    assert_works(&mut m, "connect/ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_1_unacceptable_protocol_version() {
    let broker = Broker::start();
    for level in [6u8, 2, 7] {
        let mut opts = ConnectOpts::new("v");
        opts.level = level;
        let mut raw = Raw::open(broker.port()).await;
        raw.send(&opts.encode()).await;
        assert_eq!(
            raw.recv().await.bytes(),
            [0x20, 0x02, 0x00, 0x01],
            "level {level}"
        );
        raw.expect_closed(STEP).await;
    }
    // MQIsdp at a level other than 3 is refused the same way.
    let mut opts = ConnectOpts::new("v");
    opts.protocol = "MQIsdp";
    opts.level = 4;
    let mut raw = Raw::open(broker.port()).await;
    raw.send(&opts.encode()).await;
    assert_eq!(raw.recv().await.bytes(), [0x20, 0x02, 0x00, 0x01]);
    raw.expect_closed(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_2_identifier_rejected_for_empty_id_without_clean_session() {
    let broker = Broker::start();
    let (mut raw, connack) = Raw::connect(broker.port(), &ConnectOpts::new("").clean(false)).await;
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x02]);
    raw.expect_closed(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_client_id_with_clean_session_is_accepted() {
    let broker = Broker::start();
    // Two of them at once: each gets its own id, neither takes the other over.
    let mut sub = Raw::connected(broker.port(), &ConnectOpts::new("")).await;
    let mut publisher = Raw::connected(broker.port(), &ConnectOpts::new("")).await;
    sub.send(&subscribe_packet(1, &[("anon/t", 0)])).await;
    assert_eq!(sub.recv().await.bytes(), [0x90, 0x03, 0x00, 0x01, 0x00]);
    publisher
        .send(&publish_packet("anon/t", b"hello", 0, false, false, 0))
        .await;
    let p = sub.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("anon/t", &b"hello"[..])
    );
    publisher.send(&PINGREQ).await;
    assert_eq!(publisher.recv().await.bytes(), PINGRESP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_3_server_unavailable_over_max_connections() {
    let broker = Broker::with_config("[limits]\nmax_connections = 1\n");
    let first = Mqtt::connect(broker.port(), "first").await;

    match Mqtt::try_connect(options(broker.port(), "second")).await {
        Err(ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, ConnectReturnCode::ServiceUnavailable)
        }
        other => panic!("expected refusal, got {other:?}"),
    }
    let (mut raw, connack) = Raw::connect(broker.port(), &ConnectOpts::new("third")).await;
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x03]);
    raw.expect_closed(STEP).await;

    // Once the first leaves, its slot is free again.
    first.disconnect().await;
    let deadline = tokio::time::Instant::now() + STEP;
    let mut m = loop {
        match Mqtt::try_connect(options(broker.port(), "fourth")).await {
            Ok(m) => break m,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still refused: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_works(&mut m, "slots/free").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_4_bad_user_name_or_password() {
    let dir = tempfile::tempdir().unwrap();
    let broker = auth_broker(dir.path());
    for (user, pass) in [("alice", "wrong"), ("bob", "secret"), ("alice", "")] {
        let mut o = options(broker.port(), "auth");
        o.set_credentials(user, pass);
        match Mqtt::try_connect(o).await {
            Err(ConnectionError::ConnectionRefused(code)) => {
                assert_eq!(
                    code,
                    ConnectReturnCode::BadUserNamePassword,
                    "{user}/{pass}"
                )
            }
            other => panic!("{user}/{pass}: expected refusal, got {other:?}"),
        }
    }
    // A user name without a password, raw.
    let mut opts = ConnectOpts::new("nopass");
    opts.username = Some("alice".into());
    let (mut raw, connack) = Raw::connect(broker.port(), &opts).await;
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x04]);
    raw.expect_closed(STEP).await;

    let mut o = options(broker.port(), "alice-client");
    o.set_credentials("alice", "secret");
    let mut m = Mqtt::connect_with(o).await;
    assert_eq!(m.connack.code, ConnectReturnCode::Success);
    assert_works(&mut m, "auth/ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_5_not_authorized_without_user_name() {
    let dir = tempfile::tempdir().unwrap();
    let broker = auth_broker(dir.path());
    match Mqtt::try_connect(options(broker.port(), "anonymous")).await {
        Err(ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, ConnectReturnCode::NotAuthorized)
        }
        other => panic!("expected refusal, got {other:?}"),
    }
    let (mut raw, connack) = Raw::connect(broker.port(), &ConnectOpts::new("anon")).await;
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x05]);
    raw.expect_closed(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_is_accepted() {
    let broker = Broker::start();
    let mut opts = ConnectOpts::new("old-client");
    opts.protocol = "MQIsdp";
    opts.level = 3;
    let mut old = Raw::connected(broker.port(), &opts).await;
    old.send(&subscribe_packet(3, &[("v31/#", 1)])).await;
    assert_eq!(old.recv().await.bytes(), [0x90, 0x03, 0x00, 0x03, 0x01]);

    // mosquitto_pub speaking 3.1 to a 3.1 raw subscriber and a 3.1.1 rumqttc one.
    let mut new = Mqtt::connect(broker.port(), "new-client").await;
    new.subscribed("v31/#", QoS::AtLeastOnce).await;
    mosquitto_pub(
        broker.port(),
        &[
            "-V", "mqttv31", "-i", "mosq-v31", "-q", "1", "-t", "v31/m", "-m", "from 3.1",
        ],
    );
    let p = old.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos, p.retain, p.dup),
        ("v31/m", &b"from 3.1"[..], 1, false, false)
    );
    old.send(&ack_packet(0x40, p.pkid)).await;
    let p = new.recv_publish().await;
    assert_publish(&p, "v31/m", b"from 3.1", QoS::AtLeastOnce, false);

    // The 3.1 client publishes too.
    old.send(&publish_packet("v31/raw", b"raw 3.1", 1, false, false, 9))
        .await;
    let mut got_puback = false;
    let mut got_publish = false;
    while !(got_puback && got_publish) {
        let pkt = old.recv().await;
        match pkt.kind() {
            4 => {
                assert_eq!(pkt.bytes(), [0x40, 0x02, 0x00, 0x09]);
                got_puback = true;
            }
            3 => {
                let p = pkt.publish();
                assert_eq!(
                    (p.topic.as_str(), &p.payload[..]),
                    ("v31/raw", &b"raw 3.1"[..])
                );
                old.send(&ack_packet(0x40, p.pkid)).await;
                got_publish = true;
            }
            _ => panic!("unexpected {pkt:?}"),
        }
    }
    let p = new.recv_publish().await;
    assert_publish(&p, "v31/raw", b"raw 3.1", QoS::AtLeastOnce, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_takeover_closes_the_first_connection() {
    let broker = Broker::start();
    let mut first = Raw::connected(broker.port(), &ConnectOpts::new("same-id")).await;
    let mut second = Raw::connected(broker.port(), &ConnectOpts::new("same-id")).await;
    first.expect_closed(STEP).await;
    // The second one is the session now.
    second.send(&subscribe_packet(1, &[("take/over", 0)])).await;
    assert_eq!(second.recv().await.bytes(), [0x90, 0x03, 0x00, 0x01, 0x00]);
    second
        .send(&publish_packet("take/over", b"mine", 0, false, false, 0))
        .await;
    let p = second.recv_publish().await;
    assert_eq!(&p.payload[..], b"mine");

    // rumqttc sees the same.
    let mut a = Mqtt::connect(broker.port(), "rumqttc-same").await;
    let mut b = Mqtt::connect(broker.port(), "rumqttc-same").await;
    a.closed().await;
    assert_works(&mut b, "take/over/rumqttc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_expiry_drops_a_silent_client() {
    let broker = Broker::start();
    let mut raw = Raw::connected(broker.port(), &ConnectOpts::new("silent").keep_alive(1)).await;
    let elapsed = raw.expect_closed(Duration::from_secs(4)).await;
    assert!(
        elapsed >= Duration::from_millis(1200) && elapsed <= Duration::from_secs(3),
        "closed after {elapsed:?}, expected about 1.5 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_is_kept_by_pings() {
    let broker = Broker::start();
    let mut raw = Raw::connected(broker.port(), &ConnectOpts::new("pinger").keep_alive(1)).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        raw.send(&PINGREQ).await;
        assert_eq!(raw.recv().await.bytes(), PINGRESP);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_0_is_never_dropped() {
    let broker = Broker::start();
    let mut raw = Raw::connected(broker.port(), &ConnectOpts::new("forever").keep_alive(0)).await;
    raw.expect_silence(Duration::from_millis(2500)).await;
    raw.send(&PINGREQ).await;
    assert_eq!(raw.recv().await.bytes(), PINGRESP);
}
