//! Failover, timed (issue 23; the figures are in docs/performance.md). Three nodes
//! with `failure_timeout_ms = 1000`; a publisher and a subscriber with persistent
//! sessions on one node, and a third client publishing QoS 1 on another every
//! 10 ms. The node the two are on is SIGKILLed, and both reconnect at once to the
//! next node. Measured from the SIGKILL: the publisher's first PUBACK there, and the
//! subscriber's first message there. Then the node starts again, and the next round
//! kills the node the two are on now.
//!
//! In CI: three rounds, each checked to fail over (no timing is checked). The
//! figures: `RUMQ_FAILOVERS=20 cargo test -p rumq-broker --release --test
//! failover_times -- --nocapture` prints each round and the median and worst.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const FAILURE_TIMEOUT_MS: u64 = 1000;
/// Longest a client tries to get through to a node, and a round's bound.
const ROUND_MAX: Duration = Duration::from_secs(30);

fn rounds() -> usize {
    std::env::var("RUMQ_FAILOVERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

/// Connect `client_id` (persistent) to `port` until a CONNACK accepts it, within
/// `ROUND_MAX`: the connection and whether the session was present.
async fn connect(port: u16, client_id: &str) -> (Conn, bool) {
    let until = Instant::now() + ROUND_MAX;
    loop {
        if let Ok(c) = Conn::open(port, client_id).await {
            return c;
        }
        assert!(
            Instant::now() < until,
            "{client_id} never got through to {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publish QoS 1 to `fo/tick` on `port` every 10 ms until `stop`.
async fn ticker(port: u16, id: String, stop: Arc<AtomicBool>) {
    let (mut c, _) = connect(port, &id).await;
    let mut pkid: u16 = 0;
    while !stop.load(Ordering::Relaxed) {
        pkid = pkid.wrapping_add(1).max(1);
        if c.send(&publish_packet("fo/tick", b"tick", 1, false, false, pkid))
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        // PUBACKs are only drained.
        let _ = tokio::time::timeout(Duration::from_millis(1), c.recv()).await;
        c.buffered();
    }
}

/// Acknowledge what `c` holds; whether it held a PUBLISH.
async fn ack_publishes(c: &mut Conn, first: RawPacket) -> bool {
    let mut out = Vec::new();
    let mut got = false;
    for p in std::iter::once(first).chain(c.buffered()) {
        if p.kind() == 3 {
            got = true;
            let publish = p.publish();
            if publish.qos == 1 {
                out.extend(ack_packet(0x40, publish.pkid));
            }
        }
    }
    let _ = c.send(&out).await;
    got
}

/// The subscriber on `port`, its session carried on there: when its first message
/// came, and its connection.
async fn resumed_subscriber(port: u16) -> (Instant, Conn) {
    let (mut c, present) = connect(port, "fo-sub").await;
    assert!(present, "the subscriber's session moved with it");
    loop {
        let p = c.recv().await.expect("messages for the moved subscriber");
        if ack_publishes(&mut c, p).await {
            return (Instant::now(), c);
        }
    }
}

/// The publisher on `port`, its session carried on there: when its first publish
/// there was acknowledged, and its connection.
async fn resumed_publisher(port: u16, pkid: u16) -> (Instant, Conn) {
    let (mut c, present) = connect(port, "fo-pub").await;
    assert!(present, "the publisher's session moved with it");
    c.send(&publish_packet("fo/probe", b"probe", 1, false, false, pkid))
        .await
        .expect("the node it moved to takes the probe");
    loop {
        let p = c.recv().await.expect("a PUBACK for the probe");
        if p.kind() == 4 && pkid_of(&p) == pkid {
            return (Instant::now(), c);
        }
    }
}

/// One failover of node `k`, which `sub` is connected to: the publisher's and the
/// subscriber's times, and their connections on the next node.
async fn fail_over(nodes: &mut [DurableNode; 3], k: usize, round: usize, sub: Conn) -> Round {
    let port = |n: &DurableNode| n.running().port();
    let (next, other) = ((k + 1) % 3, (k + 2) % 3);
    let stop = Arc::new(AtomicBool::new(false));
    let tick = tokio::spawn(ticker(
        port(&nodes[other]),
        format!("fo-tick-{round}"),
        stop.clone(),
    ));
    // The subscriber is live on node k: a tick reached it.
    let mut sub = sub;
    loop {
        let p = tokio::time::timeout(ROUND_MAX, sub.recv())
            .await
            .expect("a tick within a round")
            .expect("the subscriber's node is up until it is killed");
        if ack_publishes(&mut sub, p).await {
            break;
        }
    }
    let killed = Instant::now();
    nodes[k].broker.take().expect("the node runs").kill();
    drop(sub);
    let to = port(&nodes[next]);
    let pkid = u16::try_from(round % usize::from(u16::MAX) + 1).expect("below 65536");
    // Spawned: the clients' futures hold their read buffers.
    let publisher = tokio::spawn(tokio::time::timeout(ROUND_MAX, resumed_publisher(to, pkid)));
    let subscriber = tokio::spawn(tokio::time::timeout(ROUND_MAX, resumed_subscriber(to)));
    let (acked, _) = (publisher.await.expect("the publisher task ends"))
        .expect("the publisher resumed within a round");
    let (got, sub) = (subscriber.await.expect("the subscriber task ends"))
        .expect("the subscriber resumed within a round");
    stop.store(true, Ordering::Relaxed);
    tick.await.expect("the ticker ends");
    if acked - killed > Duration::from_millis(FAILURE_TIMEOUT_MS + 1000) {
        // Slower than the goal: what the node they moved to did meanwhile.
        let log = nodes[next].running().stderr();
        let lines: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!(
            "failover {}, slow; node {}'s last lines:",
            round + 1,
            next + 1
        );
        for l in lines.into_iter().rev() {
            eprintln!("  {l}");
        }
    }
    nodes[k].start();
    let b = nodes[k].running();
    b.wait_for_log_count("replicating its session journal", 2, ROUND_MAX);
    Round {
        publisher: acked - killed,
        subscriber: got - killed,
        sub,
    }
}

struct Round {
    publisher: Duration,
    subscriber: Duration,
    sub: Conn,
}

/// Median and worst of `times`, in ms.
fn summary(times: &mut [Duration]) -> String {
    times.sort();
    format!(
        "median {} ms, worst {} ms",
        times[times.len() / 2].as_millis(),
        times[times.len() - 1].as_millis()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_node_resume_on_the_next_one() {
    let mut nodes = durable_cluster(FAILURE_TIMEOUT_MS, "");
    let first = nodes[0].running().port();
    let (_publisher, _) = connect(first, "fo-pub").await;
    let (mut sub, _) = connect(first, "fo-sub").await;
    sub.send(&subscribe_packet(1, &[("fo/#", 1)]))
        .await
        .expect("node 1 takes a SUBSCRIBE");
    let suback = sub.recv().await.expect("a SUBACK");
    assert_eq!(suback.kind(), 9, "{suback:?}");
    let (mut publisher_times, mut subscriber_times) = (Vec::new(), Vec::new());
    let mut k = 0;
    for round in 0..rounds() {
        let r = Box::pin(fail_over(&mut nodes, k, round, sub)).await;
        println!(
            "failover {}: node {} killed; publisher acknowledged after {} ms, subscriber's first message after {} ms",
            round + 1,
            k + 1,
            r.publisher.as_millis(),
            r.subscriber.as_millis()
        );
        publisher_times.push(r.publisher);
        subscriber_times.push(r.subscriber);
        sub = r.sub;
        k = (k + 1) % 3;
    }
    println!(
        "{} failovers, failure_timeout_ms = {FAILURE_TIMEOUT_MS}: publisher {}; subscriber {}",
        publisher_times.len(),
        summary(&mut publisher_times),
        summary(&mut subscriber_times)
    );
}
