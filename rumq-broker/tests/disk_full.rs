//! A full disk, for real: the data directory on a small tmpfs, filled by publishing.
//! Publishes are refused (MQTT 5: PUBACK 0x97; 3.1.1: the connection is closed),
//! subscribers keep receiving what was stored, and once space returns publishing
//! works again without a restart.
//! The tmpfs needs root (`common::Tmpfs`), as CI has.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use rumqttc::QoS;

const STEP: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_publishes_serves_subscribers_and_recovers() {
    let fs = Tmpfs::mount(24);
    // Ballast to free later: space comes back without touching the broker's files.
    let ballast: PathBuf = fs.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 6 << 20]).unwrap();
    let broker = Broker::start_in(&fs.path().join("data"), Some(&small_disk()));
    let port = broker.port();

    let mut sub = Mqtt::connect(port, "reader").await;
    sub.subscribed("fill/#", QoS::AtMostOnce).await;
    let mut v5 = Raw::open(port).await;
    v5.send(&connect5_bare("filler")).await;
    assert_eq!(v5.recv().await.kind(), 2);

    // Publish 8000-byte messages (under rumqttc's 10 KiB packet limit) until the
    // broker refuses one.
    let payload = vec![7u8; 8000];
    let mut stored = 0u32;
    let refused = loop {
        let pkid = (stored % 60_000 + 1) as u16;
        v5.send(&publish5_qos1("fill/t", pkid, &payload)).await;
        let ack = v5.recv().await.bytes();
        assert_eq!(ack[0], 0x40, "PUBACK expected: {ack:x?}");
        if ack.len() > 4 && ack[4] == 0x97 {
            break ack;
        }
        stored += 1;
        assert!(stored < 8000, "the disk never filled");
    };
    // PUBACK: packet id, reason code 0x97 (quota exceeded), then properties with a
    // reason string (the client did not turn problem information off).
    assert_eq!(refused[4], 0x97);
    assert_eq!(refused[6], 0x1f, "a reason string: {refused:x?}");
    assert!(stored > 100, "stored {stored} before the disk filled");
    broker.wait_for_log("append failed", STEP);

    // The subscriber got every stored message (QoS 0 on loopback: none dropped).
    for _ in 0..stored {
        assert_eq!(sub.recv_publish().await.payload.len(), payload.len());
    }

    // A 3.1.1 publisher cannot be told: its connection is closed.
    let mut v3 = Raw::connected(port, &ConnectOpts::new("old-pub")).await;
    v3.send(&publish_packet("fill/t", &payload, 1, false, false, 1))
        .await;
    v3.expect_closed(STEP).await;

    // Space returns: publishing works again, same broker, same connection.
    std::fs::remove_file(&ballast).unwrap();
    v5.send(&publish5_qos1("fill/t", 1, b"after")).await;
    assert_eq!(v5.recv().await.bytes(), [0x40, 0x02, 0x00, 0x01]);
    assert_eq!(&sub.recv_publish().await.payload[..], b"after");
}
