//! A network partition (docs/cluster.md, "When a node fails"): three real broker
//! processes on 127.0.0.1 whose peer links all run through proxies the test cuts
//! and heals (`common::Proxy`). Node 1, cut off from both others, acknowledges
//! nothing and hands nobody what only it holds; nodes 2 and 3 go on; once the
//! links heal, what node 1 took in meanwhile is committed, acknowledged and
//! delivered, nothing lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use rumqttc::QoS;

/// The PUBACK for `pkid` on `c`, within `within`.
async fn puback(c: &mut Conn, pkid: u16, within: Duration) -> Result<(), String> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, c.recv()).await {
            Ok(Ok(p)) if p.kind() == 4 && pkid_of(&p) == pkid => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(Gone)) => return Err("the connection ended".into()),
            Err(_) => break,
        }
    }
    Err(format!("no PUBACK for {pkid} within {within:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_acknowledges_nothing_and_loses_nothing_once_healed() {
    let cluster = Partitionable::start("").await;
    let [n1, n2, n3] = &cluster.nodes;
    let mut watcher = Mqtt::connect(n2.port(), "watcher").await;
    watcher.subscribed("p/#", QoS::AtLeastOnce).await;
    // A publisher on node 1, connected before the cut (its client id is claimed
    // through the metadata group, which node 1 alone cannot do).
    let (mut publisher, _) = Conn::open(n1.port(), "cut-off-pub")
        .await
        .expect("node 1 takes the publisher before the cut");
    publisher
        .send(&publish_packet("p/1", b"before", 1, false, false, 1))
        .await
        .expect("node 1 takes a publish");
    puback(&mut publisher, 1, STEP)
        .await
        .expect("acknowledged with the links up");
    assert_eq!(&watcher.recv_publish().await.payload[..], b"before");

    cluster.isolate(0, true);
    publisher
        .send(&publish_packet("p/1", b"while cut off", 1, false, false, 2))
        .await
        .expect("node 1 takes a publish while cut off");
    let held = puback(&mut publisher, 2, Duration::from_secs(2)).await;
    assert!(held.is_err(), "node 1 alone acknowledged a publish");
    // The majority side goes on (a new metadata leader first, if node 1 led).
    mosquitto_pub(n3.port(), &["-t", "p/3", "-q", "1", "-m", "majority"]);
    assert_eq!(&watcher.recv_publish().await.payload[..], b"majority");
    watcher.expect_no_publish(QUIET).await;

    cluster.isolate(0, false);
    // The peers link again, fetch what node 1 took in, and it is committed.
    puback(&mut publisher, 2, Duration::from_secs(15))
        .await
        .expect("acknowledged once healed");
    assert_eq!(&watcher.recv_publish().await.payload[..], b"while cut off");
    // And node 1 delivers again what the others publish.
    let mut on_1 = Mqtt::connect(n1.port(), "watcher-1").await;
    on_1.subscribed("p/#", QoS::AtLeastOnce).await;
    mosquitto_pub(n3.port(), &["-t", "p/3", "-q", "1", "-m", "healed"]);
    assert_eq!(&on_1.recv_publish().await.payload[..], b"healed");
    assert_eq!(&watcher.recv_publish().await.payload[..], b"healed");
}
