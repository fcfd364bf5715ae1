//! The command line: the default configuration, configuration errors, and graceful
//! shutdown on SIGTERM (with what a restart on the same data directory finds).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use rumqttc::QoS;

/// Run the binary with `args` (it must exit on its own).
fn run(args: &[&str]) -> std::process::Output {
    run_with_timeout(
        Command::new(broker_bin()).args(args),
        Duration::from_secs(10),
    )
}

/// Run with a config file holding `text`; it must fail with exit code 2 before
/// listening. Returns stderr.
fn bad_config(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let data = dir.path().join("data");
    let out = run(&[
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
    assert!(stderr.contains("bad.toml"), "names the file: {stderr}");
    stderr
}

#[test]
fn print_default_config_prints_the_shipped_file() {
    let out = run(&["--print-default-config"]);
    assert!(out.status.success(), "{:?}", out);
    let shipped =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rumq.toml")).unwrap();
    assert_eq!(out.stdout, shipped);
    assert!(out.stderr.is_empty());
}

#[test]
fn the_printed_default_config_is_accepted() {
    let out = run(&["--print-default-config"]);
    let broker = Broker::with_config(std::str::from_utf8(&out.stdout).unwrap());
    assert_ne!(broker.port(), 1883, "--listen overrides the file");
}

#[test]
fn unknown_config_key_exits_2_naming_key_and_line() {
    let err = bad_config("data_dir = \"x\"\n\n[limits]\nmax_conections = 5\n");
    assert!(err.contains("max_conections"), "{err}");
    assert!(err.contains("line 4"), "{err}");
}

#[test]
fn unknown_config_section_exits_2() {
    let err = bad_config("[limitz]\nmax_connections = 5\n");
    assert!(err.contains("limitz") && err.contains("line 1"), "{err}");
}

#[test]
fn wrong_config_type_exits_2_naming_key_and_line() {
    let err = bad_config("[storage]\nfsync = 3\n");
    assert!(err.contains("fsync") && err.contains("line 2"), "{err}");
    let err = bad_config("[limits]\n\nmax_connections = \"many\"\n");
    assert!(
        err.contains("max_connections") && err.contains("line 3"),
        "{err}"
    );
}

#[test]
fn malformed_toml_exits_2() {
    let err = bad_config("[limits\nmax_connections = 5\n");
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn inconsistent_config_values_exit_2() {
    let err = bad_config("[limits]\nmax_packet_size = 1\n");
    assert!(err.contains("max_packet_size"), "{err}");
}

#[test]
fn missing_or_unreadable_config_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    // A directory is not readable as a file (and root can read any mode bits).
    for path in [missing.as_path(), dir.path()] {
        let out = run(&[
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{path:?}: {stderr}");
        assert!(stderr.contains("cannot read config file"), "{stderr}");
        assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
    }
}

#[test]
fn invalid_log_level_exits_2() {
    let out = run(&["--log-level", "loud=[", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let mut broker = Broker::start();
    let status = broker.terminate(Duration::from_secs(8));
    assert_eq!(status.code(), Some(0), "{}", broker.stderr());
    let log = broker.stderr();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(
        broker
            .data_dir
            .join("messages")
            .join("clean-shutdown")
            .exists(),
        "the log was closed cleanly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_connected_clients_shuts_down_gracefully() {
    let mut broker = Broker::start();
    let port = broker.port();
    let mut m = Mqtt::connect(port, "stays").await;
    m.subscribed("t", QoS::AtLeastOnce).await;
    let mut raw = Raw::connected(port, &ConnectOpts::new("raw-stays")).await;
    let status = tokio::task::block_in_place(|| broker.terminate(Duration::from_secs(8)));
    assert_eq!(status.code(), Some(0), "{}", broker.stderr());
    assert!(broker.stderr().contains("stopped"));
    raw.expect_closed(STEP).await;
    m.closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_before_sigterm_are_delivered_after_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut broker = Broker::start_in(data.path(), None);
    let port = broker.port();

    // A persistent subscriber goes offline; messages arrive for it.
    let mut o = options(port, "durable");
    o.set_clean_session(false);
    let mut sub = Mqtt::connect_with(o).await;
    sub.subscribed("durable/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let mut publisher = Mqtt::connect(port, "durable-pub").await;
    let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; usize::from(i) * 10]).collect();
    for (i, p) in payloads.iter().enumerate() {
        let q = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        publisher
            .publish(&format!("durable/{i}"), q, false, p)
            .await;
    }
    drop(publisher);

    let status = tokio::task::block_in_place(|| broker.terminate(Duration::from_secs(8)));
    assert_eq!(status.code(), Some(0), "{}", broker.stderr());
    drop(broker);

    let broker = Broker::start_in(data.path(), None);
    let mut o = options(broker.port(), "durable");
    o.set_clean_session(false);
    let mut sub = Mqtt::connect_with(o).await;
    assert!(
        sub.connack.session_present,
        "the session survived the restart"
    );
    for (i, p) in payloads.iter().enumerate() {
        let got = sub.recv_publish().await;
        // QoS 1 and 2 publishes both arrive at min(published, subscribed 1).
        assert_publish(&got, &format!("durable/{i}"), p, QoS::AtLeastOnce, false);
    }
    // And the subscription is still there.
    let mut publisher = Mqtt::connect(broker.port(), "durable-pub-2").await;
    publisher
        .publish("durable/new", QoS::AtLeastOnce, false, b"after restart")
        .await;
    let got = sub.recv_publish().await;
    assert_publish(
        &got,
        "durable/new",
        b"after restart",
        QoS::AtLeastOnce,
        false,
    );
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_and_unacked_deliveries_survive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut broker = Broker::start_in(data.path(), None);
    let port = broker.port();
    let opts = ConnectOpts::new("online-at-shutdown").clean(false);
    let mut raw = Raw::connected(port, &opts).await;
    raw.send(&subscribe_packet(1, &[("keep/#", 1)])).await;
    assert_eq!(raw.recv().await.bytes(), [0x90, 0x03, 0x00, 0x01, 0x01]);
    let mut publisher = Mqtt::connect(port, "keep-pub").await;
    publisher
        .publish("keep/retained", QoS::AtLeastOnce, true, b"still here")
        .await;
    // Received, never acknowledged; the client is still connected at SIGTERM.
    let p = raw.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.dup),
        ("keep/retained", &b"still here"[..], false)
    );
    drop(publisher);

    let status = tokio::task::block_in_place(|| broker.terminate(Duration::from_secs(8)));
    assert_eq!(status.code(), Some(0), "{}", broker.stderr());
    raw.expect_closed(STEP).await;
    drop(broker);

    let broker = Broker::start_in(data.path(), None);
    let port = broker.port();
    let (mut raw, connack) = Raw::connect(port, &opts).await;
    assert_eq!(connack, CONNACK_SESSION);
    assert_eq!(
        raw.recv().await.bytes(),
        publish_packet("keep/retained", b"still here", 1, false, true, p.pkid)
    );
    raw.send(&ack_packet(0x40, p.pkid)).await;
    raw.expect_silence(QUIET).await;

    let mut late = Mqtt::connect(port, "late").await;
    late.subscribed("keep/+", QoS::AtLeastOnce).await;
    let got = late.recv_publish().await;
    assert_publish(&got, "keep/retained", b"still here", QoS::AtLeastOnce, true);
}

#[test]
fn a_session_journal_dir_holding_other_files_stops_the_start() {
    let data = tempfile::tempdir().unwrap();
    let state = data.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let sessions = state.join("notes.txt");
    std::fs::write(&sessions, b"not a journal").unwrap();
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(state.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("notes.txt"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
    assert!(sessions.exists(), "left for the operator to inspect");
}

/// At `info` a connection is one "connected" line and one "connection closed" line
/// with its reason; with `[log] format = "json"` every line is a JSON object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_two_log_lines_and_json_lines_are_json() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rumq.toml");
    std::fs::write(&config, "[log]\nformat = \"json\"\n").unwrap();
    let mut child = Command::new(broker_bin())
        .args([
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    /// Killed however the test ends, so no broker outlives it.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let _child = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if tx.send(value).is_err() {
                return;
            }
        }
    });
    let next = |message: &str| loop {
        let v = rx.recv_timeout(STEP).expect("log line in time");
        if v["fields"]["message"] == message {
            return v;
        }
    };
    let addr: std::net::SocketAddr = next("listening")["fields"]["addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut raw = Raw::connected(addr.port(), &ConnectOpts::new("logged")).await;
    raw.send(&DISCONNECT).await;
    let connected = next("connected");
    assert_eq!(connected["fields"]["version"], "3.1.1");
    assert_eq!(connected["span"]["client_id"], "logged");
    let closed = next("connection closed");
    assert_eq!(closed["fields"]["reason"], "client sent DISCONNECT");
}
