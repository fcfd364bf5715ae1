//! Order across connections: a SUBSCRIBE whose bytes reached the broker before another
//! client's PUBLISH takes effect first, so the subscriber receives that message. MQTT
//! does not promise this across connections, but conformance suites and
//! request/response code assume it, and Mosquitto does it (issue 21).
//!
//! Each test runs many trials of: subscriber B writes SUBSCRIBE `order/<i>`, then
//! publisher A writes a QoS 1 PUBLISH to it without waiting for B's SUBACK. Both with
//! connections that were idle long enough to park, and with connections that never
//! park (`listener.park_after_ms = 0`). Each failed 130-160 of 200 times before the
//! connection threads became single-threaded runtimes and the parking lot forwarded
//! what a resuming connection read at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// Trials per test.
const TRIALS: usize = 200;
/// How long a trial's message may take after its PUBACK before it counts as missed.
const LATE: Duration = Duration::from_millis(300);

/// A broker whose connections park after 100 ms of quiet (logging each parking: see
/// [`parked_line`]), or never. One connection thread: the order is kept among the
/// connections of a thread (`conn_threads.rs`), which is every connection here.
fn broker(parked: bool) -> Broker {
    let park_after_ms = if parked { 100 } else { 0 };
    Broker::with_config_logging(
        &format!("[listener]\npark_after_ms = {park_after_ms}\nconnection_threads = 1\n"),
        "info,rumq_broker::connection=trace",
    )
}

/// Wait until every client id in `ids` has parked.
fn wait_parked(broker: &Broker, ids: impl IntoIterator<Item = String>) {
    for id in ids {
        broker.wait_for_log(&parked_line(&id), STEP);
    }
}

/// Raw MQTT 3.1.1 clients; the pairs whose subscriber missed its message. With
/// `publisher_awake`, each publisher leaves the parking lot (a PINGREQ answered)
/// before its trial, so the subscriber's SUBSCRIBE wakes a parked connection while
/// the PUBLISH reaches a connection with a task.
async fn raw_trials(broker: &Broker, parked: bool, publisher_awake: bool) -> Vec<usize> {
    let port = broker.port();
    let mut pairs = Vec::with_capacity(TRIALS);
    for i in 0..TRIALS {
        let a = Raw::connected(port, &ConnectOpts::new(&format!("ra{i}"))).await;
        let b = Raw::connected(port, &ConnectOpts::new(&format!("rb{i}"))).await;
        pairs.push((a, b));
    }
    if parked {
        wait_parked(
            broker,
            (0..TRIALS).flat_map(|i| [format!("ra{i}"), format!("rb{i}")]),
        );
    }
    let mut misses = Vec::new();
    for (i, (a, b)) in pairs.iter_mut().enumerate() {
        let topic = format!("order/{i}");
        if publisher_awake {
            a.send(&PINGREQ).await;
            assert_eq!(a.recv().await.bytes(), PINGRESP, "pair {i}: PINGRESP");
        }
        b.send(&subscribe_packet(1, &[(&topic, 2)])).await;
        a.send(&publish_packet(&topic, b"m", 1, false, false, 1))
            .await;
        let puback = a.recv().await;
        assert_eq!(puback.bytes(), ack_packet(0x40, 1), "pair {i}: PUBACK");
        let suback = b.recv().await;
        assert_eq!(
            suback.kind(),
            9,
            "pair {i}: expected SUBACK, got {suback:?}"
        );
        match b.recv_within(LATE).await {
            Some(p) => assert_eq!(p.publish().topic, topic, "pair {i}"),
            None => misses.push(i),
        }
    }
    misses
}

fn assert_none_missed(what: &str, misses: &[usize]) {
    assert!(
        misses.is_empty(),
        "{what}: {} of {TRIALS} subscribers missed the message published after their \
         SUBSCRIBE: pairs {misses:?}",
        misses.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_written_first_takes_effect_first_for_parked_clients() {
    let broker = broker(true);
    assert_none_missed("parked", &raw_trials(&broker, true, false).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_written_first_takes_effect_first_when_only_the_subscriber_is_parked() {
    let broker = broker(true);
    assert_none_missed("subscriber parked", &raw_trials(&broker, true, true).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_written_first_takes_effect_first_for_busy_clients() {
    let broker = broker(false);
    assert_none_missed("never parked", &raw_trials(&broker, false, false).await);
}

/// Pairs per run of `order_trials.py` (paho keeps three descriptors per client, and
/// its `select()` takes none above 1023).
const PAHO_BATCH: usize = 100;

/// paho-mqtt clients speaking MQTT `version` (4 or 5), driven by
/// `tests/py/order_trials.py` in batches; the pairs whose subscriber missed its message.
fn paho_trials(broker: &Broker, version: u8, parked: bool) -> Vec<usize> {
    (0..TRIALS)
        .step_by(PAHO_BATCH)
        .flat_map(|first| paho_batch(broker, version, parked, first))
        .collect()
}

fn paho_batch(broker: &Broker, version: u8, parked: bool, first: usize) -> Vec<usize> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/order_trials.py");
    let mut child = StockClient::Paho
        .command("python3")
        .arg(script)
        .args([broker.port().to_string(), first.to_string()])
        .args([PAHO_BATCH.to_string(), version.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let connected = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(
        connected, "connected",
        "order_trials.py did not connect its clients"
    );
    if parked {
        let pairs = first..first + PAHO_BATCH;
        wait_parked(
            broker,
            pairs.flat_map(|i| [format!("{version}a{i}"), format!("{version}b{i}")]),
        );
    }
    let started = Instant::now();
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    let result = lines.next().and_then(Result::ok).unwrap_or_default();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "order_trials.py failed ({status}): {result}"
    );
    assert!(started.elapsed() < Duration::from_secs(120));
    let words: Vec<&str> = result.split_whitespace().collect();
    assert_eq!(
        words.get(..3),
        Some(&["trials", PAHO_BATCH.to_string().as_str(), "misses"][..]),
        "order_trials.py printed {result:?}"
    );
    words[3..].iter().map(|w| w.parse().unwrap()).collect()
}

#[test]
fn paho_v5_subscribe_then_publish_in_order_parked_and_busy() {
    for parked in [true, false] {
        let broker = broker(parked);
        assert_none_missed(
            &format!("paho v5, parked {parked}"),
            &paho_trials(&broker, 5, parked),
        );
    }
}

#[test]
fn paho_v311_subscribe_then_publish_in_order_parked_and_busy() {
    for parked in [true, false] {
        let broker = broker(parked);
        assert_none_missed(
            &format!("paho v3.1.1, parked {parked}"),
            &paho_trials(&broker, 4, parked),
        );
    }
}
