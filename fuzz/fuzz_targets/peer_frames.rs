//! Arbitrary bytes from a peer into `mesh::decode`, the peer link's frame decoder (a
//! peer that passed the handshake may still be broken or hostile: it must not crash
//! the broker, nor make it reserve more than the frame limit), the way a link reads
//! them: frames one after another from one buffer, until an error or more bytes are
//! needed. Every frame decoded must encode back to the same bytes, and the records of
//! a `Records` frame go through `Framed::split` as the follower checks them.
#![no_main]

use bytes::BytesMut;
use commitlog::record::Framed;
use libfuzzer_sys::fuzz_target;

/// The link's frame limit in this run: small, so that the limit is hit often.
const FRAME_MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    for _ in 0..64 {
        let before = buf.clone();
        let frame = match mesh::decode(&mut buf, FRAME_MAX) {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => {
                // Waiting for more never asks for more than one frame can hold.
                assert!(buf.capacity() <= FRAME_MAX + 4 + before.len().max(data.len()));
                return;
            }
        };
        let used = before.len() - buf.len();
        let mut again = BytesMut::new();
        mesh::encode(&frame, &mut again);
        assert_eq!(&again[..], &before[..used], "{frame:?} re-encodes to other bytes");
        if let mesh::Frame::Records { records, .. } = &frame {
            if let Ok(frames) = Framed::split(records, 1024) {
                let total: usize = frames.iter().map(|f| f.frame().len()).sum();
                assert_eq!(total, records.len());
            }
        }
    }
});
