//! A stock non-Rust client: the Debian mosquitto command-line clients talking to the
//! real binary (and to rumqttc through it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use rumqttc::QoS;

const SUB_WAIT: Duration = Duration::from_secs(5);

#[test]
fn mosquitto_pub_to_mosquitto_sub_at_qos_0_1_2() {
    let broker = Broker::start();
    let port = broker.port();
    let sub = MosquittoSub::start(
        port,
        &[
            "-i", "mosq-sub", "-q", "2", "-t", "mosq/#", "-C", "4", "-W", "5",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let binary: Vec<u8> = (0..=255u8).collect();
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, &binary).unwrap();

    mosquitto_pub(port, &["-q", "0", "-t", "mosq/q0", "-m", "zero"]);
    mosquitto_pub(
        port,
        &["-q", "1", "-t", "mosq/q1", "-m", "one \u{e9}\u{20ac}"],
    );
    mosquitto_pub(port, &["-q", "2", "-t", "mosq/q2", "-m", "two"]);
    mosquitto_pub(
        port,
        &["-q", "2", "-t", "mosq/bin", "-f", file.to_str().unwrap()],
    );
    let (status, lines) = sub.finish(SUB_WAIT);
    assert!(status.success(), "{status}");
    assert_eq!(
        lines,
        vec![
            format!("0|0|mosq/q0|{}", hex(b"zero")),
            format!("1|0|mosq/q1|{}", hex("one \u{e9}\u{20ac}".as_bytes())),
            format!("2|0|mosq/q2|{}", hex(b"two")),
            format!("2|0|mosq/bin|{}", hex(&binary)),
        ]
    );
}

#[test]
fn mosquitto_sub_gets_min_qos_and_retained_flag() {
    let broker = Broker::start();
    let port = broker.port();
    mosquitto_pub(port, &["-q", "2", "-r", "-t", "mret/a", "-m", "kept"]);
    // Subscribed at QoS 1: the retained QoS 2 message arrives at QoS 1, retained;
    // a live QoS 2 one at QoS 1, not retained.
    let sub = MosquittoSub::start(port, &["-q", "1", "-t", "mret/#", "-C", "2", "-W", "5"]);
    mosquitto_pub(port, &["-q", "2", "-r", "-t", "mret/a", "-m", "live"]);
    let (status, lines) = sub.finish(SUB_WAIT);
    assert!(status.success(), "{status}");
    assert_eq!(
        lines,
        vec![
            format!("1|1|mret/a|{}", hex(b"kept")),
            format!("1|0|mret/a|{}", hex(b"live")),
        ]
    );
    // Cleared with an empty retained message (-n sends a zero-length payload).
    mosquitto_pub(port, &["-q", "1", "-r", "-t", "mret/a", "-n"]);
    let sub = MosquittoSub::start(port, &["-t", "mret/#", "-C", "1", "-W", "5"]);
    mosquitto_pub(port, &["-t", "mret/b", "-m", "fresh"]);
    let (status, lines) = sub.finish(SUB_WAIT);
    assert!(status.success(), "{status}");
    assert_eq!(lines, vec![format!("0|0|mret/b|{}", hex(b"fresh"))]);
}

#[test]
fn mosquitto_persistent_session_gets_what_was_published_offline() {
    let broker = Broker::start();
    let port = broker.port();
    // -c: clean session off; -E: exit once subscribed.
    let out = run_with_timeout(
        StockClient::Mosquitto.command("mosquitto_sub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-c",
            "-i",
            "mosq-durable",
            "-q",
            "2",
            "-t",
            "off/#",
            "-E",
        ]),
        STEP,
    );
    assert!(out.status.success(), "{out:?}");
    mosquitto_pub(port, &["-q", "1", "-t", "off/1", "-m", "while away 1"]);
    mosquitto_pub(port, &["-q", "0", "-t", "off/0", "-m", "not kept"]);
    mosquitto_pub(port, &["-q", "2", "-t", "off/2", "-m", "while away 2"]);
    let sub = MosquittoSub::start(
        port,
        &[
            "-c",
            "-i",
            "mosq-durable",
            "-q",
            "2",
            "-t",
            "off/#",
            "-C",
            "2",
            "-W",
            "5",
        ],
    );
    let (status, lines) = sub.finish(SUB_WAIT);
    assert!(status.success(), "{status}");
    assert_eq!(
        lines,
        vec![
            format!("1|0|off/1|{}", hex(b"while away 1")),
            format!("2|0|off/2|{}", hex(b"while away 2")),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_and_rumqttc_interoperate() {
    let broker = Broker::start();
    let port = broker.port();
    let mut m = Mqtt::connect(port, "rust-side").await;
    m.subscribed("interop/from-mosq", QoS::ExactlyOnce).await;
    for q in ["0", "1", "2"] {
        let payload = format!("mosquitto qos {q}");
        tokio::task::block_in_place(|| {
            mosquitto_pub(port, &["-q", q, "-t", "interop/from-mosq", "-m", &payload])
        });
        let p = m.recv_publish().await;
        let want = match q {
            "0" => QoS::AtMostOnce,
            "1" => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        assert_publish(&p, "interop/from-mosq", payload.as_bytes(), want, false);
    }

    let sub = tokio::task::block_in_place(|| {
        MosquittoSub::start(
            port,
            &["-q", "2", "-t", "interop/from-rust", "-C", "3", "-W", "5"],
        )
    });
    m.publish("interop/from-rust", QoS::AtMostOnce, false, b"r0")
        .await;
    m.publish("interop/from-rust", QoS::AtLeastOnce, false, b"r1")
        .await;
    m.publish("interop/from-rust", QoS::ExactlyOnce, false, b"r2")
        .await;
    let (status, lines) = tokio::task::block_in_place(|| sub.finish(SUB_WAIT));
    assert!(status.success(), "{status}");
    assert_eq!(
        lines,
        vec![
            format!("0|0|interop/from-rust|{}", hex(b"r0")),
            format!("1|0|interop/from-rust|{}", hex(b"r1")),
            format!("2|0|interop/from-rust|{}", hex(b"r2")),
        ]
    );
}
