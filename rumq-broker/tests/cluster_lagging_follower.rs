//! A follower that falls behind (docs/cluster.md, "When a node fails"): node 3's
//! links cut by proxies (`common::Partitionable`) while node 1 takes QoS 1
//! publishes. Node 2's copy makes the two `ack_copies` asks for, so node 1
//! acknowledges every one. Node 1's retention keeps what node 3 lacks up to
//! `hold_bytes_max`: back within it, node 3 gets everything. Away for longer, node
//! 1 removes what node 3 lacks past that limit; back, node 3's copy goes on from
//! node 1's earliest record (both log it) and its subscriber gets everything from
//! there, in order, and what comes next.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use rumqttc::QoS;

/// Small segments; retention keeps 1 MiB, and up to 4 MiB for a reader that
/// still needs it (a follower), every 200 ms.
fn storage() -> String {
    let retention = "bytes_max = 1048576\nsegments_max = 0\nage_ms_max = 0\n\
                     hold_bytes_max = 4194304\n";
    format!(
        "{}[router]\nretention_interval_ms = 200\n",
        small_segments(retention)
    )
}

/// Publish messages `seqs` on `c`, each acknowledged (reason code 0).
async fn publish_acked(c: &mut Raw, seqs: std::ops::Range<u32>) {
    for seq in seqs {
        let pkid = (seq % 60_000 + 1) as u16;
        c.send(&publish5_qos1("lag/t", pkid, &numbered_payload(seq)))
            .await;
        let ack = c.recv().await.bytes();
        assert_eq!(puback_reason(&ack), 0, "{seq} refused: {ack:x?}");
    }
}

/// The numbers of the messages `sub` gets until message `last`, within `within`.
async fn received_through(sub: &mut Mqtt, last: u32, within: Duration) -> Vec<u32> {
    let until = Instant::now() + within;
    let mut got = Vec::new();
    while got.last() != Some(&last) {
        let left = until.saturating_duration_since(Instant::now());
        let p = tokio::time::timeout(left, sub.recv_publish())
            .await
            .unwrap_or_else(|_| panic!("message {last} not there in {within:?}; got {got:?}"));
        got.push(number_of(&p.payload));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_back_within_the_hold_gets_everything_and_past_it_goes_on_from_the_writers_earliest(
) {
    let cluster = Partitionable::start(&storage()).await;
    let [n1, _, n3] = &cluster.nodes;
    let mut sub3 = Mqtt::connect(n3.port(), "reader-3").await;
    sub3.subscribed("lag/#", QoS::AtLeastOnce).await;
    let mut pub1 = Raw::open(n1.port()).await;
    pub1.send(&connect5_bare("writer-1")).await;
    assert_eq!(pub1.recv().await.kind(), 2);

    // Away for 2 MB: past what retention keeps, but node 1 keeps it for node 3.
    cluster.isolate(2, true);
    publish_acked(&mut pub1, 0..250).await;
    cluster.isolate(2, false);
    let got = received_through(&mut sub3, 249, Duration::from_secs(20)).await;
    assert_eq!(got, (0..250).collect::<Vec<_>>());
    assert!(
        !n1.stderr().contains("retention hard limit"),
        "{}",
        n1.stderr()
    );

    // Away for 12 MB: node 1 removes what node 3 lacks past 4 MiB.
    cluster.isolate(2, true);
    publish_acked(&mut pub1, 250..1750).await;
    n1.wait_for_log(
        "retention hard limit removed records a reader still needed",
        Duration::from_secs(10),
    );
    cluster.isolate(2, false);
    n1.wait_for_log(
        "a follower lags past what this node still holds",
        Duration::from_secs(20),
    );
    n3.wait_for_log("the writer no longer holds what this copy lacks", STEP);
    publish_acked(&mut pub1, 1750..1751).await;
    let got = received_through(&mut sub3, 1750, Duration::from_secs(20)).await;
    let first = got[0];
    assert!(
        first > 250,
        "what node 1 removed is not there: from {first}"
    );
    assert_eq!(got, (first..1751).collect::<Vec<_>>(), "the rest, in order");
}
