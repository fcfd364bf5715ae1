//! Stock MQTT 5 clients (paho-mqtt, rumqttc's v5 client) against the broker.

use super::*;

#[test]
fn paho_mqtt_v5_client_round_trip() {
    let broker = Broker::start();
    let script = format!(
        r#"
import sys, time, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

got = []
ready = threading.Event()
done = threading.Event()
def on_connect(c, u, flags, rc, props):
    assert rc == 0, rc
    sp = Properties(PacketTypes.SUBSCRIBE)
    sp.SubscriptionIdentifier = 42
    c.subscribe("paho/#", qos=1, properties=sp)
def on_subscribe(c, u, mid, rcs, props):
    ready.set()
def on_message(c, u, m):
    got.append(m)
    done.set()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho5", protocol=mqtt.MQTTv5)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("127.0.0.1", {port})
c.loop_start()
assert ready.wait(5), "no SUBACK"
pp = Properties(PacketTypes.PUBLISH)
pp.UserProperty = [("k", "v1"), ("k", "v2")]
pp.ContentType = "text/plain"
pp.ResponseTopic = "paho/reply"
pp.CorrelationData = b"corr"
pp.MessageExpiryInterval = 60
info = c.publish("paho/t", b"hello", qos=1, properties=pp)
info.wait_for_publish(5)
assert done.wait(5), "no message"
m = got[0]
p = m.properties
assert m.payload == b"hello", m.payload
assert p.UserProperty == [("k", "v1"), ("k", "v2")], p.UserProperty
assert p.ContentType == "text/plain"
assert p.ResponseTopic == "paho/reply"
assert p.CorrelationData == b"corr"
assert p.SubscriptionIdentifier == [42], p.SubscriptionIdentifier
assert 58 <= p.MessageExpiryInterval <= 60, p.MessageExpiryInterval
c.disconnect()
c.loop_stop()
print("ok")
"#,
        port = broker.port()
    );
    let out = run_with_timeout(
        StockClient::Paho.command("python3").args(["-c", &script]),
        Duration::from_secs(20),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "paho-mqtt v5 client failed:\n{stdout}\n{stderr}"
    );
}

/// A stock MQTT 5 client (rumqttc's v5 module) with its event loop in a task.
pub mod v5client {
    use std::time::Duration;

    use rumqttc::v5::mqttbytes::v5::{ConnAck, Packet, Publish, SubscribeReasonCode};
    use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
    use tokio::sync::mpsc;

    pub struct Client {
        pub client: AsyncClient,
        pub connack: ConnAck,
        incoming: mpsc::UnboundedReceiver<Packet>,
        task: tokio::task::JoinHandle<()>,
    }

    pub async fn connect(opts: MqttOptions) -> Client {
        let (client, mut el): (AsyncClient, EventLoop) = AsyncClient::new(opts, 64);
        let (tx, incoming) = mpsc::unbounded_channel();
        let connack = loop {
            match tokio::time::timeout(Duration::from_secs(5), el.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(a)))) => break a,
                Ok(Ok(_)) => {}
                other => panic!("no CONNACK: {other:?}"),
            }
        };
        let task = tokio::spawn(async move {
            while let Ok(ev) = el.poll().await {
                if let Event::Incoming(p) = ev {
                    if tx.send(p).is_err() {
                        break;
                    }
                }
            }
        });
        Client {
            client,
            connack,
            incoming,
            task,
        }
    }

    impl Client {
        /// Drop the connection without DISCONNECT, as a crashed device would.
        pub fn kill(self) {
            self.task.abort();
        }

        pub async fn next_publish(&mut self) -> Publish {
            self.next_publish_within(Duration::from_secs(5))
                .await
                .expect("a PUBLISH")
        }

        pub async fn next_publish_within(&mut self, d: Duration) -> Option<Publish> {
            let deadline = tokio::time::Instant::now() + d;
            loop {
                match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                    Ok(Some(Packet::Publish(p))) => return Some(p),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return None,
                }
            }
        }

        /// Wait for the SUBACK of the last SUBSCRIBE.
        pub async fn suback(&mut self) -> Vec<SubscribeReasonCode> {
            loop {
                match tokio::time::timeout(Duration::from_secs(5), self.incoming.recv()).await {
                    Ok(Some(Packet::SubAck(a))) => return a.return_codes,
                    Ok(Some(_)) => {}
                    other => panic!("no SUBACK: {other:?}"),
                }
            }
        }
    }
}

pub fn v5_options(port: u16, id: &str) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_client_gets_properties_identifiers_and_a_v311_peers_messages() {
    use rumqttc::v5::mqttbytes::v5::{PublishProperties, SubscribeProperties};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let broker = Broker::start();
    let mut opts = v5_options(broker.port(), "rc5");
    opts.set_session_expiry_interval(Some(60));
    let mut c = v5client::connect(opts).await;
    let props = c.connack.properties.clone().expect("CONNACK properties");
    assert_eq!(props.shared_subscription_available, Some(1));
    assert_eq!(props.subscription_identifiers_available, Some(1));
    assert_eq!(props.topic_alias_max, Some(64));
    let sub_props = SubscribeProperties {
        id: Some(11),
        user_properties: Vec::new(),
    };
    c.client
        .subscribe_with_properties("rc/#", Q5::AtLeastOnce, sub_props)
        .await
        .unwrap();
    assert_eq!(
        c.suback().await,
        vec![rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(
            Q5::AtLeastOnce
        )]
    );
    let mut v3 = Mqtt::connect(broker.port(), "rc-v3").await;
    v3.publish("rc/a", QoS::AtLeastOnce, false, b"from 3.1.1")
        .await;
    let p = c.next_publish().await;
    assert_eq!(&p.payload[..], b"from 3.1.1");
    assert_eq!(
        p.properties.expect("properties").subscription_identifiers,
        vec![11]
    );
    let pp = PublishProperties {
        user_properties: vec![("z".into(), "1".into()), ("a".into(), "2".into())],
        response_topic: Some("rc/reply".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"c-7")),
        payload_format_indicator: Some(1),
        ..PublishProperties::default()
    };
    c.client
        .publish_with_properties("rc/b", Q5::AtLeastOnce, false, "text", pp)
        .await
        .unwrap();
    let p = c.next_publish().await;
    let got = p.properties.expect("properties");
    assert_eq!(
        got.user_properties,
        vec![("z".into(), "1".into()), ("a".into(), "2".into())]
    );
    assert_eq!(got.response_topic.as_deref(), Some("rc/reply"));
    assert_eq!(got.correlation_data.as_deref(), Some(&b"c-7"[..]));
    assert_eq!(got.payload_format_indicator, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscriptions_spread_and_redeliver_across_v5_and_v311_members() {
    let broker = Broker::start();
    let port = broker.port();
    // Member 1: raw v5 (it will vanish without acking); member 2: stock 3.1.1.
    let (mut m1, ..) = connect(port, &connect5("sh-1", true, &[])).await;
    m1.send(&subscribe5(1, &[], &[("$share/workers/jobs/#", 1)]))
        .await;
    assert_eq!(m1.recv().await.kind(), 9);
    let mut m2 = Mqtt::connect(port, "sh-2").await;
    m2.subscribed("$share/workers/jobs/#", QoS::AtLeastOnce)
        .await;
    let mut p = Mqtt::connect(port, "sh-pub").await;
    for i in 0..6u8 {
        p.publish("jobs/x", QoS::AtLeastOnce, false, &[i]).await;
    }
    // Each message goes to exactly one member, and both get some.
    let mut to_m1 = Vec::new();
    while let Some(pk) = m1.recv_within(Duration::from_millis(500)).await {
        to_m1.push(publish_of(&pk).payload[0]);
    }
    let mut to_m2 = Vec::new();
    for _ in 0..6 - to_m1.len() {
        to_m2.push(m2.recv_publish().await.payload[0]);
    }
    assert!(
        !to_m1.is_empty() && !to_m2.is_empty(),
        "{to_m1:?} {to_m2:?}"
    );
    let mut all: Vec<u8> = to_m1.iter().chain(&to_m2).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..6).collect::<Vec<u8>>());
    // Member 1 drops without acknowledging: its messages go to member 2.
    drop(m1);
    let mut again: Vec<u8> = Vec::new();
    for _ in 0..to_m1.len() {
        again.push(m2.recv_publish().await.payload[0]);
    }
    again.sort_unstable();
    to_m1.sort_unstable();
    assert_eq!(again, to_m1, "redelivered to the remaining member");
}
