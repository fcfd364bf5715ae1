//! The Prometheus endpoint, scraped while clients work: the counters match what the
//! test did (connections accepted and refused, messages appended and delivered,
//! retained messages, the log's records), and `/health` answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use common::*;
use rumqttc::QoS;

/// `GET path`: the status and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path, None).await
}

/// The samples of an exposition, by name (without the `_total` of counters).
fn samples(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((
                name.trim_end_matches("_total").to_owned(),
                value.parse().ok()?,
            ))
        })
        .collect()
}

/// Scrape until `done` holds for the samples (bounded: [`STEP`]).
async fn scrape_until(addr: SocketAddr, done: impl Fn(&BTreeMap<String, u64>) -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let (_, body) = get(addr, "/metrics").await;
        if done(&samples(&body)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached:\n{body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn metrics_addr(broker: &Broker) -> SocketAddr {
    broker.logged_addr("metrics endpoint up")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_counts_what_the_clients_did() {
    let dir = tempfile::tempdir().unwrap();
    let file = password_file(dir.path(), &[("alice", "wonderland")]);
    let broker = Broker::with_config(&format!(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n[limits]\nmax_connections = 3\n\
         [auth]\npassword_file = {:?}\n",
        file.display().to_string()
    ));
    let addr = metrics_addr(&broker);
    let port = broker.port();
    let (status, body) = get(addr, "/health").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    let mut sub = Mqtt::connect(port, "sub").await;
    sub.subscribed("m/#", QoS::AtLeastOnce).await;
    let mut publisher = Mqtt::connect(port, "pub").await;
    for i in 0..10u8 {
        publisher
            .publish("m/t", QoS::AtLeastOnce, i == 9, &[i])
            .await;
    }
    for _ in 0..10 {
        sub.recv_publish().await;
    }
    // A third connection fills max_connections = 3: a fourth is refused.
    let mut third = Raw::connected(port, &ConnectOpts::new("third")).await;
    let (_full, connack) = Raw::connect(port, &ConnectOpts::new("fourth")).await;
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x03]);
    // The third leaves; once its permit is back, a wrong password is refused.
    third.send(&DISCONNECT).await;
    scrape_until(addr, |m| m.get("rumq_connections") == Some(&2)).await;
    let mut opts = ConnectOpts::new("intruder");
    opts.username = Some("alice".into());
    opts.password = Some(b"guess".to_vec());
    let (_refused, connack) = Raw::connect(port, &opts).await;
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x04]);
    scrape_until(addr, |m| m.get("rumq_connections") == Some(&2)).await;

    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let m = samples(&body);
    let want = [
        ("rumq_messages_appended", 10),
        ("rumq_messages_delivered", 10),
        ("rumq_retained_messages", 1),
        ("rumq_log_records", 10),
        ("rumq_connections_refused_auth", 1),
        ("rumq_connections_refused_full", 1),
        ("rumq_connections", 2),
        ("rumq_sessions", 2),
    ];
    for (name, value) in want {
        assert_eq!(m.get(name), Some(&value), "{name} in:\n{body}");
    }
    assert_eq!(m.get("rumq_connections_accepted"), Some(&4), "{body}");
    assert!(
        m["rumq_log_bytes"] > 0 && m["rumq_log_segments"] >= 1,
        "{body}"
    );
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
}

/// Scrape while three publishers (QoS 0, 1, 2) send and one subscriber reads: every
/// scrape parses and no counter goes back; at the end the counters are what the test
/// sent and received, and the histograms counted the appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_under_load_count_what_was_sent_by_qos() {
    const EACH: usize = 300;
    let broker = Broker::with_config("[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let addr = metrics_addr(&broker);
    let port = broker.port();
    let mut sub = Mqtt::connect(port, "load-sub").await;
    sub.subscribed("load/#", QoS::ExactlyOnce).await;
    let reader = tokio::spawn(async move {
        let mut by_qos = [0usize; 3];
        for _ in 0..3 * EACH {
            by_qos[sub.recv_publish().await.qos as usize] += 1;
        }
        (by_qos, sub)
    });
    let mut publishers = Vec::new();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publishers.push(tokio::spawn(async move {
            let mut p = Mqtt::connect(port, &format!("load-pub-{}", qos as u8)).await;
            for i in 0..EACH {
                p.publish(&format!("load/{}", qos as u8), qos, false, &i.to_be_bytes())
                    .await;
            }
            p
        }));
    }
    let scrapes = scrape_while_running(addr, &publishers).await;
    for p in publishers {
        p.await.unwrap();
    }
    // The subscriber stays connected: its subscription is counted below.
    let (by_qos, _sub) = tokio::time::timeout(STEP * 4, reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_qos, [EACH; 3], "each message once, at its QoS");

    let total = 3 * EACH as u64;
    scrape_until(addr, |m| m.get("rumq_messages_delivered") == Some(&total)).await;
    let (_, body) = get(addr, "/metrics").await;
    let m = samples(&body);
    for qos in 0..3 {
        let received = format!("rumq_messages_received_total{{qos=\"{qos}\"}}");
        let sent = format!("rumq_messages_sent_total{{qos=\"{qos}\"}}");
        assert_eq!(
            m.get(&received),
            Some(&(EACH as u64)),
            "{received} in:\n{body}"
        );
        assert_eq!(m.get(&sent), Some(&(EACH as u64)), "{sent} in:\n{body}");
    }
    assert_eq!(m.get("rumq_messages_appended"), Some(&total));
    assert_eq!(
        m.get("rumq_log_append_seconds_count"),
        m.get("rumq_append_batches"),
        "one append timed per batch:\n{body}"
    );
    assert_eq!(
        m.get("rumq_log_append_seconds_bucket{le=\"+Inf\"}"),
        m.get("rumq_append_batches")
    );
    assert!(m["rumq_router_iteration_seconds_count"] > 0, "{body}");
    let bytes = |qos: u8| m[&format!("rumq_received_bytes_total{{qos=\"{qos}\"}}")];
    assert!((0..3).all(|q| bytes(q) > EACH as u64 * 8), "{body}");
    assert_eq!(m.get("rumq_subscriptions"), Some(&1));
    assert!(scrapes > 1, "scraped while the load ran");
}

/// Scrape until every task of `running` has finished: each scrape parses and no
/// counter of it goes back. How many scrapes there were.
async fn scrape_while_running<T>(
    addr: SocketAddr,
    running: &[tokio::task::JoinHandle<T>],
) -> usize {
    let monotonic = [
        "rumq_messages_appended",
        "rumq_messages_delivered",
        "rumq_log_append_seconds_count",
    ];
    let mut last = BTreeMap::new();
    let mut scrapes = 0;
    while !running.iter().all(|p| p.is_finished()) {
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        let m = samples(&body);
        for name in monotonic {
            let now = *m.get(name).unwrap_or_else(|| panic!("{name} in:\n{body}"));
            assert!(now >= *last.get(name).unwrap_or(&0), "{name} went back");
            last.insert(name, now);
        }
        scrapes += 1;
        assert!(scrapes < 10_000, "publishers never finished");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    scrapes
}
