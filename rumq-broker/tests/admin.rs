//! The admin API: a bearer token guards it, it lists the connected clients (paged)
//! and shows one, and closing one sends an MQTT 5 client DISCONNECT 0x98; without a
//! token it may only listen on a loopback address.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::*;

const TOKEN: &str = "a-token-for-the-tests";

fn admin_addr(broker: &Broker) -> SocketAddr {
    broker.wait_for_log("admin API up", STEP);
    let log = broker.stderr();
    let line = log.lines().find(|l| l.contains("admin API up")).unwrap();
    line.split("addr=").nth(1).unwrap().trim().parse().unwrap()
}

/// An MQTT 5 CONNECT with clean start and no properties.
fn connect_v5(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    packet(0x10, &body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_clients_and_close_one() {
    let broker = Broker::with_config(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"
    ));
    let admin = admin_addr(&broker);
    let port = broker.port();
    let mut dev1 = Raw::open(port).await;
    dev1.send(&connect_v5("dev1")).await;
    assert_eq!(dev1.recv().await.kind(), 2, "CONNACK");
    let mut others = Vec::new();
    for i in 0..3 {
        others.push(Raw::connected(port, &ConnectOpts::new(&format!("other{i}"))).await);
    }

    assert_eq!(http(admin, "GET", "/health", None).await.0, 401);
    assert_eq!(http(admin, "GET", "/clients", Some("wrong")).await.0, 401);
    let (code, body) = http(admin, "GET", "/clients?limit=2", Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["total"], 4);
    assert_eq!(page["clients"].as_array().unwrap().len(), 2);
    assert_eq!(page["clients"][0]["client_id"], "dev1");
    let (code, body) = http(admin, "GET", "/clients/dev1", Some(TOKEN)).await;
    assert_eq!(code, 200);
    let dev: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (dev["protocol"].as_str(), dev["keep_alive"].as_u64()),
        (Some("5.0"), Some(60))
    );

    let (code, body) = http(admin, "DELETE", "/clients/dev1", Some(TOKEN)).await;
    assert_eq!((code, body.as_str()), (202, "{\"closing\":1}"));
    let disconnect = dev1.recv().await;
    assert_eq!(disconnect.kind(), 14, "DISCONNECT, got {disconnect:?}");
    assert_eq!(disconnect.body[0], 0x98, "administrative action");
    dev1.expect_closed(STEP).await;
    let deadline = tokio::time::Instant::now() + STEP;
    while http(admin, "GET", "/clients/dev1", Some(TOKEN)).await.0 != 404 {
        assert!(tokio::time::Instant::now() < deadline, "dev1 still listed");
    }
    assert_eq!(
        http(admin, "DELETE", "/clients/nobody", Some(TOKEN))
            .await
            .0,
        404
    );
    // The others are untouched.
    for mut o in others {
        o.send(&PINGREQ).await;
        assert_eq!(o.recv().await.bytes(), PINGRESP);
    }
}

#[test]
fn without_a_token_the_api_listens_on_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rumq.toml");
    std::fs::write(&config, "[admin]\nlisten = \"0.0.0.0:0\"\n").unwrap();
    let out = run_with_timeout(
        Command::new(broker_bin()).args(["--config", config.to_str().unwrap()]),
        STEP,
    );
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("[admin] token: required"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_client_is_closed_too() {
    let broker = Broker::with_config_logging(
        &format!("[listener]\npark_after_ms = 100\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
        "info,rumq_broker::connection=trace",
    );
    let admin = admin_addr(&broker);
    let mut dev = Raw::open(broker.port()).await;
    dev.send(&connect_v5("parked-dev")).await;
    assert_eq!(dev.recv().await.kind(), 2, "CONNACK");
    broker.wait_for_log(&parked_line("parked-dev"), STEP);
    let (code, _) = http(admin, "DELETE", "/clients/parked-dev", Some(TOKEN)).await;
    assert_eq!(code, 202);
    let disconnect = dev.recv().await;
    assert_eq!((disconnect.kind(), disconnect.body[0]), (14, 0x98));
}

/// `GET path` with the token, as JSON.
async fn get_json(admin: SocketAddr, path: &str) -> serde_json::Value {
    let (code, body) = http(admin, "GET", path, Some(TOKEN)).await;
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_subscriptions_and_topics_are_listed() {
    use rumqttc::QoS;
    let broker = Broker::with_config(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"
    ));
    let admin = admin_addr(&broker);
    let mut opts = options(broker.port(), "sub-a");
    opts.set_clean_session(false);
    let mut sub = Mqtt::connect_with(opts).await;
    sub.subscribed("home/+/temp", QoS::AtLeastOnce).await;
    sub.subscribed("alerts/#", QoS::AtMostOnce).await;
    sub.disconnect().await;
    let mut publisher = Mqtt::connect(broker.port(), "pub").await;
    for i in 0..3u8 {
        publisher
            .publish("home/kitchen/temp", QoS::AtLeastOnce, false, &[i])
            .await;
    }
    publisher
        .publish("home/hall/temp", QoS::AtLeastOnce, true, b"19.5")
        .await;
    publisher
        .publish("work/desk", QoS::AtLeastOnce, false, b"x")
        .await;

    let sessions = get_json(admin, "/sessions").await;
    assert_eq!(sessions["total"], 2, "{sessions}");
    let a = &sessions["sessions"][1];
    assert_eq!(a["client_id"], "sub-a");
    assert_eq!(
        (a["connected"].as_bool(), a["clean"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(
        (a["subscriptions"].as_u64(), a["queued"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(get_json(admin, "/sessions/sub-a").await, *a);
    assert_eq!(
        http(admin, "GET", "/sessions/nobody", Some(TOKEN)).await.0,
        404
    );

    let who = get_json(admin, "/subscriptions?topic=home/kitchen/temp").await;
    assert_eq!(who["total"], 1);
    assert_eq!(who["subscriptions"][0]["filter"], "home/+/temp");
    assert_eq!(who["subscriptions"][0]["qos"], 1);
    let exact = get_json(admin, "/subscriptions?filter=alerts/%23").await;
    assert_eq!(exact["total"], 1);
    assert_eq!(
        get_json(admin, "/subscriptions?limit=1&offset=1").await["subscriptions"][0]["filter"],
        "home/+/temp"
    );

    let topics = get_json(admin, "/topics?prefix=home/").await;
    assert_eq!(
        topics["topics"],
        serde_json::json!([
            {"topic": "home/hall/temp", "messages": 1, "retained": true},
            {"topic": "home/kitchen/temp", "messages": 3, "retained": false}
        ])
    );
    assert_eq!(get_json(admin, "/topics").await["total"], 3);

    let (code, body) = http(admin, "GET", "/cluster", Some(TOKEN)).await;
    assert_eq!(code, 404, "one node: {body}");
    let clients = get_json(admin, "/clients").await;
    let p = &clients["clients"][0];
    assert_eq!(
        (
            p["client_id"].as_str(),
            p["inflight"].as_u64(),
            p["queued"].as_u64()
        ),
        (Some("pub"), Some(0), Some(0))
    );
}
