//! MQTT 5.0 against the real binary: raw packets where the exact bytes matter
//! (reason codes, properties), a stock MQTT 3.1.1 client on the other side for
//! interoperation, and paho-mqtt (Python) as a stock MQTT 5 client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use rumq_broker::protocol::framing::{decode_varint, Varint};
use rumqttc::QoS;

const STEP: Duration = Duration::from_secs(5);

#[path = "mqtt5/packets.rs"]
mod packets;
#[path = "mqtt5/stock_clients.rs"]
mod stock_clients;
use packets::*;
use stock_clients::{v5_options, v5client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_announces_the_brokers_limits_and_assigns_ids() {
    let broker = Broker::with_config("[limits]\ntopic_alias_max = 9\ninflight_in_max = 77\n");
    let (_raw, code, present, p) = connect(broker.port(), &connect5("", true, &[])).await;
    assert_eq!((code, present), (0, false));
    let get = |id: u8| p.iter().find(|(i, _)| *i == id).map(|(_, v)| v.clone());
    let assigned = get(ASSIGNED_CLIENT_ID).expect("assigned client identifier");
    assert!(String::from_utf8_lossy(&assigned[2..]).starts_with("rumq-"));
    assert_eq!(get(RECEIVE_MAXIMUM), Some(77u16.to_be_bytes().to_vec()));
    assert_eq!(get(TOPIC_ALIAS_MAXIMUM), Some(9u16.to_be_bytes().to_vec()));
    assert_eq!(
        get(MAXIMUM_PACKET_SIZE),
        Some((1024u32 * 1024).to_be_bytes().to_vec())
    );
    assert_eq!(get(0x25), Some(vec![1]), "retain available");
    assert_eq!(get(0x28), Some(vec![1]), "wildcard subscriptions available");
    assert_eq!(
        get(0x29),
        Some(vec![1]),
        "subscription identifiers available"
    );
    assert_eq!(get(0x24), None, "maximum QoS 2 is said by leaving it out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_keep_alive_is_configurable() {
    let broker = Broker::with_config("[limits]\nkeep_alive_max_secs = 30\n");
    let (_raw, code, _, p) = connect(broker.port(), &connect5("ka", true, &[])).await;
    assert_eq!(code, 0);
    assert!(
        p.contains(&(0x13, 30u16.to_be_bytes().to_vec())),
        "server keep alive 30 (the client asked for 60): {p:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reason_codes_on_acks() {
    let broker = Broker::start();
    let (mut raw, ..) = connect(broker.port(), &connect5("acks", true, &[])).await;
    // PUBACK 0x10: stored, but no subscription matched.
    raw.send(&publish5("nobody/here", 1, 1, &[], b"x")).await;
    assert_eq!(raw.recv().await.bytes(), [0x40, 0x03, 0x00, 0x01, 0x10]);
    // PUBREC 0x10 too.
    raw.send(&publish5("nobody/here", 2, 2, &[], b"x")).await;
    assert_eq!(raw.recv().await.bytes(), [0x50, 0x03, 0x00, 0x02, 0x10]);
    raw.send(&ack_packet(0x62, 2)).await;
    assert_eq!(raw.recv().await.bytes(), [0x70, 0x02, 0x00, 0x02]);
    // SUBACK per filter: granted QoS 1, invalid filter 0x8F.
    raw.send(&subscribe5(3, &[], &[("a/+", 1), ("a/#/b", 0)]))
        .await;
    assert_eq!(
        raw.recv().await.bytes(),
        [0x90, 0x05, 0x00, 0x03, 0x00, 0x01, 0x8f]
    );
    // With a subscriber, PUBACK is plain success.
    raw.send(&publish5("a/x", 1, 4, &[], b"y")).await;
    let mut got = [raw.recv().await, raw.recv().await];
    got.sort_by_key(|p| p.kind());
    assert_eq!(got[0].kind(), 3);
    assert_eq!(got[1].bytes(), [0x40, 0x02, 0x00, 0x04]);
    // UNSUBACK per filter: success, and 0x11 for one that did not exist.
    raw.send(&unsubscribe5(5, &["a/+", "never"])).await;
    assert_eq!(
        raw.recv().await.bytes(),
        [0xb0, 0x05, 0x00, 0x05, 0x00, 0x00, 0x11]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_and_v5_clients_interoperate_and_properties_pass_through() {
    let broker = Broker::start();
    let (mut v5, ..) = connect(broker.port(), &connect5("v5-sub", true, &[])).await;
    // Subscription identifier 7 on the filter.
    let mut id = vec![SUBSCRIPTION_ID];
    varint(&mut id, 7);
    v5.send(&subscribe5(1, &id, &[("mix/#", 1)])).await;
    assert_eq!(v5.recv().await.kind(), 9);
    let mut v3 = Mqtt::connect(broker.port(), "v311-peer").await;
    v3.subscribed("mix/#", QoS::AtLeastOnce).await;

    // 3.1.1 → 5: no properties but the subscription identifier.
    v3.publish("mix/from-v3", QoS::AtLeastOnce, false, b"old")
        .await;
    let p = publish_of(&v5.recv().await);
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("mix/from-v3", &b"old"[..])
    );
    assert_eq!(p.props, vec![(SUBSCRIPTION_ID, vec![7])]);
    v5.send(&ack_packet(0x40, p.pkid.unwrap())).await;
    assert_eq!(v3.recv_publish().await.payload, &b"old"[..]);

    // 5 → 3.1.1 and 5: user properties keep their order, content type passes.
    let mut properties = user_prop("b", "2");
    properties.extend(str_prop(CONTENT_TYPE, "text/plain"));
    properties.extend(user_prop("a", "1"));
    properties.extend(user_prop("b", "3"));
    v5.send(&publish5("mix/from-v5", 1, 9, &properties, b"new"))
        .await;
    let mut mine = None;
    for _ in 0..2 {
        let p = v5.recv().await;
        if p.kind() == 3 {
            mine = Some(publish_of(&p));
        }
    }
    let mine = mine.expect("the v5 client's own message (no local is off)");
    let forwarded: Vec<_> = mine
        .props
        .iter()
        .filter(|(i, _)| *i != SUBSCRIPTION_ID)
        .cloned()
        .collect();
    assert_eq!(forwarded, parse_props(&properties));
    let got = v3.recv_publish().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("mix/from-v5", &b"new"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_and_retain_as_published() {
    let broker = Broker::start();
    let (mut c, ..) = connect(broker.port(), &connect5("self", true, &[])).await;
    // no local (bit 2) on "nl/#", retain as published (bit 3) on "rap/#".
    c.send(&subscribe5(1, &[], &[("nl/#", 0x04), ("rap/#", 0x08)]))
        .await;
    assert_eq!(c.recv().await.kind(), 9);
    c.send(&publish5("nl/x", 0, 0, &[], b"mine")).await;
    c.expect_silence(Duration::from_millis(300)).await;
    // A retained publish keeps its retain flag for the rap subscriber...
    let mut body = Vec::new();
    string(&mut body, "rap/x");
    body.push(0);
    body.extend_from_slice(b"kept");
    c.send(&packet(0x31, &body)).await;
    let p = publish_of(&c.recv().await);
    assert_eq!((p.topic.as_str(), p.retain), ("rap/x", true));
    // ...and another client's own copy on a plain subscription has it cleared.
    let (mut other, ..) = connect(broker.port(), &connect5("other", true, &[])).await;
    other.send(&subscribe5(1, &[], &[("rap/#", 0x20)])).await; // retain handling 2: none
    assert_eq!(other.recv().await.kind(), 9);
    other.expect_silence(Duration::from_millis(300)).await;
    c.send(&packet(0x31, &body)).await;
    let p = publish_of(&other.recv().await);
    assert!(!p.retain, "retain cleared without retain as published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_expiry_drops_expired_and_counts_down() {
    let broker = Broker::start();
    let (mut p, ..) = connect(broker.port(), &connect5("exp-pub", true, &[])).await;
    // Two retained messages: one expires in 1 s, one in 100 s.
    let retained = |topic: &str, secs: u32| {
        let mut body = Vec::new();
        string(&mut body, topic);
        body.extend(props(&u32_prop(MESSAGE_EXPIRY, secs)));
        body.extend_from_slice(b"r");
        packet(0x31, &body)
    };
    let short = retained("exp/short", 1);
    let long = retained("exp/long", 100);
    p.send(&short).await;
    p.send(&long).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (mut s, ..) = connect(broker.port(), &connect5("exp-sub", true, &[])).await;
    s.send(&subscribe5(1, &[], &[("exp/#", 0)])).await;
    assert_eq!(s.recv().await.kind(), 9);
    let got = publish_of(&s.recv().await);
    assert_eq!(got.topic, "exp/long", "the expired one is not delivered");
    let left = got
        .props
        .iter()
        .find(|(i, _)| *i == MESSAGE_EXPIRY)
        .map(|(_, v)| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
        .expect("remaining expiry");
    assert!((97..=99).contains(&left), "remaining interval {left}");
    s.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_keeps_then_ends_a_session() {
    let broker = Broker::start();
    let expiry = u32_prop(SESSION_EXPIRY, 2);
    let (mut c, _, present, _) = connect(broker.port(), &connect5("sx", true, &expiry)).await;
    assert!(!present);
    c.send(&subscribe5(1, &[], &[("sx/t", 1)])).await;
    assert_eq!(c.recv().await.kind(), 9);
    c.send(&packet(0xe0, &[])).await; // DISCONNECT, normal
    drop(c);
    let mut p = Mqtt::connect(broker.port(), "sx-pub").await;
    p.publish("sx/t", QoS::AtLeastOnce, false, b"while away")
        .await;
    // Back within the interval: the session and the message are there.
    let (mut c, _, present, _) = connect(broker.port(), &connect5("sx", false, &expiry)).await;
    assert!(present, "session present");
    let got = publish_of(&c.recv().await);
    assert_eq!(got.payload, b"while away");
    c.send(&ack_packet(0x40, got.pkid.unwrap())).await;
    c.send(&packet(0xe0, &[])).await;
    drop(c);
    // After the interval it is gone.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let (_c, _, present, _) = connect(broker.port(), &connect5("sx", false, &expiry)).await;
    assert!(!present, "the session expired");
}

/// A subscriber to `<prefix>/#` that accepts 1 topic alias from the broker, and a
/// publisher: `<prefix>-sub` and `<prefix>-pub`.
async fn alias_pair(port: u16, prefix: &str) -> (Raw, Raw) {
    let sub_id = format!("{prefix}-sub");
    let (mut s, ..) = connect(
        port,
        &connect5(&sub_id, true, &u16_prop(TOPIC_ALIAS_MAXIMUM, 1)),
    )
    .await;
    s.send(&subscribe5(1, &[], &[(&format!("{prefix}/#"), 0)]))
        .await;
    assert_eq!(s.recv().await.kind(), 9);
    let (p, ..) = connect(port, &connect5(&format!("{prefix}-pub"), true, &[])).await;
    (s, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_in_both_directions() {
    let broker = Broker::start();
    let (mut s, mut p) = alias_pair(broker.port(), "al").await;
    // Set alias 3 = "al/one", then publish by alias alone.
    p.send(&publish5("al/one", 0, 0, &u16_prop(TOPIC_ALIAS, 3), b"1"))
        .await;
    p.send(&publish5("", 0, 0, &u16_prop(TOPIC_ALIAS, 3), b"2"))
        .await;
    p.send(&publish5("al/two", 0, 0, &[], b"3")).await;
    let first = publish_of(&s.recv().await);
    assert_eq!(first.topic, "al/one");
    assert!(first.props.contains(&(TOPIC_ALIAS, vec![0, 1])));
    let second = publish_of(&s.recv().await);
    assert_eq!(
        (second.topic.as_str(), &second.payload[..]),
        ("", &b"2"[..])
    );
    assert!(second.props.contains(&(TOPIC_ALIAS, vec![0, 1])));
    let third = publish_of(&s.recv().await);
    assert_eq!(third.topic, "al/two", "no alias left: the topic in full");
    // An alias never set is invalid: DISCONNECT 0x94.
    p.send(&publish5("", 0, 0, &u16_prop(TOPIC_ALIAS, 4), b"?"))
        .await;
    assert_eq!(disconnect_reason(&p.recv().await), 0x94);
    p.expect_closed(STEP).await;
}

/// Topic aliases, both ways, outlive parking: the broker keeps the aliases it set
/// for the subscriber and those the publisher set for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_survive_parking() {
    let broker = Broker::parking();
    let (mut s, mut p) = alias_pair(broker.port(), "pa").await;
    p.send(&publish5("pa/one", 0, 0, &u16_prop(TOPIC_ALIAS, 3), b"1"))
        .await;
    let first = publish_of(&s.recv().await);
    assert_eq!(first.topic, "pa/one");
    assert!(first.props.contains(&(TOPIC_ALIAS, vec![0, 1])));
    broker.wait_for_log(&parked_line("pa-sub"), STEP);
    broker.wait_for_log(&parked_line("pa-pub"), STEP);
    // By alias alone, both ways, after both parked.
    p.send(&publish5("", 0, 0, &u16_prop(TOPIC_ALIAS, 3), b"2"))
        .await;
    let second = publish_of(&s.recv().await);
    assert_eq!(
        (second.topic.as_str(), &second.payload[..]),
        ("", &b"2"[..])
    );
    assert!(second.props.contains(&(TOPIC_ALIAS, vec![0, 1])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_disconnects_carry_reason_codes() {
    let broker = Broker::with_config("[limits]\nmax_packet_size = 256\n");
    let port = broker.port();
    // Packet too large: 0x95.
    let (mut c, ..) = connect(port, &connect5("big", true, &[])).await;
    c.send(&publish5("t", 0, 0, &[], &[0u8; 400])).await;
    assert_eq!(disconnect_reason(&c.recv().await), 0x95);
    c.expect_closed(STEP).await;
    // Malformed (a property not allowed in PUBLISH): 0x81.
    let (mut c, ..) = connect(port, &connect5("bad", true, &[])).await;
    c.send(&publish5("t", 0, 0, &u32_prop(SESSION_EXPIRY, 1), b""))
        .await;
    assert_eq!(disconnect_reason(&c.recv().await), 0x81);
    // Protocol error (a second CONNECT): 0x82.
    let (mut c, ..) = connect(port, &connect5("twice", true, &[])).await;
    c.send(&connect5("twice", true, &[])).await;
    assert_eq!(disconnect_reason(&c.recv().await), 0x82);
    // Receive maximum exceeded: 0x93 (the broker announced 1 below).
    drop(broker);
    let broker = Broker::with_config("[limits]\ninflight_in_max = 1\n");
    let (mut c, ..) = connect(broker.port(), &connect5("greedy", true, &[])).await;
    c.send(&publish5("q", 2, 1, &[], b"1")).await;
    c.send(&publish5("q", 2, 2, &[], b"2")).await;
    let mut codes = Vec::new();
    while let Some(p) = c.recv_within(STEP).await {
        codes.push(p.bytes()[0]);
        if p.kind() == 14 {
            assert_eq!(disconnect_reason(&p), 0x93);
            break;
        }
    }
    assert_eq!(codes.last(), Some(&0xe0), "{codes:x?}");
    // Session taken over: 0x8E.
    let (mut old, ..) = connect(broker.port(), &connect5("same", true, &[])).await;
    let (_new, ..) = connect(broker.port(), &connect5("same", true, &[])).await;
    assert_eq!(disconnect_reason(&old.recv().await), 0x8e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_writing_reads_the_disconnect_that_ends_it() {
    // One QoS 2 publish more than the receive maximum, one write each, then the
    // client answers each PUBREC with a PUBREL as it reads them, as paho does. The
    // broker ends the connection with DISCONNECT 0x93 after the PUBRECs; if it closed
    // its socket at once, the first PUBREL would be answered with a reset and the next
    // write would fail before the client reached the DISCONNECT. It must half-close
    // and read on, so every write goes through and the DISCONNECT is read.
    let broker = Broker::with_config("[limits]\ninflight_in_max = 4\n");
    let (mut c, ..) = connect(broker.port(), &connect5("greedy", true, &[])).await;
    for pkid in 1..=5u16 {
        c.send(&publish5("q", 2, pkid, &[], b"m")).await;
        // Apart, so that each is read (and PUBREC'd) on its own, as over a network.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut seen = Vec::new();
    for _ in 0..10 {
        let p = c.recv().await;
        seen.push(p.kind());
        match p.kind() {
            5 => {
                // A client busy elsewhere answers a little later: long enough for a
                // reset from a closed socket to have come back.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let pubrel = packet(0x62, &p.bytes()[2..4]);
                if let Err(e) = c.try_send(&pubrel).await {
                    panic!("PUBREL after {seen:?} failed ({e}): the connection was reset");
                }
            }
            14 => {
                assert_eq!(disconnect_reason(&p), 0x93, "{seen:?}");
                c.expect_closed(STEP).await;
                return;
            }
            other => panic!("unexpected packet {other} after {seen:?}"),
        }
    }
    panic!("no DISCONNECT after {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_method_without_enhanced_auth_is_refused_with_0x8c() {
    let broker = Broker::start();
    let (mut c, code, ..) = connect(
        broker.port(),
        &connect5("auth", true, &str_prop(AUTH_METHOD, "SCRAM-SHA-1")),
    )
    .await;
    assert_eq!(code, 0x8c);
    c.expect_closed(STEP).await;
    // AUTH after a plain CONNECT is a protocol error (0x82); the packet is parsed.
    let (mut c, ..) = connect(broker.port(), &connect5("auth2", true, &[])).await;
    c.send(&packet(0xf0, &[0x18, 0x00])).await; // AUTH, continue authentication
    assert_eq!(disconnect_reason(&c.recv().await), 0x82);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_keeps_within_the_clients_receive_maximum_and_packet_size() {
    let broker = Broker::start();
    let mut properties = u16_prop(RECEIVE_MAXIMUM, 2);
    properties.extend(u32_prop(MAXIMUM_PACKET_SIZE, 200));
    let (mut s, ..) = connect(broker.port(), &connect5("rm", true, &properties)).await;
    s.send(&subscribe5(1, &[], &[("rm/#", 1)])).await;
    assert_eq!(s.recv().await.kind(), 9);
    let mut p = Mqtt::connect(broker.port(), "rm-pub").await;
    p.publish("rm/big", QoS::AtLeastOnce, false, &[1u8; 500])
        .await;
    for i in 0..5u8 {
        p.publish("rm/t", QoS::AtLeastOnce, false, &[i]).await;
    }
    // Two in flight, never three; the big one is not sent at all.
    let a = publish_of(&s.recv().await);
    let b = publish_of(&s.recv().await);
    assert_eq!((a.payload.clone(), b.payload.clone()), (vec![0], vec![1]));
    s.expect_silence(Duration::from_millis(400)).await;
    s.send(&ack_packet(0x40, a.pkid.unwrap())).await;
    assert_eq!(publish_of(&s.recv().await).payload, vec![2]);
    s.expect_silence(Duration::from_millis(300)).await;
}

/// A reason string the client's Maximum Packet Size has no room for is left out:
/// a PUBREL for an unknown id gets the bare 0x92 PUBCOMP (MQTT-3.7.2-2); a client
/// with room gets the reason string too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_keep_within_the_clients_maximum_packet_size() {
    let broker = Broker::start();
    let small = u32_prop(MAXIMUM_PACKET_SIZE, 16);
    let (mut c, ..) = connect(broker.port(), &connect5("small", true, &small)).await;
    c.send(&ack_packet(0x62, 9)).await;
    assert_eq!(c.recv().await.bytes(), [0x70, 3, 0, 9, 0x92]);

    let roomy = u32_prop(MAXIMUM_PACKET_SIZE, 1024);
    let (mut c, ..) = connect(broker.port(), &connect5("roomy", true, &roomy)).await;
    c.send(&ack_packet(0x62, 9)).await;
    let ack = c.recv().await;
    assert_eq!(&ack.bytes()[2..5], [0, 9, 0x92]);
    let b = ack.body.clone();
    let (props, _) = section(&b[3..]);
    assert!(
        parse_props(props).iter().any(|(id, _)| *id == 0x1f),
        "{b:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_delay_and_will_properties() {
    use rumqttc::v5::mqttbytes::v5::{LastWill, LastWillProperties};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let broker = Broker::start();
    let port = broker.port();
    let mut watcher = v5client::connect(v5_options(port, "watcher")).await;
    watcher
        .client
        .subscribe("wills/#", Q5::AtLeastOnce)
        .await
        .unwrap();
    watcher.suback().await;
    // A will delayed by 2 s, with properties, from a session that lives 60 s.
    let will = LastWill {
        topic: "wills/dev".into(),
        message: "gone".into(),
        qos: Q5::AtLeastOnce,
        retain: false,
        properties: Some(LastWillProperties {
            delay_interval: Some(2),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: Some("text/plain".into()),
            response_topic: None,
            correlation_data: None,
            user_properties: vec![("why".into(), "crash".into())],
        }),
    };
    let mut opts = v5_options(port, "dev");
    opts.set_last_will(will);
    opts.set_session_expiry_interval(Some(60));
    let dev = v5client::connect(opts).await;
    dev.kill();
    assert!(
        watcher
            .next_publish_within(Duration::from_millis(1200))
            .await
            .is_none(),
        "not before the delay"
    );
    let p = watcher.next_publish().await;
    assert_eq!(&p.payload[..], b"gone");
    let props = p.properties.expect("will properties");
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.user_properties, vec![("why".into(), "crash".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_with_will_publishes_it_and_a_normal_one_does_not() {
    let broker = Broker::start();
    let port = broker.port();
    let mut watcher = Mqtt::connect(port, "w-watch").await;
    watcher.subscribed("lw/#", QoS::AtLeastOnce).await;
    // 0x04 asks for the will; any error code implies it; only 0x00 discards it.
    for (reason, expect) in [(0x04u8, true), (0x80, true), (0x00, false)] {
        let mut body = Vec::new();
        string(&mut body, "MQTT");
        body.push(5);
        body.push(0x02 | 0x04 | 0x08); // clean start, will, will QoS 1
        body.extend_from_slice(&60u16.to_be_bytes());
        body.push(0); // no properties
        string(&mut body, "lw-dev");
        body.push(0); // no will properties
        string(&mut body, "lw/dev");
        string(&mut body, "bye");
        let (mut c, code, ..) = connect(port, &packet(0x10, &body)).await;
        assert_eq!(code, 0);
        c.send(&packet(0xe0, &[reason, 0])).await;
        c.expect_closed(STEP).await;
        if expect {
            assert_eq!(watcher.recv_publish().await.payload, &b"bye"[..]);
        } else {
            watcher.expect_no_publish(Duration::from_millis(500)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_timeout_and_server_shutdown_are_said_with_0x8d_and_0x8b() {
    keep_alive_and_shutdown(Broker::start(), false).await;
}

/// The same for connections that parked first (`listener.park_after_ms`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_v5_clients_hear_0x8d_and_0x8b_too() {
    keep_alive_and_shutdown(Broker::parking(), true).await;
}

async fn keep_alive_and_shutdown(mut broker: Broker, parked: bool) {
    let port = broker.port();
    // Keep alive 1 s: silent for 1.5 s, the broker says 0x8D.
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.push(5);
    body.push(0x02);
    body.extend_from_slice(&1u16.to_be_bytes());
    body.push(0);
    string(&mut body, "sleepy");
    let (mut c, code, ..) = connect(port, &packet(0x10, &body)).await;
    assert_eq!(code, 0);
    if parked {
        broker.wait_for_log(&parked_line("sleepy"), STEP);
    }
    let p = c
        .recv_within(Duration::from_secs(4))
        .await
        .expect("DISCONNECT");
    assert_eq!(disconnect_reason(&p), 0x8d);
    // Shutdown: every v5 client hears 0x8B.
    let (mut c, ..) = connect(port, &connect5("stays", true, &[])).await;
    if parked {
        broker.wait_for_log(&parked_line("stays"), STEP);
    }
    broker.terminate(STEP);
    let p = c.recv_within(STEP).await.expect("DISCONNECT");
    assert_eq!(disconnect_reason(&p), 0x8b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reason_strings_only_for_clients_that_want_problem_information() {
    let broker = Broker::with_config("[limits]\nmax_packet_size = 128\n");
    // Request problem information 0: the DISCONNECT carries the code alone.
    let quiet = [0x17u8, 0];
    let (mut c, ..) = connect(broker.port(), &connect5("quiet", true, &quiet)).await;
    c.send(&publish5("t", 0, 0, &[], &[0u8; 200])).await;
    assert_eq!(c.recv().await.bytes(), [0xe0, 0x02, 0x95, 0x00]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_can_end_a_session_and_retain_handling_1_sends_once() {
    let broker = Broker::start();
    let port = broker.port();
    let never = u32_prop(SESSION_EXPIRY, u32::MAX);
    let (mut c, ..) = connect(port, &connect5("dx", true, &never)).await;
    // DISCONNECT with session expiry 0: the session ends now.
    let mut body = vec![0x00];
    body.extend(props(&u32_prop(SESSION_EXPIRY, 0)));
    c.send(&packet(0xe0, &body)).await;
    c.expect_closed(STEP).await;
    let (_c, _, present, _) = connect(port, &connect5("dx", false, &never)).await;
    assert!(!present, "ended by DISCONNECT");

    let (mut p, ..) = connect(port, &connect5("rh-pub", true, &[])).await;
    let mut body = Vec::new();
    string(&mut body, "rh/t");
    body.push(0);
    body.extend_from_slice(b"kept");
    p.send(&packet(0x31, &body)).await;
    let (mut s, ..) = connect(port, &connect5("rh-sub", true, &[])).await;
    // Retain handling 1: retained messages only for a subscription that is new.
    s.send(&subscribe5(1, &[], &[("rh/#", 0x10)])).await;
    assert_eq!(s.recv().await.kind(), 9);
    let got = publish_of(&s.recv().await);
    assert_eq!((got.topic.as_str(), got.retain), ("rh/t", true));
    s.send(&subscribe5(2, &[], &[("rh/#", 0x10)])).await;
    assert_eq!(s.recv().await.kind(), 9);
    s.expect_silence(Duration::from_millis(400)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_its_reason_code_and_harms_nobody_else() {
    let broker = Broker::with_config("[limits]\nmax_packet_size = 4096\n");
    let port = broker.port();
    let mut healthy = Healthy::new(port).await;
    let mut bad_utf8 = Vec::new();
    bad_utf8.extend_from_slice(&2u16.to_be_bytes());
    bad_utf8.extend_from_slice(&[0xc3, 0x28]);
    bad_utf8.push(0);
    let cases: Vec<(&str, Vec<u8>, u8)> = vec![
        (
            "malformed remaining length",
            vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
            0x81,
        ),
        (
            "over the maximum packet size",
            publish5("t", 0, 0, &[], &[0; 5000]),
            0x95,
        ),
        ("invalid UTF-8 topic", packet(0x30, &bad_utf8), 0x81),
        (
            "wildcard in a PUBLISH topic",
            publish5("a/#", 0, 0, &[], b""),
            0x90,
        ),
        ("packet id 0 at QoS 1", publish5("t", 1, 0, &[], b""), 0x81),
        ("a second CONNECT", connect5("again", true, &[]), 0x82),
        ("SUBSCRIBE with no filters", subscribe5(1, &[], &[]), 0x82),
        (
            "subscription identifier from a client",
            publish5("t", 0, 0, &[SUBSCRIPTION_ID, 1], b""),
            0x82,
        ),
    ];
    for (what, bytes, code) in cases {
        let (mut c, ..) = connect(port, &connect5("hostile", true, &[])).await;
        c.send(&bytes).await;
        let p = c
            .recv_within(STEP)
            .await
            .unwrap_or_else(|| panic!("{what}: no DISCONNECT"));
        assert_eq!(disconnect_reason(&p), code, "{what}");
        c.expect_closed(STEP).await;
        healthy.check().await;
    }
}
