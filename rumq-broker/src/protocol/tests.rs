//! Decoding and encoding at the protocol edge, on raw bytes.

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use router::{Delivery, Message, PacketId, QoS, Reply, SubscribeCode, Subscription};

use super::*;

fn connect_bytes(name: &[u8], level: u8, flags: u8, client_id: &str, rest: &[u8]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_u16(name.len() as u16);
    body.put_slice(name);
    body.put_u8(level);
    body.put_u8(flags);
    body.put_u16(30);
    body.put_u16(client_id.len() as u16);
    body.put_slice(client_id.as_bytes());
    body.put_slice(rest);
    let mut b = BytesMut::new();
    b.put_u8(0x10);
    b.put_u8(body.len() as u8);
    b.put_slice(&body);
    b
}

/// Decode as a 3.1.1 connection does (`connected`: after its CONNECT).
fn decode_one(mut b: BytesMut, connected: bool) -> Result<Option<Inbound>, ProtocolError> {
    decode(&mut b, connected.then_some(Version::V311), 1 << 20)
}

#[test]
fn mqtt_311_and_31_connects_are_accepted() {
    match decode_one(connect_bytes(b"MQTT", 4, 0x02, "dev1", &[]), false) {
        Ok(Some(Inbound::Connect(c))) => {
            assert_eq!(c.version, connect::Version::V311);
            assert!(c.clean_session);
            assert_eq!(c.client_id, "dev1");
            assert_eq!(c.keep_alive, 30);
        }
        other => panic!("{other:?}"),
    }
    match decode_one(connect_bytes(b"MQIsdp", 3, 0x00, "old", &[]), false) {
        Ok(Some(Inbound::Connect(c))) => assert_eq!(c.version, connect::Version::V31),
        other => panic!("{other:?}"),
    }
}

#[test]
fn connect_with_will_and_login() {
    let mut rest = BytesMut::new();
    for field in [&b"will/t"[..], b"bye", b"alice", b"pw"] {
        rest.put_u16(field.len() as u16);
        rest.put_slice(field);
    }
    // will, will QoS 1, will retain, password, user name
    let flags = 0x04 | 0x08 | 0x20 | 0x40 | 0x80;
    match decode_one(connect_bytes(b"MQTT", 4, flags, "c", &rest), false) {
        Ok(Some(Inbound::Connect(c))) => {
            let w = c.will.unwrap();
            assert_eq!(
                (w.topic.as_str(), &w.payload[..], w.qos, w.retain),
                ("will/t", &b"bye"[..], QoS::AtLeastOnce, true)
            );
            assert_eq!(c.username.as_deref(), Some("alice"));
            assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_connects_are_refused() {
    assert_eq!(
        decode_one(connect_bytes(b"MQTT", 6, 0x02, "c", &[]), false),
        Err(ProtocolError::UnsupportedVersion(6))
    );
    assert!(matches!(
        decode_one(connect_bytes(b"MQTX", 4, 0x02, "c", &[]), false),
        Err(ProtocolError::Malformed(_))
    ));
    // reserved flag
    assert!(decode_one(connect_bytes(b"MQTT", 4, 0x03, "c", &[]), false).is_err());
    // will QoS without will
    assert!(decode_one(connect_bytes(b"MQTT", 4, 0x08, "c", &[]), false).is_err());
    // password without user name
    let mut pw = BytesMut::new();
    pw.put_u16(1);
    pw.put_u8(b'x');
    assert!(decode_one(connect_bytes(b"MQTT", 4, 0x40, "c", &pw), false).is_err());
}

#[test]
fn ordering_rules() {
    let ping = BytesMut::from(&[0xc0u8, 0x00][..]);
    assert_eq!(
        decode_one(ping.clone(), false),
        Err(ProtocolError::Violation("first packet is not CONNECT"))
    );
    assert_eq!(decode_one(ping, true), Ok(Some(Inbound::PingReq)));
    assert_eq!(
        decode_one(connect_bytes(b"MQTT", 4, 0x02, "c", &[]), true),
        Err(ProtocolError::Violation("second CONNECT"))
    );
}

#[test]
fn framing() {
    // Incomplete: nothing consumed.
    let mut b = BytesMut::from(&[0x30u8, 0x05, 0x00][..]);
    assert_eq!(decode(&mut b, Some(Version::V311), 1024), Ok(None));
    assert_eq!(b.len(), 3);
    // Five-byte remaining length.
    let mut b = BytesMut::from(&[0x30u8, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
    assert!(matches!(
        decode(&mut b, Some(Version::V311), 1 << 30),
        Err(ProtocolError::Malformed(_))
    ));
    // Too large is known from the header alone.
    let mut b = BytesMut::from(&[0x30u8, 0xe8, 0x07][..]);
    assert_eq!(
        decode(&mut b, Some(Version::V311), 100),
        Err(ProtocolError::TooLarge {
            size: 1003,
            max: 100
        })
    );
}

fn publish_bytes(first: u8, topic: &str, pkid: Option<u16>, payload: &[u8]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_u16(topic.len() as u16);
    body.put_slice(topic.as_bytes());
    if let Some(p) = pkid {
        body.put_u16(p);
    }
    body.put_slice(payload);
    let mut b = BytesMut::new();
    framing::put_fixed_header(&mut b, first, body.len());
    b.put_slice(&body);
    b
}

#[test]
fn publish_rules() {
    assert_eq!(
        decode_one(publish_bytes(0x33, "a/b", Some(7), b"hi"), true),
        Ok(Some(Inbound::Publish {
            topic: "a/b".into(),
            qos: QoS::AtLeastOnce,
            retain: true,
            dup: false,
            pkid: Some(PacketId(7)),
            payload: bytes::Bytes::from_static(b"hi"),
            properties: PublishProperties::default(),
        }))
    );
    assert_eq!(
        decode_one(publish_bytes(0x30, "a/+", None, b""), true),
        Err(ProtocolError::TopicNameInvalid)
    );
    assert!(
        decode_one(publish_bytes(0x32, "a", Some(0), b""), true).is_err(),
        "packet id 0"
    );
    assert!(
        decode_one(publish_bytes(0x36, "a", Some(1), b""), true).is_err(),
        "QoS 3"
    );
    assert!(
        decode_one(publish_bytes(0x38, "a", None, b""), true).is_err(),
        "DUP on QoS 0"
    );
    let mut bad_utf8 = publish_bytes(0x30, "ab", None, b"");
    bad_utf8[4] = 0xff;
    assert!(decode_one(bad_utf8, true).is_err());
}

#[test]
fn subscribe_rules() {
    // SUBSCRIBE with only a packet id.
    let b = BytesMut::from(&[0x82u8, 0x02, 0x00, 0x01][..]);
    assert_eq!(
        decode_one(b, true),
        Err(ProtocolError::Violation("SUBSCRIBE with no filters"))
    );
    // Wrong fixed-header flags.
    let b = BytesMut::from(&[0x80u8, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00][..]);
    assert!(decode_one(b, true).is_err());
    let b = BytesMut::from(&[0x82u8, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x01][..]);
    assert_eq!(
        decode_one(b, true),
        Ok(Some(Inbound::Subscribe {
            pkid: PacketId(1),
            filters: vec![Subscription::new("a", QoS::AtLeastOnce)],
            id: None
        }))
    );
}

#[test]
fn server_only_packets_from_a_client_are_violations() {
    for first in [0x20u8, 0x90, 0xb0, 0xd0, 0xf0, 0x00] {
        let b = BytesMut::from(&[first, 0x00][..]);
        assert!(decode_one(b, true).is_err(), "{first:#x}");
    }
}

#[test]
fn encodes_what_a_stock_client_decodes() {
    let mut e = Encoder::new();
    let big = vec![7u8; 5000];
    e.reply(&Reply::Deliver(vec![
        Delivery {
            record: Message::encode(QoS::ExactlyOnce, false, 0, "a/b", &[], b"small").into(),
            qos: QoS::AtLeastOnce,
            pkid: Some(PacketId(3)),
            dup: true,
            retain: true,
            subscription_ids: Vec::new(),
            lost_before: 0,
        },
        Delivery {
            record: Message::encode(QoS::AtMostOnce, false, 0, "big", &[], &big).into(),
            qos: QoS::AtMostOnce,
            pkid: None,
            dup: false,
            retain: false,
            subscription_ids: Vec::new(),
            lost_before: 0,
        },
    ]));
    e.reply(&Reply::SubAck {
        pkid: PacketId(9),
        codes: vec![
            SubscribeCode::Granted(QoS::ExactlyOnce),
            SubscribeCode::InvalidFilter,
        ],
    });
    e.reply(&Reply::PubRel(PacketId(4)));
    let mut chunks = Vec::new();
    e.take(&mut chunks);
    assert!(chunks.len() >= 3, "the large payload is its own buffer");
    let mut wire = BytesMut::from(&wire_of(&chunks)[..]);
    use mqttbytes::v4::{read, Packet};
    match read(&mut wire, 1 << 20).unwrap() {
        Packet::Publish(p) => {
            assert_eq!(
                (p.topic.as_str(), &p.payload[..], p.pkid, p.dup, p.retain),
                ("a/b", &b"small"[..], 3, true, true)
            );
            assert_eq!(p.qos, mqttbytes::QoS::AtLeastOnce);
        }
        other => panic!("{other:?}"),
    }
    match read(&mut wire, 1 << 20).unwrap() {
        Packet::Publish(p) => assert_eq!((p.topic.as_str(), p.payload.len()), ("big", 5000)),
        other => panic!("{other:?}"),
    }
    match read(&mut wire, 1 << 20).unwrap() {
        Packet::SubAck(s) => {
            assert_eq!(s.pkid, 9);
            assert_eq!(s.return_codes.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    match read(&mut wire, 1 << 20).unwrap() {
        Packet::PubRel(r) => assert_eq!(r.pkid, 4),
        other => panic!("{other:?}"),
    }
    assert!(wire.is_empty());
}

proptest! {
    /// Random bytes never panic the decoder, and it never consumes a partial packet:
    /// "need more" leaves the buffer as it was, and a packet takes exactly its own
    /// bytes off the front.
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), state in 0u8..3) {
        let connected = [None, Some(Version::V311), Some(Version::V5)][usize::from(state)];
        let mut b = BytesMut::from(&bytes[..]);
        for _ in 0..10 {
            let before = b.clone();
            match decode(&mut b, connected, 4096) {
                Ok(Some(_)) => {
                    let len = framing::frame_len(&before, 4096).unwrap().unwrap();
                    prop_assert_eq!(&b[..], &before[len..]);
                }
                Ok(None) => {
                    prop_assert_eq!(&b[..], &before[..]);
                    break;
                }
                Err(_) => break,
            }
        }
    }

    /// Any valid PUBLISH, split at any point, decodes once all bytes arrived.
    #[test]
    fn publish_survives_any_split(topic in "[a-z]{1,10}(/[a-z]{1,10}){0,3}",
                                  payload in proptest::collection::vec(any::<u8>(), 0..100),
                                  split in 0usize..200) {
        let full = publish_bytes(0x32, &topic, Some(1), &payload);
        let split = split.min(full.len());
        let mut b = BytesMut::from(&full[..split]);
        let first = decode(&mut b, Some(Version::V311), 4096).unwrap();
        if split < full.len() {
            prop_assert_eq!(first, None);
            b.put_slice(&full[split..]);
        } else {
            prop_assert!(first.is_some());
            return Ok(());
        }
        match decode(&mut b, Some(Version::V311), 4096).unwrap() {
            Some(Inbound::Publish { topic: t, payload: p, .. }) => {
                prop_assert_eq!(t.as_str(), topic.as_str());
                prop_assert_eq!(&p[..], &payload[..]);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

/// The packets of every `broker_decode` fuzz seed, each with the version its
/// connection speaks when it arrives (`None`: before CONNECT). A seed's first byte
/// is the fuzz target's mode: the version the connection starts in, until a CONNECT
/// in the seed starts it afresh.
fn seed_packets() -> Vec<(String, Option<Version>, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/broker_decode");
    let mut seeds: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    seeds.sort();
    let mut packets = Vec::new();
    for path in seeds {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let seed = std::fs::read(&path).unwrap();
        let (&mode, mut rest) = seed.split_first().unwrap();
        let mut connected = [
            None,
            Some(Version::V311),
            Some(Version::V5),
            Some(Version::V5),
        ][usize::from(mode & 3)];
        while !rest.is_empty() {
            let len = framing::frame_len(rest, 1 << 20).unwrap().unwrap();
            let (packet, next) = rest.split_at(len);
            if framing::packet_type(packet[0]) == framing::packet::CONNECT {
                // A CONNECT starts a connection, whatever the seed's mode.
                match decode(&mut BytesMut::from(packet), None, 1 << 20) {
                    Ok(Some(Inbound::Connect(c))) => connected = Some(c.version),
                    other => panic!("{name}: {other:?}"),
                }
                packets.push((name.clone(), None, packet.to_vec()));
            } else {
                packets.push((name.clone(), connected, packet.to_vec()));
            }
            rest = next;
        }
    }
    packets
}

/// For every proper prefix of every seed packet, decoding says "need more" and
/// leaves the buffer as it was; the whole packet then decodes, taking all its bytes.
#[test]
fn a_partial_packet_is_never_consumed() {
    let packets = seed_packets();
    assert!(packets.len() >= 20, "{} seed packets", packets.len());
    for (seed, connected, packet) in packets {
        for end in 0..packet.len() {
            let mut b = BytesMut::from(&packet[..end]);
            assert_eq!(
                decode(&mut b, connected, 1 << 20),
                Ok(None),
                "{seed}: {end} of {} bytes",
                packet.len()
            );
            assert_eq!(&b[..], &packet[..end], "{seed}: {end} bytes left in place");
        }
        let mut b = BytesMut::from(&packet[..]);
        assert!(
            matches!(decode(&mut b, connected, 1 << 20), Ok(Some(_))),
            "{seed}: the whole packet {packet:x?}"
        );
        assert!(b.is_empty(), "{seed}: the whole packet is taken");
    }
}

/// The MQTT 5 CONNECT seed of the `broker_decode` fuzz target is a valid packet, and
/// decodes to what it says.
#[test]
fn v5_connect_seed_decodes() {
    let connect = include_bytes!("../../../fuzz/seeds/broker_decode/v5-connect");
    let mut b = BytesMut::from(&connect[1..]);
    assert!(is_v5_connect(&b));
    match decode(&mut b, None, 1 << 20) {
        Ok(Some(Inbound::Connect(c))) => {
            assert_eq!(c.version, Version::V5);
            assert_eq!(c.client_id, "dev-5");
            assert_eq!(c.session_expiry, 3600);
            assert_eq!(c.receive_maximum, 10);
            assert_eq!(c.max_packet_size, 4096);
            assert_eq!(c.topic_alias_max, 5);
            let w = c.will.unwrap();
            assert_eq!((w.topic.as_str(), w.delay_secs), ("will/t", 5));
            assert!(!w.properties.is_empty(), "content type and format travel");
            assert_eq!(c.username.as_deref(), Some("user"));
        }
        other => panic!("{other:?}"),
    }
}

/// What a packet of the `v5-session` seed is, checking it says what the seed meant.
fn v5_session_packet_kind(p: Inbound) -> &'static str {
    match p {
        Inbound::Publish {
            properties, topic, ..
        } => {
            assert_eq!(properties.topic_alias, Some(1));
            if topic.is_empty() {
                "publish-by-alias"
            } else {
                assert_eq!(properties.expiry_secs, Some(60));
                "publish"
            }
        }
        Inbound::Subscribe { filters, id, .. } => {
            assert_eq!(id, Some(42));
            assert!(filters[0].no_local && filters[0].retain_as_published);
            assert_eq!(
                filters[0].retain_handling,
                router::RetainHandling::OnNewSubscription
            );
            assert_eq!(filters[1].filter, "$share/g/b/#");
            "subscribe"
        }
        Inbound::Unsubscribe { .. } => "unsubscribe",
        Inbound::PubAck(_) => "puback",
        Inbound::PubRec { refused, .. } => {
            assert!(refused);
            "pubrec"
        }
        Inbound::PingReq => "pingreq",
        Inbound::Auth { method, .. } => {
            assert_eq!(method.as_deref(), Some("SCRAM"));
            "auth"
        }
        Inbound::Disconnect {
            session_expiry,
            publish_will,
        } => {
            assert_eq!((session_expiry, publish_will), (Some(0), true));
            "disconnect"
        }
        other => panic!("{other:?}"),
    }
}

/// The MQTT 5 session seed of the `broker_decode` fuzz target is valid packets,
/// which decode to what they say.
#[test]
fn v5_session_seed_decodes() {
    let session = include_bytes!("../../../fuzz/seeds/broker_decode/v5-session");
    let mut b = BytesMut::from(&session[1..]);
    let mut kinds = Vec::new();
    while let Some(p) = decode(&mut b, Some(Version::V5), 1 << 20).unwrap() {
        kinds.push(v5_session_packet_kind(p));
    }
    assert_eq!(
        kinds,
        [
            "publish",
            "publish-by-alias",
            "subscribe",
            "unsubscribe",
            "puback",
            "pubrec",
            "pingreq",
            "auth",
            "disconnect"
        ]
    );
}

#[test]
fn a_bodiless_disconnect_is_v5_and_auth_is_not_311() {
    // A bodiless DISCONNECT is the usual one.
    let mut b = BytesMut::from(&[0xe0u8, 0x00][..]);
    assert!(matches!(
        decode(&mut b, Some(Version::V5), 1024),
        Ok(Some(Inbound::Disconnect { .. }))
    ));
    // AUTH is not a 3.1.1 packet.
    let mut b = BytesMut::from(&[0xf0u8, 0x00][..]);
    assert!(decode(&mut b, Some(Version::V311), 1024).is_err());
}

/// An MQTT 5 PUBLISH carries the expiry left, the subscription identifiers, the
/// stored properties in order and, after messages were lost to retention, a user
/// property saying how many.
#[test]
fn v5_publish_carries_what_the_subscriber_should_know() {
    use crate::protocol::properties as p;
    let mut stored = p::Writer::new();
    stored.string(p::id::USER_PROPERTY, "k").raw(&[0, 1, b'v']);
    let mut forward = BytesMut::new();
    stored.finish(&mut forward);
    let forward = forward.split_off(1); // without the section length
    let record = router::NewMessage {
        expiry_secs: Some(100),
        properties: &forward,
        ..router::NewMessage::new(QoS::AtLeastOnce, false, 1_000_000, "a/b", b"x")
    }
    .encode();
    let mut e = Encoder::new();
    e.set_version(Version::V5, 0, true);
    e.set_now(1_000_000 + 30_500);
    e.reply(&Reply::Deliver(vec![Delivery {
        record: record.into(),
        qos: QoS::AtLeastOnce,
        pkid: Some(PacketId(1)),
        dup: false,
        retain: false,
        subscription_ids: vec![3, 300],
        lost_before: 12,
    }]));
    let mut chunks = Vec::new();
    e.take(&mut chunks);
    let wire: Vec<u8> = wire_of(&chunks);
    // Fixed header (2), topic (2 + 3), packet id (2), then the properties.
    let mut rest = bytes::Bytes::copy_from_slice(&wire[9..]);
    let len = p::read_varint(&mut rest).unwrap() as usize;
    let section = rest.split_to(len);
    assert_eq!(&rest[..], b"x");
    let mut expected = p::Writer::new();
    expected
        .u32(p::id::MESSAGE_EXPIRY, 70)
        .raw(&forward)
        .varint(p::id::SUBSCRIPTION_ID, 3)
        .varint(p::id::SUBSCRIPTION_ID, 300)
        .string(p::id::USER_PROPERTY, "rumq-messages-lost")
        .raw(&[0, 2, b'1', b'2']);
    let mut want = BytesMut::new();
    expected.finish(&mut want);
    assert_eq!(&want[1..], &section[..]);
}

#[test]
fn a_pubcomp_for_an_unknown_id_says_0x92_in_mqtt_5_only() {
    let unknown = Reply::PubComp {
        pkid: PacketId(7),
        known: false,
    };
    let wire = |e: &mut Encoder| {
        let mut chunks = Vec::new();
        e.take(&mut chunks);
        wire_of(&chunks)
    };
    let mut e = Encoder::new();
    e.reply(&unknown);
    assert_eq!(wire(&mut e), [0x70, 2, 0, 7], "3.1.1 has no reason codes");

    let mut e = Encoder::new();
    e.set_version(Version::V5, 0, false);
    e.reply(&unknown);
    assert_eq!(wire(&mut e), [0x70, 3, 0, 7, 0x92]);
    e.reply(&Reply::PubComp {
        pkid: PacketId(7),
        known: true,
    });
    assert_eq!(wire(&mut e), [0x70, 2, 0, 7], "success is the short form");

    // With problem information, the reason says why: a property section holding
    // one reason string (0x1F, a two-byte length, the text).
    let mut e = Encoder::new();
    e.set_version(Version::V5, 0, true);
    e.reply(&unknown);
    let why = b"no QoS 2 message awaits release under this packet id";
    let props = 3 + why.len();
    // Remaining length: packet id 2, reason 1, property length 1, properties.
    let mut want = vec![
        0x70,
        (2 + 1 + 1 + props) as u8,
        0,
        7,
        0x92,
        props as u8,
        0x1f,
    ];
    want.extend_from_slice(&(why.len() as u16).to_be_bytes());
    want.extend_from_slice(why);
    assert_eq!(wire(&mut e), want);
}

/// What the encoder has gathered, as the bytes of one write.
fn wire(e: &mut Encoder) -> Vec<u8> {
    let mut chunks = Vec::new();
    e.take(&mut chunks);
    wire_of(&chunks)
}

/// MQTT 5: what the broker adds of its own (a reason string on an ack, a
/// DISCONNECT or a CONNACK) is left out when it would take the packet past the
/// client's Maximum Packet Size (MQTT-3.4.2-2, 3.7.2-2, 3.14.2-3, 3.2.2-19), and is
/// kept when the packet fits exactly.
#[test]
fn reason_strings_stay_within_the_clients_maximum_packet_size() {
    let short = |e: &mut Encoder| {
        e.reply(&Reply::PubComp {
            pkid: PacketId(7),
            known: false,
        });
        wire(e)
    };
    let mut e = Encoder::new();
    e.set_version(Version::V5, 0, true);
    let full = short(&mut e);
    assert!(full.len() > 5, "a reason string without a limit: {full:?}");
    e.set_max_packet_size(full.len() as u32);
    assert_eq!(short(&mut e), full, "exactly at the limit: kept");
    e.set_max_packet_size(full.len() as u32 - 1);
    assert_eq!(
        short(&mut e),
        [0x70, 3, 0, 7, 0x92],
        "one byte over: left out"
    );

    let mut e = Encoder::new();
    e.set_version(Version::V5, 0, true);
    e.disconnect_v5(reason::KEEP_ALIVE_TIMEOUT, "keepalive expired");
    let full = wire(&mut e);
    e.set_max_packet_size(full.len() as u32);
    e.disconnect_v5(reason::KEEP_ALIVE_TIMEOUT, "keepalive expired");
    assert_eq!(wire(&mut e), full);
    e.set_max_packet_size(full.len() as u32 - 1);
    e.disconnect_v5(reason::KEEP_ALIVE_TIMEOUT, "keepalive expired");
    assert_eq!(wire(&mut e), [0xe0, 2, reason::KEEP_ALIVE_TIMEOUT, 0]);

    let refused = ConnAckProperties {
        reason_string: Some("server unavailable".into()),
        ..ConnAckProperties::default()
    };
    let mut e = Encoder::new();
    e.set_version(Version::V5, 0, true);
    e.connack_v5(false, reason::SERVER_UNAVAILABLE, &refused);
    let full = wire(&mut e);
    e.set_max_packet_size(full.len() as u32 - 1);
    e.connack_v5(false, reason::SERVER_UNAVAILABLE, &refused);
    assert_eq!(wire(&mut e), [0x20, 3, 0, reason::SERVER_UNAVAILABLE, 0]);
}

/// The lost-messages user property is the broker's own too: a message that fits
/// the client's limit without it goes out without it rather than not at all.
#[test]
fn the_lost_messages_property_is_left_out_rather_than_the_message() {
    let deliver = |e: &mut Encoder| {
        let record = router::NewMessage::new(QoS::AtMostOnce, false, 0, "a", b"xyz").encode();
        e.reply(&Reply::Deliver(vec![Delivery {
            record: record.into(),
            qos: QoS::AtMostOnce,
            pkid: None,
            dup: false,
            retain: false,
            subscription_ids: vec![],
            lost_before: 5,
        }]));
        wire(e)
    };
    let mut e = Encoder::new();
    e.set_version(Version::V5, 0, true);
    let with = deliver(&mut e);
    // Topic (2 + 1), an empty property section (1) and the payload (3).
    let without = [0x30, 7, 0, 1, b'a', 0, b'x', b'y', b'z'];
    assert!(with.len() > without.len(), "{with:?}");
    assert!(with.windows(18).any(|w| w == b"rumq-messages-lost"));
    e.set_max_packet_size(with.len() as u32);
    assert_eq!(deliver(&mut e), with);
    e.set_max_packet_size(with.len() as u32 - 1);
    assert_eq!(deliver(&mut e), without);
}

/// What the chunks put on the wire, file ranges read from their files.
fn wire_of(chunks: &[Chunk]) -> Vec<u8> {
    let mut wire = Vec::new();
    for c in chunks {
        match c {
            Chunk::Bytes(b) => wire.extend_from_slice(b),
            Chunk::File(range) => wire.extend_from_slice(&range.read().unwrap()),
        }
    }
    wire
}

/// A large record the log gave by reference goes out as the PUBLISH header and the
/// head's part of the payload in memory, then the rest as a range of the segment's
/// file; together, the same packet as from the whole record.
#[test]
fn a_record_given_by_reference_is_sent_from_its_file() {
    use commitlog::{ByReference, Fsync, Log, LogConfig, Offset, ReadLimits};
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        tail_bytes_max: 0,
        fsync: Fsync::Never,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    let payload: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let whole = Message::encode(QoS::AtLeastOnce, false, 0, "big/one", &[], &payload);
    log.append(whole.clone()).unwrap();
    let limits = ReadLimits {
        records_max: 1,
        bytes_max: 1 << 20,
    };
    let by_ref = ByReference {
        min_bytes: 16 * 1024,
        head_bytes: 100,
    };
    let mut out = Vec::new();
    log.read_records(Offset(0), limits, by_ref, &mut out)
        .unwrap();
    let record = out.pop().unwrap();
    assert!(record.rest().is_some(), "given by reference");

    let packet = |record: commitlog::Record, version: Version| {
        let mut e = Encoder::new();
        e.set_version(version, 0, false);
        e.publish(&Delivery {
            record,
            qos: QoS::AtLeastOnce,
            pkid: Some(PacketId(7)),
            dup: false,
            retain: false,
            subscription_ids: Vec::new(),
            lost_before: 0,
        });
        let mut chunks = Vec::new();
        e.take(&mut chunks);
        chunks
    };
    for version in [Version::V311, Version::V5] {
        let by_reference = packet(record.clone(), version);
        assert!(
            matches!(by_reference.last(), Some(Chunk::File(r)) if r.len() > 30_000),
            "the payload's rest is a file range"
        );
        let in_memory = packet(whole.clone().into(), version);
        assert_eq!(wire_of(&by_reference), wire_of(&in_memory));
    }
    let chunks = packet(record, Version::V311);
    let mut wire = BytesMut::from(&wire_of(&chunks)[..]);
    match mqttbytes::v4::read(&mut wire, 1 << 20).unwrap() {
        mqttbytes::v4::Packet::Publish(p) => {
            assert_eq!((p.topic.as_str(), p.pkid), ("big/one", 7));
            assert_eq!(&p.payload[..], &payload[..]);
        }
        other => panic!("{other:?}"),
    }
}
