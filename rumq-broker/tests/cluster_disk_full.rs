//! A cluster node whose disk fills (docs/cluster.md, "When a node fails"): node 3's
//! data directory on a small tmpfs (`common::Tmpfs`, root, as CI has), filled
//! while node 1 takes QoS 1 publishes. Nodes 1 and 2 make the two copies
//! `ack_copies` asks for, so every publish on node 1 is acknowledged and reaches
//! node 2's subscriber; node 3 refuses publishes of its own (MQTT 5: PUBACK
//! 0x97); once space returns, node 3 fetches what it missed and its subscriber
//! gets every message, in order, and its own publishes are taken again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rumqttc::QoS;

const STEP: Duration = Duration::from_secs(5);

/// The bytes free on the file system holding `path` (per `df`).
fn available(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("cannot run df");
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default().trim();
    last.parse()
        .unwrap_or_else(|_| panic!("df's answer for {}: {text:?}", path.display()))
}

/// Publish on `c` (node 1) until node 3 logged that it cannot append, then
/// `after` more: every one acknowledged. How many were published.
async fn publish_until_full(c: &mut Raw, node3: &Broker, after: u32) -> u32 {
    let mut seq = 0u32;
    let mut past_full = None;
    while past_full.is_none_or(|n| n < after) {
        assert!(seq < 20_000, "node 3's disk never filled");
        let pkid = (seq % 60_000 + 1) as u16;
        c.send(&publish5_qos1("fill/t", pkid, &numbered_payload(seq)))
            .await;
        let ack = c.recv().await.bytes();
        assert_eq!(puback_reason(&ack), 0, "publish {seq} refused: {ack:x?}");
        seq += 1;
        if past_full.is_none() && node3.stderr().contains("cannot append to a replica") {
            past_full = Some(0);
        }
        past_full = past_full.map(|n| n + 1);
    }
    seq
}

/// `sub` gets messages 0..n, in order, within `within`.
async fn gets_all_in_order(sub: &mut Mqtt, n: u32, within: Duration, who: &str) {
    let until = Instant::now() + within;
    for want in 0..n {
        let left = until.saturating_duration_since(Instant::now());
        let p = tokio::time::timeout(left, sub.recv_publish())
            .await
            .unwrap_or_else(|_| panic!("{who}: message {want} of {n} not there in {within:?}"));
        let got = number_of(&p.payload);
        assert_eq!(got, want, "{who}: out of order or lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_full_disk_holds_nobody_back_and_catches_up_once_space_returns() {
    let fs = Tmpfs::mount(32);
    let addrs = peer_addrs();
    let config = |id| format!("{}{}", node_config(id, &addrs, 2), small_disk());
    let n1 = Broker::with_config(&config(1));
    let n2 = Broker::with_config(&config(2));
    let n3 = Broker::start_in(&fs.path().join("data"), Some(&config(3)));
    for n in [&n1, &n2, &n3] {
        n.wait_for_log_count(
            "replicating its session journal",
            2,
            Duration::from_secs(10),
        );
    }
    let mut sub2 = Mqtt::connect(n2.port(), "reader-2").await;
    sub2.subscribed("fill/#", QoS::AtLeastOnce).await;
    let mut sub3 = Mqtt::connect(n3.port(), "reader-3").await;
    sub3.subscribed("fill/#", QoS::AtLeastOnce).await;

    // Leave node 3 two megabytes.
    let ballast: PathBuf = fs.path().join("ballast");
    let free = available(fs.path());
    std::fs::write(&ballast, vec![1u8; (free - (2 << 20)) as usize]).unwrap();

    let mut pub1 = Raw::open(n1.port()).await;
    pub1.send(&connect5_bare("writer-1")).await;
    assert_eq!(pub1.recv().await.kind(), 2);
    let n = publish_until_full(&mut pub1, &n3, 100).await;
    gets_all_in_order(&mut sub2, n, STEP, "node 2's subscriber").await;

    // Node 3 cannot take a publish of its own.
    let mut pub3 = Raw::open(n3.port()).await;
    pub3.send(&connect5_bare("writer-3")).await;
    assert_eq!(pub3.recv().await.kind(), 2);
    pub3.send(&publish5_qos1("own/t", 1, b"on node 3")).await;
    assert_eq!(puback_reason(&pub3.recv().await.bytes()), 0x97);

    // Space returns: node 3 fetches what it missed; nothing is lost.
    std::fs::remove_file(&ballast).unwrap();
    gets_all_in_order(&mut sub3, n, Duration::from_secs(20), "node 3's subscriber").await;
    pub3.send(&publish5_qos1("own/t", 2, b"on node 3")).await;
    assert_eq!(puback_reason(&pub3.recv().await.bytes()), 0);
}
