//! PUBLISH / SUBSCRIBE: QoS 0, 1, 2 in both directions, effective QoS, exactly-once
//! inbound, order, wildcards, `$` topics, overlapping subscriptions, SUBACK failure
//! codes and UNSUBSCRIBE, against the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use rumqttc::QoS;

fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Every byte value, and a few sizes around the encoder's copy threshold.
fn payloads() -> Vec<Vec<u8>> {
    let all: Vec<u8> = (0..=255u8).collect();
    vec![
        Vec::new(),
        b"x".to_vec(),
        all.clone(),
        all.iter().cycle().take(1023).copied().collect(),
        all.iter().cycle().take(1024).copied().collect(),
        all.iter().cycle().take(9000).copied().collect(),
    ]
}

/// Receive publishes until one on `fence`; return the ones before it.
async fn until_fence(m: &mut Mqtt, fence: &str) -> Vec<(String, Vec<u8>, QoS)> {
    let mut got = Vec::new();
    loop {
        let p = m.recv_publish().await;
        if p.topic == fence {
            return got;
        }
        got.push((p.topic.clone(), p.payload.to_vec(), p.qos));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_0_1_2_round_trip_with_exact_payloads() {
    let broker = Broker::start();
    let mut publisher = Mqtt::connect(broker.port(), "pub").await;
    for q in 0..=2u8 {
        let topic = format!("rt/q{q}");
        let mut sub = Mqtt::connect(broker.port(), &format!("sub-{q}")).await;
        sub.subscribed(&topic, qos(q)).await;
        for payload in payloads() {
            publisher.publish(&topic, qos(q), false, &payload).await;
            let p = sub.recv_publish().await;
            assert_publish(&p, &topic, &payload, qos(q), false);
            if q > 0 {
                assert_ne!(p.pkid, 0);
            }
        }
        sub.expect_no_publish(QUIET).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_flows_on_the_wire() {
    let broker = Broker::start();
    let port = broker.port();
    let mut sub = Raw::connected(port, &ConnectOpts::new("wire-sub")).await;
    sub.send(&subscribe_packet(10, &[("wire/#", 2)])).await;
    assert_eq!(sub.recv().await.bytes(), [0x90, 0x03, 0x00, 0x0a, 0x02]);
    let mut publisher = Raw::connected(port, &ConnectOpts::new("wire-pub")).await;

    // QoS 0 in, QoS 0 out.
    publisher
        .send(&publish_packet("wire/0", b"zero", 0, false, false, 0))
        .await;
    let p = sub.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos, p.dup, p.retain),
        ("wire/0", &b"zero"[..], 0, false, false)
    );

    // QoS 1 in: PUBACK with the id; QoS 1 out: PUBLISH with an id, PUBACK'd.
    publisher
        .send(&publish_packet("wire/1", b"one", 1, false, false, 0x1234))
        .await;
    assert_eq!(publisher.recv().await.bytes(), [0x40, 0x02, 0x12, 0x34]);
    let p = sub.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos, p.dup, p.retain),
        ("wire/1", &b"one"[..], 1, false, false)
    );
    assert_ne!(p.pkid, 0);
    sub.send(&ack_packet(0x40, p.pkid)).await;

    // QoS 2 in: PUBREC, PUBREL, PUBCOMP.
    publisher
        .send(&publish_packet("wire/2", b"two", 2, false, false, 0x0102))
        .await;
    assert_eq!(publisher.recv().await.bytes(), [0x50, 0x02, 0x01, 0x02]);
    publisher.send(&ack_packet(0x62, 0x0102)).await;
    assert_eq!(publisher.recv().await.bytes(), [0x70, 0x02, 0x01, 0x02]);
    // QoS 2 out: PUBLISH, PUBREC from us, PUBREL from the broker, PUBCOMP from us.
    let p = sub.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos, p.dup, p.retain),
        ("wire/2", &b"two"[..], 2, false, false)
    );
    sub.send(&ack_packet(0x50, p.pkid)).await;
    let rel = sub.recv().await;
    assert_eq!(rel.first, 0x62, "{rel:?}");
    assert_eq!(rel.body, p.pkid.to_be_bytes());
    sub.send(&ack_packet(0x70, p.pkid)).await;

    sub.expect_silence(QUIET).await;
    publisher.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effective_qos_is_min_of_publish_and_subscription() {
    let broker = Broker::start();
    let mut subs = Vec::new();
    for s in 0..=2u8 {
        let mut sub = Mqtt::connect(broker.port(), &format!("eff-sub-{s}")).await;
        sub.subscribed("eff/#", qos(s)).await;
        subs.push(sub);
    }
    let mut publisher = Mqtt::connect(broker.port(), "eff-pub").await;
    for p in 0..=2u8 {
        publisher
            .publish(&format!("eff/{p}"), qos(p), false, &[b'p', b'0' + p])
            .await;
    }
    for (s, sub) in subs.iter_mut().enumerate() {
        for p in 0..=2u8 {
            let got = sub.recv_publish().await;
            let want = qos(p.min(s as u8));
            assert_publish(&got, &format!("eff/{p}"), &[b'p', b'0' + p], want, false);
        }
        sub.expect_no_publish(QUIET).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_inbound_is_delivered_exactly_once() {
    let broker = Broker::start();
    let port = broker.port();
    let mut sub = Mqtt::connect(port, "once-sub").await;
    sub.subscribed("once/#", QoS::ExactlyOnce).await;
    let mut publisher = Raw::connected(port, &ConnectOpts::new("once-pub")).await;

    // The same QoS 2 PUBLISH twice in one write (the retransmission with DUP), then a
    // third time after the PUBRECs, all before PUBREL.
    let mut twice = publish_packet("once/t", b"exactly once", 2, false, false, 77);
    twice.extend(publish_packet(
        "once/t",
        b"exactly once",
        2,
        false,
        true,
        77,
    ));
    publisher.send(&twice).await;
    assert_eq!(publisher.recv().await.bytes(), [0x50, 0x02, 0x00, 77]);
    assert_eq!(publisher.recv().await.bytes(), [0x50, 0x02, 0x00, 77]);
    publisher
        .send(&publish_packet(
            "once/t",
            b"exactly once",
            2,
            false,
            true,
            77,
        ))
        .await;
    assert_eq!(publisher.recv().await.bytes(), [0x50, 0x02, 0x00, 77]);
    publisher.send(&ack_packet(0x62, 77)).await;
    assert_eq!(publisher.recv().await.bytes(), [0x70, 0x02, 0x00, 77]);
    // After the release the id is free: the same id is a new message.
    publisher
        .send(&publish_packet("once/t", b"next", 2, false, false, 77))
        .await;
    assert_eq!(publisher.recv().await.bytes(), [0x50, 0x02, 0x00, 77]);
    publisher.send(&ack_packet(0x62, 77)).await;
    assert_eq!(publisher.recv().await.bytes(), [0x70, 0x02, 0x00, 77]);
    publisher
        .send(&publish_packet("once/fence", b"", 0, false, false, 0))
        .await;

    let got = until_fence(&mut sub, "once/fence").await;
    assert_eq!(
        got,
        vec![
            (
                "once/t".to_string(),
                b"exactly once".to_vec(),
                QoS::ExactlyOnce
            ),
            ("once/t".to_string(), b"next".to_vec(), QoS::ExactlyOnce),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_order_per_topic_is_publish_order() {
    const N: u32 = 1000;
    let broker = Broker::start();
    let mut sub = Mqtt::connect(broker.port(), "order-sub").await;
    sub.subscribed("order/#", QoS::AtLeastOnce).await;
    let publisher = Mqtt::connect(broker.port(), "order-pub").await;
    // Two topics interleaved, published without waiting for each PUBACK.
    let send = tokio::spawn({
        let client = publisher.client.clone();
        async move {
            for i in 0..N {
                let topic = if i % 2 == 0 {
                    "order/even"
                } else {
                    "order/odd"
                };
                client
                    .publish(topic, QoS::AtLeastOnce, false, i.to_be_bytes().to_vec())
                    .await
                    .unwrap();
            }
        }
    });
    let mut next = [0u32, 1u32];
    for _ in 0..N {
        let p = sub.recv_publish().await;
        assert_eq!(p.qos, QoS::AtLeastOnce);
        let i = u32::from_be_bytes(p.payload[..].try_into().unwrap());
        let lane = usize::from(p.topic == "order/odd");
        assert_eq!(
            p.topic,
            ["order/even", "order/odd"][(i % 2) as usize],
            "message {i}"
        );
        assert_eq!(i, next[lane], "out of order on {}", p.topic);
        next[lane] += 2;
    }
    assert_eq!(next, [N, N + 1]);
    tokio::time::timeout(STEP, send).await.unwrap().unwrap();
    // Keep the publisher's event loop alive until everything was received.
    drop(publisher);
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_order_holds_when_a_subscriber_falls_back_to_the_log() {
    const N: u32 = 1000;
    // Tiny queues and windows: the subscriber keeps falling behind and catching up
    // from the log.
    let broker = Broker::with_config(
        "[router]\nsession_queue_max = 8\ninflight_max = 4\ndeliver_records_max = 3\nscan_records_max = 5\n",
    );
    let mut sub = Mqtt::connect(broker.port(), "slow-sub").await;
    sub.subscribed("slow/#", QoS::AtLeastOnce).await;
    let publisher = Mqtt::connect(broker.port(), "slow-pub").await;
    let send = tokio::spawn({
        let client = publisher.client.clone();
        async move {
            for i in 0..N {
                client
                    .publish("slow/t", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec())
                    .await
                    .unwrap();
                // Not matched: the scan has to skip it.
                client
                    .publish("other/t", QoS::AtLeastOnce, false, b"skip".to_vec())
                    .await
                    .unwrap();
            }
        }
    });
    for i in 0..N {
        let p = sub.recv_publish().await;
        assert_publish(&p, "slow/t", &i.to_be_bytes(), QoS::AtLeastOnce, false);
    }
    tokio::time::timeout(STEP, send).await.unwrap().unwrap();
    drop(publisher);
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_plus_and_hash() {
    let broker = Broker::start();
    let filters = [
        "sport/tennis/+",
        "sport/#",
        "+/+",
        "sport/+/player1/#",
        "#",
        "/+",
    ];
    let mut subs = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let mut s = Mqtt::connect(broker.port(), &format!("wild-{i}")).await;
        s.subscribed(f, QoS::AtLeastOnce).await;
        s.subscribed("fence", QoS::AtLeastOnce).await;
        subs.push(s);
    }
    let topics = [
        "sport",
        "sport/",
        "sport/tennis",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/golf/player1",
        "/finance",
        "other/x",
    ];
    let mut publisher = Mqtt::connect(broker.port(), "wild-pub").await;
    for t in topics {
        publisher
            .publish(t, QoS::AtLeastOnce, false, t.as_bytes())
            .await;
    }
    publisher
        .publish("fence", QoS::AtLeastOnce, false, b"")
        .await;
    let expected: [&[&str]; 6] = [
        &["sport/tennis/player1"],
        &[
            "sport",
            "sport/",
            "sport/tennis",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/golf/player1",
        ],
        &["sport/", "sport/tennis", "/finance", "other/x"],
        &[
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/golf/player1",
        ],
        &topics,
        &["/finance"],
    ];
    for ((f, s), want) in filters.iter().zip(subs.iter_mut()).zip(expected) {
        let got: Vec<String> = until_fence(s, "fence")
            .await
            .into_iter()
            .map(|(t, payload, _)| {
                assert_eq!(payload, t.as_bytes());
                t
            })
            .collect();
        assert_eq!(got, want, "filter {f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dollar_topics_are_not_matched_by_leading_wildcards() {
    let broker = Broker::start();
    let mut all = Mqtt::connect(broker.port(), "dollar-hash").await;
    all.subscribed("#", QoS::AtMostOnce).await;
    let mut plus = Mqtt::connect(broker.port(), "dollar-plus").await;
    plus.subscribed("+/x", QoS::AtMostOnce).await;
    plus.subscribed("fence", QoS::AtMostOnce).await;
    let mut sys = Mqtt::connect(broker.port(), "dollar-sys").await;
    // Not $SYS: that is the broker's own, and clients may not publish to it.
    sys.subscribed("$app/#", QoS::AtMostOnce).await;
    sys.subscribed("fence", QoS::AtMostOnce).await;

    let mut publisher = Mqtt::connect(broker.port(), "dollar-pub").await;
    publisher
        .publish("$app/x", QoS::AtLeastOnce, false, b"dollar")
        .await;
    publisher
        .publish("plain/x", QoS::AtLeastOnce, false, b"plain")
        .await;
    publisher
        .publish("fence", QoS::AtLeastOnce, false, b"")
        .await;

    let names = |v: Vec<(String, Vec<u8>, QoS)>| v.into_iter().map(|m| m.0).collect::<Vec<_>>();
    assert_eq!(names(until_fence(&mut all, "fence").await), ["plain/x"]);
    assert_eq!(names(until_fence(&mut plus, "fence").await), ["plain/x"]);
    let got = until_fence(&mut sys, "fence").await;
    assert_eq!(
        got,
        vec![("$app/x".to_string(), b"dollar".to_vec(), QoS::AtMostOnce)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_deliver_one_copy_at_the_highest_qos() {
    let broker = Broker::start();
    let mut sub = Mqtt::connect(broker.port(), "overlap").await;
    sub.subscribed("ov/#", QoS::AtMostOnce).await;
    sub.subscribed("ov/+", QoS::ExactlyOnce).await;
    sub.subscribed("ov/a", QoS::AtLeastOnce).await;
    sub.subscribed("fence", QoS::AtMostOnce).await;
    let mut publisher = Mqtt::connect(broker.port(), "overlap-pub").await;
    publisher
        .publish("ov/a", QoS::ExactlyOnce, false, b"a")
        .await;
    publisher
        .publish("ov/a/b", QoS::ExactlyOnce, false, b"ab")
        .await;
    publisher
        .publish("fence", QoS::AtMostOnce, false, b"")
        .await;
    assert_eq!(
        until_fence(&mut sub, "fence").await,
        vec![
            ("ov/a".to_string(), b"a".to_vec(), QoS::ExactlyOnce),
            ("ov/a/b".to_string(), b"ab".to_vec(), QoS::AtMostOnce),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suback_0x80_for_an_invalid_filter() {
    let broker = Broker::start();
    let mut raw = Raw::connected(broker.port(), &ConnectOpts::new("bad-filter")).await;
    raw.send(&subscribe_packet(
        0x0305,
        &[("a/#/b", 1), ("ok/+", 2), ("a+", 0), ("#", 1), ("x/y#", 2)],
    ))
    .await;
    assert_eq!(
        raw.recv().await.bytes(),
        [0x90, 0x07, 0x03, 0x05, 0x80, 0x02, 0x80, 0x01, 0x80]
    );
    // The connection stays usable and the valid filters work.
    let mut publisher = Raw::connected(broker.port(), &ConnectOpts::new("bad-filter-pub")).await;
    publisher
        .send(&publish_packet("ok/1", b"fine", 0, false, false, 0))
        .await;
    let p = raw.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos),
        ("ok/1", &b"fine"[..], 0)
    );
    // (rumqttc refuses to send an invalid filter, so this one is raw only.)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() {
    let broker = Broker::start();
    let mut sub = Mqtt::connect(broker.port(), "unsub").await;
    sub.subscribed("u/+", QoS::AtLeastOnce).await;
    sub.subscribed("fence", QoS::AtLeastOnce).await;
    let mut publisher = Mqtt::connect(broker.port(), "unsub-pub").await;
    publisher
        .publish("u/1", QoS::AtLeastOnce, false, b"before")
        .await;
    let p = sub.recv_publish().await;
    assert_publish(&p, "u/1", b"before", QoS::AtLeastOnce, false);

    sub.unsubscribe("u/+").await;
    publisher
        .publish("u/2", QoS::AtLeastOnce, false, b"after")
        .await;
    publisher
        .publish("fence", QoS::AtLeastOnce, false, b"")
        .await;
    assert_eq!(until_fence(&mut sub, "fence").await, vec![]);

    // On the wire: UNSUBACK carries the packet id.
    let mut raw = Raw::connected(broker.port(), &ConnectOpts::new("unsub-raw")).await;
    raw.send(&subscribe_packet(4, &[("w/x", 0)])).await;
    assert_eq!(raw.recv().await.bytes(), [0x90, 0x03, 0x00, 0x04, 0x00]);
    raw.send(&unsubscribe_packet(0x0a0b, &["w/x"])).await;
    assert_eq!(raw.recv().await.bytes(), [0xb0, 0x02, 0x0a, 0x0b]);
    publisher
        .publish("w/x", QoS::AtLeastOnce, false, b"gone")
        .await;
    raw.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_misses_nothing_when_it_reads_again() {
    // Far more than the socket buffers hold: the broker's write to the subscriber
    // blocks while the publisher's messages keep being appended and acknowledged.
    // The subscriber's connection asks for its next batch while a write is under
    // way; it must be neither closed for a full queue nor lose or reorder anything.
    stalled_subscriber_gets_everything(2000, 8 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_read_back_from_the_log_arrive_intact() {
    // 25 MiB behind a subscriber that does not read: more than the log keeps in
    // memory (16 MiB), so the oldest come back from segment files, by reference, and
    // go out with sendfile after their PUBLISH headers.
    stalled_subscriber_gets_everything(400, 64 * 1024).await;
}

/// `n` QoS 1 messages of `size` bytes published and acknowledged while the subscriber
/// does not read; then it reads them all, each intact and in order.
async fn stalled_subscriber_gets_everything(n: u32, size: usize) {
    let payload = |i: u32| -> Vec<u8> {
        let mut p: Vec<u8> = (0..size).map(|j| (j as u32 ^ i) as u8).collect();
        p[..4].copy_from_slice(&i.to_be_bytes());
        p
    };
    let broker = Broker::start();
    let mut sub = Raw::connected(broker.port(), &ConnectOpts::new("stalled-sub")).await;
    sub.send(&subscribe_packet(1, &[("stall/t", 0)])).await;
    assert_eq!(sub.recv().await.kind(), 9, "SUBACK");
    let mut publisher = Raw::connected(broker.port(), &ConnectOpts::new("stall-pub")).await;
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let mut out = Vec::new();
        for &i in chunk {
            let pkid = u16::try_from(i % 60_000 + 1).unwrap();
            out.extend(publish_packet(
                "stall/t",
                &payload(i),
                1,
                false,
                false,
                pkid,
            ));
        }
        publisher.send(&out).await;
        for _ in chunk {
            assert_eq!(publisher.recv().await.kind(), 4, "PUBACK");
        }
    }
    for i in 0..n {
        let p = sub.recv_publish().await;
        assert_eq!(p.payload.len(), size);
        assert_eq!(p.payload[..4], i.to_be_bytes(), "message {i}");
        assert!(p.payload[..] == payload(i)[..], "message {i} intact");
    }
    sub.expect_silence(QUIET).await;
}
