//! Arbitrary bytes into the broker's own packet decoder, `rumq_broker::protocol::decode`
//! (framing, fixed-header checks, the CONNECT parser, then `mqttbytes` for the rest),
//! read off the front of the buffer as a connection does. The first byte chooses
//! whether the connection is already connected (as 3.1.1 or 5.0) and the packet
//! size limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rumq_broker::protocol::{self, Version};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let connected = [None, Some(Version::V311), Some(Version::V5), Some(Version::V5)]
        [usize::from(mode & 3)];
    let max = if mode & 4 == 4 { 64 } else { 1 << 20 };
    let mut buf = BytesMut::from(rest);
    loop {
        let before = buf.len();
        match protocol::decode(&mut buf, connected, max) {
            Ok(Some(_)) => assert!(buf.len() < before, "a packet that consumed nothing"),
            Ok(None) | Err(_) => break,
        }
        // Bytes needed for the next packet never exceed the limit.
        assert!(protocol::bytes_missing(&buf, max) <= max);
    }
});
