//! A full disk, for real: the data directory on a small tmpfs, filled by publishing.
//! Publishes are refused (MQTT 5: PUBACK 0x97; 3.1.1: the connection is closed),
//! subscribers keep receiving what was stored, and once space returns publishing
//! works again without a restart.
//!
//! Mounting needs root (CAP_SYS_ADMIN), as CI has. Where the tmpfs cannot be set
//! up the test fails, naming what it could not do: a test that cannot run must not
//! pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use rumqttc::QoS;

const STEP: Duration = Duration::from_secs(5);

/// A tmpfs mounted on a fresh temporary directory, unmounted on drop (a failing
/// test included: drop runs as the panic unwinds).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mount a tmpfs of `mib` MiB, or panic saying what could not be set up.
    fn mount(mib: u32) -> Tmpfs {
        let dir = tempfile::tempdir().expect("cannot create a directory to mount a tmpfs on");
        let size = format!("size={mib}m");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `mount` for the disk-full tmpfs: {e}"));
        assert!(
            out.status.success(),
            "cannot mount a {mib} MiB tmpfs on {} (`mount -t tmpfs -o {size} tmpfs DIR`: {}; {}); \
             this test needs root (CAP_SYS_ADMIN), as CI has",
            dir.path().display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        // From here on, drop unmounts, whatever fails next.
        let fs = Tmpfs { dir };
        assert!(
            fs.is_mounted(),
            "mount reported success, but {} is not a tmpfs mount point",
            fs.path().display()
        );
        fs
    }

    /// Whether the directory is a tmpfs mount point (per /proc/self/mountinfo).
    fn is_mounted(&self) -> bool {
        let info = std::fs::read_to_string("/proc/self/mountinfo")
            .expect("cannot read /proc/self/mountinfo to check the tmpfs");
        let dir = std::fs::canonicalize(self.dir.path()).expect("the tmpfs directory is gone");
        let dir = dir.to_string_lossy();
        info.lines().any(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let fs_type = line.split(" - ").nth(1).and_then(|s| s.split(' ').next());
            fields.get(4) == Some(&&*dir) && fs_type == Some("tmpfs")
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a broker still holding files there cannot keep the mount alive.
        let status = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            // Not a panic: drop may run while a failed test unwinds.
            eprintln!(
                "disk_full: could not unmount the tmpfs on {}: {status:?}",
                self.dir.path().display()
            );
        }
    }
}

const CONFIG: &str = r#"
[limits]
max_packet_size = 65536
[storage]
segment_bytes_max = 1048576
index_bytes_max = 65536
record_bytes_max = 65536
fsync = "never"
[storage.retention]
bytes_max = 0
segments_max = 0
age_ms_max = 0
hold_bytes_max = 0
"#;

/// An MQTT 5 CONNECT with no properties.
fn connect5(id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&4u16.to_be_bytes());
    body.extend_from_slice(b"MQTT");
    body.extend_from_slice(&[5, 0x02, 0, 60, 0]);
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    packet(0x10, &body)
}

/// An MQTT 5 QoS 1 PUBLISH with no properties.
fn publish5(topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&pkid.to_be_bytes());
    body.push(0);
    body.extend_from_slice(payload);
    packet(0x32, &body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_publishes_serves_subscribers_and_recovers() {
    let fs = Tmpfs::mount(24);
    // Ballast to free later: space comes back without touching the broker's files.
    let ballast: PathBuf = fs.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 6 << 20]).unwrap();
    let broker = Broker::start_in(&fs.path().join("data"), Some(CONFIG));
    let port = broker.port();

    let mut sub = Mqtt::connect(port, "reader").await;
    sub.subscribed("fill/#", QoS::AtMostOnce).await;
    let mut v5 = Raw::open(port).await;
    v5.send(&connect5("filler")).await;
    assert_eq!(v5.recv().await.kind(), 2);

    // Publish 8000-byte messages (under rumqttc's 10 KiB packet limit) until the
    // broker refuses one.
    let payload = vec![7u8; 8000];
    let mut stored = 0u32;
    let refused = loop {
        let pkid = (stored % 60_000 + 1) as u16;
        v5.send(&publish5("fill/t", pkid, &payload)).await;
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
    v5.send(&publish5("fill/t", 1, b"after")).await;
    assert_eq!(v5.recv().await.bytes(), [0x40, 0x02, 0x00, 0x01]);
    assert_eq!(&sub.recv_publish().await.payload[..], b"after");
}
