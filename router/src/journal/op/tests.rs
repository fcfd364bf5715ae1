//! Every op round-trips through its encoding; a field longer than its prefix is refused.

use super::*;
use crate::Message;
use proptest::prelude::*;

fn all_ops() -> Vec<Op> {
    let mut ops = single_node_ops();
    ops.extend(cluster_ops());
    ops
}

/// The ops only a cluster writes.
fn cluster_ops() -> Vec<Op> {
    vec![
        Op::SentIn {
            sid: 1,
            pkid: 9,
            qos: QoS::ExactlyOnce,
            log: LogId {
                node: NodeId(3),
                incarnation: Incarnation(70_000),
            },
            offset: Offset(1 << 40),
        },
        Op::ResumeIn {
            sid: 1,
            log: LogId {
                node: NodeId(2),
                incarnation: Incarnation(1),
            },
            offset: Offset(12),
        },
        Op::Handoff {
            client_id: "dev-1".into(),
            to: NodeId(3),
            at: 1_234,
        },
        Op::Will {
            client_id: "dev-2".into(),
            delay_secs: 30,
            record: Bytes::from_static(b"a will in stored form"),
        },
        Op::WillGone {
            client_id: "dev-2".into(),
        },
    ]
}

fn single_node_ops() -> Vec<Op> {
    vec![
        Op::Head(Offset(9)),
        Op::Open {
            sid: 1,
            client_id: "dev".into(),
        },
        Op::Subscribe {
            sid: 1,
            filter: "a/#".into(),
            options: SubOptions::qos(QoS::ExactlyOnce),
        },
        Op::Subscribe {
            sid: 1,
            filter: "c/+".into(),
            options: SubOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                id: Some(268_435_455),
            },
        },
        Op::Expiry { sid: 1, secs: 3600 },
        Op::Unsubscribe {
            sid: 1,
            filter: "b".into(),
        },
        Op::Pending {
            sid: 1,
            qos: QoS::AtLeastOnce,
            record: Bytes::from_static(b"rec"),
        },
        Op::Taken { sid: 1 },
        Op::Sent {
            sid: 1,
            pkid: 7,
            qos: QoS::AtLeastOnce,
            offset: Offset(40),
        },
        Op::SentRecord {
            sid: 1,
            pkid: 8,
            qos: QoS::ExactlyOnce,
            record: Bytes::from_static(b"r"),
        },
        Op::Released { sid: 1, pkid: 8 },
        Op::Acked { sid: 1, pkid: 7 },
        Op::Resume {
            sid: 1,
            offset: Offset(41),
        },
        Op::Qos2In { sid: 1, pkid: 3 },
        Op::Qos2Done { sid: 1, pkid: 3 },
        Op::Retain {
            record: Message::encode(QoS::AtLeastOnce, true, 0, "t", b"", b"v"),
        },
        Op::Unretain { topic: "t".into() },
        Op::Remove { sid: 1 },
        Op::Begin,
        Op::End,
    ]
}

#[test]
fn every_op_round_trips() {
    let mut b = BytesMut::new();
    for op in all_ops() {
        op.encode(&mut b).unwrap();
    }
    let mut b = b.freeze();
    let mut back = Vec::new();
    while b.has_remaining() {
        back.push(Op::decode(&mut b).unwrap());
    }
    assert_eq!(back, all_ops());
}

#[test]
fn a_string_longer_than_its_u16_length_is_refused_not_written_clamped() {
    let long = "x".repeat(usize::from(u16::MAX) + 1);
    let ops = [
        (
            Op::Open {
                sid: 1,
                client_id: long.clone(),
            },
            "client id",
        ),
        (
            Op::Subscribe {
                sid: 1,
                filter: long.clone(),
                options: SubOptions::qos(QoS::AtLeastOnce),
            },
            "filter",
        ),
        (
            Op::Unsubscribe {
                sid: 1,
                filter: long.clone(),
            },
            "filter",
        ),
        (
            Op::Unretain {
                topic: long.clone(),
            },
            "topic",
        ),
    ];
    for (op, field) in ops {
        let mut b = BytesMut::from(&b"earlier ops"[..]);
        let e = op.encode(&mut b).unwrap_err();
        assert_eq!((e.field, e.len, e.max), (field, long.len(), 65_535));
        assert_eq!(&b[..], b"earlier ops", "nothing of {op:?} is written");
    }
}

#[test]
fn a_string_of_exactly_u16_max_bytes_round_trips() {
    let op = Op::Open {
        sid: 1,
        client_id: "x".repeat(usize::from(u16::MAX)),
    };
    let mut b = BytesMut::new();
    op.encode(&mut b).unwrap();
    assert_eq!(Op::decode(&mut b.freeze()), Ok(op));
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        let mut b = Bytes::from(bytes);
        while b.has_remaining() {
            if Op::decode(&mut b).is_err() {
                break;
            }
        }
    }
}
