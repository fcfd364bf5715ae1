use proptest::prelude::*;

use super::*;

const MAX: usize = 1 << 20;

fn log(node: u8, incarnation: u32) -> LogId {
    LogId {
        node: NodeId(node),
        incarnation: Incarnation(incarnation),
    }
}

fn encoded(frame: &Frame) -> BytesMut {
    let mut out = BytesMut::new();
    encode(frame, &mut out);
    out
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let node = 1u8..=255;
    let token = any::<[u8; 32]>();
    prop_oneof![
        (node.clone(), node.clone(), any::<bool>(), token).prop_map(|(f, t, meta, nonce)| {
            Frame::Hello {
                from: NodeId(f),
                to: NodeId(t),
                channel: if meta { Channel::Meta } else { Channel::Data },
                nonce,
            }
        }),
        (
            any::<u64>(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..100)
        )
            .prop_map(|(id, reply, payload)| {
                let payload = Bytes::from(payload);
                if reply {
                    Frame::MetaReply { id, payload }
                } else {
                    Frame::MetaRequest { id, payload }
                }
            }),
        (node.clone(), token, token).prop_map(|(f, nonce, proof)| Frame::Challenge {
            from: NodeId(f),
            nonce,
            proof
        }),
        token.prop_map(|proof| Frame::Proof { proof }),
        (
            node.clone(),
            any::<u32>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(|(n, i, from, bytes_max, wait_ms, j)| Frame::Fetch {
                log: log(n, i),
                stream: if j { Stream::Journal } else { Stream::Messages },
                from: Offset(from),
                bytes_max,
                wait_ms
            }),
        (node.clone(), any::<u32>()).prop_map(|(n, i)| Frame::Announce { log: log(n, i) }),
        (node.clone(), any::<u32>()).prop_map(|(n, i)| Frame::Done { log: log(n, i) }),
        (
            node,
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<bool>()
        )
            .prop_map(|(n, i, base, commit, records, j)| Frame::Records {
                log: log(n, i),
                stream: if j { Stream::Journal } else { Stream::Messages },
                base: Offset(base),
                commit: Offset(commit),
                records: Bytes::from(records)
            }),
        "\\PC{0,40}".prop_map(|reason| Frame::Goodbye { reason }),
    ]
}

proptest! {
    #[test]
    fn every_frame_decodes_to_itself_whole_or_split(
        frames in proptest::collection::vec(arb_frame(), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut wire = BytesMut::new();
        for f in &frames {
            encode(f, &mut wire);
        }
        // Arrive in two pieces at an arbitrary point: nothing is decoded early.
        let at = cut.index(wire.len() + 1);
        let rest = wire.split_off(at);
        let mut buf = wire;
        let mut got = Vec::new();
        while let Some(f) = decode(&mut buf, MAX).unwrap() {
            got.push(f);
        }
        buf.extend_from_slice(&rest);
        while let Some(f) = decode(&mut buf, MAX).unwrap() {
            got.push(f);
        }
        prop_assert_eq!(got, frames);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut buf = BytesMut::from(&bytes[..]);
        for _ in 0..bytes.len() + 1 {
            match decode(&mut buf, 256) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}

#[test]
fn a_length_over_the_limit_is_refused_from_its_prefix_alone() {
    let mut buf = BytesMut::from(&[0x00, 0x10, 0x00, 0x01][..]);
    assert_eq!(
        decode(&mut buf, 4096),
        Err(FrameError::TooLarge {
            len: 0x10_0001,
            max: 4096
        })
    );
}

#[test]
fn a_frame_waits_for_all_its_bytes() {
    let wire = encoded(&Frame::Proof { proof: [7; 32] });
    let mut buf = BytesMut::from(&wire[..wire.len() - 1]);
    assert_eq!(decode(&mut buf, MAX), Ok(None));
    buf.extend_from_slice(&wire[wire.len() - 1..]);
    assert_eq!(
        decode(&mut buf, MAX),
        Ok(Some(Frame::Proof { proof: [7; 32] }))
    );
}

#[test]
fn malformed_frames_are_named() {
    let hello = encoded(&Frame::Hello {
        from: NodeId(1),
        to: NodeId(2),
        channel: Channel::Data,
        nonce: [0; 32],
    });
    let cases: Vec<(Vec<u8>, FrameError)> = vec![
        (vec![0, 0, 0, 1, PROTOCOL_VERSION], FrameError::TooShort(1)),
        (
            vec![0, 0, 0, 2, 9, HELLO],
            FrameError::UnsupportedVersion(9),
        ),
        (
            vec![0, 0, 0, 2, PROTOCOL_VERSION, 99],
            FrameError::UnknownKind(99),
        ),
        (
            vec![0, 0, 0, 3, PROTOCOL_VERSION, PROOF, 1],
            FrameError::Truncated("Proof"),
        ),
        (
            vec![0, 0, 0, 4, PROTOCOL_VERSION, HELLO, 0, 2],
            FrameError::NodeZero("Hello"),
        ),
        (
            vec![0, 0, 0, 5, PROTOCOL_VERSION, HELLO, 1, 2, 9],
            FrameError::UnknownChannel(9),
        ),
        (
            vec![0, 0, 0, 6, PROTOCOL_VERSION, GOODBYE, 0, 2, 0xff, 0xfe],
            FrameError::BadReason,
        ),
        (
            vec![0, 0, 0, 8, PROTOCOL_VERSION, FETCH, 1, 0, 0, 0, 1, 3],
            FrameError::UnknownStream(3),
        ),
        (
            {
                let mut v = hello.to_vec();
                v[3] += 1;
                v.push(0);
                v
            },
            FrameError::Trailing {
                kind: "Hello",
                extra: 1,
            },
        ),
    ];
    for (bytes, want) in cases {
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(decode(&mut buf, MAX), Err(want), "{bytes:?}");
    }
}

#[test]
fn records_travel_as_they_are_and_a_long_reason_is_cut_on_a_character() {
    let records = Bytes::from_static(b"\x00\x00\x00\x03abc-whatever-the-log-stored");
    let f = Frame::Records {
        log: log(3, 7),
        stream: Stream::Journal,
        base: Offset(41),
        commit: Offset(40),
        records: records.clone(),
    };
    let mut buf = encoded(&f);
    assert_eq!(decode(&mut buf, MAX), Ok(Some(f)));

    let long = "é".repeat(REASON_BYTES_MAX);
    let mut buf = encoded(&Frame::Goodbye { reason: long });
    let Ok(Some(Frame::Goodbye { reason })) = decode(&mut buf, MAX) else {
        panic!("not a Goodbye");
    };
    assert_eq!(reason.len(), REASON_BYTES_MAX);
    assert!(reason.chars().all(|c| c == 'é'));
}
