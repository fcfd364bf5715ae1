//! `auth.acl_file` (Mosquitto's syntax) against the real binary: what a client may
//! publish, subscribe to and be sent, by user section, anonymous section and
//! pattern; a will it may not publish; a reload by SIGHUP that connected clients
//! see; a bad file refused at start. Raw MQTT 3.1.1 where the exact codes matter,
//! and the stock mosquitto clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use rumq_broker::protocol::framing::{decode_varint, Varint};

#[path = "mqtt5/packets.rs"]
#[allow(dead_code)]
mod packets;
use packets::{connect, connect5, publish5, subscribe5};

const ACL: &str = "\
# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic deny alice/secret
topic read public/#

user admin
topic readwrite #

pattern readwrite devices/%c/#
";

/// A broker whose `auth.acl_file` holds `text`; the file's path.
fn broker_with_acl(text: &str) -> (Broker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acl");
    std::fs::write(&path, text).unwrap();
    let config = format!("[auth]\nacl_file = {:?}\n", path.display().to_string());
    (Broker::with_config(&config), dir)
}

async fn connect_as(port: u16, client_id: &str, user: Option<&str>) -> Raw {
    let mut opts = ConnectOpts::new(client_id);
    opts.username = user.map(String::from);
    Raw::connected(port, &opts).await
}

/// SUBSCRIBE `filter` at QoS 1; the SUBACK's return code.
async fn subscribe(c: &mut Raw, pkid: u16, filter: &str) -> u8 {
    c.send(&subscribe_packet(pkid, &[(filter, 1)])).await;
    let ack = c.recv().await;
    assert_eq!(ack.kind(), 9, "SUBACK");
    *ack.body.last().unwrap()
}

/// Publish at QoS 1 as `admin` (who may publish anywhere), retained or not.
async fn admin_publish(port: u16, topic: &str, payload: &[u8], retain: bool) {
    let mut admin = connect_as(port, "admin-pub", Some("admin")).await;
    admin
        .send(&publish_packet(topic, payload, 1, retain, false, 1))
        .await;
    assert_eq!(admin.recv().await.bytes(), ack_packet(0x40, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_outside_a_read_grant_are_refused_with_0x80() {
    let (b, _dir) = broker_with_acl(ACL);
    let mut alice = connect_as(b.port(), "a-1", Some("alice")).await;
    assert_eq!(subscribe(&mut alice, 1, "alice/#").await, 1);
    assert_eq!(subscribe(&mut alice, 2, "public/+").await, 1);
    assert_eq!(subscribe(&mut alice, 3, "#").await, 0x80);
    assert_eq!(subscribe(&mut alice, 4, "alice/secret").await, 0x80);
    assert_eq!(subscribe(&mut alice, 5, "bob/#").await, 0x80);
    let mut anonymous = connect_as(b.port(), "anon-1", None).await;
    assert_eq!(subscribe(&mut anonymous, 1, "public/#").await, 1);
    assert_eq!(subscribe(&mut anonymous, 2, "alice/#").await, 0x80);
    // A user with no section is granted only the patterns.
    let mut mallory = connect_as(b.port(), "m-1", Some("mallory")).await;
    assert_eq!(subscribe(&mut mallory, 1, "public/#").await, 0x80);
    assert_eq!(subscribe(&mut mallory, 2, "devices/m-1/#").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_topic_under_a_granted_filter_is_never_delivered_retained_or_live() {
    let (b, _dir) = broker_with_acl(ACL);
    admin_publish(b.port(), "alice/secret", b"retained secret", true).await;
    admin_publish(b.port(), "alice/open", b"retained open", true).await;
    let mut alice = connect_as(b.port(), "a-1", Some("alice")).await;
    assert_eq!(subscribe(&mut alice, 1, "alice/#").await, 1);
    let first = alice.recv_publish().await;
    assert_eq!(first.payload, b"retained open");
    admin_publish(b.port(), "alice/secret", b"live secret", false).await;
    admin_publish(b.port(), "alice/x", b"live x", false).await;
    let next = alice.recv_publish().await;
    assert_eq!(next.payload, b"live x", "the secret is skipped");
    alice.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_without_a_write_grant_is_acked_and_dropped() {
    let (b, _dir) = broker_with_acl(ACL);
    let mut watcher = connect_as(b.port(), "watch", Some("admin")).await;
    assert_eq!(subscribe(&mut watcher, 1, "#").await, 1);
    // Anonymous clients may read public/#, not write it: 3.1.1 gets its PUBACK
    // (as from Mosquitto), and nobody gets the message.
    let mut anonymous = connect_as(b.port(), "dev-1", None).await;
    anonymous
        .send(&publish_packet(
            "public/news",
            b"forged",
            1,
            false,
            false,
            7,
        ))
        .await;
    assert_eq!(anonymous.recv().await.bytes(), ack_packet(0x40, 7));
    // Its own devices/<client id>/# is its to write (the pattern).
    anonymous
        .send(&publish_packet(
            "devices/dev-1/t",
            b"21.5",
            1,
            false,
            false,
            8,
        ))
        .await;
    assert_eq!(anonymous.recv().await.bytes(), ack_packet(0x40, 8));
    anonymous
        .send(&publish_packet(
            "devices/dev-2/t",
            b"not mine",
            1,
            false,
            false,
            9,
        ))
        .await;
    assert_eq!(anonymous.recv().await.bytes(), ack_packet(0x40, 9));
    let got = watcher.recv_publish().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("devices/dev-1/t", &b"21.5"[..])
    );
    watcher.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_the_client_may_not_publish_refuses_the_connect() {
    let (b, _dir) = broker_with_acl(ACL);
    let opts = ConnectOpts::new("dev-3").will("public/alarm", b"gone", 1, false);
    let (_raw, connack) = Raw::connect(b.port(), &opts).await;
    assert_eq!(connack, [0x20, 0x02, 0x00, 5], "not authorized");
    let opts = ConnectOpts::new("dev-3").will("devices/dev-3/status", b"gone", 1, false);
    let (_raw, connack) = Raw::connect(b.port(), &opts).await;
    assert_eq!(connack, [0x20, 0x02, 0x00, 0]);
}

#[test]
fn mosquitto_sub_is_told_a_denied_subscription_and_gets_what_it_may_read() {
    let (b, _dir) = broker_with_acl(ACL);
    let sub = MosquittoSub::start(
        b.port(),
        &[
            "-u", "alice", "-t", "alice/#", "-q", "1", "-C", "1", "-W", "10",
        ],
    );
    mosquitto_pub(
        b.port(),
        &["-u", "admin", "-t", "alice/secret", "-q", "1", "-m", "no"],
    );
    mosquitto_pub(
        b.port(),
        &["-u", "admin", "-t", "alice/ok", "-q", "1", "-m", "yes"],
    );
    let (status, lines) = sub.finish(STEP);
    assert!(status.success(), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].ends_with(&hex(b"yes")), "{lines:?}");
    let out = run_with_timeout(
        StockClient::Mosquitto
            .command("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &b.port().to_string()])
            .args(["-u", "alice", "-t", "#", "-C", "1", "-W", "3"]),
        STEP,
    );
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("denied"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_acl_for_connected_clients_too() {
    let (b, dir) = broker_with_acl(ACL);
    let mut bob = connect_as(b.port(), "b-1", Some("bob")).await;
    assert_eq!(subscribe(&mut bob, 1, "bob/#").await, 0x80);
    std::fs::write(
        dir.path().join("acl"),
        format!("{ACL}\nuser bob\ntopic readwrite bob/#\n"),
    )
    .unwrap();
    let hup = |n| {
        let status = Command::new("kill")
            .args(["-HUP", &b.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        b.wait_for_log_count("acl file", n, STEP);
    };
    hup(1);
    assert!(b.stderr().contains("acl file reloaded"));
    assert_eq!(
        subscribe(&mut bob, 2, "bob/#").await,
        1,
        "the same connection"
    );
    // A broken file is logged and the one in force stays.
    std::fs::write(dir.path().join("acl"), "topik read x\n").unwrap();
    hup(2);
    assert!(
        b.stderr().contains("acl file not reloaded"),
        "{}",
        b.stderr()
    );
    assert_eq!(subscribe(&mut bob, 3, "bob/x").await, 1);
}

#[test]
fn a_bad_acl_file_stops_the_start_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "user a\ntopic readwrite a/#\ntopic read a/#/b\n").unwrap();
    let config = dir.path().join("rumq.toml");
    std::fs::write(
        &config,
        format!("[auth]\nacl_file = {:?}\n", acl.display().to_string()),
    )
    .unwrap();
    let out = run_with_timeout(
        Command::new(broker_bin())
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data")),
        Duration::from_secs(10),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("[auth] acl_file") && err.contains("line 3"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_clients_are_told_0x87() {
    let (b, _dir) = broker_with_acl(ACL);
    let (mut c, code, ..) = connect(b.port(), &connect5("dev-5", true, &[])).await;
    assert_eq!(code, 0);
    c.send(&publish5("public/news", 1, 3, &[], b"forged")).await;
    let ack = c.recv().await;
    assert_eq!(
        (ack.kind(), ack.body[2]),
        (4, 0x87),
        "PUBACK not authorized"
    );
    c.send(&publish5("public/news", 2, 4, &[], b"forged")).await;
    let rec = c.recv().await;
    assert_eq!(
        (rec.kind(), rec.body[2]),
        (5, 0x87),
        "PUBREC not authorized"
    );
    c.send(&subscribe5(5, &[], &[("public/#", 1), ("alice/#", 1)]))
        .await;
    let suback = c.recv().await;
    assert_eq!(suback.kind(), 9);
    assert_eq!(&suback.body[suback.body.len() - 2..], [1, 0x87]);
}
