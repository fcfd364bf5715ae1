//! Limits from `[limits]` and `[router]`, enforced on the real binary: each refuses or
//! closes only what is over it, and a healthy client keeps being served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use rumqttc::QoS;

const STEP: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_per_second_are_paced() {
    let broker = Broker::with_config("[limits]\nconnections_per_sec_max = 20\n");
    let mut healthy = Healthy::new(broker.port()).await;
    let start = Instant::now();
    // A burst of one second's worth (20, one already taken), then 20 a second:
    // 60 connections take at least two seconds.
    for i in 0..60 {
        let (mut raw, connack) =
            Raw::connect(broker.port(), &ConnectOpts::new(&format!("burst-{i}"))).await;
        assert_eq!(connack, CONNACK_OK);
        raw.send(&[0xe0, 0x00]).await;
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1800),
        "60 connects took {took:?}"
    );
    healthy.check().await;
    broker.wait_for_log("connections_per_sec_max reached", STEP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_per_connection_close_only_the_publisher_over_it() {
    let broker = Broker::with_config("[limits]\ntopics_per_connection_max = 3\n");
    let mut healthy = Healthy::new(broker.port()).await;
    let mut raw = Raw::connected(broker.port(), &ConnectOpts::new("many-topics")).await;
    for (i, t) in ["a", "b", "c", "a", "b"].iter().enumerate() {
        raw.send(&publish_packet(t, b"x", 1, false, false, i as u16 + 1))
            .await;
        assert_eq!(raw.recv().await.kind(), 4, "PUBACK for {t}");
    }
    // A fourth distinct topic is one too many.
    raw.send(&publish_packet("d", b"x", 1, false, false, 9))
        .await;
    raw.expect_closed(STEP).await;
    healthy.check().await;
    broker.wait_for_log("topics_per_connection_max reached", STEP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_in_total_and_subscriptions_per_client() {
    let broker = Broker::with_config("[limits]\ntopics_max = 4\n[router]\nsubscriptions_max = 2\n");
    // The healthy client's own topic takes one of the four.
    let mut healthy = Healthy::new(broker.port()).await;
    healthy.check().await;
    let mut raw = Raw::connected(broker.port(), &ConnectOpts::new("topics")).await;
    for (i, t) in ["t1", "t2", "t3"].iter().enumerate() {
        raw.send(&publish_packet(t, b"x", 1, false, false, i as u16 + 1))
            .await;
        assert_eq!(raw.recv().await.kind(), 4);
    }
    raw.send(&publish_packet("t4", b"x", 1, false, false, 9))
        .await;
    raw.expect_closed(STEP).await;
    healthy.check().await;

    let mut m = Mqtt::connect(broker.port(), "subs").await;
    let codes = m.subscribe("s/1", QoS::AtMostOnce).await;
    assert_eq!(codes.len(), 1);
    m.subscribed("s/2", QoS::AtMostOnce).await;
    let refused = m.subscribe("s/3", QoS::AtMostOnce).await;
    assert_eq!(refused, vec![rumqttc::SubscribeReasonCode::Failure]);
    healthy.check().await;
}
