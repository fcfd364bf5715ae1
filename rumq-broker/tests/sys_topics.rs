//! `$SYS` topics against the real binary: Mosquitto's names, retained and kept up to
//! date every `sys_interval_secs`, never stored in the log; no client may publish
//! to them; the ACL decides who reads them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use rumq_broker::protocol::framing::{decode_varint, Varint};
use rumqttc::QoS;

#[path = "mqtt5/packets.rs"]
#[allow(dead_code)]
mod packets;
use packets::{connect, connect5, publish5};

const EVERY_SECOND: &str = "[metrics]\nsys_interval_secs = 1\n";

/// Wait for a PUBLISH on `topic` whose payload is `want` (bounded: 10 rounds of 30
/// topics, each PUBLISH within [`STEP`]).
async fn wait_for_value(c: &mut Mqtt, topic: &str, want: &str) {
    let mut seen = Vec::new();
    for _ in 0..300 {
        let p = c.recv_publish().await;
        if p.topic != topic {
            continue;
        }
        let value = String::from_utf8(p.payload.to_vec()).unwrap();
        if value == want {
            return;
        }
        seen.push(value);
    }
    panic!("{topic} never became {want:?}; saw {seen:?}");
}

#[test]
fn mosquitto_sub_reads_the_retained_values_at_once() {
    let b = Broker::with_config(EVERY_SECOND);
    // Retained, so a late subscriber gets a value at once (the first round runs at
    // start); -W bounds the wait.
    let sub = MosquittoSub::start(
        b.port(),
        &[
            "-t",
            "$SYS/broker/version",
            "-t",
            "$SYS/broker/uptime",
            "-C",
            "2",
            "-W",
            "5",
        ],
    );
    let (status, lines) = sub.finish(STEP * 2);
    assert!(status.success(), "{lines:?}");
    let mut lines = lines.clone();
    lines.sort();
    assert!(
        lines[0].starts_with("0|1|$SYS/broker/uptime|"),
        "QoS 0, retained: {lines:?}"
    );
    let version = hex(format!("rumq version {}", env!("CARGO_PKG_VERSION")).as_bytes());
    assert_eq!(lines[1], format!("0|1|$SYS/broker/version|{version}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counts_follow_what_clients_do_and_nothing_of_it_is_stored() {
    let b = Broker::with_config(EVERY_SECOND);
    let mut watcher = Mqtt::connect(b.port(), "watcher").await;
    watcher.subscribed("$SYS/broker/#", QoS::AtMostOnce).await;
    wait_for_value(&mut watcher, "$SYS/broker/clients/connected", "1").await;

    let mut publisher = Mqtt::connect(b.port(), "publisher").await;
    for i in 0..5u8 {
        publisher
            .publish("data/t", QoS::AtLeastOnce, false, &[i])
            .await;
    }
    wait_for_value(&mut watcher, "$SYS/broker/clients/connected", "2").await;
    wait_for_value(&mut watcher, "$SYS/broker/messages/received", "5").await;
    // Only the five publishes are in the log, however many $SYS rounds ran.
    wait_for_value(&mut watcher, "$SYS/broker/store/messages/count", "5").await;
    wait_for_value(&mut watcher, "$SYS/broker/store/messages/count", "5").await;
    wait_for_value(&mut watcher, "$SYS/broker/clients/maximum", "2").await;

    publisher.disconnect().await;
    wait_for_value(&mut watcher, "$SYS/broker/clients/connected", "1").await;
    // Live updates are not flagged retained (§3.3.1.3).
    let p = watcher.recv_publish().await;
    assert!(!p.retain && p.qos == QoS::AtMostOnce, "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_publishes_to_sys_nor_leaves_a_will_there() {
    let b = Broker::with_config(EVERY_SECOND);
    let mut watcher = Mqtt::connect(b.port(), "watcher").await;
    watcher.subscribed("$SYS/forged", QoS::AtLeastOnce).await;
    // MQTT 5: told 0x87. 3.1.1: acked and dropped, as Mosquitto does.
    let (mut c, code, ..) = connect(b.port(), &connect5("forger", true, &[])).await;
    assert_eq!(code, 0);
    c.send(&publish5("$SYS/forged", 1, 3, &[], b"x")).await;
    let ack = c.recv().await;
    assert_eq!(
        (ack.kind(), ack.body[2]),
        (4, 0x87),
        "PUBACK not authorized"
    );
    let mut v3 = Raw::connected(b.port(), &ConnectOpts::new("forger-3")).await;
    v3.send(&publish_packet("$SYS/forged", b"y", 1, true, false, 9))
        .await;
    assert_eq!(v3.recv().await.bytes(), ack_packet(0x40, 9));
    watcher.expect_no_publish(QUIET).await;

    let opts = ConnectOpts::new("dev").will("$SYS/broker/uptime", b"forever", 0, true);
    let (_raw, connack) = Raw::connect(b.port(), &opts).await;
    assert_eq!(connack, [0x20, 0x02, 0x00, 5], "not authorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_decides_who_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic read public/#\n\nuser ops\ntopic read $SYS/#\n").unwrap();
    let b = Broker::with_config(&format!(
        "{EVERY_SECOND}[auth]\nacl_file = {:?}\n",
        acl.display().to_string()
    ));
    let mut anonymous = Mqtt::connect(b.port(), "anon").await;
    let codes = anonymous.subscribe("$SYS/#", QoS::AtMostOnce).await;
    assert_eq!(codes, vec![rumqttc::SubscribeReasonCode::Failure]);
    let mut opts = options(b.port(), "ops-1");
    opts.set_credentials("ops", "");
    let mut ops = Mqtt::connect_with(opts).await;
    ops.subscribed("$SYS/broker/clients/connected", QoS::AtMostOnce)
        .await;
    wait_for_value(&mut ops, "$SYS/broker/clients/connected", "2").await;
    anonymous.expect_no_publish(QUIET).await;
}

#[test]
fn zero_turns_them_off_and_a_day_is_the_most() {
    let b = Broker::with_config("[metrics]\nsys_interval_secs = 0\n");
    let sub = MosquittoSub::start(b.port(), &["-t", "$SYS/#", "-C", "1", "-W", "2"]);
    let (status, lines) = sub.finish(STEP * 2);
    assert!(!status.success() && lines.is_empty(), "{lines:?}");
    drop(b);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rumq.toml");
    std::fs::write(&config, "[metrics]\nsys_interval_secs = 86401\n").unwrap();
    let out = run_with_timeout(
        std::process::Command::new(broker_bin())
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data")),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sys_interval_secs"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bare_sys_topic_is_the_brokers_too() {
    let b = Broker::with_config(EVERY_SECOND);
    let (mut c, code, ..) = connect(b.port(), &connect5("forger", true, &[])).await;
    assert_eq!(code, 0);
    c.send(&publish5("$SYS", 1, 3, &[], b"x")).await;
    let ack = c.recv().await;
    assert_eq!(
        (ack.kind(), ack.body[2]),
        (4, 0x87),
        "PUBACK not authorized"
    );
}
