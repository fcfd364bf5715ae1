//! A stock Node.js client: MQTT.js (the npm package `mqtt`, pinned in
//! `tests/js/package-lock.json`) against the real binary, speaking MQTT 3.1.1 and 5.0.
//! Each scenario is a script in `tests/js/` that prints its result as one line of JSON
//! (or exits non-zero with the step it failed at); the test compares that line with
//! the one the same script prints against Mosquitto 2.0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

/// Longest a scenario may run: each of its steps is bounded by 5 s in `tests/js/lib.js`.
const SCENARIO: Duration = Duration::from_secs(30);

/// What MQTT.js calls `protocolVersion`.
#[derive(Clone, Copy, Debug)]
enum Mqtt {
    V311 = 4,
    V5 = 5,
}

/// Run `tests/js/<scenario>.js PORT VERSION MORE...` and return the JSON line it printed.
fn mqttjs(scenario: &str, broker: &Broker, version: Mqtt, more: &[&str]) -> String {
    let out = run_with_timeout(
        StockClient::MqttJs
            .command("node")
            .arg(format!("{scenario}.js"))
            .arg(broker.port().to_string())
            .arg((version as u8).to_string())
            .args(more),
        SCENARIO,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "MQTT.js scenario {scenario} ({version:?}) failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.trim().to_string()
}

/// A received message as the scripts print it.
fn message(topic: &str, payload: &str, qos: u8, retain: bool) -> String {
    format!(r#"{{"topic":"{topic}","payload":"{payload}","qos":{qos},"retain":{retain}}}"#)
}

fn messages(list: &[String]) -> String {
    list.join(",")
}

fn connects(version: Mqtt) {
    let broker = Broker::start();
    assert_eq!(
        mqttjs("connect", &broker, version, &[]),
        r#"{"code":0,"sessionPresent":false,"serverKeepAlive":null,"keepalive":60}"#
    );
}

#[test]
fn mqttjs_v311_connects() {
    connects(Mqtt::V311);
}

#[test]
fn mqttjs_v5_connects() {
    connects(Mqtt::V5);
}

#[test]
fn mqttjs_v5_asking_keep_alive_120_is_given_the_brokers_60() {
    let broker = Broker::with_config("[limits]\nkeep_alive_max_secs = 60\n");
    assert_eq!(
        mqttjs("connect", &broker, Mqtt::V5, &["120"]),
        r#"{"code":0,"sessionPresent":false,"serverKeepAlive":60,"keepalive":60}"#
    );
}

fn round_trips_at_qos_0_1_2(version: Mqtt) {
    let broker = Broker::start();
    let received = messages(&[0, 1, 2].map(|qos| {
        message(
            &format!("js/rt/{qos}"),
            &format!("payload at qos {qos}"),
            qos,
            false,
        )
    }));
    assert_eq!(
        mqttjs("round_trip", &broker, version, &[]),
        format!(r#"{{"granted":[2],"messages":[{received}]}}"#)
    );
}

#[test]
fn mqttjs_v311_round_trips_at_qos_0_1_2() {
    round_trips_at_qos_0_1_2(Mqtt::V311);
}

#[test]
fn mqttjs_v5_round_trips_at_qos_0_1_2() {
    round_trips_at_qos_0_1_2(Mqtt::V5);
}

fn later_subscriber_gets_the_retained_message(version: Mqtt) {
    let broker = Broker::start();
    let received = messages(&[
        message("js/ret/a", "kept", 1, true),
        message("js/ret/b", "fresh", 1, false),
    ]);
    assert_eq!(
        mqttjs("retained", &broker, version, &[]),
        format!(r#"{{"messages":[{received}]}}"#)
    );
}

#[test]
fn mqttjs_v311_later_subscriber_gets_the_retained_message() {
    later_subscriber_gets_the_retained_message(Mqtt::V311);
}

#[test]
fn mqttjs_v5_later_subscriber_gets_the_retained_message() {
    later_subscriber_gets_the_retained_message(Mqtt::V5);
}

fn will_is_published_when_the_socket_dies(version: Mqtt) {
    let broker = Broker::start();
    let received = message("js/will/doomed", "gone", 1, false);
    assert_eq!(
        mqttjs("will", &broker, version, &[]),
        format!(r#"{{"messages":[{received}]}}"#)
    );
}

#[test]
fn mqttjs_v311_will_is_published_when_the_socket_dies() {
    will_is_published_when_the_socket_dies(Mqtt::V311);
}

#[test]
fn mqttjs_v5_will_is_published_when_the_socket_dies() {
    will_is_published_when_the_socket_dies(Mqtt::V5);
}

fn session_resumes_with_what_was_published_offline(version: Mqtt) {
    let broker = Broker::start();
    let received = messages(&[
        message("js/sess/1", "while away 1", 1, false),
        message("js/sess/2", "while away 2", 1, false),
    ]);
    assert_eq!(
        mqttjs("session", &broker, version, &[]),
        format!(r#"{{"firstSessionPresent":false,"sessionPresent":true,"messages":[{received}]}}"#)
    );
}

#[test]
fn mqttjs_v311_session_resumes_with_what_was_published_offline() {
    session_resumes_with_what_was_published_offline(Mqtt::V311);
}

#[test]
fn mqttjs_v5_session_resumes_with_what_was_published_offline() {
    session_resumes_with_what_was_published_offline(Mqtt::V5);
}
