//! Arbitrary bytes into `mqttbytes::v4::read`, the third-party parser the broker hands
//! every framed non-CONNECT packet to (`rumq-broker/src/protocol/v4.rs`). A panic here
//! is a broker crash reachable by any client.
//!
//! The broker's own decoder (`protocol::decode`: framing, fixed-header checks, its
//! CONNECT parser) is in the binary crate and is not reachable from here.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mqttbytes::v4;

/// Read packets off the front of `data` until the parser stops, as a connection does.
fn read_all(data: &[u8], max: usize) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match v4::read(&mut buf, max) {
            Ok(_packet) => {
                // Every packet is at least two bytes; a read that consumes nothing
                // would make a connection spin.
                assert!(buf.len() < before, "read returned a packet but consumed nothing");
            }
            Err(_) => break,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // What the broker passes (it enforces its own limit before calling read).
    read_all(data, usize::MAX);
    // A small limit, to exercise the size check.
    read_all(data, 64);
});
