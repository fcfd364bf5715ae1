//! Sessions that move between nodes (docs/cluster.md, "When a node fails"): a
//! device whose session is on one node reconnects to another and carries on there,
//! whether the first node is up (it hands the session over) or was killed (the
//! node it reconnects to carries on from its copy of the first one's journal).
//! Three real broker processes on 127.0.0.1, the stock mosquitto clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use rumqttc::QoS;

/// The persistent subscriber "dev-m" to m/# connected to `node` (the session it
/// finds there: present or not).
async fn dev(node: &Broker) -> (Mqtt, bool) {
    let mut opts = options(node.port(), "dev-m");
    opts.set_clean_session(false);
    let mut m = Mqtt::connect_with(opts).await;
    let present = m.connack.session_present;
    m.subscribed("m/#", QoS::AtLeastOnce).await;
    (m, present)
}

/// "dev-m" subscribes on `node`, gets one message (`first`, published there) and
/// leaves, its session kept there.
async fn subscribed_then_offline(node: &Broker, first: &str) {
    let (mut m, _) = dev(node).await;
    mosquitto_pub(node.port(), &["-t", "m/0", "-q", "1", "-m", first]);
    assert_eq!(m.recv_publish().await.payload, first.as_bytes());
    m.disconnect().await;
}

/// What "dev-m" gets when it reconnects to `node`: its session is there, and
/// brings `n` messages (acknowledged, and then it leaves); their payloads, sorted.
async fn reconnect_and_receive(node: &Broker, n: usize) -> Vec<String> {
    let (mut m, present) = dev(node).await;
    assert!(present, "session present\n{}", node.stderr());
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(String::from_utf8_lossy(&m.recv_publish().await.payload).into_owned());
    }
    m.expect_no_publish(Duration::from_millis(300)).await;
    m.disconnect().await;
    got.sort();
    got
}

fn sorted(payloads: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = payloads.iter().map(|p| (*p).to_string()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_to_the_node_its_client_reconnects_to() {
    let [n1, n2, n3] = failing_fast_cluster();
    subscribed_then_offline(&n1, "first").await;
    // Offline: one message published on each node.
    for (n, m) in [(&n1, "m1"), (&n2, "m2"), (&n3, "m3")] {
        mosquitto_pub(n.port(), &["-t", "m/x", "-q", "1", "-m", m]);
    }
    assert_eq!(
        reconnect_and_receive(&n3, 3).await,
        sorted(&["m1", "m2", "m3"])
    );
    n1.wait_for_log("session taken over by another node", STEP);
    n3.wait_for_log("session carried on from another node", STEP);
    // And back: what came meanwhile, once.
    mosquitto_pub(n2.port(), &["-t", "m/y", "-q", "1", "-m", "m4"]);
    assert_eq!(
        reconnect_and_receive(&n1, 1).await,
        sorted(&["m4"]),
        "{}\n---\n{}",
        n1.stderr(),
        n3.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_on_a_killed_node_carries_on_where_its_client_reconnects() {
    let [mut n1, n2, n3] = failing_fast_cluster();
    subscribed_then_offline(&n1, "first").await;
    mosquitto_pub(n1.port(), &["-t", "m/x", "-q", "1", "-m", "m1"]);
    // Acknowledged: node 2 or node 3 holds it besides node 1; if only one does,
    // the other fetches it from that one once node 1 is gone.
    n1.kill();
    mosquitto_pub(n2.port(), &["-t", "m/x", "-q", "1", "-m", "m2"]);
    assert_eq!(reconnect_and_receive(&n3, 2).await, sorted(&["m1", "m2"]));
    n3.wait_for_log("session carried on from another node", STEP);
    drop(n2);
}
