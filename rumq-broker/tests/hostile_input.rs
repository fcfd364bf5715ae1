//! Oversized packets, protocol violations and garbage: each closes only the offending
//! connection, and the broker keeps serving everyone else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_packet_size_closes_only_the_offender() {
    let broker = Broker::with_config("[limits]\nmax_packet_size = 1024\n");
    let port = broker.port();
    let mut healthy = Healthy::new(port).await;
    let mut sub = Raw::connected(port, &ConnectOpts::new("big-sub")).await;
    sub.send(&subscribe_packet(1, &[("big/#", 0)])).await;
    sub.recv().await;

    // Exactly at the limit is fine (1024 bytes on the wire, fixed header included).
    let mut ok = Raw::connected(port, &ConnectOpts::new("at-limit")).await;
    let payload = vec![0xa5u8; 1024 - 3 - 2 - "big/ok".len()];
    let packet = publish_packet("big/ok", &payload, 0, false, false, 0);
    assert_eq!(packet.len(), 1024);
    ok.send(&packet).await;
    let p = sub.recv_publish().await;
    assert_eq!((p.topic.as_str(), p.payload), ("big/ok", payload));

    // 2000 bytes: that connection is closed, nothing is delivered.
    let mut big = Raw::connected(
        port,
        &ConnectOpts::new("too-big").will("big/will", b"closed", 0, false),
    )
    .await;
    big.send(&publish_packet("big/no", &[1u8; 2000], 0, false, false, 0))
        .await;
    big.expect_closed(STEP).await;
    let p = sub.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("big/will", &b"closed"[..])
    );

    // One byte over, announced by the header alone (the body never comes).
    let mut over = Raw::connected(port, &ConnectOpts::new("over")).await;
    let mut header = vec![0x30];
    put_remaining_length(&mut header, 1022);
    over.send(&header).await;
    over.expect_closed(STEP).await;

    // A CONNECT that is too large is refused too.
    let mut opts = ConnectOpts::new("big-connect");
    opts.username = Some("u".repeat(1100));
    let mut raw = Raw::open(port).await;
    raw.send(&opts.encode()).await;
    raw.expect_closed(STEP).await;

    healthy.check().await;
    ok.send(&PINGREQ).await;
    assert_eq!(ok.recv().await.bytes(), PINGRESP);
    sub.expect_silence(QUIET).await;
}

/// Connect a raw client (unless `connect_first` is false), send `bad`, and check that
/// this connection, and only it, is closed.
async fn assert_closes_only_that_connection(name: &str, connect_first: bool, bad: &[u8]) {
    let broker = Broker::start();
    let port = broker.port();
    let mut healthy = Healthy::new(port).await;
    healthy.check().await;
    let mut raw = if connect_first {
        Raw::connected(port, &ConnectOpts::new(name)).await
    } else {
        Raw::open(port).await
    };
    raw.send(bad).await;
    raw.expect_closed(STEP).await;
    healthy.check().await;
    // New clients are still accepted.
    let mut again = Raw::connected(port, &ConnectOpts::new(name)).await;
    again.send(&PINGREQ).await;
    assert_eq!(again.recv().await.bytes(), PINGRESP);
    healthy.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connect_closes_the_connection() {
    let second = ConnectOpts::new("second").encode();
    assert_closes_only_that_connection("twice", true, &second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_a_wildcard_topic_closes_the_connection() {
    for topic in ["a/+/b", "a/#"] {
        let bad = publish_packet(topic, b"x", 1, false, false, 1);
        assert_closes_only_that_connection("wild-pub", true, &bad).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_before_connect_closes_the_connection() {
    let bad = publish_packet("early", b"x", 0, false, false, 0);
    assert_closes_only_that_connection("early", false, &bad).await;
    assert_closes_only_that_connection("early-ping", false, &PINGREQ).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_the_connection() {
    // Before CONNECT: a bad remaining length, and a reserved packet type.
    assert_closes_only_that_connection("g1", false, &[0xff; 5]).await;
    assert_closes_only_that_connection("g2", false, &[0xff, 0x00]).await;
    // After CONNECT.
    assert_closes_only_that_connection("g3", true, &[0xff; 16]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_close_the_connection() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // SUBSCRIBE with reserved flags 0000 instead of 0010.
        (
            "subscribe-flags",
            packet(0x80, &subscribe_packet(1, &[("a", 0)])[2..]),
        ),
        // PUBLISH with QoS 3.
        ("qos3", publish_packet("a", b"x", 3, false, false, 1)),
        // DUP on a QoS 0 PUBLISH.
        ("dup-qos0", publish_packet("a", b"x", 0, false, true, 0)),
        // Packet id 0 on a QoS 1 PUBLISH.
        ("pkid0", publish_packet("a", b"x", 1, false, false, 0)),
        // SUBSCRIBE with a reserved bit set in a requested QoS byte.
        (
            "subscribe-options",
            subscribe_packet(1, &[("a", 0), ("b", 0x05)]),
        ),
        // SUBSCRIBE requesting QoS 3.
        ("subscribe-qos3", subscribe_packet(1, &[("a", 3)])),
        // SUBSCRIBE without filters.
        ("empty-subscribe", packet(0x82, &[0x00, 0x01])),
        // A CONNACK from a client.
        ("connack", CONNACK_OK.to_vec()),
    ];
    let broker = Broker::start();
    let port = broker.port();
    let mut healthy = Healthy::new(port).await;
    for (name, bad) in cases {
        let mut raw = Raw::connected(port, &ConnectOpts::new(name)).await;
        raw.send(&bad).await;
        raw.expect_closed(STEP).await;
        healthy.check().await;
    }
    // A malformed CONNECT (reserved flag set) is closed without a CONNACK.
    let mut connect = ConnectOpts::new("reserved").encode();
    connect[9] |= 0x01;
    let mut raw = Raw::open(port).await;
    raw.send(&connect).await;
    raw.expect_closed(STEP).await;
    healthy.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_sends_connect_is_closed() {
    let broker = Broker::with_config("[limits]\nconnect_timeout_ms = 500\n");
    let mut healthy = Healthy::new(broker.port()).await;
    let mut raw = Raw::open(broker.port()).await;
    // Half a CONNECT, then nothing.
    raw.send(&ConnectOpts::new("slow").encode()[..5]).await;
    let elapsed = raw.expect_closed(STEP).await;
    assert!(
        elapsed >= Duration::from_millis(400),
        "closed after {elapsed:?}"
    );
    healthy.check().await;
}
