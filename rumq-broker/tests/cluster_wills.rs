//! Wills when a node dies (docs/cluster.md, "When a node fails"): the will of a
//! connection on a node that is SIGKILLed is published by one of the survivors,
//! once, and reaches subscribers on both; a client that reconnects elsewhere
//! first takes its client id with it, and its will stays unpublished while its
//! MQTT 5 will delay runs. Three real broker processes on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use rumqttc::{LastWill, QoS};

/// What a survivor logs when it asks for a gone node's client id to publish its
/// will, and then when it took it or another node did.
const CLAIMING: &str = "claiming its client id to publish it";
const CLAIM_ENDED: &str = "will claim ";
const CLAIM_WON: &str = "will claim won";

/// A device on `port` whose will is "offline" on status/`id` (QoS 1, retained),
/// which publishes "online" there and has its PUBACK.
async fn device(port: u16, id: &str) -> Mqtt {
    let mut opts = options(port, id);
    let topic = format!("status/{id}");
    opts.set_last_will(LastWill::new(&topic, "offline", QoS::AtLeastOnce, true));
    let mut d = Mqtt::connect_with(opts).await;
    d.publish(&topic, QoS::AtLeastOnce, true, b"online").await;
    d
}

/// The topic and payload of the next publish `m` gets.
async fn next(m: &mut Mqtt) -> (String, String) {
    let p = m.recv_publish().await;
    (p.topic, String::from_utf8(p.payload.to_vec()).unwrap())
}

fn status(id: &str, payload: &str) -> (String, String) {
    (format!("status/{id}"), payload.to_owned())
}

#[tokio::test]
async fn the_will_of_a_connection_on_a_killed_node_is_published_once_by_a_survivor() {
    let [n1, n2, mut n3] = failing_fast_cluster();
    let mut on1 = Mqtt::connect(n1.port(), "watch-1").await;
    on1.subscribed("status/#", QoS::AtLeastOnce).await;
    let mut on2 = Mqtt::connect(n2.port(), "watch-2").await;
    on2.subscribed("status/#", QoS::AtLeastOnce).await;
    let _d = device(n3.port(), "meter-7").await;
    assert_eq!(next(&mut on1).await, status("meter-7", "online"));
    assert_eq!(next(&mut on2).await, status("meter-7", "online"));
    n3.kill();
    assert_eq!(next(&mut on1).await, status("meter-7", "offline"));
    assert_eq!(next(&mut on2).await, status("meter-7", "offline"));
    // Both survivors asked for the client id; one took it and published.
    for n in [&n1, &n2] {
        n.wait_for_log(CLAIMING, STEP);
        n.wait_for_log(CLAIM_ENDED, STEP);
    }
    let won: usize = [&n1, &n2]
        .map(|n| n.stderr().matches(CLAIM_WON).count())
        .iter()
        .sum();
    assert_eq!(won, 1, "one survivor publishes it");
    on1.expect_no_publish(Duration::from_millis(500)).await;
    on2.expect_no_publish(Duration::from_millis(500)).await;
    // The retained status is the will's (stamped as it was published, after
    // "online"), on each survivor.
    for n in [&n1, &n2] {
        let mut late = Mqtt::connect(n.port(), "watch-late").await;
        late.subscribed("status/#", QoS::AtLeastOnce).await;
        assert_eq!(next(&mut late).await, status("meter-7", "offline"));
        late.disconnect().await;
    }
}

#[tokio::test]
async fn only_the_wills_still_armed_when_a_node_dies_are_published() {
    let [n1, n2, mut n3] = failing_fast_cluster();
    let mut on1 = Mqtt::connect(n1.port(), "watch-1").await;
    on1.subscribed("status/#", QoS::AtLeastOnce).await;
    let gone = device(n3.port(), "meter-8").await;
    assert_eq!(next(&mut on1).await, status("meter-8", "online"));
    gone.disconnect().await;
    let _stays = device(n3.port(), "meter-9").await;
    assert_eq!(next(&mut on1).await, status("meter-9", "online"));
    n3.kill();
    assert_eq!(next(&mut on1).await, status("meter-9", "offline"));
    for n in [&n1, &n2] {
        n.wait_for_log(CLAIM_ENDED, STEP);
    }
    on1.expect_no_publish(Duration::from_millis(500)).await;
    for n in [&n1, &n2] {
        let log = n.stderr();
        assert!(log.contains("client_id=meter-9"), "{log}");
        assert!(!log.contains("client_id=meter-8"), "{log}");
    }
}

#[tokio::test]
async fn the_will_of_a_connection_on_a_node_that_restarts_at_once_is_published_once() {
    let mut nodes = durable_cluster(1000, "");
    let mut on1 = Mqtt::connect(nodes[0].running().port(), "watch-1").await;
    on1.subscribed("status/#", QoS::AtLeastOnce).await;
    let _d = device(nodes[2].running().port(), "meter-5").await;
    assert_eq!(next(&mut on1).await, status("meter-5", "online"));
    // Killed and started again on its data at once: the survivors may not take
    // it for dead; its next run publishes the will, or one survivor does.
    nodes[2].broker.take().expect("node 3 runs").kill();
    nodes[2].start();
    assert_eq!(next(&mut on1).await, status("meter-5", "offline"));
    on1.expect_no_publish(Duration::from_secs(2)).await;
    let won: usize = (nodes.iter())
        .map(|n| n.running().stderr().matches(CLAIM_WON).count())
        .sum();
    assert_eq!(won, 1, "one node publishes it");
}
