//! Hostile load: a flood of random bytes, and connections opened and dropped in a
//! loop. Each only costs the offending connections; everyone else keeps being served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use rumqttc::QoS;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Subscribe to `ok/#` and round-trip one message.
async fn round_trip(port: u16, id: &str) {
    let mut m = Mqtt::connect(port, id).await;
    m.subscribed("ok/#", QoS::AtLeastOnce).await;
    m.publish("ok/t", QoS::AtLeastOnce, false, b"fine").await;
    let p = m.recv_publish().await;
    assert_publish(&p, "ok/t", b"fine", QoS::AtLeastOnce, false);
}

/// Deterministic pseudo-random bytes (xorshift), so a failure reproduces.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Write `bytes` until done or the broker hangs up; returns whether it hung up.
async fn flood(port: u16, prefix: &[u8], bytes: &[u8]) -> bool {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    if s.write_all(prefix).await.is_err() {
        return true;
    }
    for chunk in bytes.chunks(64 * 1024) {
        match tokio::time::timeout(Duration::from_secs(5), s.write_all(chunk)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return true,
            Err(_) => panic!("the broker neither read nor closed for 5 s"),
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabytes_of_random_bytes_close_only_that_connection() {
    let broker = Broker::start();
    let port = broker.port();
    round_trip(port, "before").await;
    let bytes = noise(10 * 1024 * 1024, 0x5eed_1234_abcd_0001);
    // Before CONNECT, and after a valid CONNECT.
    assert!(
        flood(port, &[], &bytes).await,
        "random bytes before CONNECT were accepted"
    );
    let connect = ConnectOpts::new("flood").encode();
    assert!(
        flood(port, &connect, &bytes).await,
        "random bytes after CONNECT were accepted"
    );
    round_trip(port, "after").await;
    let log = broker.stderr();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_connections_opened_and_dropped() {
    let broker = Broker::start();
    let port = broker.port();
    let connect = ConnectOpts::new("").encode();
    let start = Instant::now();
    for i in 0..3000u32 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        match i % 3 {
            // Dropped at once.
            0 => {}
            // Half a CONNECT.
            1 => {
                let _ = s.write_all(&connect[..connect.len() / 2]).await;
            }
            // A whole CONNECT, then gone without DISCONNECT.
            _ => {
                let _ = s.write_all(&connect).await;
            }
        }
        drop(s);
    }
    assert!(start.elapsed() < Duration::from_secs(30));
    round_trip(port, "survivor").await;
    // The broker let go of them: its open files are back near where they started.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", broker.pid()))
        .unwrap()
        .count();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut now_fds = fds;
    while now_fds > 100 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        now_fds = std::fs::read_dir(format!("/proc/{}/fd", broker.pid()))
            .unwrap()
            .count();
    }
    assert!(now_fds <= 100, "broker still holds {now_fds} descriptors");
}

/// The broker's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_costs_bounded_memory() {
    let broker = Broker::start();
    let port = broker.port();
    // Subscribes to everything at QoS 1, then never reads again: its socket
    // buffers fill and the broker must stop there, not buffer the flood for it.
    let mut stuck = Raw::connected(port, &ConnectOpts::new("stuck")).await;
    stuck.send(&subscribe_packet(1, &[("flood/#", 1)])).await;
    assert_eq!(stuck.recv().await.kind(), 9);
    let mut healthy = Healthy::new(port).await;
    let before = rss_bytes(broker.pid());

    // 128 MiB of 1 KiB QoS 1 publishes, 256 in flight at a time.
    let mut publisher = Raw::connected(port, &ConnectOpts::new("flood")).await;
    let payload = vec![0x5au8; 1024];
    let mut peak = before;
    for round in 0..512u32 {
        let mut batch = Vec::with_capacity(256 * 1040);
        for k in 0..256u32 {
            let pkid = (k + 1) as u16;
            batch.extend(publish_packet("flood/t", &payload, 1, false, false, pkid));
        }
        publisher.send(&batch).await;
        for _ in 0..256 {
            assert_eq!(publisher.recv().await.kind(), 4, "PUBACK");
        }
        if round % 64 == 63 {
            healthy.check().await;
            peak = peak.max(rss_bytes(broker.pid()));
        }
    }
    let grew = peak.saturating_sub(before);
    eprintln!(
        "RSS before {} MiB, peak {} MiB while 128 MiB went past a stuck subscriber",
        before >> 20,
        peak >> 20
    );
    // The in-memory tail (16 MiB by default), one delivery batch (1 MiB) and the
    // allocator's slack; nothing that grows with what the subscriber missed.
    assert!(grew < 64 << 20, "RSS grew by {} MiB", grew >> 20);
    drop(stuck);
}
